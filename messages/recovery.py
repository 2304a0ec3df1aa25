"""Coordinator <-> Recovery: a failed (or refused) run, classified, and what to do about it."""

from __future__ import annotations

from datetime import datetime

from typing import Annotated, Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, Timestamp, utc_now
from meta_orchestrator.messages.worker import AssignmentFinished
from pydantic import BeforeValidator, ConfigDict, Field

RecoveryAction = Literal["relaunch", "retry_after", "escalate", "give_up", "none"]
RecoveryOutcome = Literal[
    "pending", "recovered", "failed_again", "escalated", "given_up", "fixed_before_launch", "not_needed"
]


class RecoveryRequested(Message):
    """Coordinator -> Recovery: this run failed (or was refused something); plan a recovery.

    ``extra_args``/``extra_dirs`` are the fixes already applied to this assignment, so a
    fix that did not help is not planned twice.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    finished: AssignmentFinished
    mode: Literal["write", "read_only"] = "write"
    extra_args: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()
    reply_to: Any = Field(default=None, exclude=True, description="receives RecoveryPlanned")


class RecoveryPlanned(Message):
    """Recovery -> Coordinator (and listeners): the class, its evidence and the action.

    relaunch: run again at once with ``extra_args``/``extra_dirs`` added (resuming
    ``resume_session_id`` when set); retry_after: the same, after ``delay_s``; escalate: a
    person must act, ``advice`` says exactly what; give_up: the bounded retries are spent;
    none: nothing to recover (a successful run whose refusal could not be fixed).
    """

    recovery_id: str
    agent: AgentName
    assignment_id: str
    cause: str | None
    action: RecoveryAction
    evidence: str = Field(default="", description="the line that gave the class away")
    extra_args: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()
    delay_s: float = 0.0
    resume_session_id: str | None = None
    note: str | None = Field(default=None, description="said to the agent in the relaunch prompt")
    advice: str = ""
    attempt: int = Field(default=0, description="retries of this class for this agent, this one included")
    run_succeeded: bool = False

    def record(self, outcome: RecoveryOutcome, at: datetime | None = None) -> RecoveryRecord:
        """The entry kept in state.json ``recoveries``."""
        fields = {name: getattr(self, name) for name in RecoveryRecord.model_fields if name in type(self).model_fields}
        return RecoveryRecord(**fields, outcome=outcome, planned_at=at or utc_now())


class RecoveryRecord(Frozen):
    """A planned recovery in state.json ``recoveries``; ``outcome`` is settled by the next run."""

    kind: Literal["recovery"] = "recovery"
    recovery_id: str
    agent: AgentName
    assignment_id: str
    cause: str | None
    action: RecoveryAction
    evidence: str = ""
    extra_args: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()
    delay_s: float = 0.0
    resume_session_id: str | None = None
    note: str | None = None
    advice: str = ""
    attempt: int = 0
    run_succeeded: bool = False
    sent_at: Timestamp = Field(description="when Recovery planned it")
    outcome: RecoveryOutcome
    planned_at: Timestamp = Field(description="when the coordinator recorded it")
    settled_at: Timestamp | None = None


class PreflightRecord(Frozen):
    """A known-bad setup fixed (or checked) before launch, in state.json ``recoveries``."""

    kind: Literal["preflight"] = "preflight"
    recovery_id: str  # pre-01, pre-02...
    agent: AgentName
    assignment_id: None = None
    cause: str
    action: str
    evidence: str
    advice: str
    outcome: Literal["fixed_before_launch", "checked"]


def _legacy_recovery_kind(value: Any) -> Any:
    """state.json written before records had a ``kind``: a preflight entry has no assignment."""
    if isinstance(value, dict) and "kind" not in value:
        return {**value, "kind": "preflight" if value.get("assignment_id") is None else "recovery"}
    return value


RecoveryEntry = Annotated[
    Annotated[RecoveryRecord | PreflightRecord, Field(discriminator="kind")], BeforeValidator(_legacy_recovery_kind)
]


class RelaunchDue(Message):
    """Coordinator's back-off timer -> Coordinator: launch this assignment again now."""

    assignment_id: str
