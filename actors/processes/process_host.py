"""Spawn a CLI in its own process group, read its pipes line by line, signal the group.

The worker actor talks to processes only through ``ProcessHost``/``HostedProcess`` so that a
host on another machine can take this one's place without the worker changing.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import weakref
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from collections.abc import Callable, Iterator

import psutil

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.processes.line_splitter import RawLine, iter_line_batches
from meta_orchestrator.actors.processes.process_groups import pids_in_group
from meta_orchestrator.actors.sandbox import landlock
from meta_orchestrator.actors.sandbox.bwrap import PRIVATE_TMP, Confinement, bwrap_argv
import contextlib

log = logging.getLogger(__name__)

# The environment marker every agent process carries, so that a later orchestrator can find
# the orphans of one that died (and never touch a process it did not start).
SESSION_MARKER_ENV = "ORCHESTRATE_SESSION_ID"
# bwrap reports a child killed by signal n as exit 128 + n; these mean a death, not a choice.
_DEATH_SIGNALS = frozenset(
    {signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
)
# Signals the CLI must get itself: bwrap dies of them at once and its namespace with it.
_FORWARDED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2})


def wait_ended(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to end; those still running. A zombie has
    ended: a straggler is not our child (the sandbox's init, say, whose parent is the leader
    we keep unreaped), so ``psutil.wait_procs`` would wait out its whole timeout on it."""
    deadline = time.monotonic() + timeout
    step = 0.002
    while True:
        alive = [p for p in procs if _running(p)]
        left = deadline - time.monotonic()
        if not alive or left <= 0:
            return alive
        time.sleep(min(step, left))  # not our children: no wait() to block on
        step = min(step * 2, 0.05)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


class HostedProcess:
    """A running CLI: its pipes, its process group and how to end it.

    Sandboxed, the leader is bwrap; its only child is the PID namespace's init, and every
    process of the run descends from that init (orphans are re-parented to it), with host
    PIDs as psutil sees them. bwrap forwards no signal and dies of SIGTERM at once, which
    ends the namespace with SIGKILL; so a polite signal goes to each process inside instead.
    """

    def __init__(self, popen: subprocess.Popen[bytes], sandboxed: bool = False) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the CLI (or bwrap) leads its own group
        self.sandboxed = sandboxed
        self.stdout: IO[bytes] = popen.stdout  # type: ignore[assignment]
        self.stderr: IO[bytes] = popen.stderr  # type: ignore[assignment]
        self._exited = threading.Event()

    def line_batches(
        self, stream: str, max_line_bytes: int, overflow_file: Callable[[], Path]
    ) -> Iterator[list[RawLine]]:
        """The lines of ``stream`` ("stdout" or "stderr") in batches until it closes; the pipe
        is closed at the end. A remote process offers the same, so a pump takes either."""
        pipe = self.pipe(stream)
        try:
            yield from iter_line_batches(pipe.fileno(), max_line_bytes, overflow_file)
        finally:
            pipe.close()

    def pipe(self, stream: str) -> IO[bytes]:
        """The read end of ``stream`` ("stdout" or "stderr"); its reader closes it at the end."""
        return self.stdout if stream == "stdout" else self.stderr

    def wait_exit_unreaped(self) -> None:
        """Block until the leader exits, leaving it a zombie so its pid (the pgid) stays ours."""
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self._exited.set()

    def end_stragglers(self, grace_s: float = 1.0) -> int:
        """After the leader exited: end what it left running in its group. Returns how many."""
        members = self.group_members()
        if not members:
            return 0
        self.signal_group(signal.SIGTERM)
        alive = wait_ended(members, grace_s)
        if alive:
            self.signal_group(signal.SIGKILL)
            wait_ended(alive, grace_s)
        return len(members)

    def group_members(self) -> list[psutil.Process]:
        """Live processes in this group other than the (possibly zombie) leader."""
        found = []
        for pid in pids_in_group(self.pgid):
            if pid == self.pid:
                continue
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        return found

    def reap(self) -> int:
        """Collect the exit status (the leader must have exited). Negative: killed by signal."""
        code = self._popen.wait()
        if self.sandboxed and code > 128 and code - 128 in _DEATH_SIGNALS:
            return 128 - code  # bwrap's 128 + n, as Popen says it unsandboxed
        return code

    def sandbox_members(self) -> list[psutil.Process]:
        """Every process inside the PID namespace but its init (sandboxed runs only)."""
        try:
            inits = psutil.Process(self.pid).children()
        except psutil.Error:
            return []
        found = []
        for init in inits:
            try:
                found.extend(init.children(recursive=True))
            except psutil.Error:
                continue
        return found

    def signal_group(self, sig: int) -> bool:
        """Send a signal to the whole group (sandboxed: to every process of the run);
        False when it is already gone."""
        if self._popen.returncode is not None:
            return False  # reaped: the pgid may belong to someone else now
        if self.sandboxed:
            members = self.sandbox_members()
            for member in members:  # also those that left the group (setsid) inside
                try:
                    member.send_signal(sig)
                except psutil.Error:
                    continue
            if members and sig in _FORWARDED:
                return True
        try:
            os.killpg(self.pgid, sig)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def terminate(self, grace_s: float) -> None:
        """SIGCONT (a stopped group cannot act on SIGTERM), SIGTERM, then SIGKILL after grace."""
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGTERM)
        if not self._exited.wait(grace_s):
            log.warning("pid %s ignored SIGTERM for %.1fs; sending SIGKILL to its group", self.pid, grace_s)
            self.signal_group(signal.SIGKILL)

    def wait_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the leader to exit; True if it did."""
        return self._exited.wait(timeout)

    @property
    def exited(self) -> bool:
        """True once the leader has exited (reaped or not)."""
        return self._exited.is_set()


@dataclass(frozen=True)
class SpawnCaps:
    """Hard caps applied to a CLI right after it starts; its children inherit them.

    Chosen so that Node-based CLIs keep working: no ``RLIMIT_AS`` (V8 and the native claude
    binary reserve far more address space than they use) and ``RLIMIT_NPROC`` only on request
    (Linux counts every thread of every process of the user against it, and Node runs many).
    """

    nice: int = 0  # added niceness: agents yield the CPU to the user's own work
    core_dumps: bool = True  # False: RLIMIT_CORE = 0 (a 250 MB binary's crash fills no disk)
    max_file_bytes: int | None = None  # RLIMIT_FSIZE
    max_user_processes: int | None = None  # RLIMIT_NPROC (per user, threads count)

    def apply(self, pid: int) -> list[str]:
        """Apply to a running process (``prlimit``: no ``preexec_fn`` in a threaded parent).

        The CLI has not started any child yet when this runs (its exec and startup take
        milliseconds), so everything it spawns inherits the caps. Returns what failed.
        """
        problems = []
        limits = []
        if not self.core_dumps:
            limits.append(("RLIMIT_CORE", 0))
        if self.max_file_bytes is not None:
            limits.append(("RLIMIT_FSIZE", self.max_file_bytes))
        if self.max_user_processes is not None:
            limits.append(("RLIMIT_NPROC", self.max_user_processes))
        try:
            proc = psutil.Process(pid)
            if self.nice:
                proc.nice(min(19, proc.nice() + self.nice))
            for name, value in limits:
                which = getattr(psutil, name, None)
                if which is None:
                    problems.append(f"{name} is not supported here")
                    continue
                _soft, hard = proc.rlimit(which)
                if hard != psutil.RLIM_INFINITY and value > hard:
                    value = hard  # an unprivileged process may only lower its hard limit
                proc.rlimit(which, (value, value))
        except (psutil.Error, OSError, ValueError) as exc:
            problems.append(f"{exc}")
        return problems


class ProcessHost:
    """Starts CLIs on this machine."""

    def __init__(self, caps: SpawnCaps | None = None) -> None:
        self._caps = caps
        # Every CLI this host started and not yet forgotten, for a forced stop (kill_all).
        self._started: weakref.WeakSet[HostedProcess] = weakref.WeakSet()
        self._lock = threading.Lock()

    def spawn(self, launch: Launch, confinement: Confinement | None = None) -> HostedProcess:
        """Start the CLI in a new session (its own process group); with a ``confinement``,
        inside bubblewrap (``TMPDIR`` is then its private ``/tmp``). Its stdin gets
        ``launch.stdin`` and is then closed (closed at once when there is none).

        Raises:
            FileNotFoundError: the executable or the working directory does not exist
                (``e.filename`` tells which).
            PermissionError: the executable is not executable.
        """
        argv, env = list(launch.argv), launch.env
        if confinement is not None:
            if not Path(launch.cwd).is_dir():  # bwrap would only say "Can't chdir"
                raise FileNotFoundError(2, "No such file or directory", str(launch.cwd))
            _require_executable(argv[0], env.get("PATH"), launch.cwd)
            argv = bwrap_argv(confinement, argv)
            env = {**env, "TMPDIR": PRIVATE_TMP}
        stdin = subprocess.DEVNULL if launch.stdin is None else subprocess.PIPE

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                cwd=launch.cwd,
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )

        ports = confinement.connect_ports if confinement is not None else None
        popen = start() if ports is None else _start_restricted(start, ports)
        if launch.stdin is not None:
            feed_stdin(popen, launch.stdin)
        if self._caps is not None:
            for problem in self._caps.apply(popen.pid):
                log.warning("hard cap not applied to pid %s: %s", popen.pid, problem)
        hosted = HostedProcess(popen, sandboxed=confinement is not None)
        with self._lock:
            self._started.add(hosted)
        return hosted

    def terminate_all(self, grace_s: float) -> int:
        """End every CLI this host started that still runs, all at once: SIGCONT and SIGTERM
        to every group, one deadline for all, then SIGKILL to those left (one after another,
        each would wait its own grace). Their workers read their pipes to the end as ever.
        Returns how many were running."""
        with self._lock:
            running = [p for p in self._started if not p.exited]
        for proc in running:
            proc.signal_group(signal.SIGCONT)  # a stopped group cannot act on SIGTERM
            proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in running:
            if not proc.wait_exited(max(0.0, deadline - time.monotonic())):
                log.warning("pid %s ignored SIGTERM for %.1fs; sending SIGKILL to its group", proc.pid, grace_s)
                proc.signal_group(signal.SIGKILL)
        return len(running)

    def kill_all(self) -> int:
        """SIGKILL every CLI this host started that still runs (a forced stop: no grace
        period); their workers then see them exit. Returns how many were signalled."""
        with self._lock:
            running = [p for p in self._started if not p.exited]
        return sum(1 for p in running if p.signal_group(signal.SIGKILL))


def feed_stdin(popen: subprocess.Popen[bytes], data: bytes) -> threading.Thread:
    """Write ``data`` to the process's stdin and close it, in a thread of its own: a prompt
    larger than the pipe's buffer waits for the CLI to read while stdout is being read."""

    def write() -> None:
        pipe = popen.stdin
        assert pipe is not None
        try:
            pipe.write(data)
        except (BrokenPipeError, ValueError):  # the CLI exited (or closed stdin) without reading all
            log.debug("pid %s did not read its whole stdin", popen.pid)
        except OSError as exc:
            log.warning("writing stdin of pid %s: %s", popen.pid, exc)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    thread = threading.Thread(target=write, name=f"stdin-{popen.pid}", daemon=True)
    thread.start()
    return thread


def _start_restricted(start: Callable[[], subprocess.Popen[bytes]], ports: tuple[int, ...]) -> subprocess.Popen[bytes]:
    """``start()`` from a thread of its own under Landlock (``landlock.py``): the process it
    forks, and all that descends from it, inherit the domain; no other thread is restricted.

    The thread stays until the process exits: bwrap's ``--die-with-parent`` is a parent-death
    signal, which the kernel sends when the *thread* that forked it ends.
    """
    started: list[subprocess.Popen[bytes] | BaseException] = []
    ready = threading.Event()

    def restricted() -> None:
        try:
            landlock.restrict(sorted(set(ports)), _landlock_abi())
            started.append(start())
        except BaseException as exc:  # handed to the caller below
            started.append(exc)
        ready.set()
        if isinstance(started[0], subprocess.Popen):
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, started[0].pid, os.WEXITED | os.WNOWAIT)  # leaves the reaping to its owner

    threading.Thread(target=restricted, name="landlocked-spawn", daemon=True).start()
    ready.wait()
    if isinstance(started[0], BaseException):
        raise started[0]
    return started[0]


@functools.cache
def _landlock_abi() -> int:
    version = landlock.abi()
    for gap in landlock.missing(version):
        log.warning("Landlock ABI %s here: the agents' runs are NOT isolated from %s", version, gap)
    return version


def _require_executable(exe: str, path: str | None, cwd: Path) -> None:
    """What Popen would raise for a missing or non-executable CLI (bwrap would only exit 1)."""
    if os.sep in exe:
        inside = str(Path(cwd, exe))
        found = inside if os.path.exists(inside) else None
    else:
        found = shutil.which(exe, mode=os.F_OK, path=path)
    if found is None:
        raise FileNotFoundError(2, "No such file or directory", exe)
    if not os.access(found, os.X_OK) or os.path.isdir(found):
        raise PermissionError(13, "Permission denied", exe)


def describe_spawn_error(exc: OSError, launch: Launch) -> str:
    """A sentence naming what was missing when a spawn failed."""
    if isinstance(exc, FileNotFoundError):
        if exc.filename and Path(str(exc.filename)) == Path(launch.cwd):
            return f"working directory {launch.cwd} does not exist"
        return f"executable {launch.argv[0]!r} not found; install the CLI or set [agents.<name>] command in the config"
    if isinstance(exc, PermissionError):
        return f"executable {launch.argv[0]!r} is not executable: {exc.strerror}"
    return f"could not start {launch.argv[0]!r}: {exc}"


def monotonic() -> float:
    """Seconds on a clock that never jumps (wall-clock changes do not matter)."""
    return time.monotonic()
