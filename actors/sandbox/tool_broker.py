"""The one place a tool call is decided before it runs, for every CLI.

Each CLI asks in its own way (claude's PreToolUse hook, codex's app-server approval requests,
ACP's ``session/request_permission``); each way calls ``decide`` with the call named in the
policy's words (``Bash`` with ``command``, ``Write``/``Edit`` with ``file_path``). The policy
answers allow, block or ask; an ask goes to the session's guard over the local channel (a Unix
socket only this user can open), which puts it in the inbox and records every decision in
``security.jsonl``. Nobody reachable, no answer in time, any error: denied (fail closed).

Standard library only: it runs inside the OS sandbox beside the CLI.
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

from meta_orchestrator.actors.sandbox.policy import Policy, check_tool_call

CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class BrokerAnswer:
    """What to tell the CLI. ``allow`` False: the call must not run; ``reason`` is shown to
    the model. ``by``: ``policy`` (decided by a rule), ``user`` (asked), ``default`` (asked,
    nobody could answer)."""

    allow: bool
    reason: str
    by: str = "policy"


def ask_channel(path: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one JSON line, read one JSON line back (``timeout_s`` <= 0: send only).

    Raises:
        OSError: the channel cannot be reached or broke.
        ValueError: the answer is not a JSON object.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(path)
        sock.sendall((json.dumps(request) + "\n").encode())
        if timeout_s <= 0:
            return {}
        sock.settimeout(timeout_s)
        buffer = b""
        while not buffer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        answer = json.loads(buffer.decode() or "null")
        if not isinstance(answer, dict):
            raise ValueError("the guard closed the channel without an answer")
        return answer


def decide(
    policy: Policy, tool: str, tool_input: dict[str, Any], cwd: str | None, tool_use_id: str | None = None
) -> BrokerAnswer | None:
    """The decision on one call; ``None`` when the policy allows it (the CLI's own permission
    mode and folder grants then decide, as they would without the orchestrator)."""
    verdict = check_tool_call(policy, tool, tool_input, cwd)
    if verdict.decision == "allow":
        return None
    request = {
        "secret": policy.secret,
        "agent": policy.agent,
        "tool_name": tool,
        "tool_input": tool_input,
        "cwd": cwd,
        "tool_use_id": tool_use_id,
        "rule": verdict.rule,
        "reason": verdict.reason,
    }
    if verdict.decision == "block":
        if policy.channel:
            with contextlib.suppress(OSError):  # the record is a courtesy; the block stands either way
                ask_channel(policy.channel, {**request, "type": "blocked"}, 0)
        return BrokerAnswer(
            False,
            f"Blocked by the orchestrator's sandbox policy ({verdict.rule}): {verdict.reason}. "
            "Do not try to work around this; report it as a blocker if the task needs it.",
        )
    if not policy.channel:
        return BrokerAnswer(False, f"{verdict.reason}; no way to ask the user, so it is denied", "default")
    try:
        answer = ask_channel(policy.channel, {**request, "type": "ask"}, policy.confirm_timeout_s + 10)
    except (OSError, ValueError) as exc:
        return BrokerAnswer(
            False, f"{verdict.reason}; the orchestrator could not be asked ({exc}), so it is denied", "default"
        )
    if answer.get("decision") == "allow":
        return BrokerAnswer(True, str(answer.get("reason") or "approved by the user"), "user")
    return BrokerAnswer(False, str(answer.get("reason") or "denied by the user"), "user")
