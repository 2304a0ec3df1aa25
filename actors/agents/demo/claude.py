"""Demo ``claude``: Claude Code 2.1.197's flags, stream-json lines, permission rules and errors."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.claude_permissions import Denial, Permissions, PreToolUseHooks, tool_rules
from meta_orchestrator.actors.agents.demo.common import (
    Command,
    DemoAgent,
    Parser,
    UsageExit,
    guarded,
    is_uuid,
    new_id,
    now_iso,
    piped_input,
    run,
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
# scenario -> (the assistant message's error, its text, the result's api_error_status)
FAILURES: dict[str, tuple[str, str, int | None]] = {
    "auth_error": ("authentication_failed", "Not logged in · Please run /login", None),
    "rate_limit": ("rate_limit", "API Error: Request rejected (429) · [demo] rate limit exceeded", 429),
    "server_error": (
        "server_error",
        "API Error: 500 [demo] internal server error. This is a server-side issue, "
        "usually temporary — try again in a moment. If it persists, check your "
        "inference gateway (api.anthropic.com).",
        500,
    ),
}
# With no prompt argument and nothing on stdin for 3 s, the real claude goes on without it (§0).
STDIN_WAIT_S = 3.0
NO_STDIN_WARNING = (
    "Warning: no stdin data received in 3s, proceeding without it. If piping from a slow command, "
    "redirect stdin explicitly: < /dev/null to skip, or wait longer."
)
ROOT_REFUSAL = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"


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
        self.hooks = PreToolUseHooks(args.settings)
        self.permissions = Permissions(self.mode, tool_rules(args.allowedTools), tool_rules(args.disallowedTools))
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
                "tools": [t for t in TOOLS if t not in self.permissions.disallowed],
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
        denial: Denial | None,
    ) -> bool:
        """Print tool_use and its tool_result; ``denial`` = (text, listed in permission_denials)."""
        tool_id = "toolu_demo" + new_id().replace("-", "")[:20]
        self.count("", json.dumps(tool_input))
        self._assistant({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
        self.tool_calls += 1
        hooked = self.hooks.decide(self._hook_call(name, tool_input, tool_id), self.cwd)
        if hooked is not None:  # a hook decides before the permission mode does
            denial = None if isinstance(hooked, str) else hooked  # "allow", or a denial
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

    def _hook_call(self, name: str, tool_input: dict[str, Any], tool_id: str) -> dict[str, Any]:
        """What a PreToolUse hook reads on its stdin."""
        return {
            "session_id": self.session_id,
            "transcript_path": "",
            "cwd": str(self.cwd),
            "permission_mode": self.mode,
            "hook_event_name": "PreToolUse",
            "tool_name": name,
            "tool_input": tool_input,
            "tool_use_id": tool_id,
        }

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

        denial = self.permissions.write(path, self.roots())
        return self._tool("Write", {"file_path": str(path), "content": content}, act, denial)

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
            self.permissions.bash(command),
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
        code, text, status = FAILURES[cause]
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


def _piped_prompt() -> str:
    """No prompt argument: the real claude reads stdin, waiting 3 s for its first bytes (§0)."""
    piped = piped_input(STDIN_WAIT_S)
    if piped is None and sys.stdin is not None and not sys.stdin.isatty():
        DemoAgent.err(NO_STDIN_WARNING)
    return piped or ""


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
    prompt = " ".join(args.prompt) or _piped_prompt()
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
