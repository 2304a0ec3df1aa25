"""Claude Code's PreToolUse hook: ``python -I -m meta_orchestrator.actors.sandbox.hook --policy <policy.json>``.

(The exact command, and why it is written so, is in ``hook_launch.py``.)

Claude runs this before every tool call with the call as JSON on stdin
(``{"hook_event_name": "PreToolUse", "tool_name", "tool_input", "cwd", "tool_use_id", ...}``)
and acts on what it prints (exit 0, JSON on stdout)::

    {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                            "permissionDecision": "deny" | "allow",
                            "permissionDecisionReason": "..."}}

* blocked by the policy -> ``deny``: the tool never runs; claude shows the reason to the model
  as the tool_result and lists the call in ``result.permission_denials``. The guard is told
  (best effort) for the session's record.
* high-risk -> the hook asks the orchestrator's guard over the local channel (a Unix socket
  only this user can open) and waits for the user's decision; ``allow`` on yes, ``deny`` on
  no, on timeout, or when the channel cannot be reached.
* anything else -> no output: claude's own permission mode and ``--add-dir`` list decide.

It fails closed: a hook that crashes (any exit code but 0 and 2) or outlives claude's timeout
would let the call through, so every error, and the deadline passing (``--deadline-s``), ends
in a ``deny`` (or, if even printing fails, exit 2 with the reason on stderr, which claude also
treats as a block). A hook that cannot start or import at all is blocked by its command's
``|| exit 2``.
"""

from __future__ import annotations

import contextlib
import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
from typing import Any

from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV, Policy, check_tool_call

CONNECT_TIMEOUT_S = 2.0


def decision(kind: str, reason: str) -> dict[str, Any]:
    """The PreToolUse JSON output for ``allow`` or ``deny``."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": kind,
            "permissionDecisionReason": reason,
        }
    }


def ask_channel(path: str, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one JSON line, read one JSON line back. Raises ``OSError``/``ValueError``."""
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


def judge(policy: Policy, call: dict[str, Any]) -> dict[str, Any] | None:
    """The hook's output for one PreToolUse input (``None``: say nothing, claude decides)."""
    tool = str(call.get("tool_name") or "")
    given = call.get("tool_input")
    tool_input: dict[str, Any] = given if isinstance(given, dict) else {}
    verdict = check_tool_call(policy, tool, tool_input, call.get("cwd"))
    request = {
        "secret": policy.secret,
        "agent": policy.agent,
        "tool_name": tool,
        "tool_input": tool_input,
        "cwd": call.get("cwd"),
        "tool_use_id": call.get("tool_use_id"),
        "rule": verdict.rule,
        "reason": verdict.reason,
    }
    if verdict.decision == "allow":
        return None
    if verdict.decision == "block":
        if policy.channel:
            with contextlib.suppress(OSError):  # the record is a courtesy; the block stands either way
                ask_channel(policy.channel, {**request, "type": "blocked"}, 0)
        return decision(
            "deny",
            f"Blocked by the orchestrator's sandbox policy "
            f"({verdict.rule}): {verdict.reason}. Do not try to work around "
            "this; report it as a blocker if the task needs it.",
        )
    if not policy.channel:
        return decision("deny", f"{verdict.reason}; no way to ask the user, so it is denied")
    try:
        answer = ask_channel(policy.channel, {**request, "type": "ask"}, policy.confirm_timeout_s + 10)
    except (OSError, ValueError) as exc:
        return decision("deny", f"{verdict.reason}; the orchestrator could not be asked ({exc}), so it is denied")
    if answer.get("decision") == "allow":
        return decision("allow", str(answer.get("reason") or "approved by the user"))
    return decision("deny", str(answer.get("reason") or "denied by the user"))


def _past_deadline(_signum: int, _frame: Any) -> None:
    raise TimeoutError("no decision before the hook's deadline")


def main(argv: list[str]) -> int:
    """Read the call from stdin, print the decision. Always exits 0 or 2 (never fails open)."""
    try:
        parser = argparse.ArgumentParser(prog="meta_orchestrator.actors.sandbox.hook")
        parser.add_argument("--policy", required=True)
        parser.add_argument("--policy-sha256", default="")
        parser.add_argument("--deadline-s", type=float, default=0.0)
        args = parser.parse_args(argv)
        if args.deadline_s > 0:
            signal.signal(signal.SIGALRM, _past_deadline)
            signal.setitimer(signal.ITIMER_REAL, args.deadline_s)
        with open(args.policy, "rb") as f:
            raw = f.read()
        if args.policy_sha256 and not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), args.policy_sha256):
            raise ValueError(f"{args.policy} is not the policy this session wrote (it was changed)")
        # The run's own folder (its checkout) from the worker, within what the policy allows.
        policy = Policy.from_json(json.loads(raw.decode("utf-8"))).for_run(os.environ.get(RUN_WORKDIR_ENV))
        call = json.loads(sys.stdin.read())
        if not isinstance(call, dict) or not isinstance(call.get("tool_name"), str) or not call["tool_name"]:
            raise ValueError("the hook's input is not a tool call (a JSON object naming tool_name)")
        output = judge(policy, call)
        signal.setitimer(signal.ITIMER_REAL, 0)  # decided: the deadline no longer applies
        if output is not None:
            sys.stdout.write(json.dumps(output) + "\n")
            sys.stdout.flush()
        return 0
    except BaseException as exc:  # noqa: BLE001 - fail closed, whatever went wrong
        signal.setitimer(signal.ITIMER_REAL, 0)  # the deny below must not be cut short
        reason = f"the orchestrator's sandbox hook failed ({exc!r}); the call is denied"
        try:
            sys.stdout.write(json.dumps(decision("deny", reason)) + "\n")
            sys.stdout.flush()
            return 0
        except BaseException:  # noqa: BLE001
            sys.stderr.write(reason + "\n")
            return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
