"""Demo ``qwen``: qwen-code 0.24.4's flags, stream-json lines, approval modes and API errors.

Its lines are Claude-shaped (``system/init``, ``assistant``, ``user``, ``result``) with qwen's
own fields (``permission_mode``, ``qwen_code_version``, a ``stream_event`` after init) and
Gemini CLI's tools (``write_file``, ``run_shell_command``).
"""

from __future__ import annotations

import json
import os
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
    is_uuid,
    new_id,
    piped_input,
    run,
)

VERSION = "0.24.4"
MODES = ("plan", "default", "auto-edit", "auto", "yolo")
FORMATS = ("text", "json", "stream-json")
TOOLS = ["agent", "read_file", "write_file", "edit", "glob", "grep_search", "run_shell_command", "todo_write"]
READ_TOOLS = ["agent", "read_file", "glob", "grep_search", "todo_write"]
DENIED = (
    'Qwen Code requires permission to use "{tool}", but that permission was declined. Matching deny rule: "{rule}".'
)
# scenario -> (HTTP status, the Anthropic error type, message) as qwen repeats the API's body
FAILURES: dict[str, tuple[int, str, str]] = {
    "auth_error": (401, "authentication_error", "[demo] invalid x-api-key"),
    "rate_limit": (429, "rate_limit_error", "[demo] rate limited"),
    "server_error": (500, "api_error", "[demo] internal server error"),
}


class Qwen(DemoAgent):
    name = "qwen"

    def __init__(self, args: Any, prompt: str, session_id: str | None) -> None:
        dirs = [Path(d.strip()) for v in args.include_directories or [] for d in v.split(",") if d.strip()]
        super().__init__(prompt, Path.cwd(), dirs, session_id, stream=args.output_format == "stream-json")
        self.args = args
        self.mode = "yolo" if args.yolo else (args.approval_mode or "auto")
        self.model = (
            args.model or os.environ.get("ANTHROPIC_MODEL") or os.environ.get("OPENAI_MODEL") or "qwen3-coder-plus"
        )
        self.denials: list[dict[str, Any]] = []
        self.turns = 1

    def _line(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "uuid": new_id(), "session_id": self.session_id, **fields}

    def start(self) -> None:
        tools = TOOLS if self.mode in ("auto-edit", "yolo") else READ_TOOLS
        self.emit(
            {
                **self._line("system", subtype="init"),
                "cwd": str(self.cwd),
                "tools": tools,
                "mcp_servers": [],
                "model": self.model,
                "permission_mode": self.mode,
                "slash_commands": ["review", "init", "summary"],
                "qwen_code_version": VERSION,
                "agents": ["general-purpose", "Explore"],
            }
        )
        event = {"type": "goal_state", "goal_state": {"v": 2, "goal": None, "activity": "idle"}}
        self.emit(self._line("stream_event", parent_tool_use_id=None, event=event), pace=False)

    def _assistant(self, block: dict[str, Any], pace: bool = True, stop: str | None = None) -> None:
        usage = {"input_tokens": self.tokens_in, "output_tokens": self.tokens_out, "cache_read_input_tokens": 0}
        line = self._line("assistant", parent_tool_use_id=None)
        message = {"id": line["uuid"], "type": "message", "role": "assistant", "model": self.model}
        message.update(content=[block], stop_reason=stop, usage={**usage, "total_tokens": sum(usage.values())})
        self.emit({**line, "message": message}, pace=pace)

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        self._assistant({"type": "text", "text": text})

    def noise(self, i: int) -> None:
        self._assistant({"type": "text", "text": f"[demo] flood line {i}"}, pace=False)

    def _tool(self, name: str, tool_input: dict[str, Any], allowed: bool, act: Any) -> tuple[bool, str]:
        tool_id = "toolu_demo" + new_id().replace("-", "")[:20]
        self.count("", json.dumps(tool_input))
        self._assistant({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}, stop="tool_use")
        self.tool_calls += 1
        if allowed:
            content, is_error = act()
        else:
            rule = "edit" if name in ("write_file", "edit") else name
            content, is_error = DENIED.format(tool=name, rule=rule), True
            self.denials.append({"tool_name": name, "tool_use_id": tool_id, "tool_input": tool_input})
        block = {"type": "tool_result", "tool_use_id": tool_id, "is_error": is_error, "content": content}
        self.count(content, "")
        self.emit({**self._line("user", parent_tool_use_id=None), "message": {"role": "user", "content": [block]}})
        self.turns += 1
        return not is_error, content

    def write(self, path: Path, content: str) -> bool:
        def act() -> tuple[str, bool]:
            existed = path.exists()
            self.do_write(path, content)
            if existed:
                return f"Successfully overwrote file: {path}.", False
            return f"Successfully created and wrote to new file: {path}.", False

        # 0.24.4 writes outside the workspace too when edits are approved: only the sandbox stops it.
        allowed = self.mode in ("auto-edit", "yolo")
        return self._tool("write_file", {"file_path": str(path), "content": content}, allowed, act)[0]

    def shell(self, command: Command) -> str | None:
        out: list[str] = []

        def act() -> tuple[str, bool]:
            text, code = self.run_command(command)
            out.append(text)
            shown = text.rstrip("\n") or "(no output)"
            return (shown if code == 0 else f"{shown}\nExit code: {code}"), code != 0

        if command.writes or self.mode == "yolo":
            self._tool(
                "run_shell_command",
                {"command": command.display, "description": "[demo] check"},
                self.mode == "yolo",
                act,
            )
            return out[0] if out else None
        texts = []  # read-only tools stand in for a shell in the stricter modes
        for name in command.argv[1:] if command.argv[0] == "cat" else []:
            path = self.cwd / name
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            self._tool("read_file", {"file_path": str(path)}, True, lambda text=text: (text, False))
            texts.append(text)
        if command.argv[0] == "ls":
            names = sorted(str(p.relative_to(self.cwd)) for p in self.cwd.rglob("*") if ".git" not in p.parts)
            self._tool("glob", {"pattern": "**/*"}, True, lambda: ("\n".join(names), False))
            return "\n".join(names)
        return "".join(texts)

    def _usage(self) -> dict[str, int]:
        usage = {"input_tokens": self.tokens_in, "output_tokens": self.tokens_out, "cache_read_input_tokens": 0}
        return {**usage, "total_tokens": self.tokens_in + self.tokens_out}

    def _result(self, **fields: Any) -> dict[str, Any]:
        elapsed = int((time.monotonic() - self.started) * 1000)
        line = self._line("result", subtype="success", is_error=False, duration_ms=elapsed)
        return {**line, "duration_api_ms": elapsed // 2, "num_turns": self.turns, **fields}

    def finish(self, final_text: str) -> int:
        obj = self._result(result=final_text, usage=self._usage(), permission_denials=self.denials)
        if self.stream:
            self.emit(obj, pace=False)
        elif self.args.output_format == "json":
            self.raw((json.dumps([obj]) + "\n").encode())
        else:
            self.raw((final_text + "\n").encode())
        return 0

    def fail(self, cause: str) -> int:
        """An API error after qwen's own retries: the text block, the error result, exit 1."""
        self.start()
        status, kind, message = FAILURES[cause]
        body = json.dumps(
            {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_demo"},
            separators=(",", ":"),
        )
        text = f"[API Error: {status} {body}]"
        self.tokens_in = self.tokens_out = 0
        self._assistant({"type": "text", "text": text})
        usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
        obj = self._result(subtype="error_during_execution", is_error=True, duration_api_ms=0)
        obj.update(usage=usage, permission_denials=[], error={"message": text})
        self.emit(obj, pace=False)
        if not self.stream:
            self.err(text)
        return 1


def _parser() -> Parser:
    p = Parser("qwen", "{message}", 1)
    p.add_argument("query", nargs="*")
    for flags in (
        ("-p", "--prompt"),
        ("-o", "--output-format"),
        ("-m", "--model"),
        ("--approval-mode",),
        ("-r", "--resume"),
        ("--session-id",),
        ("--auth-type",),
        ("--openai-base-url",),
        ("--openai-api-key",),
        ("--max-session-turns",),
        ("--input-format",),
    ):
        p.add_argument(*flags)
    for flags in (("--include-directories", "--add-dir"), ("--allowed-tools",), ("--exclude-tools",)):
        p.add_argument(*flags, action="append")
    for flags in (("-y", "--yolo"), ("--acp",), ("-d", "--debug"), ("-v", "--version"), ("-c", "--continue")):
        p.add_argument(*flags, action="store_true")
    return p


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_cli(argv, "query")
    if unknown:
        raise UsageExit(f"Unknown arguments: {', '.join(u.lstrip('-').split('=')[0] for u in unknown)}")
    if args.version:
        print(f"{VERSION} [demo]", flush=True)
        return 0
    if args.yolo and args.approval_mode:
        raise UsageExit("Cannot use both --yolo (-y) and --approval-mode together. Use --approval-mode=yolo instead.")
    for value, name, choices in (
        (args.approval_mode, "approval-mode", MODES),
        (args.output_format, "output-format", FORMATS),
    ):
        if value is not None and value not in choices:
            shown = ", ".join(f'"{c}"' for c in choices)
            raise UsageExit(f'Invalid values:\n  Argument: {name}, Given: "{value}", Choices: {shown}')
    if args.acp:
        return serve("qwen", VERSION)  # the prompt comes over ACP
    args.output_format = args.output_format or "text"
    piped = piped_input(None) or ""  # headless qwen reads stdin to its end, then appends -p
    prompt = "\n".join(x for x in (piped, args.prompt or "", " ".join(args.query)) if x)
    if args.resume is not None and not is_uuid(args.resume):
        raise UsageExit(f'No saved session found with title "{args.resume}".')
    return run(Qwen(args, prompt, args.resume or args.session_id))


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
