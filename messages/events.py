"""The unified worker event: the seed's schema, shared by all three CLIs.

``{"type", "agent", "timestamp", "payload": {"text", "progress", "file", ...}}``
plus bookkeeping fields (``seq``, ``assignment_id``, ``raw``) kept beside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from meta_orchestrator.messages.base import AgentName, Frozen, RunSlot, trusted_maker, utc_now

EventType = Literal["status", "progress", "finding", "task", "blocker", "milestone", "review", "error"]
EVENT_TYPES: tuple[str, ...] = (
    "status",
    "progress",
    "finding",
    "task",
    "blocker",
    "milestone",
    "review",
    "error",
)


class EventPayload(Frozen):
    """What an event says. ``kind`` tells events of one type apart (e.g. ``tool_call``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str | None = None
    progress: int | None = Field(default=None, ge=0, le=100)
    file: str | None = None
    kind: str | None = Field(
        default=None,
        description="sub-kind: text, tool_call, tool_result, init, result, marker, parse_error, exit, retry, ...",
    )
    tool: str | None = None
    tool_input: dict[str, Any] | None = None
    session_id: str | None = None
    model: str | None = None
    files: tuple[str, ...] | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    retryable: bool | None = None
    terminal: bool | None = None
    exit_code: int | None = None
    severity: str | None = None
    line: int | None = None
    details: dict[str, Any] | None = None


_NO_PAYLOAD: dict[str, Any] = dict.fromkeys(EventPayload.model_fields)
assert all(f.default is None for f in EventPayload.model_fields.values()), "text_payload fills defaults with None"


_make_payload = trusted_maker(EventPayload)


def text_payload(kind: str | None, text: str | None) -> EventPayload:
    """A payload of a kind and a text only, built without validation (two strings or None
    need none): the payload of most lines an agent prints, made once per line."""
    fields = _NO_PAYLOAD.copy()  # a copy, then two stores: cheaper than {**_NO_PAYLOAD, ...}
    fields["text"] = text
    fields["kind"] = kind
    return _make_payload(fields)


class Event(Frozen):
    """One normalised thing an agent did or said.

    ``raw`` keeps the CLI's original line (decoded with replacement when not UTF-8);
    ``raw_file`` names a side file when the line was too long to keep inline.
    """

    type: EventType
    agent: AgentName
    timestamp: datetime = Field(default_factory=utc_now)
    payload: EventPayload = Field(default_factory=EventPayload)
    seq: int | None = Field(default=None, description="position in <agent>.jsonl, from 1")
    slot: RunSlot | None = Field(
        default=None, description="which of the agent's parallel runs, its file <agent>#<slot>.jsonl (None: the first)"
    )
    assignment_id: str | None = None
    raw: str | None = None
    raw_file: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready form written to the session's ``<agent>.jsonl``."""
        return self.model_dump(mode="json", exclude_none=True)
