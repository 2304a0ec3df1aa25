"""Peer reviews: Coordinator/Reviewer triggers, the peers' verdicts and the policy's decision.

Flow: the Reviewer hears ``EventsRecorded`` (milestone markers, blockers, review requests)
and ``RequestReview`` (the coordinator at the end of a phase, the user), asks the peers in
read-only mode, and tells the Coordinator ``ReviewCompleted`` with the decision. A review
the events ask for waits for the Coordinator's ``ReviewAllowed`` (``ReviewWanted``), so that
none starts once the session's end is decided.
"""

from __future__ import annotations

from datetime import datetime

from typing import Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, Timestamp, utc_now
from pydantic import ConfigDict, Field

TriggerKind = Literal["milestone", "blocker", "request", "phase_end", "user"]
Verdict = Literal["approve", "concern", "blocker"]
Decision = Literal["CONTINUE", "LOG_WARNING", "PAUSE_AND_CLARIFY", "STOP_AND_ESCALATE"]


class ReviewTrigger(Frozen):
    """Why a review is wanted: an event of the author, the end of a phase, or a person."""

    kind: TriggerKind
    agent: AgentName | None = Field(default=None, description="the author whose work is reviewed")
    assignment_id: str | None = None
    text: str = ""
    event_seq: int | None = Field(default=None, description="seq of the event in <agent>.jsonl")
    file: str | None = None
    source: str = "events"


class RequestReview(Message):
    """Coordinator -> Reviewer: review this work now.

    ``gate`` true: the coordinator holds the dependents of ``trigger.assignment_id`` until the
    ``ReviewCompleted`` with ``gate`` true arrives (always sent, even when capped or failed).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    trigger: ReviewTrigger
    gate: bool = False
    reply_to: Any = Field(default=None, exclude=True, description="default: the coordinator")


class Finding(Frozen):
    """One point a reviewer makes."""

    severity: str = "info"
    file: str | None = None
    line: int | None = None
    text: str = ""


class ReviewAnswer(Frozen):
    """One peer's verdict, as parsed. ``reason`` says why it counts as a concern when the
    answer itself could not be used (unparseable, timed out, crashed); never an approval."""

    agent: AgentName
    verdict: Verdict
    summary: str = ""
    findings: tuple[Finding, ...] = ()
    reason: str | None = None
    parsed: bool = True
    returncode: int | None = None
    duration_s: float = 0.0


class ReviewDecision(Frozen):
    """What the policy decided, and why (who said what)."""

    decision: Decision
    reasoning: str
    counts: dict[str, int] = Field(default_factory=dict)
    no_reviewers: bool = False


class ReviewStarted(Message):
    """Reviewer -> listeners: peers were asked; their runs record to ``reviews/<id>/``."""

    review_id: str
    triggers: tuple[ReviewTrigger, ...]
    reviewers: tuple[AgentName, ...]
    review_dir: str


class ReviewCompleted(Message):
    """Reviewer -> Coordinator (and listeners): the answers and the decision, saved on disk.

    ``skipped`` names why no peer was asked (the per-assignment cap, for example); the
    decision then says what the coordinator should do anyway.
    """

    review_id: str
    assignment_id: str | None = None
    author: AgentName | None = None
    triggers: tuple[ReviewTrigger, ...] = ()
    answers: tuple[ReviewAnswer, ...] = ()
    decision: ReviewDecision
    gate: bool = False
    skipped: str | None = None
    review_dir: str | None = None
    round: int = 0

    def record(self, applied: str | None = None, at: datetime | None = None) -> ReviewDecisionRecord:
        """The entry kept in state.json ``decisions``; ``applied`` says what the coordinator did."""
        fields = {
            name: getattr(self, name) for name in ReviewDecisionRecord.model_fields if name in type(self).model_fields
        }
        return ReviewDecisionRecord(**fields, decided_at=at or utc_now(), applied=applied)


class ReviewDecisionRecord(Frozen):
    """A review's decision in state.json ``decisions``, and what became of it."""

    kind: Literal["review"] = "review"
    review_id: str
    assignment_id: str | None = None
    author: AgentName | None = None
    triggers: tuple[ReviewTrigger, ...] = ()
    answers: tuple[ReviewAnswer, ...] = ()
    decision: ReviewDecision
    gate: bool = False
    skipped: str | None = None
    review_dir: str | None = None
    round: int = 0
    sent_at: Timestamp = Field(description="when the reviewer decided")
    decided_at: Timestamp = Field(description="when the coordinator applied it")
    applied: str | None = None
    answer: str | None = Field(default=None, description="the user's answer to a pause or escalation")
    answered_by: str | None = Field(default=None, description="console, dashboard, a recorded answer, or the default")
    answered_at: Timestamp | None = None


class ReviewDue(Message):
    """Reviewer's debounce timer -> Reviewer: the triggers gathered for this key may start."""

    key: str


class ReviewerTimedOut(Message):
    """Reviewer's backstop timer -> Reviewer: this peer did not answer in time."""

    review_id: str
    agent: AgentName


class CheckReviewers(Message):
    """Reviewer's timer -> Reviewer: is every asked peer's worker still alive?"""

    review_id: str


class ReviewWanted(Message):
    """Reviewer -> Coordinator: the triggers gathered for ``key`` (an agent's events) are due.

    The review starts only on the coordinator's ``ReviewAllowed``: the session's rules are the
    one place that knows whether the session still goes on, so no review races its end.
    """

    key: str
    assignment_id: str | None = None
    author: AgentName | None = None


class ReviewAllowed(Message):
    """Coordinator -> Reviewer: the review wanted for ``key`` may start (the session goes on)."""

    key: str
