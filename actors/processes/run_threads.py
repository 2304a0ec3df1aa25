"""The threads a worker runs beside its actor. They move bytes and tell; they never touch its state.

A local CLI's stdout and stderr are read by the process's one pipe reader (``pipe_reader``), a
remote run's by two pumps of its own; either way each read's lines are told to the actor, at
most ``IN_FLIGHT_BATCHES`` not yet recorded (then the pipe is left unread and the CLI waits on
it). A reaper tells the exit once both streams are drained; a watchdog ends a run past its
wall-clock limit (paused time left out); an exit watch ends a CLI that printed its result and
lingers; a termination waits out the grace period off the actor's thread, so its inbox keeps
moving.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.processes.line_splitter import LineSplitter, RawLine
from meta_orchestrator.actors.processes.pipe_reader import FollowedPipe, PipeReader, shared_reader
from meta_orchestrator.actors.processes.process_host import HostedProcess, monotonic
from meta_orchestrator.actors.processes.run_clock import RunClock
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.messages.worker import LinesRead, ProcessEnded, StopWorker

log = logging.getLogger(__name__)

IN_FLIGHT_BATCHES = 64  # reads (of at most 64 KiB) not yet recorded; then the CLI waits on its pipe
AFTER_RESULT = "final result printed, but the CLI did not exit"
WATCHDOG_MIN_WAIT_S = 0.01  # a limit just short of reached is not waited for in a tight loop


class RunThreads:
    """One worker's threads, across its runs; ``closing`` tells them all the actor is stopping.

    Lines read once the actor no longer takes messages are kept for ``join`` to return.
    """

    def __init__(
        self,
        agent: str,
        actor_ref: pykka.ActorRef[Any],
        max_line_bytes: int,
        overflow_dir: Path,
        reader: PipeReader | None = None,
    ) -> None:
        self.closing = threading.Event()
        self._agent = agent
        self._actor_ref = actor_ref
        self._max_line_bytes = max_line_bytes
        self._overflow_dir = overflow_dir
        self._overflow_count = 0
        self._reader = reader or shared_reader()
        # Reads told and not yet recorded; the local pipes refused meanwhile (resumed as the
        # actor records); the reads that came too late for the actor. All under ``_flow``.
        self._flow = threading.Condition()
        self._in_flight = 0
        self._refused: list[FollowedPipe] = []
        self._late_lines: list[LinesRead] = []
        self._drained: list[threading.Event] = []  # the current run's streams, set at their end
        self._threads: list[threading.Thread] = []
        # A remote run's node keeps each line until it is recorded: told here, per run.
        self._acknowledge: dict[int, Callable[[str, int], None]] = {}

    def watch(self, proc: HostedProcess, run_id: int, clock: RunClock, limit_s: float, file_stem: str) -> None:
        """Reading of both streams, the reaper and the wall-clock watchdog of one run."""
        overflow = self._overflow_namer(run_id, file_stem)
        acknowledge = getattr(proc, "acknowledge", None)
        self._acknowledge = {run_id: acknowledge} if acknowledge is not None else {}
        self._drained = [threading.Event(), threading.Event()]
        for stream, drained in zip(("stdout", "stderr"), self._drained, strict=True):
            if isinstance(proc, HostedProcess):  # a local pipe
                followed = FollowedPipe(
                    name=f"{self._agent} {stream}",
                    pipe=proc.pipe(stream),
                    splitter=LineSplitter(self._max_line_bytes, overflow),
                    offer=functools.partial(self._offer, stream, run_id),
                    ended=drained.set,
                )
                self._reader.follow(followed)
            else:  # a remote run's lines come by calls that wait: a thread each
                self._spawn(f"{self._agent}-{stream}", self._pump, stream, proc, run_id, overflow, drained)
        self._spawn(f"{self._agent}-reaper", self._reap, proc, self._drained, run_id)
        self._spawn(f"{self._agent}-watchdog", self._watchdog, proc, clock, limit_s)

    def watch_exit(self, proc: HostedProcess, grace_s: float) -> None:
        """The CLI printed its final result: stop it if it has not exited within ``grace_s``."""
        self._spawn(f"{self._agent}-exit-watch", self._exit_watch, proc, grace_s)

    def terminate(self, proc: HostedProcess, grace_s: float) -> None:
        self._spawn(f"{self._agent}-terminate", proc.terminate, grace_s)

    def recorded(self, message: LinesRead) -> None:
        """The actor handled one ``LinesRead`` (its lines are on disk): another read may be
        told, and a remote run's node may drop them."""
        with self._flow:
            self._in_flight -= 1
            self._flow.notify()
            refused, self._refused = self._refused, []
        for followed in refused:
            self._reader.resume(followed)
        acknowledge = self._acknowledge.get(message.run_id)
        if acknowledge is not None:
            acknowledge(message.stream, len(message.lines))

    def join(self, timeout: float) -> list[LinesRead]:
        """Wait for both streams' ends and every thread (after ``closing`` is set); the lines
        read too late for the actor."""
        with self._flow:
            refused, self._refused = self._refused, []
        for followed in refused:  # closing: their lines are kept for the caller
            self._reader.resume(followed)
        deadline = monotonic() + timeout
        for drained in self._drained:
            drained.wait(max(0.0, deadline - monotonic()))
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - monotonic()))
        with self._flow:
            late, self._late_lines = self._late_lines, []
        return late

    # -- the threads' bodies -------------------------------------------------------------------

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _overflow_namer(self, run_id: int, file_stem: str) -> Callable[[], Path]:
        def next_file() -> Path:
            self._overflow_count += 1
            return private_dir(self._overflow_dir) / f"{file_stem}-run{run_id}-{self._overflow_count}.txt"

        return next_file

    def _offer(self, stream: str, run_id: int, lines: list[RawLine], followed: FollowedPipe) -> bool:
        """On the pipe reader's thread, which must not wait: tell one read's lines, or refuse
        them while the actor has enough in hand (``recorded`` resumes the pipe)."""
        message = LinesRead(stream=stream, run_id=run_id, lines=tuple(lines))
        with self._flow:
            if not self.closing.is_set():
                if self._in_flight >= IN_FLIGHT_BATCHES:
                    self._refused.append(followed)
                    return False
                if self._told(message):
                    return True
            self._late_lines.append(message)
            return True

    def _pump(
        self,
        stream: str,
        proc: HostedProcess,
        run_id: int,
        overflow_file: Callable[[], Path],
        drained: threading.Event,
    ) -> None:
        try:  # a remote run's lines: the process says how to read them
            for batch in proc.line_batches(stream, self._max_line_bytes, overflow_file):
                self._forward(LinesRead(stream=stream, run_id=run_id, lines=tuple(batch)))
        except (OSError, ValueError) as exc:
            log.warning("%s %s pipe: %s", self._agent, stream, exc)
        finally:
            drained.set()

    def _forward(self, message: LinesRead) -> None:
        with self._flow:
            while not self.closing.is_set():
                if self._in_flight < IN_FLIGHT_BATCHES:
                    if self._told(message):
                        return
                    break
                self._flow.wait(0.2)  # ``closing`` is set without the lock: looked at again
            self._late_lines.append(message)

    def _told(self, message: LinesRead) -> bool:
        """Tell the actor one read (``_flow`` held); False when it has stopped."""
        try:
            self._actor_ref.tell(message)
        except pykka.ActorDeadError:
            return False
        self._in_flight += 1
        return True

    def _reap(self, proc: HostedProcess, drained: list[threading.Event], run_id: int) -> None:
        proc.wait_exit_unreaped()
        stragglers = proc.end_stragglers()
        if stragglers:
            log.info("%s left %d process(es) in its group; ended them", self._agent, stragglers)
        for stream in drained:
            stream.wait()  # every line is told before the exit is
        if self.closing.is_set():
            return  # the stopping actor reaps and records the end itself
        returncode = proc.reap()
        self._tell(ProcessEnded(returncode=returncode, run_id=run_id))

    def _exit_watch(self, proc: HostedProcess, grace_s: float) -> None:
        if proc.wait_exited(grace_s) or self.closing.is_set():
            return
        self._tell(StopWorker(reason=AFTER_RESULT))

    def _watchdog(self, proc: HostedProcess, clock: RunClock, limit_s: float) -> None:
        # Asleep until the limit could be reached (paused time does not count: then it sleeps
        # again) or the CLI exits; a stopping actor ends the CLI, which wakes it.
        while not self.closing.is_set():
            left = limit_s - clock.run_s(monotonic())
            if left <= 0:
                self._tell(StopWorker(reason=f"wall-clock limit of {limit_s:g}s reached"))
                return
            if proc.wait_exited(max(left, WATCHDOG_MIN_WAIT_S)):
                return

    def _tell(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self._actor_ref.tell(message)


__all__ = ["AFTER_RESULT", "IN_FLIGHT_BATCHES", "RunThreads"]
