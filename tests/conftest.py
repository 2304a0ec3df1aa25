"""Shared fixtures: real actors, probe collaborators, and a check that no process is left."""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import subprocess
import queue
import shutil
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pykka
import pytest
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.worker import EventsRecorded

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO = (sys.executable, "-m", "meta_orchestrator.actors.agents.demo")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run the way Ctrl-C does, so fixture teardown still runs: the Ray nodes
    and other servers the tests start lead sessions of their own, which a signal to pytest's
    process group does not reach. Ctrl-C gets the same handler, not Python's default: a session
    run in-process stops in order on either signal, then gives it to the handler it replaced
    if the program installed one (``actors/app/system.py``), and the run ends there too."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
        signal.signal(signal.SIGINT, interrupt)


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def pipe_nearly_full(fd: int) -> bool:
    """Whether the pipe read at ``fd`` holds within a page of its size (a read may have left a
    page part-used): its writer waits on it."""
    size = fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))  # Linux
    unread = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, unread)
    return unread[0] >= size - 4096


@dataclass(frozen=True)
class RecordedEvent:
    """One event of a worker's ``EventsRecorded``: the probe splits each batch into these,
    since a test waits on one event, not on how a read happened to group them."""

    event: Event


class Probe(pykka.ThreadingActor):
    """A collaborator that records every message it is told; tests wait on them by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.received: queue.Queue[Any] = queue.Queue()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, EventsRecorded):
            # Workers publish a read's events as one batch; tests wait on single events.
            for event in message.events:
                self.received.put(RecordedEvent(event))
            return None
        self.received.put(message)
        return None


class _Barrier:
    """A marker told to a probe; see ``ProbeHandle.barrier``."""


class ProbeHandle:
    """The test's side of a probe: its ref, and ``expect`` to wait for a message kind."""

    def __init__(self) -> None:
        self.ref = Probe.start()
        self._queue: queue.Queue[Any] = self.ref.proxy().received.get()
        self.seen: list[Any] = []

    def expect(self, kind: type, timeout: float = 10.0, where: Callable[[Any], bool] = lambda m: True) -> Any:
        """Wait for the next message of ``kind`` matching ``where``; earlier ones are kept in seen."""
        for message in self.seen:
            if isinstance(message, kind) and where(message) and not getattr(message, "_taken", False):
                self.seen.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {kind.__name__} within {timeout}s; saw {[type(m).__name__ for m in self.seen][-20:]}"
                )
            try:
                message = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if isinstance(message, kind) and where(message):
                return message
            self.seen.append(message)

    def barrier(self, timeout: float = 10.0) -> None:
        """Return once everything told to the probe before this call has been received: the
        probe's inbox is one FIFO queue, so a marker told now comes after all of it."""
        marker = _Barrier()
        self.ref.tell(marker)
        self.expect(_Barrier, timeout=timeout, where=lambda m: m is marker)

    def drain(self) -> list[Any]:
        """Everything received so far and not yet taken."""
        while True:
            try:
                self.seen.append(self._queue.get_nowait())
            except queue.Empty:
                return self.seen


@pytest.fixture
def probe() -> ProbeHandle:
    """A fresh probe actor."""
    return ProbeHandle()


def _agents_of_this_run(basetemp: Path) -> list[psutil.Process]:
    """Agent processes (they carry the session marker) working under this run's temp folder:
    they would escape a children() check once their orchestrator is gone."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if "ORCHESTRATE_SESSION_ID" in proc.environ() and Path(proc.cwd()).is_relative_to(basetemp):
                found.append(proc)
        except (psutil.Error, OSError, ValueError):
            continue
    return found


# Sessions whose processes a session-scoped fixture owns and checks when it ends: the nodes
# of a Ray cluster start and end workers of their own between tests.
SPARED_SESSIONS: set[int] = set()


def _spared(pid: int) -> bool:
    try:
        return os.getsid(pid) in SPARED_SESSIONS
    except OSError:
        return False


@pytest.fixture(autouse=True)
def _private_user_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions started by tests list their workspaces in this run's state, not the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-state"))


@pytest.fixture(autouse=True)
def _stop_actors_and_check_processes(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every test ends with no actor running and no process of ours left behind: no child of
    this test process, and no agent process working in this run's temp folders."""
    basetemp = tmp_path_factory.getbasetemp().resolve()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    before |= {p.pid for p in _agents_of_this_run(basetemp)}
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=20)

    def leftovers() -> list[psutil.Process]:
        found = []
        candidates = psutil.Process().children(recursive=True) + _agents_of_this_run(basetemp)
        for proc in {p.pid: p for p in candidates}.values():
            try:
                if proc.pid not in before and proc.status() != psutil.STATUS_ZOMBIE and not _spared(proc.pid):
                    found.append(proc)
            except psutil.NoSuchProcess:
                continue
        return found

    deadline = time.monotonic() + 10
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        described = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left]
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()  # ours: started by this test (a child, or an agent in its temp folder)
        pytest.fail(f"processes left running after the test: {described}")


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for the demo agents in tests: no pacing, no scenario left over."""
    env = dict(os.environ)
    env["ORCHESTRATE_DEMO_PACE"] = "0"
    for key in list(env):
        if key.startswith("ORCHESTRATE_DEMO_SCENARIO"):
            del env[key]
    return env


def kill_tree(proc: Any) -> None:
    """Force-end a launcher this test started and every process below it (agents lead their
    own process groups, so killing the launcher's group alone would orphan them)."""
    try:
        below = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        below = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    for child in below:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait()
    psutil.wait_procs(below, timeout=5)


def popen_orchestrate(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen:
    """``orchestrate <args>`` from this checkout, in a process group of its own, stdin closed,
    stdout and stderr piped as text (``kwargs`` override, e.g. ``stdout=subprocess.DEVNULL``)."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kwargs}
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **options,
    )


def start_orchestrate(args: list[str], env: dict[str, str], marker: str) -> tuple[subprocess.Popen, str]:
    """Start ``orchestrate <args>`` and wait for the stderr line that starts with ``marker``
    (``dashboard: ``, ``sessions: ``); returns the process and the rest of that line. The
    rest of stderr keeps being read so the program never blocks on the pipe."""
    proc = popen_orchestrate(args, env, stdout=subprocess.DEVNULL)
    for line in proc.stderr:  # type: ignore[union-attr]
        if line.startswith(marker):
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            return proc, line.split(" ", 1)[1].strip()
    kill_tree(proc)
    raise AssertionError(f"orchestrate {' '.join(args[:2])} printed no {marker!r} line")


def session_store(session_dir: Path) -> Path:
    """The session's store: the bare repository its branch ``orchestrate/<id>`` and objects
    live in until ``orchestrate apply`` (plain git reads it: ``git -C <store> ...``)."""
    return session_dir / "git" / "session.git"


def git_folder_bytes(repo: Path) -> dict[str, bytes]:
    """Every file of the user's ``.git`` (refs, packed-refs, objects, index, HEAD, config,
    logs, stash), byte for byte: what a session must leave exactly as it was."""
    folder = repo / ".git"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def branch_files(repo: Path, branch: str) -> set[str]:
    """The files on ``branch`` of the git repository ``repo`` (a session's orchestrate/<id>:
    pass its store, ``session_store(session_dir)``)."""
    done = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "--name-only", branch],
        capture_output=True,
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    return {name for name in done.stdout.decode().split("\0") if name}


def branch_file(repo: Path, branch: str, path: str) -> str:
    """A file's text on ``branch`` of ``repo``."""
    done = subprocess.run(
        ["git", "-C", str(repo), "show", f"{branch}:{path}"],
        capture_output=True,
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    )
    return done.stdout.decode()


@pytest.fixture
def bwrap() -> str:
    """bubblewrap's path; without it the test is skipped, or fails in CI (.ci/run installs it)."""
    path = shutil.which("bwrap")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is not installed (.ci/run installs it)")
        pytest.skip("bubblewrap is not installed")
    return path
