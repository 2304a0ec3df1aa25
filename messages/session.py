"""Launcher/Gateway <-> Coordinator: the session, its plan and its state."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, RunSlot, Timestamp
from meta_orchestrator.messages.cluster import RunNode
from meta_orchestrator.messages.recovery import RecoveryEntry
from meta_orchestrator.messages.resources import LimitExceededRecord
from meta_orchestrator.messages.review import Decision, ReviewDecisionRecord
from meta_orchestrator.messages.sandbox import SecurityFindingRecord, ToolCallRecord
from meta_orchestrator.messages.supervision import ActorRestartedRecord
from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

Role = Literal["architect", "implementer", "reviewer"]
SessionStatus = Literal["planning", "running", "paused", "reviewing", "completed", "failed", "stopped", "waiting"]
AssignmentStatus = Literal["pending", "running", "completed", "failed", "skipped"]
# Where an assignment is in its life (the session core's table of moves is in
# actors/session/core/phases.py); ``status`` is the coarse view of it that state.json and the
# dashboard have always shown. "interrupted": its run ended because the session saves itself
# for answers; it stays "running" on disk so that `orchestrate resume` continues it.
# "preparing": its checkout is being made; "merging": its run succeeded and its commit goes
# into the session branch; "conflicted": that merge conflicted past the agent's rounds and the
# user is asked.
AssignmentPhase = Literal[
    "pending",
    "preparing",
    "running",
    "paused",
    "recovering",
    "backing_off",
    "awaiting_grant",
    "interrupted",
    "merging",
    "conflicted",
    "gated",
    "done",
    "failed",
    "skipped",
]
STATUS_OF_PHASE: dict[AssignmentPhase, AssignmentStatus] = {
    "pending": "pending",
    "preparing": "running",
    "running": "running",
    "paused": "running",
    "recovering": "running",
    "backing_off": "running",
    "awaiting_grant": "running",
    "interrupted": "running",
    "merging": "running",
    "conflicted": "running",
    "gated": "completed",
    "done": "completed",
    "failed": "failed",
    "skipped": "skipped",
}
_PHASE_OF_STATUS: dict[str, AssignmentPhase] = {
    "pending": "pending",
    "running": "running",
    "completed": "done",
    "failed": "failed",
    "skipped": "skipped",
}
# "waiting": ended by itself because questions were open and nobody could answer them;
# `orchestrate answer` then `orchestrate resume` continue it.
TERMINAL_STATUSES: tuple[SessionStatus, ...] = ("completed", "failed", "stopped", "waiting")
AnswerChannel = Literal["console", "dashboard", "program"]


def _legacy_decision_kind(value: Any) -> Any:
    """state.json written before records had a ``kind``: only a review's entry lacked one."""
    if isinstance(value, dict) and "kind" not in value and "review_id" in value:
        return {**value, "kind": "review"}
    return value


class RoleFallbackRecord(Frozen):
    """The coordinator moved an agent's work to others: it cannot serve in this session."""

    kind: Literal["role_fallback"] = "role_fallback"
    source: Literal["coordinator"] = "coordinator"
    at: Timestamp
    agent: AgentName
    reason: str
    moved: dict[str, str] = Field(default_factory=dict, description="assignment id -> the agent that took it")
    roles: dict[str, AgentName | None] = Field(default_factory=dict, description="role -> its agent from now on")


# One entry of state.json ``decisions``: what a review, the supervisor, the monitor or the
# sandbox decided, told apart by ``kind``.
SessionDecision = Annotated[
    Annotated[
        ReviewDecisionRecord
        | ActorRestartedRecord
        | LimitExceededRecord
        | SecurityFindingRecord
        | ToolCallRecord
        | RoleFallbackRecord,
        Field(discriminator="kind"),
    ],
    BeforeValidator(_legacy_decision_kind),
]


class PlannedAssignment(Frozen):
    """One unit of work in the architect's plan."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role
    title: str = Field(min_length=1, max_length=200)
    instructions: str = Field(min_length=1)
    depends_on: tuple[str, ...] = ()
    weight: float = Field(default=1.0, gt=0, le=100)


class Plan(Frozen):
    """The architect's structured plan; validated, then scheduled by dependencies."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    summary: str = ""
    assignments: tuple[PlannedAssignment, ...] = Field(min_length=1, max_length=30)

    @field_validator("assignments")
    @classmethod
    def _unique_ids(cls, value: tuple[PlannedAssignment, ...]) -> tuple[PlannedAssignment, ...]:
        ids = [a.id for a in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"assignment ids must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _dependencies_exist_and_acyclic(self) -> Plan:
        known = {a.id for a in self.assignments}
        for a in self.assignments:
            missing = [d for d in a.depends_on if d not in known]
            if missing:
                raise ValueError(f"assignment {a.id!r} depends on unknown {', '.join(missing)}")
            if a.id in a.depends_on:
                raise ValueError(f"assignment {a.id!r} depends on itself")
        deps = {a.id: set(a.depends_on) for a in self.assignments}
        done: set[str] = set()
        while len(done) < len(deps):
            ready = [i for i, d in deps.items() if i not in done and d <= done]
            if not ready:
                cycle = sorted(set(deps) - done)
                raise ValueError(f"dependency cycle among: {', '.join(cycle)}")
            done.update(ready)
        return self


QuestionKind = Literal["escalation", "clarification", "confirmation"]


class ReviewDecisionSubject(Frozen):
    """A review's decision the user settles: PAUSE_AND_CLARIFY asks for a note,
    STOP_AND_ESCALATE (an escalation) asks whether the session goes on."""

    type: Literal["review_decision"] = "review_decision"
    review_id: str
    decision: Decision
    assignment_id: str | None = None
    gate: bool = Field(default=False, description="the reviewed assignment's dependents wait for the answer")
    reasoning: str = ""


class FolderGrantSubject(Frozen):
    """Recovery would relaunch an agent with access to folders outside the target."""

    type: Literal["folder_grant"] = "folder_grant"
    assignment_id: str
    directories: tuple[str, ...]


class MergeConflictSubject(Frozen):
    """An assignment's work still conflicts with the session branch after its agent's rounds."""

    type: Literal["merge_conflict"] = "merge_conflict"
    assignment_id: str
    files: tuple[str, ...] = ()


class SandboxCallSubject(Frozen):
    """A high-risk tool call the agent's hook holds until the user allows it."""

    type: Literal["sandbox_call"] = "sandbox_call"
    rule: str = ""
    tool: str = ""
    tool_input: dict[str, Any] = Field(default_factory=dict)
    cwd: str | None = None
    assignment_id: str | None = Field(default=None, description="None: the agent's assignment waiting to run")


class SecurityFindingSubject(Frozen):
    """An agent paused by the sandbox after a suspicious event: go on, or stop it."""

    type: Literal["security_finding"] = "security_finding"
    rules: tuple[str, ...] = ()
    event_seq: int = Field(description="seq of the event in <agent>.jsonl")


# What a question is about, told apart by ``type``; the rules act on the answer by this.
QuestionSubject = Annotated[
    ReviewDecisionSubject | FolderGrantSubject | MergeConflictSubject | SandboxCallSubject | SecurityFindingSubject,
    Field(discriminator="type"),
]


def _subject_of_details(question: dict[str, Any]) -> dict[str, Any] | None:
    """state.json written before questions had a ``subject``: who asked and the ``details`` said it."""
    details, asked_by = question.get("details") or {}, question.get("asked_by")
    if asked_by == "reviewer" and details.get("review_id"):
        return {"type": "review_decision", **details}
    if str(question.get("id", "")).startswith("grant-") and "assignment_id" in details:
        return {
            "type": "folder_grant",
            "assignment_id": details["assignment_id"],
            "directories": details.get("directories", ()),
        }
    if asked_by == "workspace" and "assignment_id" in details:
        return {"type": "merge_conflict", "assignment_id": details["assignment_id"], "files": details.get("files", ())}
    if asked_by == "sandbox" and "event_seq" in details:
        return {"type": "security_finding", "rules": details.get("rules", ()), "event_seq": details["event_seq"]}
    if asked_by == "sandbox":
        fields = ("rule", "tool", "tool_input", "cwd", "assignment_id")
        return {"type": "sandbox_call", **{k: details[k] for k in fields if k in details}}
    return None


class Question(Frozen):
    """Something only a person can decide; shown in the console and the dashboard inbox."""

    id: str
    kind: QuestionKind
    text: str
    asked_by: str = Field(description="who asked: coordinator, reviewer, sandbox, ... (shown, never acted on)")
    agent: AgentName | None = None
    options: tuple[str, ...] = Field(default=(), description="suggested answers, if any")
    subject: QuestionSubject | None = Field(default=None, description="what it is about (None: only its text)")
    asked_at: str = ""
    timeout_s: float | None = Field(default=None, description="unanswered by then: default_answer")
    default_answer: str | None = None
    status: Literal["open", "answered", "expired"] = "open"
    answer: str | None = None
    approve: bool | None = None
    answered_by: str | None = Field(
        default=None, description="console, dashboard, command (orchestrate answer), timeout or unattended"
    )

    @model_validator(mode="before")
    @classmethod
    def _subject_from_details(cls, data: Any) -> Any:
        if isinstance(data, dict) and "details" in data and "subject" not in data:
            rest = {k: v for k, v in data.items() if k != "details"}
            return {**rest, "subject": _subject_of_details(data)}
        return data


class LaunchFixes(Frozen):
    """What the next launch of an assignment adds: Recovery's corrected flags, the directories the
    user granted, the CLI session to resume and a note for the prompt."""

    extra_args: tuple[str, ...] = ()
    extra_dirs: tuple[str, ...] = ()
    resume: str | None = Field(default=None, description="the CLI's own session id to resume")
    note: str | None = Field(default=None, description="said once, in the next prompt")

    def add(self, extra_args: tuple[str, ...] = (), extra_dirs: tuple[str, ...] = ()) -> LaunchFixes:
        """These flags and directories too (each once, in order)."""
        return self.model_copy(
            update={
                "extra_args": tuple(dict.fromkeys((*self.extra_args, *extra_args))),
                "extra_dirs": tuple(dict.fromkeys((*self.extra_dirs, *extra_dirs))),
            }
        )

    def with_note(self, note: str) -> LaunchFixes:
        return self.model_copy(update={"note": f"{self.note}\n{note}" if self.note else note})


class AssignmentRecord(Frozen):
    """An assignment as the session tracks it (persisted in state.json)."""

    id: str
    role: Role
    agent: AgentName
    title: str
    instructions: str
    depends_on: tuple[str, ...] = ()
    weight: float = 1.0
    status: AssignmentStatus = "pending"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    busy_s: float = 0.0
    agent_session_id: str | None = None
    final_text: str = ""
    files_written: tuple[str, ...] = ()
    tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    returncode: int | None = None
    phase: AssignmentPhase = "pending"
    fixes: LaunchFixes = Field(default_factory=LaunchFixes)
    recovery_id: str | None = Field(default=None, description="the recovery this run tries; settled when it ends")
    relaunch_on_stop: bool = Field(default=False, description="being stopped to hear the user's answer, then resumed")
    workdir: str | None = Field(default=None, description="its checkout (None: it works in the target itself)")
    read_only_dirs: tuple[str, ...] = Field(default=(), description="what its sandbox lets it read for git")
    commit: str | None = Field(default=None, description="its commit, merged into the session branch")
    conflict_rounds: int = Field(default=0, description="times its agent was asked to resolve a merge conflict")
    node: RunNode | None = Field(default=None, description="the cluster node its last run was placed on (None: here)")
    slot: RunSlot = Field(
        default=1, description="which of its agent's parallel runs it holds (its worker: <agent>, <agent>#2, ...)"
    )

    @model_validator(mode="before")
    @classmethod
    def _phase_from_status(cls, data: Any) -> Any:
        """state.json written before records had a phase: the status says it."""
        if isinstance(data, dict) and "phase" not in data:
            return {**data, "phase": _PHASE_OF_STATUS.get(data.get("status", "pending"), "pending")}
        return data


class AgentShare(Frozen):
    """Planned, actual and target share of the work for one agent."""

    agent: AgentName
    target_min: float
    target_max: float
    planned: float = 0.0
    busy_s: float = 0.0
    actual_by_time: float = 0.0
    tokens: int = 0
    actual_by_tokens: float | None = None


class SessionSnapshot(Frozen):
    """The whole session, as written to state.json and shown on the dashboard."""

    model_config = ConfigDict(frozen=True, extra="allow")

    session_id: str
    task: str
    target: str
    workspace: str
    demo: bool = False
    status: SessionStatus = "planning"
    created_at: str
    updated_at: str
    ended_at: str | None = None
    plan_source: str | None = Field(default=None, description="architect, architect_retry or fallback")
    plan_summary: str = ""
    plan_errors: tuple[str, ...] = ()
    assignments: tuple[AssignmentRecord, ...] = ()
    shares: tuple[AgentShare, ...] = ()
    decisions: tuple[SessionDecision, ...] = ()
    recoveries: tuple[RecoveryEntry, ...] = ()
    questions: tuple[Question, ...] = ()
    agents_out: dict[str, str] = Field(
        default_factory=dict, description="agents that cannot serve in this session, with the reason"
    )
    notes: tuple[str, ...] = Field(default=(), description="the user's answers, passed to every later prompt")
    summary: str = ""
    exit_code: int | None = None
    orchestrator_pid: int | None = None


class AskQuestion(Message):
    """Any actor -> Coordinator: put this question to the user.

    ``reply_to`` (if set) is told ``QuestionAnswered`` when the user answers or it expires.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    question: Question
    reply_to: Any = Field(default=None, exclude=True)


class QuestionAnswered(Message):
    """Coordinator -> the asker: the user's answer (or the default, when it expired)."""

    question_id: str
    answer: str
    approve: bool | None = None
    expired: bool = False
    answered_by: str | None = Field(default=None, description="console, dashboard, command, timeout or unattended")


class AnswerChannelChanged(Message):
    """Launcher -> Coordinator: a way for a person to answer opened or went away.

    ``console``: stdin is a terminal or a pipe not at end of file; ``dashboard``: the web
    server runs; ``program``: a caller that answers through the coordinator itself (tests,
    an embedding program). With none open, no question waits (``[questions] unattended``).
    """

    channel: AnswerChannel
    open: bool


class ExpireQuestion(Message):
    """Coordinator's timer -> Coordinator: this question's time is up (if still open)."""

    question_id: str


class StartSession(Message):
    """Launcher -> Coordinator: plan and run the task. ``reply_to`` gets ``SessionEnded``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    reply_to: Any = Field(default=None, exclude=True)


class ControlRequested(Message):
    """Launcher/Gateway -> Coordinator: a person asked for pause, resume, stop or a review."""

    action: Literal["pause", "resume", "stop", "review"]
    agent: AgentName | None = Field(default=None, description="None: the whole session")
    source: str = "user"


class AnswerGiven(Message):
    """Launcher/Gateway -> Coordinator: a person answered a waiting question."""

    question_id: str
    answer: str = Field(max_length=20_000)
    approve: bool | None = None
    source: str = Field(default="console", description="console, dashboard or command")


class GetSessionState(Message):
    """Question (ask, with a timeout): answered with the current ``SessionSnapshot``."""


class SessionStateChanged(Message):
    """Coordinator -> listeners: the session moved; state.json already holds this snapshot."""

    snapshot: SessionSnapshot


class StateNotSaved(Message):
    """Coordinator -> itself: state.json could not be written; the session cannot go on."""

    reason: str


class SessionEnded(Message):
    """Coordinator -> launcher: the session reached a terminal status."""

    session_id: str
    status: SessionStatus
    exit_code: int
    summary: str
