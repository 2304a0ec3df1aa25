"""The node's side of a remote CLI run: one Ray actor per run, on a node with an agent slot.

It is the process host of this machine moved onto another one: the CLI is started by the same
``ProcessHost`` (its own process group, the same bubblewrap sandbox), its pipes are read by
the same ``iter_line_batches`` into a bounded, numbered buffer, and its group is signalled
as ``HostedProcess`` does. The driver (the orchestrator) keeps one ``read_batch`` long-poll
outstanding per run; each call says what the driver holds, acknowledges what it has recorded
(``ack_seq``: only then is a line dropped here), and carries a fresh sample of the process
tree as this node sees it. With ``RemoteWork`` the CLI works in a checkout of its own, made
from the bundle the driver sent, and its changes go back as a bundle with the run's end
(``remote_checkout``).

What crosses back to the driver is plain bytes (``node_wire``): every reply, errors
included, so the driver never has to unpickle what a node sent. What reaches the CLI holds
nothing of Ray: no ``RAY_*`` variable (the token, its path, addresses), and in the sandbox
no token file and no folder of this node's Ray (``cluster_auth``).

How the run ends when the driver goes away: the actor is owned by the driver, and Ray
destroys an actor whose owner died (fate sharing, no extra traffic, no false alarm while the
orchestrator is merely slow or suspended, as a heartbeat deadline would give). The CLI leads
its own session, so the actor's death alone would orphan it: the lifeline guardian, told of
the group at spawn, ends it the moment the actor process is gone, whatever killed it.

The actor is threaded (``max_concurrency``): a long-poll waits in one thread while pause,
stop or an overflow read are served by others. Imported only on the cluster path: ``ray``
is an optional extra.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster import node_wire
from meta_orchestrator.actors.cluster.cluster_auth import secret_paths, without_ray
from meta_orchestrator.actors.processes.lifeline import Lifeline
from meta_orchestrator.actors.processes.line_buffer import SequencedLines
from meta_orchestrator.actors.cluster.node_bases import NodeBases
from meta_orchestrator.actors.cluster.node_wire import HostEnd, LineBatch, NodeSample, RunStarted
from meta_orchestrator.actors.processes.line_splitter import iter_line_batches
from meta_orchestrator.actors.processes.process_host import HostedProcess, ProcessHost, SpawnCaps
from meta_orchestrator.actors.processes.folder_writes import newest_write
from meta_orchestrator.actors.processes.process_tree import TreeReader
from meta_orchestrator.actors.cluster.remote_checkout import NodeCheckout, RemoteWork
from meta_orchestrator.actors.sandbox.bwrap import Confinement

log = logging.getLogger(__name__)

# Threads of one run's actor: the long-poll, a signal or stop, an overflow read, and spare.
HOST_CONCURRENCY = 4
STRAGGLER_GRACE_S = 1.0
# The run's folder is walked for its newest write at most this often (the stall limit's
# window is minutes; the driver cannot look at a folder on this node).
WRITES_WALK_S = 5.0


@dataclass(frozen=True)
class HostOptions:
    """How the node treats one run: the driver's settings, sent with the start."""

    max_line_bytes: int = 1_048_576  # longer lines go whole to a file on the node, read on demand
    buffer_bytes: int = 8 * 1_048_576  # lines held until the driver acknowledges them
    batch_bytes: int = 4 * 1_048_576  # at most this much per read_batch reply (a call costs ~1 ms)
    sample_interval_s: float = 0.5  # the process tree is read at most this often
    guard_grace_s: float = 5.0  # the lifeline's SIGTERM-to-SIGKILL grace
    caps: SpawnCaps | None = None


class RunHost:
    """One CLI run on this node: spawn, pump, buffer, signal, sample."""

    def __init__(self) -> None:
        self._proc: HostedProcess | None = None
        self._options = HostOptions()
        self._buffer = SequencedLines(self._options.buffer_bytes)
        self._end: HostEnd | None = None
        self._scratch: Path | None = None
        self._overflows = itertools.count(1)  # next() is atomic: both pumps may spill
        self._tree: TreeReader | None = None
        self._sample: NodeSample | None = None
        self._sample_sent: NodeSample | None = None
        self._sample_lock = threading.Lock()
        self._lifeline: Lifeline | None = None
        self._checkout: NodeCheckout | None = None
        self._folder: str | None = None
        self._newest_write: tuple[float, float | None] | None = None  # (walked at, newest mtime)

    # -- what the driver calls: each reply is plain bytes (node_wire), never a pickled object ----

    def start(
        self,
        launch: Launch,
        confinement: Confinement | None,
        options: HostOptions,
        work: RemoteWork | None = None,
        bundle: bytes | None = None,
    ) -> bytes:
        """Start the CLI as the local host would; with ``work``, in a checkout made from
        ``bundle`` (Ray hands the object store's bytes). The reply: ``RunStarted``, or what
        ``ProcessHost.spawn`` or the checkout raised."""
        try:
            return node_wire.started(self._start(launch, confinement, options, work, bundle))
        except Exception as exc:  # noqa: BLE001 - the driver gets it as data
            return node_wire.failure(exc)

    def bases(self) -> bytes:
        """The starts this node keeps (newest first): a bundle for it may leave out what they hold."""
        try:
            return node_wire.commits(NodeBases().known())
        except Exception as exc:  # noqa: BLE001 - the driver gets it as data
            return node_wire.failure(exc)

    def read_batch(self, after_seq: int, timeout_s: float, ack_seq: int | None = None) -> bytes:
        """The driver holds the lines up to ``after_seq`` and has recorded those up to
        ``ack_seq`` (default: all it holds; these are dropped); return the lines after
        ``after_seq`` as soon as there are some (or the end), else after ``timeout_s``."""
        taken = self._buffer.take(after_seq, timeout_s, self._options.batch_bytes, ack_seq)
        batch = LineBatch(
            chunks=taken.chunks,
            last_seq=taken.last_seq,
            end=self._end if taken.ended else None,
            sample=self._fresh_sample(),
            buffered_peak=self._buffer.peak_bytes,
        )
        return node_wire.batch(batch)

    def acknowledge(self, seq: int) -> None:
        """The driver has recorded every line up to ``seq`` (between two long-polls: room for
        a flood the driver is still writing)."""
        self._buffer.acknowledge(seq)

    def signal_group(self, sig: int) -> bytes:
        """``HostedProcess.signal_group`` on this node; False when the CLI is gone."""
        return node_wire.frame(self._proc is not None and self._proc.signal_group(sig))

    def terminate(self, grace_s: float) -> bytes:
        """SIGCONT, SIGTERM, SIGKILL after ``grace_s``, as the local host stops a CLI."""
        if self._proc is not None and not self._proc.exited:
            self._proc.terminate(grace_s)
        return node_wire.frame(None)

    def read_overflow(self, path: str, offset: int, size: int) -> bytes:
        """A piece of an over-long line kept in this run's scratch folder."""
        try:
            with open(self._own_file(path), "rb") as f:
                f.seek(offset)
                return node_wire.frame(None, f.read(size))
        except OSError as exc:
            return node_wire.failure(exc)

    def discard_overflow(self, path: str) -> None:
        """The driver has its copy of this over-long line."""
        self._own_file(path).unlink(missing_ok=True)

    def _start(
        self,
        launch: Launch,
        confinement: Confinement | None,
        options: HostOptions,
        work: RemoteWork | None,
        bundle: bytes | None,
    ) -> RunStarted:
        if self._proc is not None:
            raise RuntimeError("this host already runs a CLI")
        self._options = options
        self._buffer = SequencedLines(options.buffer_bytes)
        self._scratch = Path(tempfile.mkdtemp(prefix="orchestrate-run-"))  # 0700
        # The guardian first: from the spawn on, the group is never without one (and the
        # checkout, in the scratch folder, goes with the run whatever ends it).
        self._lifeline = Lifeline(self._scratch, options.guard_grace_s)
        if work is not None:
            self._checkout = NodeCheckout(work, self._scratch, NodeBases())
            self._checkout.make(bundle or b"")
            launch, confinement = self._checkout.rewrite(launch, confinement)
        launch, confinement = _without_cluster_secrets(launch, confinement)
        proc = ProcessHost(options.caps).spawn(launch, confinement)
        self._lifeline.watch(proc.pgid)
        self._proc = proc
        self._tree = TreeReader(proc.pid)
        self._folder = str(launch.cwd)
        pumps = [self._thread(f"pump-{name}", self._pump, name) for name in ("stdout", "stderr")]
        self._thread("reaper", self._reap, pumps)
        context = ray.get_runtime_context()
        return RunStarted(
            pid=proc.pid,
            pgid=proc.pgid,
            sandboxed=proc.sandboxed,
            node_id=context.get_node_id(),
            node_ip=ray.util.get_node_ip_address(),
            hostname=socket.gethostname(),
            host_pid=os.getpid(),
            workdir=str(self._checkout.tree) if self._checkout is not None else None,
        )

    # -- threads: they move bytes into the buffer; the Ray calls read it -------------------------

    def _thread(self, name: str, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _pump(self, stream: str) -> None:
        assert self._proc is not None
        pipe = self._proc.stdout if stream == "stdout" else self._proc.stderr
        try:
            for batch in iter_line_batches(pipe.fileno(), self._options.max_line_bytes, self._overflow_file):
                if not self._buffer.put(stream, batch):
                    return
        except (OSError, ValueError) as exc:
            log.warning("%s pipe: %s", stream, exc)
        finally:
            pipe.close()

    def _reap(self, pumps: list[threading.Thread]) -> None:
        assert self._proc is not None
        self._proc.wait_exit_unreaped()
        stragglers = self._proc.end_stragglers(STRAGGLER_GRACE_S)
        for pump in pumps:
            pump.join()  # every line is in the buffer before the end is
        returncode = self._proc.reap()
        checkout = self._checkout
        work = checkout.collect() if checkout is not None and checkout.work.bring_back else None
        self._end = HostEnd(returncode=returncode, stragglers=stragglers, work=work)
        self._buffer.finish()

    def _overflow_file(self) -> Path:
        assert self._scratch is not None
        return self._scratch / f"line-{next(self._overflows)}.txt"

    def _own_file(self, path: str) -> Path:
        """``path`` if it is a file of this run's scratch folder (the driver names no other)."""
        resolved = Path(path).resolve()
        if self._scratch is None or resolved.parent != self._scratch.resolve():
            raise PermissionError(f"{path} is not a file of this run")
        return resolved

    def _fresh_sample(self) -> NodeSample | None:
        """A new sample when the last is older than the interval; each is sent once."""
        with self._sample_lock:
            now = time.time()
            last = self._sample
            if self._tree is not None and (last is None or now - last.taken_at >= self._options.sample_interval_s):
                figures = self._tree.read()
                if figures is not None:
                    self._sample = NodeSample(taken_at=now, figures=figures, written_s=self._written_s(now))
            if self._sample is self._sample_sent:
                return None
            self._sample_sent = self._sample
            return self._sample

    def _written_s(self, now: float) -> float | None:
        """Seconds since the newest write in the run's folder, walked at most every WRITES_WALK_S."""
        if self._folder is None:
            return None
        if self._newest_write is None or now - self._newest_write[0] >= WRITES_WALK_S:
            self._newest_write = (now, newest_write(self._folder, until=now))
        newest = self._newest_write[1]
        return None if newest is None else max(0.0, now - newest)


def _without_cluster_secrets(launch: Launch, confinement: Confinement | None) -> tuple[Launch, Confinement | None]:
    """The CLI gets nothing of Ray: no ``RAY_*`` variable, and in its sandbox no token file
    and no folder of this node's Ray (its session: addresses, sockets, logs)."""
    launch = dataclasses.replace(launch, env=without_ray(launch.env))  # the prompt on stdin kept
    if confinement is None:
        return launch, None
    hidden = [*secret_paths(os.environ, Path.home()), *_ray_folders()]
    return launch, dataclasses.replace(confinement, hidden=(*confinement.hidden, *hidden))


def _ray_folders() -> list[str]:
    """This node's Ray temp folder (its sessions live in it), as this worker knows it."""
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        return [node.get_temp_dir_path()] if node is not None else []
    except Exception:  # noqa: BLE001 - a private API: without it /tmp's own hiding remains
        return []


# No CPU is reserved (the slot is the unit; the CLI's load is the node's business) and no
# restart (a restarted actor would have lost its CLI: the run is lost instead). Where it may
# run is given per run: ``RemoteRunHost.options(resources={"agent_slot": 1})``.
# ray.remote's overloads list no actor options (max_concurrency, max_restarts): Ray accepts them.
RemoteRunHost = ray.remote(  # type: ignore[call-overload]
    num_cpus=0, max_concurrency=HOST_CONCURRENCY, max_restarts=0, max_task_retries=0
)(RunHost)

__all__ = ["HostEnd", "HostOptions", "LineBatch", "NodeSample", "RemoteRunHost", "RunHost", "RunStarted"]
