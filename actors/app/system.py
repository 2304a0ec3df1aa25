"""Run one session to its end: start it (``start_order.start``), wait, stop in reverse.

Ctrl-C, SIGTERM and a closed terminal are handled here; the start order is ``start_order``,
what a session is asked for and its preflight ``prepare``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import queue
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.app.launch_request import LaunchRequest
from meta_orchestrator.actors.app.prepare import Prepared, prepare
from meta_orchestrator.actors.app.start_order import RunningSession, start
from meta_orchestrator.actors.cluster import cluster_wiring
from meta_orchestrator.actors.files.end_lock import ENDED
from meta_orchestrator.actors.recovery.preflight import PreflightError
from meta_orchestrator.actors.supervision.starting import stop_after, stop_all
from meta_orchestrator.actors.workspaces.workspace_wiring import finish_workspace, in_place_note
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.session import AnswerChannelChanged, ControlRequested

log = logging.getLogger(__name__)


class _Interrupts:
    """Ctrl-C and SIGTERM while a session runs: the first asks the coordinator to stop (every
    agent group ended, state saved, exit 130), a second forces it. A closed terminal (SIGHUP)
    must not end the agents silently, as its default would: the session goes on and says so.
    Handlers are installed only on the main thread (Python allows no other).

    Run in-process by a program with a handler of its own (a test suite ends its run on SIGTERM),
    the signal was for that program too: once the session has stopped in order, the handler it
    replaced is given it. Python's own (default, ignore, KeyboardInterrupt on Ctrl-C) are not:
    exit code 130 already says it, and the launcher would end in a traceback."""

    def __init__(self) -> None:
        self.count = 0
        self.running: RunningSession | None = None
        self._previous: dict[int, Any] = {}
        self._received: list[int] = []

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(self._received):
            handler = self._previous.get(signum)
            if callable(handler) and handler is not signal.default_int_handler:
                signal.raise_signal(signum)  # runs it now, here: what it raises leaves run()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.count += 1
        self._received.append(signum)
        # After the end work (the dashboard lingering) the coordinator is gone: Ctrl-C just leaves.
        if self.running is not None and self.count == 1 and self.running.coordinator.is_alive():
            print(
                f"\nstopping (signal {signal.Signals(signum).name}); press Ctrl-C again to force",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(pykka.ActorDeadError):  # it may stop right now
                self.running.coordinator.tell(ControlRequested(action="stop", source="signal"))

    def _on_hangup(self, signum: int, _frame: Any) -> None:
        log.warning("the terminal hung up (SIGHUP); the session goes on - stop it with SIGTERM or from the dashboard")


def _linger(
    started: list[pykka.ActorRef[Any]], running: RunningSession, request: LaunchRequest, interrupts: _Interrupts
) -> None:
    """Keep the dashboard up on the final state until the user closes it or presses Ctrl-C;
    the end work is done first, so the session can be applied or discarded meanwhile."""
    if running.gateway is None or request.exit_when_done or interrupts.count:
        return  # no dashboard, asked not to, or the user already pressed Ctrl-C to leave
    _end_work(started, running, request, keep=running.gateway)
    seen = interrupts.count
    print(
        f"session ended; the dashboard stays up at {running.dashboard_url} - press Ctrl-C "
        "or 'close dashboard' on the page to leave",
        file=sys.stderr,
        flush=True,
    )
    while interrupts.count == seen and not running.dashboard_closed.wait(0.2):
        pass


# Allocations between two collections of the youngest generation (Python's default: 700).
# Every line an agent prints makes a dozen short-lived objects (its JSON, the event, its
# frame); at the default a flood spends about a sixth of its CPU in the collector
# (tests/bench/bench.py). A collection scans every young object still alive, and in a flood
# of many agents that is mostly lines and events queued between the actors: at 10,000 one
# ran every few thousand lines over the same queues (5-12 % of the CPU at 16-64 agents).
# Objects that live on are few, so memory does not grow with this.
GC_YOUNG_THRESHOLD = 100_000


def collect_less_often() -> None:
    """Tune the garbage collector for the event path: what start-up made (modules, settings)
    is frozen out of every later collection, and the young generation is collected after
    ``GC_YOUNG_THRESHOLD`` allocations, not 700."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run(settings: Settings, request: LaunchRequest, log_setup: Callable[[Path], None] | None = None) -> int:
    """Run one session to its end. Returns the process exit code.

    Ctrl-C or SIGTERM asks the coordinator to stop (every agent group ended, state saved,
    exit 130); a second Ctrl-C stops the actors at once.
    """
    collect_less_often()
    started: list[pykka.ActorRef[Any]] = []
    with _Interrupts() as interrupts:
        try:
            running = interrupts.running = start(settings, request, started, log_setup)
            if interrupts.count:
                running.coordinator.tell(ControlRequested(action="stop", source="signal"))
            return _wait_for_end(started, running, request, interrupts)
        finally:
            _end_work(started, interrupts.running, request, grace_s=settings.session.stop_grace_s)
            cluster_wiring.leave()


def _end_work(
    started: list[pykka.ActorRef[Any]],
    running: RunningSession | None,
    request: LaunchRequest,
    keep: Any = None,
    grace_s: float | None = None,
) -> None:
    """Stop the session's actors (all, or those started after ``keep``: the dashboard left up),
    remove the checkouts whose work is merged, then mark the end work done and release the
    session's lock: apply and discard wait for exactly this (files.end_lock). Done once.
    With ``grace_s``, whatever still runs on this machine is ended first, all at once."""
    if grace_s is not None and running is not None and running.host is not None:
        # The coordinator stopped them all unless it could not: the rest end together, not
        # worker after worker as each actor stops.
        running.host.terminate_all(grace_s)
    if keep is None:
        stop_all(started)
    elif not stop_after(started, keep):
        return  # the actors could not be told apart: all stop, and the end work is done, at the end
    if running is None or running.end_lock is None:
        return  # never started, or done before the dashboard lingered
    lock, running.end_lock = running.end_lock, None
    try:
        if running.workspace is not None:
            # Every agent has ended: what is merged leaves its checkout; the branch stays.
            say = (lambda line: print(line, flush=True)) if request.console else None
            finish_workspace(running.workspace, running.session_dir, say)
        else:  # in place: said at the end as at the start
            log.warning("%s", in_place_note(running.target))
            if request.console:
                print(f"{in_place_note(running.target)}; their changes are there now", flush=True)
        lock.mark(ENDED)
    finally:
        lock.release()


def _wait_for_end(
    started: list[pykka.ActorRef[Any]], running: RunningSession, request: LaunchRequest, interrupts: _Interrupts
) -> int:
    """Wait for the session's end (or a forced stop, or a coordinator gone); its exit code."""
    dashboard_told = False
    while True:
        try:
            ended = running.ended.get(timeout=0.2)
        except queue.Empty:
            ended = None
        if ended is not None:
            if ended.status == "waiting":
                if not request.console:
                    print(ended.summary, file=sys.stderr, flush=True)
                return ended.exit_code  # nobody is there: the dashboard does not linger
            _linger(started, running, request, interrupts)
            return ended.exit_code
        if running.gateway is not None and not dashboard_told and running.dashboard_closed.is_set():
            dashboard_told = True  # closed from the page: it can no longer answer
            running.coordinator.tell(AnswerChannelChanged(channel="dashboard", open=False))
        if interrupts.count >= 2:
            # The workers would each wait out stop_grace_s on an agent that ignores SIGTERM.
            killed = running.host.kill_all() if running.host is not None else 0
            log.warning("forced stop: ended %d agent process group(s) at once", killed)
            return 130
        if not running.coordinator.is_alive() and running.ended.empty():
            # Nothing would ever end the session: stop the agents rather than hang.
            log.error(
                "the coordinator stopped unexpectedly; ending every agent - the "
                "session can be continued with: orchestrate resume %s",
                running.session_id,
            )
            return 1


__all__ = ["LaunchRequest", "PreflightError", "Prepared", "RunningSession", "prepare", "run", "start", "stop_all"]
