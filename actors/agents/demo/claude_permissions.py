"""Demo ``claude``: whether a tool call may run, as Claude Code 2.1.197 decides it in ``-p`` mode.

First the ``--settings`` PreToolUse command hooks (they decide before the permission mode
does), then the permission mode with ``--allowedTools``/``--disallowedTools``. A denial is
``(text, listed)``: the tool_result text, and whether the call goes in ``permission_denials``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.common import Command, UsageExit, within

Denial = tuple[str, bool]

READ_ONLY = {"ls", "cat", "head", "tail", "wc", "grep", "find", "pwd", "echo", "stat", "file", "tree"}
DONT_ASK = (
    "Permission to use {tool} has been denied because Claude Code is running in don't ask mode. "
    "IMPORTANT: You *may* attempt to accomplish this action using other tools that might "
    "naturally be used to accomplish this goal, e.g. using head instead of cat. But you *should "
    "not* attempt to work around this denial in malicious ways, e.g. do not use your ability to "
    "run tests to execute non-test actions. You should only try to work around this restriction "
    "in reasonable ways that do not attempt to bypass the intent behind this denial."
)
HOOK_TIMEOUT_S = 600


def tool_rules(values: list[str] | None) -> list[str]:
    """``--allowedTools``/``--disallowedTools`` values: rules split on commas and spaces, not
    inside ``Bash(...)``."""
    out: list[str] = []
    for value in values or []:
        out += [r for r in re.split(r"[,\s]+(?![^(]*\))", value) if r]
    return out


class Permissions:
    """The permission mode and the allow and deny lists."""

    def __init__(self, mode: str, allowed: list[str], disallowed: list[str]) -> None:
        self.mode = mode
        self.allowed = allowed
        self.disallowed = disallowed

    def removed(self, tool: str) -> Denial | None:
        if tool in self.disallowed:
            return (
                f"<tool_use_error>Error: No such tool available: {tool}. {tool} exists but is "
                "not enabled in this context. Use one of the available tools "
                "instead.</tool_use_error>",
                False,
            )
        return None

    def write(self, path: Path, roots: list[Path]) -> Denial | None:
        if (removed := self.removed("Write")) is not None:
            return removed
        ask = (f"Claude requested permissions to write to {path}, but you haven't granted it yet.", True)
        if self.mode == "bypassPermissions":
            return None
        if self.mode == "plan":
            return (f"Cannot write to {path} while in plan mode.", True)
        if not within(path, roots):
            return ask
        if self.mode in ("acceptEdits", "auto") or any(r in ("Write", "Edit") for r in self.allowed):
            return None
        if self.mode == "dontAsk":
            return (DONT_ASK.format(tool="Write"), True)
        return ask

    def bash(self, command: Command) -> Denial | None:
        if (removed := self.removed("Bash")) is not None:
            return removed
        head = command.display.split()[0]
        allowed = any(
            r == "Bash"
            or re.fullmatch(rf"Bash\({re.escape(head)}(:\*| \*|\s.*)?\)", r)
            or r == f"Bash({command.display})"
            for r in self.allowed
        )
        if self.mode == "bypassPermissions" or allowed:
            return None
        if self.mode == "dontAsk":
            return (DONT_ASK.format(tool="Bash"), True)
        if head in READ_ONLY or self.mode in ("acceptEdits", "auto"):  # demo: edits-mode runs its checks
            return None
        return ("Claude requested permissions to use Bash, but you haven't granted it yet.", True)


class PreToolUseHooks:
    """The ``hooks.PreToolUse`` matcher groups of ``--settings <file|json>``."""

    def __init__(self, value: str | None) -> None:
        self.groups: list[dict[str, Any]] = []
        if not value:
            return
        try:
            text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
            settings = json.loads(text)
        except (OSError, ValueError) as exc:
            raise UsageExit(f"Error: Invalid settings: {exc}") from None
        groups = (settings.get("hooks") or {}).get("PreToolUse") or []
        self.groups = [g for g in groups if isinstance(g, dict)]

    def decide(self, call: dict[str, Any], cwd: Path) -> Denial | str | None:
        """Run the hooks matching ``call["tool_name"]`` as Claude Code does.

        JSON on stdin; exit 2 blocks with stderr as the tool_result; exit 0 with
        ``hookSpecificOutput.permissionDecision`` deny (the reason is the tool_result, the
        call is listed in ``permission_denials``), ask (``-p`` cannot ask: denied the same
        way) or allow (the permission mode is skipped). Returns a denial, "allow" or None.
        """
        name = call["tool_name"]
        for group in self.groups:
            matcher = str(group.get("matcher") or "*")
            if matcher not in ("*", "") and not re.fullmatch(matcher, name):
                continue
            for hook in group.get("hooks") or []:
                if hook.get("type") != "command" or not hook.get("command"):
                    continue
                decided = _run_hook(hook, call, cwd)
                if decided is not None:
                    return decided
        return None


def _run_hook(hook: dict[str, Any], call: dict[str, Any], cwd: Path) -> Denial | str | None:
    name = call["tool_name"]
    try:
        done = subprocess.run(
            hook["command"],
            shell=True,
            input=json.dumps(call).encode(),
            capture_output=True,
            cwd=cwd,
            timeout=float(hook.get("timeout") or HOOK_TIMEOUT_S),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None  # a hook that times out is a non-blocking error
    if done.returncode == 2:
        stderr = done.stderr.decode("utf-8", "replace")
        return (f"PreToolUse:{name} hook error: [{hook['command']}]: {stderr}", False)
    if done.returncode != 0:
        return None
    try:
        output = json.loads(done.stdout.decode("utf-8", "replace") or "{}")
    except ValueError:
        return None
    specific = (output.get("hookSpecificOutput") if isinstance(output, dict) else None) or {}
    decision = specific.get("permissionDecision")
    if decision in ("deny", "ask"):
        return (str(specific.get("permissionDecisionReason") or "") or f"Blocked by a PreToolUse hook: {name}", True)
    if decision == "allow":
        return "allow"
    return None


__all__ = ["Denial", "Permissions", "PreToolUseHooks", "tool_rules"]
