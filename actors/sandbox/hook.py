"""Claude Code's PreToolUse hook: ``python -I -m meta_orchestrator.actors.sandbox.hook --policy <policy.json>``.

(The exact command, and why it is written so, is in ``hook_launch.py``.)

Claude runs this before every tool call with the call as JSON on stdin
(``{"hook_event_name": "PreToolUse", "tool_name", "tool_input", "cwd", "tool_use_id", ...}``)
and acts on what it prints (exit 0, JSON on stdout)::

    {"hookSpecificOutput": {"hookEventName": "PreToolUse",
                            "permissionDecision": "deny" | "allow",
                            "permissionDecisionReason": "..."}}

The decision itself is ``tool_broker.decide``, shared with every other CLI's way of asking:

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

import argparse
import hashlib
import hmac
import json
import os
import signal
import sys
from typing import Any

from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV, Policy
from meta_orchestrator.actors.sandbox.tool_broker import decide


def decision(kind: str, reason: str) -> dict[str, Any]:
    """The PreToolUse JSON output for ``allow`` or ``deny``."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": kind,
            "permissionDecisionReason": reason,
        }
    }


def judge(policy: Policy, call: dict[str, Any]) -> dict[str, Any] | None:
    """The hook's output for one PreToolUse input (``None``: say nothing, claude decides)."""
    given = call.get("tool_input")
    tool_input: dict[str, Any] = given if isinstance(given, dict) else {}
    answer = decide(policy, str(call.get("tool_name") or ""), tool_input, call.get("cwd"), call.get("tool_use_id"))
    if answer is None:
        return None
    return decision("allow" if answer.allow else "deny", answer.reason)


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
