"""A worker's reading of its CLI: at most ``IN_FLIGHT_BATCHES`` reads told and not recorded
(then the CLI waits on its pipe), every line in order, the exit told after the last line, and
what is read once the actor stops kept for it."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pykka

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.processes.process_host import ProcessHost, monotonic
from meta_orchestrator.actors.processes.run_clock import RunClock
from meta_orchestrator.actors.processes.run_threads import IN_FLIGHT_BATCHES, RunThreads
from meta_orchestrator.messages.worker import LinesRead, ProcessEnded
from tests.conftest import pipe_nearly_full, wait_for

FLOOD = "import sys\nfor i in range(int(sys.argv[1])): print('line', i)\n"


class Told:
    """What the actor was told, shared with the test."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.ended = threading.Event()


class GatedActor(pykka.ThreadingActor):
    """Records what it is told, each read only once ``gate`` is open, then says so."""

    def __init__(self, gate: threading.Event, told: Told) -> None:
        super().__init__()
        self.gate = gate
        self.threads: RunThreads | None = None
        self.told = told.messages
        self.ended = told.ended

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RunThreads):
            self.threads = message
            return None
        if isinstance(message, LinesRead):
            self.gate.wait()
            self.told.append(message)
            assert self.threads is not None
            self.threads.recorded(message)
        elif isinstance(message, ProcessEnded):
            self.told.append(message)
            self.ended.set()
        return None


def _watched(tmp_path: Path, lines: int) -> tuple[pykka.ActorRef[Any], Told, RunThreads, Any, threading.Event]:
    gate = threading.Event()
    actor = Told()
    ref = GatedActor.start(gate, actor)
    threads = RunThreads("claude", ref, 1 << 20, tmp_path / "overflow")
    ref.ask(threads)
    launch = Launch(argv=(sys.executable, "-c", FLOOD, str(lines)), env=dict(os.environ), cwd=tmp_path)
    proc = ProcessHost().spawn(launch)
    threads.watch(proc, 1, RunClock(started=monotonic()), 600, "claude")
    return ref, actor, threads, proc, gate


def _texts(messages: list[Any]) -> list[bytes]:
    return [data for m in messages if isinstance(m, LinesRead) and m.stream == "stdout" for data, _, _ in m.lines]


def test_a_slow_actor_holds_the_cli_at_its_pipe_and_every_line_comes_in_order(tmp_path: Path):
    ref, actor, threads, proc, gate = _watched(tmp_path, 300_000)
    stdout = proc.pipe("stdout").fileno()
    try:
        inbox = ref.actor_inbox  # type: ignore[attr-defined]
        # One read in the actor's hands, the rest of the allowance in its inbox, and the pipe
        # left unread: full, the CLI waiting on it.
        wait_for(
            lambda: inbox.qsize() + 1 == IN_FLIGHT_BATCHES and pipe_nearly_full(stdout),
            30,
            message="the allowance told and the CLI's pipe full",
        )
        assert inbox.qsize() + 1 == IN_FLIGHT_BATCHES  # no more than the allowance
        assert not proc.exited
        gate.set()
        assert actor.ended.wait(60)
        assert _texts(actor.messages) == [f"line {i}".encode() for i in range(300_000)]
        assert isinstance(actor.messages[-1], ProcessEnded) and actor.messages[-1].returncode == 0
    finally:
        gate.set()
        threads.closing.set()
        proc.terminate(1)
        threads.join(10)
        ref.stop()


def test_what_is_read_once_the_actor_stops_is_kept_for_it(tmp_path: Path):
    ref, actor, threads, proc, gate = _watched(tmp_path, 10_000_000)
    stdout = proc.pipe("stdout").fileno()
    try:
        wait_for(lambda: pipe_nearly_full(stdout), 30, message="the CLI's pipe to fill up")
        threads.closing.set()  # as a stopping worker does: then it ends the CLI and joins
        proc.terminate(5)
        late = threads.join(10)
        gate.set()
        ref.stop(timeout=30)  # after the reads told before it: each recorded
        lines = _texts(actor.messages) + _texts(late)
        assert len(late) >= 1  # the refused read at least, and what the pipe still held
        # None lost, none twice; the CLI was killed mid-write, so its last line may be cut short.
        assert lines[:-1] == [f"line {i}".encode() for i in range(len(lines) - 1)]
        assert f"line {len(lines) - 1}".encode().startswith(lines[-1])
        assert len(lines) > IN_FLIGHT_BATCHES
    finally:
        gate.set()
        proc.terminate(1)
        ref.stop()
