"""The dashboard's wire contract: every WebSocket message the browser receives.

Each message is ``{"type": <frame type>, "seq": <int or null>, "data": {...}}``. ``seq`` numbers
the deltas of the session's state (``snapshot`` carries the last one); replies meant for one
browser (``hello``, ``ack``, ``error``, ``pong``) and ``batch`` carry ``seq: null``.

``FRAME_OF`` is the one table from a fact told to the gateway to the frame it becomes; the
gateway builds every frame through ``frame_for`` (or, for the hot path of agent events, from
the line already written to ``<agent>.jsonl``, which is an ``Event`` serialised the same way).
``FRAME`` validates any received text (tests, diagnostics): ``FRAME.validate_json(text)``.

Times on the wire are ISO 8601 in UTC with a ``Z`` (``UtcTime``). Decisions and recovery
records are JSON objects for now (``Record``), the form they have in ``state.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, model_validator

from meta_orchestrator.messages.base import AgentName, Frozen, iso_utc, utc_now
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.recovery import RecoveryPlanned
from meta_orchestrator.messages.resources import (
    LimitActionTaken,
    LimitExceeded,
    LimitKind,
    MachineSample,
    ResourcesSampled,
    TreeSample,
)
from meta_orchestrator.messages.review import ReviewCompleted, ReviewStarted
from meta_orchestrator.messages.sandbox import SecurityFinding, ToolCallDecided, ToolCallSummary
from meta_orchestrator.messages.session import SessionEnded, SessionSnapshot, SessionStatus
from meta_orchestrator.messages.session_delta import SessionDelta
from meta_orchestrator.messages.supervision import ActorRestarted
from meta_orchestrator.messages.worker import WorkerSnapshot
from meta_orchestrator.messages.workspace import ChangesUpdated, SessionChanges, WorkspaceNotOpened


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a time on the wire needs its time zone")
    return moment.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """``2025-01-01T10:00:00.000Z``: the one way a time is written (``base.iso_utc``)."""
    return iso_utc(moment)


UtcTime = Annotated[datetime, AfterValidator(_in_utc), PlainSerializer(format_utc, return_type=str)]
Record = dict[str, Any]  # a decision or recovery record, as kept in state.json


def utc_from_epoch(seconds: float) -> datetime:
    """A ``time.time()`` figure as an aware UTC time."""
    return datetime.fromtimestamp(seconds, UTC)


# --- what the frames carry ---------------------------------------------------------------------


class EventData(Event):
    """An agent event as recorded; ``raw_cut`` is set when ``raw`` was cut for the browser
    (its length in characters; the whole line stays in ``<agent>.jsonl``)."""

    raw_cut: int | None = None


class SessionEndedData(Frozen):
    """The session reached a terminal status."""

    session_id: str
    status: SessionStatus
    exit_code: int
    summary: str
    at: UtcTime


class ResourcesData(Frozen):
    """One sample of every running agent's process tree and of the machine."""

    taken_at: UtcTime
    machine: MachineSample
    agents: tuple[TreeSample, ...] = ()
    cost_usd: float = 0.0
    tokens: int = 0


class LimitData(Frozen):
    """A resource limit or budget was crossed, and what was done about it."""

    agent: AgentName | None = None
    limit: LimitKind
    action: LimitActionTaken
    observed: float
    threshold: float
    unit: str = ""
    assignment_id: str | None = None
    reason: str
    sampled_at: UtcTime


class ReviewStartedData(Frozen):
    """Peers were asked for a review; ``triggers`` as kept in the review's request."""

    review_id: str
    reviewers: tuple[AgentName, ...]
    triggers: tuple[Record, ...] = ()
    at: UtcTime


class ReviewCompletedData(Frozen):
    """A review ended; ``record`` is the decision record also kept in ``state.json`` decisions."""

    review_id: str
    record: Record
    at: UtcTime


class RecoveryData(Frozen):
    """Recovery classified a failed run; ``record`` is its entry in ``state.json`` recoveries."""

    recovery_id: str
    agent: AgentName
    record: Record
    at: UtcTime


class RestartData(Frozen):
    """A supervised actor crashed and was started again."""

    name: str
    error: str
    restarts_in_window: int
    at: UtcTime


class ToolCallData(Frozen):
    """What happened to a guarded tool call."""

    request_id: str
    call: ToolCallSummary
    decision: Literal["allow", "deny"]
    decided_by: Literal["policy", "user", "timeout", "unavailable"]
    rule: str
    reason: str
    at: UtcTime


class SecurityFindingData(Frozen):
    """An agent's tool call matched a suspicious pattern; ``event`` is the finding event."""

    event: EventData
    rule: str
    action: Literal["warn", "pause", "stop"]
    at: UtcTime


class ChangesData(Frozen):
    """What the Changes panel shows: the session branch against its base after the latest
    merge (``workspace`` "branch"), or that the agents work in the target itself ("in_place",
    ``reason`` says why). Every diff is plain text; the page shows it as text, never as markup.
    """

    workspace: Literal["branch", "in_place"]
    changes: SessionChanges | None = Field(
        default=None, description="the session branch's change, per file and per assignment"
    )
    reason: str = Field(default="", description="in_place: why the session has no branch")
    at: UtcTime

    @model_validator(mode="after")
    def _one_of_both(self) -> ChangesData:
        if (self.workspace == "branch") != (self.changes is not None):
            raise ValueError("a branch's changes come with workspace 'branch', and only with it")
        return self


class SnapshotData(Frozen):
    """The whole state, first on every connection and after a browser fell behind.

    ``recent`` holds the latest frames of the kinds that are not state (resources, limits,
    reviews, recoveries, restarts, tool calls, findings), oldest first, as they were sent.
    ``changes`` is the latest ``changes`` frame's data (None: nothing merged yet).
    """

    epoch: str = Field(description="this gateway's run; a reconnect passes it with since")
    seq: int
    server_time: UtcTime
    started_at: UtcTime
    session: SessionSnapshot | None = None
    workers: tuple[WorkerSnapshot, ...] = ()
    ended: SessionEndedData | None = None
    events_seen: int = Field(description="events the gateway was told since it started")
    changes: ChangesData | None = None
    events: tuple[EventData, ...] = Field(default=(), description="the latest events, oldest first")
    recent: tuple[FactFrame, ...] = ()


class HelloData(Frozen):
    """First frame of a resumed connection: ``missed`` frames follow, then live deltas."""

    resumed: Literal[True] = True
    since: int
    seq: int
    epoch: str
    missed: int


class AckData(Frozen):
    """A request sent over the socket was accepted (and told to the coordinator)."""

    request: Record


class ErrorData(Frozen):
    """A request was refused, or the connection cannot go on; ``error`` says why."""

    error: str
    request: str | None = Field(default=None, description="the start of the refused message")


class PongData(Frozen):
    """Answer to a ping: the last delta number."""

    seq: int


# --- the frames -------------------------------------------------------------------------------


class _Frame(Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Delta(_Frame):
    seq: int


class _Reply(_Frame):
    seq: None = None


class EventFrame(_Delta):
    type: Literal["event"] = "event"
    data: EventData


class WorkerFrame(_Delta):
    type: Literal["worker"] = "worker"
    data: WorkerSnapshot


class SessionFrame(_Delta):
    type: Literal["session"] = "session"
    data: SessionSnapshot


class SessionDeltaFrame(_Delta):
    type: Literal["session_delta"] = "session_delta"
    data: SessionDelta


class SessionEndedFrame(_Delta):
    type: Literal["session_ended"] = "session_ended"
    data: SessionEndedData


class ResourcesFrame(_Delta):
    type: Literal["resources"] = "resources"
    data: ResourcesData


class LimitFrame(_Delta):
    type: Literal["limit"] = "limit"
    data: LimitData


class ReviewStartedFrame(_Delta):
    type: Literal["review_started"] = "review_started"
    data: ReviewStartedData


class ReviewCompletedFrame(_Delta):
    type: Literal["review_completed"] = "review_completed"
    data: ReviewCompletedData


class RecoveryFrame(_Delta):
    type: Literal["recovery"] = "recovery"
    data: RecoveryData


class RestartFrame(_Delta):
    type: Literal["restart"] = "restart"
    data: RestartData


class ToolCallFrame(_Delta):
    type: Literal["tool_call"] = "tool_call"
    data: ToolCallData


class SecurityFindingFrame(_Delta):
    type: Literal["security_finding"] = "security_finding"
    data: SecurityFindingData


class ChangesFrame(_Delta):
    type: Literal["changes"] = "changes"
    data: ChangesData


FactFrame = Annotated[
    ResourcesFrame
    | LimitFrame
    | ReviewStartedFrame
    | ReviewCompletedFrame
    | RecoveryFrame
    | RestartFrame
    | ToolCallFrame
    | SecurityFindingFrame,
    Field(discriminator="type"),
]
SnapshotData.model_rebuild()


class SnapshotFrame(_Delta):
    type: Literal["snapshot"] = "snapshot"
    data: SnapshotData


class HelloFrame(_Reply):
    type: Literal["hello"] = "hello"
    data: HelloData


class AckFrame(_Reply):
    type: Literal["ack"] = "ack"
    data: AckData


class ErrorFrame(_Reply):
    type: Literal["error"] = "error"
    data: ErrorData


class PongFrame(_Reply):
    type: Literal["pong"] = "pong"
    data: PongData


SingleFrame = Annotated[
    SnapshotFrame
    | EventFrame
    | WorkerFrame
    | SessionFrame
    | SessionDeltaFrame
    | SessionEndedFrame
    | ResourcesFrame
    | LimitFrame
    | ReviewStartedFrame
    | ReviewCompletedFrame
    | RecoveryFrame
    | RestartFrame
    | ToolCallFrame
    | SecurityFindingFrame
    | ChangesFrame
    | HelloFrame
    | AckFrame
    | ErrorFrame
    | PongFrame,
    Field(discriminator="type"),
]


class BatchFrame(_Reply):
    """Frames that queued up while the socket was busy, sent as one message (never nested)."""

    type: Literal["batch"] = "batch"
    data: tuple[SingleFrame, ...]


Frame = Annotated[SingleFrame | BatchFrame, Field(discriminator="type")]
FRAME: TypeAdapter[Frame] = TypeAdapter(Frame)

STATE_FRAMES: tuple[str, ...] = (
    "snapshot",
    "event",
    "worker",
    "session",
    "session_delta",
    "session_ended",
    "changes",
)


# --- encoding ---------------------------------------------------------------------------------

BATCH_PREFIX = '{"type":"batch","seq":null,"data":['


def encode_frame(kind: str, seq: int | None, data_json: str) -> str:
    """``{"type", "seq", "data"}`` around data already serialised (once, for every browser)."""
    return f'{{"type":"{kind}","seq":{"null" if seq is None else seq},"data":{data_json}}}'


def batch(frames: Sequence[str | tuple[str, ...]]) -> str:
    """Several encoded frames as one ``batch`` frame; a batch among them is spliced in, so a
    browser never sees nesting. A tuple is the event frames of one batch of an agent's lines
    (never a batch themselves): joined in one call, however many."""
    parts = []
    for frame in frames:
        if isinstance(frame, tuple):
            parts.append(",".join(frame))
        elif frame.startswith(BATCH_PREFIX):
            parts.append(frame[len(BATCH_PREFIX) : -2])
        else:
            parts.append(frame)
    return BATCH_PREFIX + ",".join(p for p in parts if p) + "]}"


def one_message(items: Sequence[str | tuple[str, ...]]) -> str:
    """What a socket sends for the outbox items it took at once: a lone frame as it is,
    anything more as one ``batch`` frame."""
    if len(items) == 1:
        only = items[0]
        if isinstance(only, str):
            return only
        if len(only) == 1:
            return only[0]
    return batch(items)


# --- the table: fact -> frame ---------------------------------------------------------------------


def _review_started(fact: ReviewStarted) -> ReviewStartedData:
    return ReviewStartedData(
        review_id=fact.review_id,
        reviewers=fact.reviewers,
        triggers=tuple(t.model_dump(mode="json") for t in fact.triggers),
        at=fact.sent_at,
    )


def _review_completed(fact: ReviewCompleted) -> ReviewCompletedData:
    return ReviewCompletedData(review_id=fact.review_id, record=fact.record().model_dump(mode="json"), at=fact.sent_at)


def _recovery(fact: RecoveryPlanned) -> RecoveryData:
    return RecoveryData(
        recovery_id=fact.recovery_id,
        agent=fact.agent,
        record=fact.record("pending").model_dump(mode="json"),
        at=fact.sent_at,
    )


def _resources(fact: ResourcesSampled) -> ResourcesData:
    return ResourcesData(
        taken_at=utc_from_epoch(fact.taken_at),
        machine=fact.machine,
        agents=fact.agents,
        cost_usd=fact.cost_usd,
        tokens=fact.tokens,
    )


def _limit(fact: LimitExceeded) -> LimitData:
    fields = fact.model_dump(exclude={"message_id", "sent_at", "sampled_at"})
    return LimitData(**fields, sampled_at=utc_from_epoch(fact.sampled_at))


def _changes(fact: ChangesUpdated) -> ChangesData:
    return ChangesData(workspace="branch", changes=fact.changes, at=fact.sent_at)


def _in_place(fact: WorkspaceNotOpened) -> ChangesData:
    return ChangesData(workspace="in_place", reason=fact.reason, at=fact.sent_at)


def _fields(model: type[Frozen]) -> Callable[[BaseModel], Frozen]:
    """Copy the fields both have; ``at`` is when the fact was told."""

    def build(fact: BaseModel) -> Frozen:
        names = set(model.model_fields) - {"at"}
        values = {name: getattr(fact, name) for name in names if name in type(fact).model_fields}
        if "at" in model.model_fields:
            values["at"] = getattr(fact, "sent_at", None) or utc_now()
        if "event" in values:
            values["event"] = EventData.model_validate(values["event"].model_dump())
        return model.model_validate(values)

    return build


FRAME_OF: dict[type[BaseModel], tuple[str, Callable[[Any], Frozen]]] = {
    SessionEnded: ("session_ended", _fields(SessionEndedData)),
    ResourcesSampled: ("resources", _resources),
    LimitExceeded: ("limit", _limit),
    ReviewStarted: ("review_started", _review_started),
    ReviewCompleted: ("review_completed", _review_completed),
    RecoveryPlanned: ("recovery", _recovery),
    ActorRestarted: ("restart", _fields(RestartData)),
    ToolCallDecided: ("tool_call", _fields(ToolCallData)),
    SecurityFinding: ("security_finding", _fields(SecurityFindingData)),
    ChangesUpdated: ("changes", _changes),
    WorkspaceNotOpened: ("changes", _in_place),
}
"""Facts whose frames are kept in ``SnapshotData.recent``, except those of ``STATE_FRAMES``
(``session_ended``, ``changes``): the latest of those is state, a field of the snapshot.
``EventsRecorded``, ``WorkerStateChanged`` and ``SessionStateChanged`` carry
their snapshot as it is (``EventData``, ``WorkerSnapshot``, ``SessionSnapshot``)."""


def frame_for(fact: BaseModel) -> tuple[str, Frozen] | None:
    """The frame type and data for a fact, or ``None``: the dashboard does not show it."""
    entry = FRAME_OF.get(type(fact))
    if entry is None:
        return None
    kind, build = entry
    return kind, build(fact)
