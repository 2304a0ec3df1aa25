"""The session core's entry point: one message in, the next state and its effects out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from meta_orchestrator.actors.session.core.controls import ControlRules
from meta_orchestrator.actors.session.core.effects import Effect, Reply
from meta_orchestrator.actors.session.core.placement import PlacementRules
from meta_orchestrator.actors.session.core.planning import PlanningRules
from meta_orchestrator.actors.session.core.questions import QuestionRules
from meta_orchestrator.actors.session.core.recovery import RecoveryRules
from meta_orchestrator.actors.session.core.reviews import ReviewRules
from meta_orchestrator.actors.session.core.running import RunningRules
from meta_orchestrator.actors.session.core.state import CoreState
from meta_orchestrator.actors.session.core.workspace import WorkspaceRules
from meta_orchestrator.messages.base import Message
from meta_orchestrator.messages.cluster import RunPlaced
from meta_orchestrator.messages.recovery import RecoveryPlanned, RelaunchDue
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.review import ReviewCompleted, ReviewWanted
from meta_orchestrator.messages.sandbox import SecurityFinding, ToolCallDecided
from meta_orchestrator.messages.session import (
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    ControlRequested,
    ExpireQuestion,
    LaunchFixes,
    SessionSnapshot,
    StartSession,
    StateNotSaved,
)
from meta_orchestrator.messages.supervision import ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.worker import AssignmentFinished
from meta_orchestrator.messages.workspace import AssignmentMerged, CheckoutFailed, CheckoutReady

_INTERRUPTED_NOTE = (
    "You were interrupted while working on this assignment; the work already in the target is "
    "yours. Continue from where you stopped."
)


class NoRule(LookupError):
    """The core has no rule for this kind of message (the actor's own business, or a mistake)."""


class SessionStep(
    PlanningRules, RunningRules, RecoveryRules, ReviewRules, QuestionRules, ControlRules, WorkspaceRules, PlacementRules
):
    """Every rule of the session, applied to one message."""

    def dispatch(self, message: Message) -> object:
        rule = RULES.get(type(message))
        if rule is None:
            raise NoRule(f"the session core has no rule for {type(message).__name__}")
        self.cause = type(message)
        return rule(self, message)

    def on_state_not_saved(self, message: StateNotSaved) -> None:
        self.abort(message.reason)

    def start(self, _: StartSession | None = None) -> None:
        self.update()  # the session's first state goes on disk, whatever happens next
        for agent, reason in self.snap.agents_out.items():
            self.record_hand_over(agent, reason, {})
        saved = self.config.resume_from
        if saved is not None and saved.assignments:
            self.continue_session(saved)
            return
        self.start_planning()

    def continue_session(self, saved: SessionSnapshot) -> None:
        """Resume after the orchestrator died: finished work stays finished, the rest runs again.

        An interrupted assignment is resumed with the CLI's own resume option when its
        session id is known, else restarted with the work done so far as context.
        """
        self.records = {}
        for record in saved.assignments:
            if record.phase == "conflicted":
                pass  # its checkout holds the conflict; it waits for the user's answer (asked again)
            elif record.status in ("running", "failed", "skipped", "pending"):
                interrupted = record.status == "running"
                fixes = LaunchFixes(
                    resume=self.config.resume_ids.get(record.id) if interrupted else None,
                    note=_INTERRUPTED_NOTE if interrupted else None,
                )
                update = {"phase": "pending", "fixes": fixes, "recovery_id": None, "relaunch_on_stop": False}
                record = record.model_copy(update={**update, "status": "pending", "error": None})
            elif record.phase == "gated":
                record = record.model_copy(update={"phase": "done"})  # its review died with the orchestrator
            self.records[record.id] = record
        self._records_changed = True
        keep = {
            k: v
            for k, v in saved.model_dump().items()
            if k not in ("status", "assignments", "orchestrator_pid", "ended_at", "exit_code", "summary")
        }
        pid = self.snap.orchestrator_pid
        self.snap = SessionSnapshot(**{**keep, "status": "running", "orchestrator_pid": pid, "updated_at": self.stamp})
        self._changed = True
        states = ", ".join(f"{r.id}={r.status}" for r in self.records.values())
        self.log("info", f"resuming session {saved.session_id}: {states}")
        self.apply_saved_questions(saved)
        if self.held_for_answers:
            self.update(status="paused")
            if self.channels is not None and not self.channels:
                self.nobody_to_answer("nobody can answer the questions still open")
            return
        self.schedule()


# A rule: a method of ``SessionStep`` applied to one kind of message; what it returns is the
# reply (a control's or an answer's acceptance), None for a tell.
Rule = Callable[[SessionStep, Any], object]
_M = TypeVar("_M", bound=Message)


def _rule(kind: type[_M], apply: Callable[[SessionStep, _M], object]) -> tuple[type[Message], Rule]:
    """One row of the table: the type checker holds ``apply``'s parameter to ``kind``."""
    return kind, apply


# Which rule takes which message: the whole of the session's entry points, in one table.
RULES: dict[type[Message], Rule] = dict(
    [
        _rule(StartSession, SessionStep.start),
        _rule(AssignmentFinished, SessionStep.on_assignment_finished),
        _rule(ControlRequested, SessionStep.on_control),
        _rule(AskQuestion, SessionStep.ask),
        _rule(AnswerGiven, SessionStep.on_answer),
        _rule(ExpireQuestion, SessionStep.on_expire),
        _rule(AnswerChannelChanged, SessionStep.on_channel),
        _rule(ReviewCompleted, SessionStep.on_review_completed),
        _rule(ReviewWanted, SessionStep.on_review_wanted),
        _rule(RecoveryPlanned, SessionStep.on_recovery_planned),
        _rule(RelaunchDue, SessionStep.on_relaunch_due),
        _rule(ActorRestarted, SessionStep.on_actor_restarted),
        _rule(SupervisionFailed, SessionStep.on_supervision_failed),
        _rule(LimitExceeded, SessionStep.on_limit_exceeded),
        _rule(SecurityFinding, SessionStep.on_security_fact),
        _rule(ToolCallDecided, SessionStep.on_security_fact),
        _rule(StateNotSaved, SessionStep.on_state_not_saved),
        _rule(CheckoutReady, SessionStep.on_checkout_ready),
        _rule(CheckoutFailed, SessionStep.on_checkout_failed),
        _rule(AssignmentMerged, SessionStep.on_merged),
        _rule(RunPlaced, SessionStep.on_run_placed),
    ]
)


def handle(state: CoreState, message: Any, now: datetime) -> tuple[CoreState, list[Effect]]:
    """Apply the session's rules to ``message`` at the moment ``now``.

    Returns the next state and the effects to carry out, in order: at most one ``Persist``
    and one ``Publish`` (first, when the snapshot changed), then tells and timers, then a
    ``Reply`` when the message asks for an answer.
    """
    step = SessionStep(state, now)
    answer = step.dispatch(message)
    new_state, effects = step.result()
    if answer is not None:
        effects.append(Reply(answer))
    return new_state, effects
