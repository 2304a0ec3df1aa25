"""The tables of legal moves: an assignment's phase and the session's status, and which
message may move an assignment to which phase.

A move of an assignment is legal when its phase table has it (from -> to) and the message being
handled may move an assignment there (``PHASES_OF_MESSAGE``): the two say, in one place, every
move the rules make. A move not in its tables is a bug in the rules, so the core raises rather
than persist an impossible state. Staying in the same place is always allowed.
tests/session/test_phase_table.py reads the rules' source and checks ``PHASES_OF_MESSAGE``
against what each message's rule can reach: nothing missing, nothing unreachable.
"""

from __future__ import annotations

from meta_orchestrator.messages.base import Message
from meta_orchestrator.messages.recovery import RecoveryPlanned, RelaunchDue
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.review import ReviewCompleted
from meta_orchestrator.messages.session import (
    TERMINAL_STATUSES,
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    AssignmentPhase,
    ControlRequested,
    ExpireQuestion,
    SessionStatus,
    StartSession,
    StateNotSaved,
)
from meta_orchestrator.messages.supervision import ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.worker import AssignmentFinished
from meta_orchestrator.messages.workspace import AssignmentMerged, CheckoutFailed, CheckoutReady

# Phases in which an agent is taken by the assignment (its process runs, or Recovery, a
# back-off or the user's grant decides how it runs again).
ACTIVE_PHASES: frozenset[AssignmentPhase] = frozenset(
    {"preparing", "running", "paused", "recovering", "backing_off", "awaiting_grant"}
)
# Phases in which the session still waits for the assignment though no agent is taken by it.
WAITING_PHASES: frozenset[AssignmentPhase] = frozenset({"pending", "merging", "conflicted"})
# pending -> failed: a resumed session hears that the user said no to what it asked.
# preparing/running/paused/recovering -> pending: its agent cannot serve and another takes it
# over (or the session saves itself for answers while its checkout is made).
# merging -> pending: the merge conflicted and its agent resolves it in a new run.
ASSIGNMENT_MOVES: dict[AssignmentPhase, frozenset[AssignmentPhase]] = {
    "pending": frozenset({"preparing", "running", "skipped", "failed"}),
    "preparing": frozenset({"running", "pending", "failed"}),
    "running": frozenset({"paused", "recovering", "interrupted", "pending", "merging", "gated", "done", "failed"}),
    "paused": frozenset({"running", "recovering", "interrupted", "pending", "merging", "gated", "done", "failed"}),
    "recovering": frozenset({"pending", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed"}),
    "awaiting_grant": frozenset({"pending", "backing_off", "merging", "gated", "done", "failed"}),
    "backing_off": frozenset({"pending", "failed"}),
    "merging": frozenset({"pending", "conflicted", "gated", "done", "failed"}),
    "conflicted": frozenset({"pending", "failed"}),
    "gated": frozenset({"done"}),
    "interrupted": frozenset(),
    "done": frozenset(),
    "failed": frozenset(),
    "skipped": frozenset(),
}
# Which message may move an assignment to which phase: every phase its rule can reach, through
# the rules that rule calls (a message missing here moves no assignment: ReviewWanted, RunPlaced,
# the sandbox's facts). Read with ASSIGNMENT_MOVES: "interrupted" only by a run's end while the
# session saves itself, "conflicted" only by a merge, "recovering" only by a failed run's end,
# "paused" only by a control, a review's decision, an exhausted budget, or a checkout made
# ready while its agent is paused.
# fmt: off
PHASES_OF_MESSAGE: dict[type[Message], frozenset[AssignmentPhase]] = {
    StartSession: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    AssignmentFinished: frozenset({
        "pending", "preparing", "running", "recovering", "interrupted", "merging", "gated", "done", "failed", "skipped"
    }),
    ControlRequested: frozenset({"preparing", "running", "paused", "done", "failed", "skipped"}),
    AskQuestion: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    AnswerGiven: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    ExpireQuestion: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    AnswerChannelChanged: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    ReviewCompleted: frozenset({
        "pending", "preparing", "running", "paused", "backing_off", "awaiting_grant", "merging", "gated", "done",
        "failed", "skipped"
    }),
    RecoveryPlanned: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed",
        "skipped"
    }),
    RelaunchDue: frozenset({"pending", "preparing", "running", "failed", "skipped"}),
    ActorRestarted: frozenset({"preparing", "running", "merging", "gated", "done", "failed", "skipped"}),
    SupervisionFailed: frozenset({"pending", "preparing", "running", "done", "failed", "skipped"}),
    LimitExceeded: frozenset({"preparing", "running", "paused", "done", "failed", "skipped"}),
    StateNotSaved: frozenset({"done", "failed", "skipped"}),
    CheckoutReady: frozenset({"running", "paused"}),  # paused: its agent was paused meanwhile
    CheckoutFailed: frozenset({"preparing", "running", "failed", "skipped"}),
    AssignmentMerged: frozenset({
        "pending", "preparing", "running", "backing_off", "awaiting_grant", "merging", "conflicted", "gated", "done",
        "failed", "skipped"
    }),
}
# fmt: on
_ENDS: frozenset[SessionStatus] = frozenset({"failed", "stopped", "waiting"})
SESSION_MOVES: dict[SessionStatus, frozenset[SessionStatus]] = {
    "planning": frozenset({"running", *_ENDS}),
    "running": frozenset({"reviewing", "paused", "completed", *_ENDS}),
    "reviewing": frozenset({"running", "paused", "completed", *_ENDS}),
    "paused": frozenset({"running", "reviewing", *_ENDS}),
    **{status: frozenset() for status in TERMINAL_STATUSES},
}


class IllegalTransition(RuntimeError):
    """The rules tried a move their table does not have."""


def check_assignment_move(
    cause: type[Message] | None, assignment_id: str, old: AssignmentPhase, new: AssignmentPhase
) -> None:
    """``cause``: the message being handled (None: outside a rule, which moves nothing)."""
    if new == old:
        return
    if new not in ASSIGNMENT_MOVES[old]:
        raise IllegalTransition(f"assignment {assignment_id}: {old} -> {new} is not a legal move")
    if cause is None or new not in PHASES_OF_MESSAGE.get(cause, frozenset()):
        why = f"{cause.__name__} moves no assignment to {new}" if cause else "no message is being handled"
        raise IllegalTransition(f"assignment {assignment_id}: {old} -> {new}: {why}")


def check_session_move(old: SessionStatus, new: SessionStatus) -> None:
    if new != old and new not in SESSION_MOVES[old]:
        raise IllegalTransition(f"session: {old} -> {new} is not a legal move")
