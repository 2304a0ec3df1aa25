"""SandboxGuard <-> Coordinator and listeners: tool calls that were asked about, blocked or flagged.

The claude PreToolUse hook (``actors.sandbox.hook``, a separate process) talks to the guard
over the session's local channel; the guard turns that into these messages.
"""

from __future__ import annotations

from datetime import datetime

from typing import Any, Literal

from pydantic import ConfigDict, Field

from meta_orchestrator.messages.base import AgentName, Frozen, Message, Timestamp, utc_now
from meta_orchestrator.messages.events import Event

Decision = Literal["allow", "deny"]


class ToolCallSummary(Frozen):
    """The tool call a hook or a watch is talking about."""

    agent: AgentName
    tool: str
    tool_input: dict[str, Any] = Field(default_factory=dict)
    cwd: str | None = None
    tool_use_id: str | None = None


class ApprovalRequested(Message):
    """Guard's channel thread -> Guard: a hook waits for the user's decision on this call.

    ``reply`` has a ``tell`` (a thread-side inbox); it receives the ``ToolCallDecided``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    request_id: str
    call: ToolCallSummary
    rule: str = Field(description="the high-risk rule that matched")
    reason: str
    reply: Any = Field(default=None, exclude=True)


class ToolCallBlockedReported(Message):
    """Guard's channel thread -> Guard: a hook refused a call outright (told for the record)."""

    call: ToolCallSummary
    rule: str
    reason: str


class ToolCallDecided(Message):
    """Guard -> listeners (and the waiting hook): what happened to a guarded tool call.

    ``decided_by``: ``policy`` (blocked outright), ``user`` (answered), ``timeout`` (nobody
    answered in time: denied), ``unavailable`` (the question could not be asked: denied).
    """

    request_id: str
    call: ToolCallSummary
    decision: Decision
    decided_by: Literal["policy", "user", "timeout", "unavailable"]
    rule: str
    reason: str

    def record(self, at: datetime | None = None) -> ToolCallRecord:
        """The entry kept in state.json ``decisions``."""
        return ToolCallRecord(
            kind="tool_call_allowed" if self.decision == "allow" else "tool_call_denied",
            at=at or utc_now(),
            agent=self.call.agent,
            rule=self.rule,
            decided_by=self.decided_by,
            tool=self.call.tool,
            reason=self.reason,
        )


class SecurityFinding(Message):
    """Guard -> listeners: an agent's tool call matched a suspicious pattern.

    ``event`` is a unified ``finding`` event with the evidence (also appended to the
    session's ``security.jsonl``); ``action`` is what the guard told the worker.
    """

    event: Event
    rule: str
    action: Literal["warn", "pause", "stop"]

    def record(self, at: datetime | None = None) -> SecurityFindingRecord:
        """The entry kept in state.json ``decisions``."""
        return SecurityFindingRecord(
            at=at or utc_now(),
            agent=self.event.agent,
            rule=self.rule,
            action=self.action,
            assignment_id=self.event.assignment_id,
            reason=self.event.payload.text,
        )


class ToolCallRecord(Frozen):
    """A guarded tool call's outcome, in state.json ``decisions``."""

    kind: Literal["tool_call_allowed", "tool_call_denied"]
    source: Literal["sandbox"] = "sandbox"
    at: Timestamp
    agent: AgentName
    rule: str
    decided_by: Literal["policy", "user", "timeout", "unavailable"]
    tool: str
    reason: str


class SecurityFindingRecord(Frozen):
    """A suspicious tool call and what the guard did, in state.json ``decisions``."""

    kind: Literal["security_finding"] = "security_finding"
    source: Literal["sandbox"] = "sandbox"
    at: Timestamp
    agent: AgentName
    rule: str
    action: Literal["warn", "pause", "stop"]
    assignment_id: str | None = None
    reason: str | None = None


class GetSandboxFiles(Message):
    """Question (ask, with a timeout; the wiring asks before starting the workers)."""


class SandboxFiles(Frozen):
    """Answer to ``GetSandboxFiles``: what the guard generated for this session."""

    claude_settings: str = Field(
        description="settings file with the tool hook, passed with the hooked CLI's settings flag"
    )
    policy: str = Field(description="the policy the hook reads")
    channel: str = Field(description="the Unix socket the hook asks over")
