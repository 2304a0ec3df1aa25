"""Demo ``claude``: Claude Code 2.1.197's flags, stream-json lines, permission rules and errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.demo.common import (
    Command,
    DemoAgent,
    Parser,
    UsageExit,
    guarded,
    is_uuid,
    new_id,
    now_iso,
    run,
    within,
)

VERSION = "2.1.197"
MODES = ("acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan")
FORMATS = ("text", "json", "stream-json")
TOOLS = [
    "Task",
    "Bash",
    "Edit",
    "Read",
    "Write",
    "NotebookEdit",
    "WebFetch",
    "WebSearch",
    "TaskCreate",
    "TaskUpdate",
    "TaskList",
    "Skill",
    "ToolSearch",
]
ALIASES = {"opus": "claude-opus-4-8", "sonnet": "claude-sonnet-4-6", "fable": "claude-fable-4-8"}
READ_ONLY = {
    "ls",
    "cat",
    "head",
    "tail",
    "wc",
    "grep",
    "find",
    "pwd",
    "echo",
    "stat",
    "file",
    "tree",
}
DONT_ASK = (
    "Permission to use {tool} has been denied because Claude Code is running in don't ask mode. "
    "IMPORTANT: You *may* attempt to accomplish this action using other tools that might "
    "naturally be used to accomplish this goal, e.g. using head instead of cat. But you *should "
    "not* attempt to work around this denial in malicious ways, e.g. do not use your ability to "
    "run tests to execute non-test actions. You should only try to work around this restriction "
    "in reasonable ways that do not attempt to bypass the intent behind this denial."
)
ROOT_REFUSAL = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"


def _rules(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out += [r for r in re.split(r"[,\s]+(?![^(]*\))", value) if r]
    return out


def _pre_tool_use_hooks(value: str | None) -> list[dict[str, Any]]:
    """``--settings <file|json>``: its ``hooks.PreToolUse`` matcher groups."""
    if not value:
        return []
    try:
        text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
        settings = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageExit(f"Error: Invalid settings: {exc}") from None
    groups = (settings.get("hooks") or {}).get("PreToolUse") or []
    return [g for g in groups if isinstance(g, dict)]


class Claude(DemoAgent):
    name = "claude"

    def __init__(self, args: Any, prompt: str, session_id: str | None) -> None:
        super().__init__(
            prompt,
            Path.cwd(),
            [Path(d) for d in args.add_dir or []],
            session_id,
            stream=args.output_format == "stream-json",
        )
        self.args = args
        self.mode = "bypassPermissions" if args.dangerously_skip_permissions else (args.permission_mode or "default")
        self.hooks = _pre_tool_use_hooks(args.settings)
        self.allowed = _rules(args.allowedTools)
        self.disallowed = _rules(args.disallowedTools)
        self.model = args.model and ALIASES.get(args.model, args.model) or "claude-opus-4-8[1m]"
        self.api_model = self.model.removesuffix("[1m]")
        self.denials: list[dict[str, Any]] = []
        self.turns = 1
        self.msg_id = ""
        self._next_message()

    def _next_message(self) -> None:
        self.msg_id = "msg_demo" + new_id().replace("-", "")[:20]

    def _common(self) -> dict[str, Any]:
        return {"parent_tool_use_id": None, "session_id": self.session_id, "uuid": new_id()}

    def start(self) -> None:
        self.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": str(self.cwd),
                "session_id": self.session_id,
                "tools": [t for t in TOOLS if t not in self.disallowed],
                "mcp_servers": [],
                "model": self.model,
                "permissionMode": self.mode,
                "slash_commands": ["review", "security-review"],
                "apiKeySource": "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none",
                "claude_code_version": VERSION,
                "output_style": "default",
                "agents": ["claude", "Explore", "general-purpose", "Plan"],
                "skills": [],
                "plugins": [],
                "analytics_disabled": False,
                "product_feedback_disabled": False,
                "uuid": new_id(),
                "memory_paths": {
                    "auto": str(
                        Path.home() / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(self.cwd)) / "memory"
                    )
                    + "/"
                },
                "fast_mode_state": "off",
            }
        )

    def _assistant(self, block: dict[str, Any], pace: bool = True, **extra: Any) -> None:
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": self.msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.api_model,
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": self.tokens_in,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                    "context_management": None,
                },
                **self._common(),
                **extra,
            },
            pace=pace,
        )

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        self._assistant({"type": "text", "text": text})

    def noise(self, i: int) -> None:
        self._assistant({"type": "text", "text": f"[demo] flood line {i}"}, pace=False)

    def _tool(
        self,
        name: str,
        tool_input: dict[str, Any],
        act: Callable[[], tuple[str, bool, Any]],
        denial: tuple[str, bool] | None,
    ) -> bool:
        """Print tool_use and its tool_result; ``denial`` = (text, listed in permission_denials)."""
        tool_id = "toolu_demo" + new_id().replace("-", "")[:20]
        self.count("", json.dumps(tool_input))
        self._assistant({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        self.tool_calls += 1
        hooked = self._pre_tool_use(name, tool_input, tool_id)
        if hooked is not None:  # a hook decides before the permission mode does
            denial = None if hooked == "allow" else hooked
        if denial:
            text, listed = denial
            block = {
                "type": "tool_result",
                "content": text,
                "is_error": True,
                "tool_use_id": tool_id,
            }
            result: Any = "Error: " + text
            if listed:
                self.denials.append({"tool_name": name, "tool_use_id": tool_id, "tool_input": tool_input})
            ok = False
        else:
            content, is_error, result = act()
            block = {
                "tool_use_id": tool_id,
                "type": "tool_result",
                "content": content,
                "is_error": is_error,
            }
            ok = not is_error
        self.count(str(block["content"]), "")
        self.emit(
            {
                "type": "user",
                "message": {"role": "user", "content": [block]},
                **self._common(),
                "timestamp": now_iso(),
                "tool_use_result": result,
            }
        )
        self.turns += 1
        self._next_message()
        return ok

    def _pre_tool_use(self, name: str, tool_input: dict[str, Any], tool_id: str) -> tuple[str, bool] | str | None:
        """Run the ``--settings`` PreToolUse command hooks as Claude Code does.

        JSON on stdin; exit 2 blocks with stderr as the tool_result; exit 0 with
        ``hookSpecificOutput.permissionDecision`` deny (the reason is the tool_result, the
        call is listed in ``permission_denials``), ask (``-p`` cannot ask: denied the same
        way) or allow (the permission mode is skipped). Returns a denial, "allow" or None.
        """
        for group in self.hooks:
            matcher = str(group.get("matcher") or "*")
            if matcher not in ("*", "") and not re.fullmatch(matcher, name):
                continue
            for hook in group.get("hooks") or []:
                if hook.get("type") != "command" or not hook.get("command"):
                    continue
                call = {
                    "session_id": self.session_id,
                    "transcript_path": "",
                    "cwd": str(self.cwd),
                    "permission_mode": self.mode,
                    "hook_event_name": "PreToolUse",
                    "tool_name": name,
                    "tool_input": tool_input,
                    "tool_use_id": tool_id,
                }
                try:
                    done = subprocess.run(
                        hook["command"],
                        shell=True,
                        input=json.dumps(call).encode(),
                        capture_output=True,
                        cwd=self.cwd,
                        timeout=float(hook.get("timeout") or 600),
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    continue  # a hook that times out is a non-blocking error
                if done.returncode == 2:
                    stderr = done.stderr.decode("utf-8", "replace")
                    return (f"PreToolUse:{name} hook error: [{hook['command']}]: {stderr}", False)
                if done.returncode != 0:
                    continue
                try:
                    output = json.loads(done.stdout.decode("utf-8", "replace") or "{}")
                except ValueError:
                    continue
                specific = output.get("hookSpecificOutput") if isinstance(output, dict) else None
                decision = (specific or {}).get("permissionDecision")
                reason = str((specific or {}).get("permissionDecisionReason") or "")
                if decision in ("deny", "ask"):
                    return (reason or f"Blocked by a PreToolUse hook: {name}", True)
                if decision == "allow":
                    return "allow"
        return None

    def _removed(self, tool: str) -> tuple[str, bool] | None:
        if tool in self.disallowed:
            return (
                (
                    f"<tool_use_error>Error: No such tool available: {tool}. {tool} exists but is "
                    "not enabled in this context. Use one of the available tools "
                    "instead.</tool_use_error>"
                ),
                False,
            )
        return None

    def _write_denial(self, path: Path) -> tuple[str, bool] | None:
        if (removed := self._removed("Write")) is not None:
            return removed
        inside = within(path, self.roots())
        ask = (
            f"Claude requested permissions to write to {path}, but you haven't granted it yet.",
            True,
        )
        if self.mode == "bypassPermissions":
            return None
        if self.mode == "plan":
            return (f"Cannot write to {path} while in plan mode.", True)
        if not inside:
            return ask
        if self.mode in ("acceptEdits", "auto") or any(r in ("Write", "Edit") for r in self.allowed):
            return None
        if self.mode == "dontAsk":
            return (DONT_ASK.format(tool="Write"), True)
        return ask

    def write(self, path: Path, content: str) -> bool:
        def act() -> tuple[str, bool, Any]:
            existed = path.exists()
            self.do_write(path, content)
            verb = "updated" if existed else "created"
            return (
                f"File {verb} successfully at: {path}",
                False,
                {
                    "type": "update" if existed else "create",
                    "filePath": str(path),
                    "content": content,
                    "structuredPatch": [],
                    "originalFile": None,
                },
            )

        return self._tool("Write", {"file_path": str(path), "content": content}, act, self._write_denial(path))

    def _bash_denial(self, command: Command) -> tuple[str, bool] | None:
        if (removed := self._removed("Bash")) is not None:
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
        if head in READ_ONLY or self.mode in (
            "acceptEdits",
            "auto",
        ):  # demo: edits-mode runs its checks
            return None
        return ("Claude requested permissions to use Bash, but you haven't granted it yet.", True)

    def shell(self, command: Command) -> str | None:
        out: list[str] = []

        def act() -> tuple[str, bool, Any]:
            text, code = self.run_command(command)
            out.append(text)
            content = text.rstrip("\n") if code == 0 else f"Exit code {code}\n{text.rstrip()}"
            return (
                content or "(Bash completed with no output)",
                code != 0,
                {
                    "stdout": text.rstrip("\n"),
                    "stderr": "",
                    "interrupted": False,
                    "isImage": False,
                    "noOutputExpected": False,
                },
            )

        self._tool(
            "Bash",
            {"command": command.display, "description": f"Run {command.display.split()[0]}"},
            act,
            self._bash_denial(command),
        )
        return out[0] if out else None

    def _usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.tokens_in,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": self.tokens_out,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard",
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "inference_geo": "",
            "iterations": [],
            "speed": "standard",
        }

    def _result(self, **fields: Any) -> None:
        elapsed = time.monotonic() - self.started
        obj = {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "api_error_status": None,
            "duration_ms": int(elapsed * 1000),
            "duration_api_ms": int(elapsed * 700),
        }
        obj.update({k: fields.pop(k) for k in ("ttft_ms", "ttft_stream_ms", "time_to_request_ms") if k in fields})
        obj.update(num_turns=self.turns, **fields, session_id=self.session_id)
        obj.setdefault("result", self.last_text)
        obj.update({k: v for k, v in self._tail().items() if k not in obj})
        if self.stream:
            self.emit(obj, pace=False)
        elif self.args.output_format == "json":
            self.raw((json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        else:
            self.raw((str(obj.get("result", "")) + "\n").encode())

    def _tail(self) -> dict[str, Any]:
        cost = round(self.tokens_in * 5e-6 + self.tokens_out * 25e-6, 6)
        return {
            "total_cost_usd": cost,
            "usage": self._usage(),
            "modelUsage": {
                self.model: {
                    "inputTokens": self.tokens_in,
                    "outputTokens": self.tokens_out,
                    "cacheReadInputTokens": 0,
                    "cacheCreationInputTokens": 0,
                    "webSearchRequests": 0,
                    "costUSD": cost,
                    "contextWindow": 1000000,
                    "maxOutputTokens": 64000,
                }
            },
            "permission_denials": self.denials,
            "terminal_reason": "completed",
            "fast_mode_state": "off",
            "uuid": new_id(),
        }

    def finish(self, final_text: str) -> int:
        self._result(
            ttft_ms=120,
            ttft_stream_ms=100,
            time_to_request_ms=90,
            result=final_text,
            stop_reason="end_turn",
        )
        return 0

    def fail(self, cause: str) -> int:
        self.start()
        code, text, status = {
            "auth_error": ("authentication_failed", "Not logged in · Please run /login", None),
            "rate_limit": (
                "rate_limit",
                "API Error: Request rejected (429) · [demo] rate limit exceeded",
                429,
            ),
            "server_error": (
                "server_error",
                (
                    "API Error: 500 [demo] internal server error. This is a server-side issue, "
                    "usually temporary — try again in a moment. If it persists, check your "
                    "inference gateway (api.anthropic.com)."
                ),
                500,
            ),
        }[cause]
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "id": new_id(),
                    "container": None,
                    "model": "<synthetic>",
                    "role": "assistant",
                    "stop_reason": "stop_sequence",
                    "stop_sequence": "",
                    "type": "message",
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                    "content": [{"type": "text", "text": text}],
                    "context_management": None,
                },
                **self._common(),
                "error": code,
            }
        )
        self.tokens_in = self.tokens_out = 0
        self._result(
            is_error=True,
            api_error_status=status,
            duration_api_ms=0,
            result=text,
            stop_reason="stop_sequence",
            total_cost_usd=0,
            usage={"input_tokens": 0, "output_tokens": 0},
            modelUsage={},
        )
        return 1


def _parser() -> Parser:
    p = Parser("claude", "error: {message}", 1)
    p.add_argument("-p", "--print", action="store_true")
    p.add_argument("prompt", nargs="*")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("--output-format")
    p.add_argument("--input-format")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("-d", "--debug", nargs="?", const=True)
    for flag in (
        "--include-partial-messages",
        "--include-hook-events",
        "--dangerously-skip-permissions",
        "--fork-session",
        "--no-session-persistence",
        "--bare",
        "--safe-mode",
        "--strict-mcp-config",
    ):
        p.add_argument(flag, action="store_true")
    p.add_argument("-c", "--continue", action="store_true")
    for flags in (
        ("--add-dir",),
        ("--allowedTools", "--allowed-tools"),
        ("--disallowedTools", "--disallowed-tools"),
        ("--tools",),
        ("--mcp-config",),
        ("--betas",),
        ("--file",),
    ):
        p.add_argument(*flags, nargs="+", action="extend")
    for flag in (
        "--permission-mode",
        "--model",
        "--fallback-model",
        "--effort",
        "--max-turns",
        "--max-budget-usd",
        "--session-id",
        "--system-prompt",
        "--append-system-prompt",
        "--settings",
        "--setting-sources",
        "--json-schema",
        "--agents",
        "--agent",
    ):
        p.add_argument(flag)
    p.add_argument("-r", "--resume")
    p.add_argument("-w", "--worktree", nargs="?", const=True)
    return p


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_cli(argv, "prompt")
    for token in unknown:
        if token.startswith("-"):
            raise UsageExit(f"error: unknown option '{token.split('=')[0]}'")
    if args.version:
        print(f"{VERSION} (Claude Code) [demo]", flush=True)
        return 0
    if args.output_format is not None and args.output_format not in FORMATS:
        raise UsageExit(
            f"error: option '--output-format <format>' argument '{args.output_format}' is invalid. "
            f"Allowed choices are {', '.join(FORMATS)}."
        )
    if args.permission_mode is not None and args.permission_mode not in MODES:
        raise UsageExit(
            f"error: option '--permission-mode <mode>' argument '{args.permission_mode}' is "
            f"invalid. Allowed choices are {', '.join(MODES)}."
        )
    bypass = args.dangerously_skip_permissions or args.permission_mode == "bypassPermissions"
    if bypass and os.geteuid() == 0 and os.environ.get("IS_SANDBOX") != "1":
        raise UsageExit(ROOT_REFUSAL)
    if not args.print:
        raise UsageExit("[demo] the demo claude runs only non-interactively: use -p/--print")
    args.output_format = args.output_format or "text"
    if args.output_format == "stream-json" and not args.verbose:
        raise UsageExit("Error: When using --print, --output-format=stream-json requires --verbose")
    prompt = " ".join(args.prompt)
    if not prompt.strip():
        raise UsageExit("Error: Input must be provided either through stdin or as a prompt argument when using --print")
    session_id = args.session_id
    if args.resume is not None:
        if not is_uuid(args.resume):
            raise UsageExit(
                "Error: --resume requires a valid session ID or session title when used with "
                "--print. Usage: claude -p --resume <session-id|title>. Provided value "
                f'"{args.resume}" is not a UUID and does not match any session title.'
            )
        session_id = None if args.fork_session else args.resume
    return run(Claude(args, prompt, session_id))


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
