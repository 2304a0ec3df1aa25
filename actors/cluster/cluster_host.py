"""The driver's side of remote CLI runs: a process host whose CLIs run on cluster nodes.

``ClusterProcessHost.spawn(launch, confinement)`` returns at once with a ``RemoteProcess``
that offers what the worker uses of ``HostedProcess`` (``line_batches``, the exit waits,
``reap``, ``signal_group``, ``terminate``), so a worker can be given either host. Behind it,
one Ray actor per run (``remote_host.RunHost``) is placed on a node with a free
``agent_slot``; one reader thread per run keeps exactly one ``read_batch`` long-poll
outstanding on it and hands the chunks on, in order, to one bounded queue per stream.

Memory stays bounded end to end: a consumer that falls behind fills its queue, the reader
stops asking, the node's buffer fills and the CLI waits on its pipe. The node keeps every line
until the consumer says it is recorded (``acknowledge``: the worker calls it once the lines
are in its event file); each ``read_batch`` carries that mark, and a flood's mark goes ahead
on its own when it has moved far, so the node's buffer does not wait on the next long-poll.
A run that cannot be placed now says so (``waiting_for_slot``) and waits; a host or node that
dies ends the run as ``node_lost``. With ``RemoteWork`` the run works in a checkout of its own
on its node; its changes come back with its end (``work_back``).

The driver joins with Ray's token authentication (``connect``) and reads every reply of a
node as the bytes it is (``plain_get``, ``node_wire``): a node cannot make it unpickle
anything, neither a reply nor an error nobody read.

Every stream's ``line_batches`` must be consumed (as the worker's two pumps do): a stream
nobody reads would fill its queue and hold the other back.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray

# Ray's compiled core and its generated protobuf modules carry no type information.
from ray._raylet import (  # type: ignore[attr-defined]
    AuthenticationMode,
    AuthenticationTokenLoader,
    Config,
    get_authentication_mode,
)
from ray.core.generated.common_pb2 import ErrorType  # type: ignore[attr-defined]
from ray.exceptions import GetTimeoutError, RayError

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster import node_wire
from meta_orchestrator.actors.cluster.bundles import BundleError
from meta_orchestrator.actors.cluster.cluster_auth import AUTH_MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV
from meta_orchestrator.actors.processes.line_buffer import SequencedLines, unpack
from meta_orchestrator.actors.cluster.node_wire import LineBatch, NodeFailure, NodeReplyError, NodeSample, RunStarted
from meta_orchestrator.actors.processes.line_splitter import RawLine
from meta_orchestrator.actors.processes.process_host import SpawnCaps
from meta_orchestrator.actors.cluster.remote_checkout import RemoteWork, WorkBack
from meta_orchestrator.actors.cluster.remote_host import HostOptions, RemoteRunHost
from meta_orchestrator.actors.files.session_files import open_private
from meta_orchestrator.actors.sandbox.bwrap import Confinement
from meta_orchestrator.messages.cluster import RemoteRunChanged, RemoteRunEnd, RemoteRunPhase

log = logging.getLogger(__name__)

AGENT_SLOT = "agent_slot"  # the custom resource a node offers, one per concurrent run
QUEUE_BYTES = 2 * 1_048_576  # lines a stream holds on the driver (bounded: 64 runs may flood at once)
HANDOFF_BYTES = 1_048_576  # at most this much in one batch handed to a consumer
CALL_TIMEOUT_S = 30.0  # a signal or a piece of an over-long line, beyond any grace period
OVERFLOW_PIECE = 1_048_576
_WAIT_STEP_S = 0.25  # how often a waiting reader looks up from Ray to see if it was closed
ACK_AHEAD_BYTES = 1_048_576  # recorded but not yet acknowledged: past this, the mark goes on its own

OnChange = Callable[[RemoteRunChanged], None]


class _Closed(Exception):
    """The driver abandoned the run (close); the reader stops."""


class NodeReplyRefused(RayError):
    """A node's reply was not plain bytes (Ray would have unpickled it): the node is not trusted."""


class HostCallFailed(RayError):
    """The host's call raised on its node; its error is not read here (it would be a pickle)."""


class NodeGone(RayError):
    """Ray reports the host, its worker or its node dead or unreachable (its own error type)."""


def connect(address: str, token_file: Path | None = None, namespace: str = "meta-orchestrator") -> bool:
    """Join the Ray cluster at ``address`` (Ray's own forms: ``host:port``, ``auto``) as its
    driver, with token authentication: the token is read from ``token_file`` (its path goes to
    Ray, not the token) or else from ``RAY_AUTH_TOKEN``. No dashboard of our own, no usage
    statistics, the nodes' logs left on the nodes. False when this process is a driver
    already (then that connection is used)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return False
    os.environ[AUTH_MODE_ENV] = "token"
    if token_file is not None:
        os.environ[TOKEN_PATH_ENV] = str(token_file)
        os.environ.pop(TOKEN_ENV, None)  # Ray would take it before the file
    # Ray's core read RAY_AUTH_MODE when it was imported, and caches the token it loaded:
    # both are read again now (Ray 2.58's own test helpers do the same).
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise RuntimeError("Ray did not turn token authentication on (RAY_AUTH_MODE=token)")
    ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    # Ray reports an error reply nobody read (a dropped ``acknowledge``, say) by unpickling it
    # first: the report is made here instead, from the count alone.
    ray._private.worker.global_worker.raise_errors = _unread_errors  # type: ignore[method-assign]  # on purpose
    return True


unread_error_count = 0  # error replies of nodes that nobody read, and that were not unpickled


def _unread_errors(serialized_objects: list[Any], object_refs: list[Any]) -> None:
    global unread_error_count
    unread_error_count += len(serialized_objects)
    log.warning("%d error replies of cluster nodes were never read (and not unpickled)", len(serialized_objects))


def plain_get(ref: Any, timeout: float | None = None) -> bytes | memoryview:
    """The bytes a node's host returned, read without letting Ray deserialize anything.

    ``ray.get`` rebuilds an object as its metadata (written by the node) says, which for
    anything but raw bytes means unpickling; here only ``RAW`` is taken. Ray's own errors
    (the actor or its node died, the call raised) become ``RayError``s named by their type
    alone: their payloads are pickles or carry one.

    Raises:
        GetTimeoutError: nothing came within ``timeout`` seconds.
        NodeReplyRefused, HostCallFailed, NodeGone: see those.
    """
    timeout_ms = -1 if timeout is None else max(0, int(timeout * 1000))
    core = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]  # set at ray.init, untyped
    ((data, metadata, _),) = core.get_objects([ref], timeout_ms)
    kind = bytes(metadata or b"").split(b",")[0]
    if kind == b"RAW":
        return b"" if data is None else memoryview(data)  # no copy: node_wire slices it
    if not kind.isdigit():
        raise NodeReplyRefused(f"a node replied with a {kind[:20]!r} object, not plain bytes: refused")
    name = ErrorType.Name(int(kind)) if int(kind) in ErrorType.values() else f"error type {int(kind)}"
    if name == "TASK_EXECUTION_EXCEPTION":
        raise HostCallFailed("the run's host raised (see the node's logs)")
    raise NodeGone(f"Ray reports {name}")


def disconnect() -> None:
    """Leave the cluster (the runs this driver owns go with it)."""
    if ray.is_initialized():
        ray.shutdown()


def offered(resource: str) -> float:
    """How much of ``resource`` the cluster's live nodes offer in all (busy or not)."""
    return float(ray.cluster_resources().get(resource, 0))


class RemoteProcess:
    """A CLI running (or about to) on a cluster node, seen from the driver."""

    def __init__(
        self,
        actor: Any,
        launch: Launch,
        confinement: Confinement | None,
        options: HostOptions,
        resources: dict[str, float],
        poll_s: float,
        notice_s: float,
        queue_bytes: int,
        on_change: OnChange | None,
        work: RemoteWork | None = None,
        bundle: Any = None,
        hold_until_recorded: bool = False,
    ) -> None:
        self.pid: int | None = None  # on its node, once running
        self.pgid: int | None = None
        self.sandboxed = confinement is not None
        self.node_id: str | None = None
        self.node_ip: str | None = None
        self.hostname: str | None = None
        self.workdir: str | None = None  # the node's checkout, with RemoteWork
        self.work_back: WorkBack | None = None  # what its checkout gave back at the end
        self.launch = launch  # as the driver built it (the node's paths may differ)
        self.phase: RemoteRunPhase = "placing"
        self.end: RemoteRunEnd | None = None
        self.spawn_error: OSError | None = None  # what the node's spawn raised
        self.latest_sample: NodeSample | None = None
        self.buffered_peak = 0
        self.lines_received = 0
        self.batches_received = 0  # read_batch replies: a flood should need few
        self._actor = actor
        self._resources = resources
        self._poll_s = poll_s
        self._notice_s = notice_s
        self._on_change = on_change
        # One bounded buffer per stream, as on the node: the reader waits while one is full.
        self._streams = {name: SequencedLines(queue_bytes) for name in ("stdout", "stderr")}
        self._drained: set[str] = set()
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._exited = threading.Event()
        self._closing = threading.Event()
        self._cancelled = False
        self._released = False
        # What the consumers recorded, as the node's seq: (stream, last seq, that stream's
        # lines received up to it, its bytes) per chunk received and not yet acknowledged.
        self._unrecorded: collections.deque[tuple[str, int, int, int]] = collections.deque()
        self._received = {name: 0 for name in self._streams}
        self._recorded = {name: 0 for name in self._streams}
        self.ack_seq = 0  # every line up to it is recorded: the node may drop it
        self._hold = hold_until_recorded  # False: a line is dropped once the driver holds it
        self._ack_sent = 0
        self._ack_bytes = 0  # recorded since the mark last went to the node
        self.bundle_bytes: int | None = None  # the start's bundle as sent (thin when the node had a base)
        self.bundle_bases = 0  # the starts the node had kept when it was made
        self._asked = time.monotonic()
        self._told = False
        if callable(bundle):  # made once placed, against what that node has: the node is asked first
            self._bundle_for: Callable[[tuple[str, ...]], bytes] | None = bundle
            self._start_args = (launch, confinement, options, work)
            self._bases_ref = actor.bases.remote()
            self._start_ref = None
        else:
            self._bundle_for = None
            self._start_ref = actor.start.remote(launch, confinement, options, work, bundle)
        self._reader = threading.Thread(target=self._run, name="remote-run-reader", daemon=True)
        self._reader.start()

    # -- what the worker uses of HostedProcess ---------------------------------------------------

    def line_batches(
        self, stream: str, max_line_bytes: int, overflow_file: Callable[[], Path]
    ) -> Iterator[list[RawLine]]:
        """The lines of ``stream`` in batches, in order, until the run ends. The node applies
        the host's ``max_line_bytes`` (it cut the lines already); an over-long line is copied
        whole from the node into the file ``overflow_file()`` names, as locally."""
        pending = self._streams[stream]
        after = 0
        try:
            while not pending.closed:
                taken = pending.take(after, _WAIT_STEP_S, HANDOFF_BYTES)
                after = taken.last_seq
                lines: list[RawLine] = []
                for _, _, count, packed, extras in taken.chunks:
                    chunk = unpack(count, packed, extras)
                    if extras:  # over-long lines: their whole text is still on the node
                        chunk = [self._fetch_overflow(line, overflow_file) if line[2] else line for line in chunk]
                    lines.extend(chunk)
                if lines:
                    yield lines
                if taken.ended:
                    return
        finally:
            with self._lock:
                self._drained.add(stream)
                done = len(self._drained) == len(self._streams) and self._exited.is_set()
            if done:
                self._release()  # every line handed on: the slot can go to another run

    def wait_exit_unreaped(self) -> None:
        """Block until the run has ended (its lines all queued, its end known)."""
        self._exited.wait()

    def wait_exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the end; True if it came."""
        return self._exited.wait(timeout)

    @property
    def exited(self) -> bool:
        """True once the run has ended, whichever way."""
        return self._exited.is_set()

    def end_stragglers(self, grace_s: float = 1.0) -> int:
        """The node's host ended what the CLI left in its group; how many it found."""
        return self.end.stragglers if self.end is not None else 0

    def group_members(self) -> list[Any]:
        """None on this machine: the group lives on its node."""
        return []

    def reap(self) -> int:
        """The exit status once ended; a lost or never started run counts as killed
        (``end.kind`` says which)."""
        self._exited.wait()
        with self._lock:
            drained = len(self._drained) == len(self._streams)
        if drained:  # else the last stream's reader frees the slot (it may still need the host)
            self._release()
        if self.end is not None and self.end.returncode is not None:
            return self.end.returncode
        return -signal.SIGKILL

    def signal_group(self, sig: int) -> bool:
        """Signal the CLI's group on its node; False when it is not running (yet or any more)."""
        if self.phase != "running" or self._exited.is_set():
            return False
        try:
            return node_wire.read_flag(plain_get(self._actor.signal_group.remote(sig), CALL_TIMEOUT_S))
        except (RayError, NodeFailure, NodeReplyError) as exc:
            log.warning("signal %s to the remote run on %s failed: %s", sig, self.node_ip, exc)
            return False

    def terminate(self, grace_s: float) -> None:
        """Stop the CLI as locally (SIGCONT, SIGTERM, SIGKILL after grace); a run still
        waiting for a slot is cancelled instead."""
        if self._exited.is_set():
            return
        if self.phase in ("placing", "waiting_for_slot"):
            self._cancelled = True
            self._release()  # the pending placement fails, and the reader ends the run
            return
        try:
            node_wire.read_nothing(plain_get(self._actor.terminate.remote(grace_s), grace_s + CALL_TIMEOUT_S))
        except (RayError, NodeFailure, NodeReplyError) as exc:  # lost meanwhile: the reader reports it
            log.warning("stopping the remote run on %s failed: %s", self.node_ip, exc)

    def acknowledge(self, stream: str, count: int) -> None:
        """The consumer has recorded the next ``count`` lines of ``stream``: the node may drop
        them once every line before them is recorded too."""
        if not self._hold:
            return
        with self._lock:
            self._recorded[stream] += count
            while self._unrecorded:
                name, last, received, size = self._unrecorded[0]
                if self._recorded[name] < received:
                    break
                self._unrecorded.popleft()
                self.ack_seq = last
                self._ack_bytes += size
            eager = self._ack_bytes >= ACK_AHEAD_BYTES and self.ack_seq > self._ack_sent and not self._exited.is_set()
            if eager:
                self._ack_sent, self._ack_bytes = self.ack_seq, 0
            mark = self._ack_sent
        if eager:
            with contextlib.suppress(RayError):
                self._actor.acknowledge.remote(mark)  # not waited for: the next poll carries it too

    # -- the driver's own -----------------------------------------------------------------------------

    def wait_started(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the CLI runs on its node or the run ended."""
        return self._started.wait(timeout) or self._exited.is_set()

    def close(self) -> None:
        """Abandon the run: its host is killed, and its lifeline ends the CLI's group."""
        self._closing.set()
        self._cancelled = True
        for pending in self._streams.values():
            pending.close()  # a reader waiting for room, and the consumers, stop
        self._release()

    # -- the reader thread --------------------------------------------------------------------------

    def _run(self) -> None:
        end = RemoteRunEnd(kind="node_lost", detail="the reader stopped unexpectedly")
        try:
            self._on_started(self._place())
            end = self._read_all()
        except _Closed:
            end = RemoteRunEnd(kind="cancelled", detail="the driver closed the run")
        except BundleError as exc:
            end = RemoteRunEnd(kind="spawn_failed", detail=f"the run's folder could not be sent: {exc}")
        except (RayError, NodeFailure, NodeReplyError) as exc:
            end = self._end_by(exc)
        finally:
            self.end = end
            for pending in self._streams.values():
                if self._closing.is_set():
                    pending.close()
                else:
                    pending.finish()  # the consumers take what is left, then stop
            self._change("ended", detail=end.detail, end=end)  # told before anyone sees the end
            self._exited.set()
            if self._closing.is_set():
                self._release()

    def _end_by(self, exc: Exception) -> RemoteRunEnd:
        """How the run ended when a call to its host failed with ``exc``."""
        if isinstance(exc, (NodeFailure, HostCallFailed)):  # the host's own code: before the start, the spawn
            if self._started.is_set():
                return RemoteRunEnd(kind="node_lost", detail=f"the run's host failed: {_first_line(exc)}")
            self.spawn_error = exc.as_os_error() if isinstance(exc, NodeFailure) else None
            return RemoteRunEnd(kind="spawn_failed", detail=str(exc))
        if isinstance(exc, NodeReplyError):
            return RemoteRunEnd(kind="node_lost", detail=f"the node's reply was refused: {_first_line(exc)}")
        if self._cancelled:
            return RemoteRunEnd(kind="cancelled", detail="stopped before it ended on its node")
        return RemoteRunEnd(kind="node_lost", detail=f"{type(exc).__name__}: {_first_line(exc)}")

    def _place(self) -> RunStarted:
        """Wait for the host to be placed and the CLI started; with a bundle to make, made
        once the node has said which starts it keeps (the bundle leaves out what they hold)."""
        if self._start_ref is None:
            assert self._bundle_for is not None
            bases = node_wire.read_commits(self._placed(self._bases_ref))
            bundle = self._bundle_for(bases)
            self.bundle_bytes, self.bundle_bases = len(bundle), len(bases)
            self._start_ref = self._actor.start.remote(*self._start_args, ray.put(bundle))
        return node_wire.read_started(self._placed(self._start_ref))

    def _placed(self, ref: Any) -> bytes | memoryview:
        """The reply of a call that waits for the host's placement; said once when no slot is free."""
        while True:
            try:
                return plain_get(ref, _WAIT_STEP_S)
            except GetTimeoutError:
                if self._closing.is_set():
                    raise _Closed from None
                if not self._told and time.monotonic() - self._asked >= self._notice_s:
                    reason = _why_unplaced(self._resources)
                    if reason is not None:
                        self._told = True
                        self._change("waiting_for_slot", detail=reason)

    def _on_started(self, started: RunStarted) -> None:
        self.pid, self.pgid = started.pid, started.pgid
        self.node_id, self.node_ip = started.node_id, started.node_ip
        self.hostname, self.workdir = started.hostname, started.workdir
        self._change("running", detail=f"pid {started.pid} on {started.hostname} ({started.node_ip})")
        self._started.set()

    def _read_all(self) -> RemoteRunEnd:
        expected = 1
        ref = self._actor.read_batch.remote(0, self._poll_s, 0)
        while True:
            batch: LineBatch = node_wire.read_batch(self._get(ref))
            self.batches_received += 1
            if batch.end is None:  # ask again at once (with what is recorded), then hand these on
                with self._lock:
                    self._ack_sent, self._ack_bytes = self.ack_seq if self._hold else batch.last_seq, 0
                ref = self._actor.read_batch.remote(batch.last_seq, self._poll_s, self._ack_sent)
            if batch.sample is not None:
                self.latest_sample = batch.sample
            self.buffered_peak = batch.buffered_peak
            for stream, first, count, packed, extras in batch.chunks:
                if first != expected:  # the host numbers without gaps: this would be a bug
                    log.error("remote run on %s: expected line %d, got %d", self.node_ip, expected, first)
                expected = first + count
                self.lines_received += count
                if self._hold:
                    with self._lock:
                        self._received[stream] += count
                        self._unrecorded.append((stream, first + count - 1, self._received[stream], len(packed)))
                self._streams[stream].put_packed(stream, count, packed, extras)  # waits while behind
            if batch.end is not None:
                end = batch.end
                self.work_back = end.work
                return RemoteRunEnd(
                    kind="exited",
                    returncode=end.returncode,
                    stragglers=end.stragglers,
                    detail=f"exit status {end.returncode}",
                )

    def _get(self, ref: Any) -> bytes | memoryview:
        while True:
            try:
                return plain_get(ref, _WAIT_STEP_S)
            except GetTimeoutError:
                if self._closing.is_set():
                    raise _Closed from None

    def _fetch_overflow(self, line: RawLine, overflow_file: Callable[[], Path]) -> RawLine:
        head, total, remote_path = line
        assert remote_path is not None
        local = overflow_file()
        try:
            with open_private(local, binary=True, exclusive=True) as out:
                offset = 0
                while piece := node_wire.read_piece(
                    plain_get(self._actor.read_overflow.remote(remote_path, offset, OVERFLOW_PIECE), CALL_TIMEOUT_S)
                ):
                    out.write(piece)
                    offset += len(piece)
            self._actor.discard_overflow.remote(remote_path)
        except (RayError, NodeFailure, NodeReplyError) as exc:
            log.warning("over-long line of the remote run on %s lost: %s", self.node_ip, _first_line(exc))
            return head, total, None
        return head, total, str(local)

    def _change(self, phase: RemoteRunPhase, detail: str = "", end: RemoteRunEnd | None = None) -> None:
        self.phase = phase
        if self._on_change is None:
            return
        fact = RemoteRunChanged(
            phase=phase,
            pid=self.pid,
            node_id=self.node_id,
            node_ip=self.node_ip,
            hostname=self.hostname,
            detail=detail,
            end=end,
        )
        try:
            self._on_change(fact)
        except Exception:  # noqa: BLE001 - a listener's bug must not end the run
            log.exception("on_change callback failed")

    def _release(self) -> None:
        """Kill the run's host once (its slot is free again; its lifeline ends any group)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        with contextlib.suppress(RayError, ValueError):
            ray.kill(self._actor, no_restart=True)


class ClusterProcessHost:
    """Starts CLIs on cluster nodes that offer a free agent slot (the driver must be
    connected: ``connect``)."""

    remote = True  # its CLIs run on other machines: their folders travel by git (remote_workdir)

    def __init__(
        self,
        caps: SpawnCaps | None = None,
        resources: dict[str, float] | None = None,
        options: HostOptions | None = None,
        poll_s: float = 1.0,
        notice_s: float = 1.0,
        queue_bytes: int = QUEUE_BYTES,
        on_change: OnChange | None = None,
        hold_until_recorded: bool = False,
        spread: bool = False,
    ) -> None:
        """``hold_until_recorded``: the node keeps each line until the consumer says it is
        recorded (``RemoteProcess.acknowledge``, as the worker does); False: until the driver
        holds it (for a consumer that does not acknowledge). ``spread``: each run goes to the
        node with the fewest of this host's runs that has a free slot (Ray's SPREAD), so an
        agent's parallel runs use the cluster's nodes rather than fill one."""
        self._hold = hold_until_recorded
        self._strategy = "SPREAD" if spread else "DEFAULT"
        self._queue_bytes = queue_bytes
        self._resources = dict(resources or {AGENT_SLOT: 1})
        base = options or HostOptions()
        self._options = base if caps is None else dataclasses.replace(base, caps=caps)
        self._poll_s = poll_s
        self._notice_s = notice_s
        self._on_change = on_change
        self._started: weakref.WeakSet[RemoteProcess] = weakref.WeakSet()
        self._lock = threading.Lock()

    def spawn(
        self,
        launch: Launch,
        confinement: Confinement | None = None,
        on_change: OnChange | None = None,
        work: RemoteWork | None = None,
        bundle: bytes | Callable[[tuple[str, ...]], bytes] | None = None,
    ) -> RemoteProcess:
        """Ask for a slot and start the CLI there; returns at once (the run is ``placing``).
        With ``work``, the node checks ``bundle`` out first and the CLI works there: given as
        a function of the starts the node keeps, it is made once the run is placed, without
        what they hold. Where the node cannot start it, the run ends ``spawn_failed``
        (``spawn_error``: what it raised)."""
        actor = RemoteRunHost.options(resources=self._resources, scheduling_strategy=self._strategy).remote()
        # The object store carries it (a function is called once the node is known).
        bundle_ref = ray.put(bundle) if isinstance(bundle, bytes) else bundle
        process = RemoteProcess(
            actor,
            launch,
            confinement,
            self._options,
            self._resources,
            self._poll_s,
            self._notice_s,
            self._queue_bytes,
            on_change or self._on_change,
            work,
            bundle_ref,
            self._hold,
        )
        with self._lock:
            self._started.add(process)
        return process

    def kill_all(self) -> int:
        """SIGKILL every remote CLI this host started that still runs (no grace), cancel
        those still waiting for a slot. Returns how many were signalled or cancelled."""
        with self._lock:
            live = [p for p in self._started if not p.exited]
        count = 0
        for process in live:
            if process.phase == "running":
                count += process.signal_group(signal.SIGKILL)
            else:
                process.terminate(0.0)
                count += 1
        return count


def _why_unplaced(resources: dict[str, float]) -> str | None:
    """Why a run asking for ``resources`` cannot be placed now, or None when it could be."""
    total = ray.cluster_resources()
    free = ray.available_resources()
    for name, amount in resources.items():
        if total.get(name, 0) < amount:
            return f"no node of the cluster offers {name}"
        if free.get(name, 0) < amount:
            return f"every {name} of the cluster is busy ({total[name]:g} in all)"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = [
    "AGENT_SLOT",
    "ClusterProcessHost",
    "HostCallFailed",
    "NodeGone",
    "NodeReplyRefused",
    "RemoteProcess",
    "connect",
    "disconnect",
    "offered",
    "plain_get",
]
