"""Console view actor: a compact live status line per agent when there is no dashboard.

It only listens; nothing waits on it. Output goes to the stream it is given (stderr by
default) so stdout stays clean for ``orchestrate show --json`` and the like.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import pykka

from meta_orchestrator.actors.adapters.registry import ADAPTERS
from meta_orchestrator.messages.base import split_worker_name, worker_name
from meta_orchestrator.messages.recovery import RecoveryPlanned
from meta_orchestrator.messages.review import ReviewCompleted, ReviewStarted
from meta_orchestrator.messages.session import RoleFallbackRecord, SessionEnded, SessionStateChanged
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.worker import EventsRecorded, WorkerStateChanged

ALWAYS_SHOWN = {"milestone", "blocker", "finding", "review", "error", "task"}
RESET = "\033[0m"
BELL = "\a"  # a new question: a person at the terminal is told even when looking elsewhere


def _colour(agent: str) -> str:
    adapter = ADAPTERS.get(split_worker_name(agent)[0])  # claude#2 in claude's colour
    return adapter.colour if adapter is not None else ""


class ConsoleView(pykka.ThreadingActor):
    """Prints what matters: state changes, milestones, blockers, errors, throttled activity."""

    def __init__(
        self, stream: TextIO | None = None, activity_every_s: float = 2.0, demo: bool = False, bell: bool = True
    ) -> None:
        super().__init__()
        self._out = stream or sys.stderr
        self._colour = hasattr(self._out, "isatty") and self._out.isatty()
        self._bell = bell and self._colour  # a terminal only: a bell in a log file is noise
        self._every = activity_every_s
        self._last_activity: dict[str, float] = {}
        self._status: str | None = None
        self._assignment_status: dict[str, str] = {}
        self._questions_shown: set[str] = set()
        self._hand_overs_shown = 0
        self._label = " [demo]" if demo else ""

    def on_receive(self, message: Any) -> Any:
        match message:
            case EventsRecorded():
                for event in message.events:
                    self._on_event(event)
                return None
            case WorkerStateChanged():
                s = message.snapshot
                if s.status in ("waiting", "running", "paused", "stopping"):
                    where = f" on {s.node}" if s.node and s.status == "running" else ""
                    self._line(s.agent, f"{s.status}{' ' + s.assignment_id if s.assignment_id else ''}{where}")
            case SessionStateChanged():
                return self._on_session(message)
            case SessionEnded():
                self._print(
                    f"session {message.session_id} {message.status} "
                    f"(exit {message.exit_code}){self._label}\n{message.summary}"
                )
            case ReviewStarted():
                self._print(
                    f"review {message.review_id}: asked {', '.join(message.reviewers) or 'nobody'}"
                    f" ({', '.join(t.kind for t in message.triggers)})"
                )
            case ReviewCompleted():
                verdicts = ", ".join(f"{a.agent}={a.verdict}" for a in message.answers)
                why = message.skipped or message.decision.reasoning
                self._print(
                    f"review {message.review_id}: {message.decision.decision}"
                    f"{' [' + verdicts + ']' if verdicts else ''} - {why[:300]}"
                )
            case RecoveryPlanned():
                if message.cause is not None:
                    self._line(
                        message.agent,
                        f"recovery {message.recovery_id} "
                        f"{message.cause} -> {message.action}: {message.advice[:200]} "
                        f"(evidence: {message.evidence[:160]})",
                    )
        return None

    def _on_event(self, event: Event) -> None:
        p = event.payload
        text = (p.text or "").strip().replace("\n", " ")
        run = worker_name(event.agent, event.slot or 1)  # an agent's parallel runs: claude, claude#2
        if event.type in ALWAYS_SHOWN and p.kind not in ("text",):
            detail = f" {p.file}" if p.file else ""
            progress = f" {p.progress}%" if p.progress is not None else ""
            self._line(run, f"{event.type}{progress}{detail}: {text[:140]}")
            return
        now = time.monotonic()
        if text and now - self._last_activity.get(run, 0.0) >= self._every:
            self._last_activity[run] = now
            progress = f" {p.progress}%" if p.progress is not None else ""
            self._line(run, f"…{progress} {text[:120]}")

    def _on_session(self, message: SessionStateChanged) -> None:
        snap = message.snapshot
        if snap.status != self._status:
            self._status = snap.status
            extra = f" (plan: {snap.plan_source})" if snap.plan_source and snap.status == "running" else ""
            self._print(f"session {snap.session_id}: {snap.status}{extra}{self._label}")
        for question in snap.questions:
            if question.status == "open" and question.id not in self._questions_shown:
                self._questions_shown.add(question.id)
                how = "answer yes or no" if question.kind == "confirmation" else "type your answer"
                timeout = (
                    (f"; unanswered after {question.timeout_s:g}s: {question.default_answer or 'no'}")
                    if question.timeout_s
                    else ""
                )
                self._print(
                    f"{BELL if self._bell else ''}\n?? {question.kind} [{question.id}] from {question.asked_by}: "
                    f"{question.text}\n   {how} and press Enter (start the line with "
                    f"'{question.id}' when several questions are open){timeout}"
                )
        hand_overs = [d for d in snap.decisions if isinstance(d, RoleFallbackRecord)]
        for entry in hand_overs[self._hand_overs_shown :]:
            moved = ", ".join(f"{a} -> {b}" for a, b in entry.moved.items())
            roles = ", ".join(f"{r}: {a or 'nobody'}" for r, a in entry.roles.items())
            self._line(
                entry.agent,
                f"cannot serve in this session: {entry.reason[:400]}\n"
                f"       roles now {roles}{'; moved ' + moved if moved else ''}",
            )
        self._hand_overs_shown = len(hand_overs)
        for record in snap.assignments:
            if self._assignment_status.get(record.id) != record.status:
                self._assignment_status[record.id] = record.status
                if record.status != "pending":
                    why = f" - {record.error}" if record.error else ""
                    self._line(record.agent, f"assignment {record.id} {record.status}{why}")

    def _line(self, agent: str, text: str) -> None:
        name = f"{agent:>6}"
        if self._colour:
            name = f"{_colour(agent)}{name}{RESET}"
        self._print(f"{name} | {text}")

    def _print(self, text: str) -> None:
        try:
            self._out.write(text + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the session
