"""Codex driven through ``codex app-server`` and the orchestrator's bridge: its stdout lines.

The bridge (``actors/agents/codex_app_bridge.py``) prints every notification codex sent, as
codex sent it (``{"method": ..., "params": ...}``), and its own lines (``{"bridge": ...}``: the
thread, each approval decision, an unsupported request, the turn's end). This parser turns them
into the same drafts as the ``exec --json`` parser: an app-server item (camelCase, verified
against the schema of codex 0.169.0, ``codex app-server generate-json-schema``) is rewritten as
the exec item it corresponds to and handled by ``CodexParser``'s own item handlers.
"""

from __future__ import annotations

from typing import Any

from meta_orchestrator.actors.adapters.base import Draft, draft
from meta_orchestrator.actors.adapters.codex import CodexParser
from meta_orchestrator.actors.adapters.common import as_dict, as_int, as_list, as_str, classify, clip

# app-server status words -> exec's (the item handlers test exec's).
_STATUS = {"inProgress": "in_progress", "completed": "completed", "failed": "failed", "declined": "declined"}
# Notifications that only say the thread or account changed state: recorded, not events of note.
_QUIET = frozenset(
    {
        "thread/status/changed",
        "account/rateLimits/updated",
        "remoteControl/status/changed",
        "serverRequest/resolved",
        "mcpServer/startupStatus/updated",
        "skills/changed",
        "thread/settings/updated",
    }
)
_DELTAS = ("/delta", "Delta", "/outputDelta", "/summaryPartAdded", "/patchUpdated", "/progress")


def exec_item(item: dict[str, Any]) -> dict[str, Any] | None:
    """The ``exec --json`` item an app-server item corresponds to (None: none does)."""
    kind = as_str(item.get("type"))
    status = _STATUS.get(as_str(item.get("status")) or "", item.get("status"))
    base = {"id": item.get("id"), "status": status}
    match kind:
        case "agentMessage":
            return {**base, "type": "agent_message", "text": item.get("text")}
        case "reasoning":
            parts = [p for p in (*as_list(item.get("summary")), *as_list(item.get("content"))) if isinstance(p, str)]
            return {**base, "type": "reasoning", "text": "\n".join(parts)}
        case "commandExecution":
            return {
                **base,
                "type": "command_execution",
                "command": item.get("command"),
                "aggregated_output": item.get("aggregatedOutput"),
                "exit_code": item.get("exitCode"),
            }
        case "fileChange":
            changes = [
                {"path": as_str(c.get("path")), "kind": as_str(as_dict(c.get("kind")).get("type"))}
                for c in map(as_dict, as_list(item.get("changes")))
            ]
            return {**base, "type": "file_change", "changes": changes}
        case "mcpToolCall":
            return {**item, **base, "type": "mcp_tool_call"}
        case "collabAgentToolCall":
            return {**item, **base, "type": "collab_tool_call"}
        case "webSearch":
            return {**base, "type": "web_search", "query": item.get("query")}
        case "plan":
            return {**base, "type": "plan", "text": item.get("text")}
    return None


class CodexAppParser(CodexParser):
    """The bridge's lines: codex app-server notifications and the bridge's own."""

    def __init__(self) -> None:
        super().__init__()
        self._total_usage: dict[str, Any] | None = None

    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """Route by ``method`` (codex's notification) or ``bridge`` (the bridge's line)."""
        method, own = obj.get("method"), obj.get("bridge")
        type_ = method if isinstance(method, str) else f"bridge.{own}" if isinstance(own, str) else None
        return super().feed_object({**obj, "type": type_})

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        params = as_dict(obj.get("params"))
        match type_:
            case "item/started" | "item/completed":
                return self._on_app_item(type_.removeprefix("item/"), as_dict(params.get("item")))
            case "turn/started":
                return [draft("status", kind="turn_started", text="turn started")]
            case "turn/completed":
                return self._on_app_turn(as_dict(params.get("turn")))
            case "thread/tokenUsage/updated":
                return self._on_usage(as_dict(params.get("tokenUsage")))
            case "thread/started":
                thread_id = as_str(as_dict(params.get("thread")).get("id"))
                self.session_id = self.session_id or thread_id
                return [draft("status", kind="thread", text="thread started", session_id=thread_id)]
            case "error":
                return self._on_app_error(params)
            case "item/plan/delta":
                return self._dispatch_exec("item.plan.delta", {"item_id": params.get("itemId"), **params})
            case "bridge.thread":
                self.session_id = as_str(obj.get("threadId")) or self.session_id
                said = "thread resumed" if obj.get("resumed") else "thread started"
                return [draft("status", kind="init", session_id=self.session_id, text=said)]
            case "bridge.approval":
                return self._on_approval(obj)
            case "bridge.request":
                text = f"codex asked {as_str(obj.get('method'))}, which the bridge does not answer; refused"
                return [draft("status", kind="warning", severity="warning", text=text)]
            case "bridge.end":
                return self._on_bridge_end(obj)
        if type_ in _QUIET or type_.endswith(_DELTAS) or type_ == "turn/diff/updated":
            return [draft("status", kind="app_server", text=type_)]
        return [draft("status", kind="unknown", text=type_)]

    def _dispatch_exec(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        return super()._dispatch(type_, obj)

    def _on_app_item(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        if item.get("type") == "userMessage":
            return [draft("status", kind="prompt", text="prompt received")]
        translated = exec_item(item)
        if translated is None:
            return [draft("status", kind="unknown", text=f"item/{phase}/{as_str(item.get('type')) or '?'}")]
        if translated["type"] == "file_change" and translated["status"] == "declined":
            paths = ", ".join(c["path"] for c in translated["changes"] if c["path"])
            return [draft("blocker", kind="denial", tool="apply_patch", text=f"patch declined: {paths}")]
        return self._on_item(phase, translated)

    def _on_usage(self, usage: dict[str, Any]) -> list[Draft]:
        """The thread's running total (like exec's turn.completed usage: replaced, never added)."""
        total = as_dict(usage.get("total"))
        self._total_usage = {
            "input_tokens": as_int(total.get("inputTokens")) or 0,
            "cached_input_tokens": as_int(total.get("cachedInputTokens")) or 0,
            "output_tokens": as_int(total.get("outputTokens")) or 0,
            "reasoning_output_tokens": as_int(total.get("reasoningOutputTokens")) or 0,
        }
        return [draft("status", kind="usage", text=f"{as_int(total.get('totalTokens')) or 0} tokens so far")]

    def _on_app_turn(self, turn: dict[str, Any]) -> list[Draft]:
        status = as_str(turn.get("status"))
        if status == "completed":
            return self._on_turn_completed({"usage": self._total_usage} if self._total_usage else {})
        message = as_str(as_dict(turn.get("error")).get("message"))
        if status == "interrupted" and not message:
            message = "the turn was interrupted"
        return self._on_turn_failed({"error": {"message": message}} if message else {})

    def _on_app_error(self, params: dict[str, Any]) -> list[Draft]:
        message = as_str(as_dict(params.get("error")).get("message")) or ""
        if params.get("willRetry") is True:
            return [draft("status", kind="retry", retryable=True, text=clip(message))]
        return self._on_error({"message": message})

    def _on_approval(self, obj: dict[str, Any]) -> list[Draft]:
        """One decision of the broker: recorded; a decline is a denial the run reports."""
        tool = as_str(obj.get("tool")) or "?"
        tool_input = as_dict(obj.get("input"))
        what = as_str(tool_input.get("command")) or as_str(tool_input.get("file_path")) or tool
        decision, reason = as_str(obj.get("decision")), as_str(obj.get("reason")) or ""
        details = {"decision": decision, "by": as_str(obj.get("by")), "item_id": as_str(obj.get("itemId"))}
        if decision == "accept":
            return [
                draft(
                    "status",
                    kind="approval",
                    tool=tool,
                    tool_input=tool_input,
                    text=f"allowed: {what}",
                    details=details,
                )
            ]
        self.permission_denials.append(f"{tool} {what}: {reason}")
        return [
            draft(
                "status",
                kind="approval",
                severity="warning",
                tool=tool,
                tool_input=tool_input,
                text=clip(f"declined: {what} ({reason})"),
                details=details,
            )
        ]

    def _on_bridge_end(self, obj: dict[str, Any]) -> list[Draft]:
        """The bridge's last line; it ends the run only when codex's own end never came."""
        if self.terminal_seen:
            return [draft("status", kind="ended", text=f"bridge: turn {as_str(obj.get('status')) or '?'}")]
        text = as_str(obj.get("error")) or "the codex bridge ended without a turn"
        cause, retryable = classify(text)
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="turn_failed",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                details={"cause": cause, "source": "bridge"},
            )
        ]

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """The bridge: 1 = the turn failed or codex broke off, 2 = a usage error of the bridge."""
        if returncode == 2:
            return "bridge usage error", False
        return super()._exit_meaning(returncode)
