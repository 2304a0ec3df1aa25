"""Demo ``opencode``: opencode-ai 1.18.33 ``run --format json``: parts, permission rules, errors."""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.acp import serve
from meta_orchestrator.actors.agents.demo.common import (
    Command,
    DemoAgent,
    Parser,
    UsageExit,
    guarded,
    piped_input,
    run,
    scenario_for,
    within,
)

VERSION = "1.18.33"
REJECTED = "The user rejected permission to use this specific tool call."
TOOLS = ("bash", "edit", "glob", "grep", "read", "skill", "task", "todowrite", "webfetch", "write")
PERMISSION = {"write": "edit"}  # the rule a tool answers to
ERRORS = {401: "invalid x-api-key [demo]", 429: "rate limited [demo]"}


class PermissionRejected(Exception):
    """``run`` rejected an ``ask``: the real one ends the run after it (exit 0)."""


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}{secrets.token_urlsafe(10)[:14]}"


def _rules() -> dict[str, Any]:
    try:
        rules = json.loads(os.environ.get("OPENCODE_PERMISSION") or "{}")
    except json.JSONDecodeError:
        return {}
    return rules if isinstance(rules, dict) else {}


class Opencode(DemoAgent):
    name = "opencode"

    def __init__(self, args: Any, prompt: str, cwd: Path, session_id: str | None) -> None:
        super().__init__(prompt, cwd, [], session_id or _id("ses"), stream=args.format == "json")
        self.args = args
        self.rules = _rules()
        self.auto = bool(args.auto)
        self.message_id = _id("msg")
        self.turn_text: list[str] = []

    def line(self, type_: str, part: dict[str, Any] | None = None, pace: bool = True, **extra: Any) -> None:
        obj: dict[str, Any] = {"type": type_, "timestamp": int(time.time() * 1000), "sessionID": self.session_id}
        if part is not None:
            obj["part"] = {"id": _id("prt"), "messageID": self.message_id, "sessionID": self.session_id, **part}
        self.emit({**obj, **extra}, pace=pace)

    def start(self) -> None:
        self.line("step_start", {"type": "step-start", "snapshot": secrets.token_hex(20)})

    def say(self, text: str) -> None:
        self.count("", text)
        self.turn_text.append(text)
        self.last_text = "\n".join(self.turn_text)
        now = int(time.time() * 1000)
        self.line("text", {"type": "text", "text": text, "time": {"start": now, "end": now}})

    def noise(self, i: int) -> None:
        self.line("text", {"type": "text", "text": f"[demo] flood line {i}"}, pace=False)

    def _step_finish(self, reason: str) -> None:
        tokens = {"total": self.tokens_in + self.tokens_out, "input": self.tokens_in, "output": self.tokens_out}
        part = {"type": "step-finish", "reason": reason, "tokens": {**tokens, "reasoning": 0}, "cost": 0.0}
        self.line("step_finish", part)
        self.message_id = _id("msg")

    def _tool(self, name: str, tool_input: dict[str, Any], output: str | None, error: str | None) -> None:
        self.tool_calls += 1
        self.turn_text = []
        state: dict[str, Any] = {"status": "error" if error else "completed", "input": tool_input}
        state.update({"error": error} if error else {"output": output or "", "title": name})
        self.line("tool_use", {"type": "tool", "tool": name, "callID": _id("toolu"), "state": state})
        self.count(json.dumps(tool_input) + (output or ""), "")

    def _allowed(self, permission: str) -> bool:
        """A tool whose rule is ``deny`` is not offered at all."""
        return self.rules.get(permission) != "deny"

    def _outside_ok(self, path: Path) -> bool:
        rule = self.rules.get("external_directory")
        if self.auto or rule == "allow":
            return True
        rules = rule if isinstance(rule, dict) else {}
        return within(path, [Path(k[:-2]) for k, v in rules.items() if v == "allow" and k.endswith("/*")])

    def _unavailable(self, name: str) -> None:
        offered = ", ".join(sorted({*(t for t in TOOLS if self._allowed(PERMISSION.get(t, t))), "invalid"}))
        message = f"Model tried to call unavailable tool '{name}'. Available tools: {offered}."
        output = f"The arguments provided to the tool are invalid: {message}"
        self._tool("invalid", {"tool": name, "error": message}, output, None)

    def write(self, path: Path, content: str) -> bool:
        if not self._allowed("edit"):
            self._unavailable("write")
            return False
        tool_input = {"filePath": str(path), "content": content}
        if not within(path, self.roots()) and not self._outside_ok(path):
            self.err(
                f"\x1b[93m\x1b[1m! \x1b[0mpermission requested: external_directory ({path.parent}/*); auto-rejecting"
            )
            self._tool("write", tool_input, None, REJECTED)
            raise PermissionRejected
        self.do_write(path, content)
        self._tool("write", tool_input, "Wrote file successfully.", None)
        return True

    def shell(self, command: Command) -> str | None:
        if not self._allowed("bash"):
            self._unavailable("bash")
            return None
        out, _code = self.run_command(command)
        self._tool("bash", {"command": command.display, "description": "[demo] check"}, out, None)
        return out

    def finish(self, final_text: str) -> int:
        self._step_finish("stop")
        if not self.stream:
            self.raw((self.last_text + "\n").encode())
        return 0

    def fail(self, cause: str) -> int:
        if cause == "server_error":
            # The real one retries a 5xx without end and prints nothing: only a stall rule ends it.
            while True:
                time.sleep(3600)
        status = 401 if cause == "auth_error" else 429
        data = {"message": ERRORS[status], "statusCode": status, "isRetryable": status == 429}
        self.line("error", error={"name": "APIError", "data": data})
        return 1


def _parser() -> Parser:
    p = Parser("opencode", "Error: {message}", 1)
    p.add_argument("command_name", nargs="?")
    p.add_argument("message", nargs="*")
    for flags in (("--format",), ("-m", "--model"), ("-s", "--session"), ("--dir",), ("--agent",), ("--title",)):
        p.add_argument(*flags)
    for flags in (("--auto",), ("-c", "--continue"), ("--pure",), ("--print-logs",), ("-v", "--version")):
        p.add_argument(*flags, action="store_true")
    return p


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_cli(argv, "message")
    if args.version:
        print(f"{VERSION} [demo]", flush=True)
        return 0
    if unknown:
        raise UsageExit(f"Error: Unknown argument: {unknown[0].lstrip('-')}")
    if args.command_name == "acp":
        return serve("opencode", VERSION)  # the prompt comes over ACP
    if args.command_name != "run":
        raise UsageExit("[demo] the demo opencode supports only `opencode run` and `opencode acp`")
    cwd = Path(args.dir) if args.dir else Path.cwd()
    if not cwd.is_dir():
        raise UsageExit(f"Error: Failed to change directory to {cwd}")
    if args.session and not args.session.startswith("ses_"):
        raise UsageExit("Error: Session not found")
    prompt = " ".join(args.message) or piped_input(None) or ""  # a message given, else stdin
    if not prompt.strip() and scenario_for("opencode") not in ("auth_error", "rate_limit", "server_error"):
        raise UsageExit("Error: You must provide a message or a command")
    agent = Opencode(args, prompt, cwd, args.session)
    try:
        return run(agent)
    except PermissionRejected:
        agent._step_finish("tool-calls")  # the real run ends here, exit 0, with no answer
        return 0


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
