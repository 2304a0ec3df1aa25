"""Demo ``copilot``: GitHub Copilot CLI 1.0.102 ``--output-format json``: events, deny rules, errors."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.acp import serve
from meta_orchestrator.actors.agents.demo.common import (
    Command,
    DemoAgent,
    Parser,
    UsageExit,
    guarded,
    now_iso,
    piped_input,
    run,
    within,
)

VERSION = "1.0.102"
USAGE_TAIL = "\n\nUsage: copilot --output-format <format>\n\nFor more information, try '--help'."
NO_RESPONSE = (
    "Permission denied because no interactive user response was available. Retry in an interactive "
    "session so the user can approve it, or try an alternative that does not require this permission."
)
DENIED_BY_RULE = "Permission to run this tool was denied due to the following rules: `{rule}`"


def _id() -> str:
    return str(uuid.uuid4())


class Copilot(DemoAgent):
    name = "copilot"

    def __init__(self, args: Any, prompt: str, cwd: Path, session_id: str | None) -> None:
        super().__init__(
            prompt, cwd, [Path(d) for d in args.add_dir or []], session_id, stream=args.output_format == "json"
        )
        self.args = args
        self.model = args.model or os.environ.get("COPILOT_MODEL") or "claude-sonnet-4.5"
        self.denied = {rule.strip() for value in args.deny_tool or [] for rule in value.split(",")}
        self.all_paths = args.allow_all_paths or args.allow_all or args.yolo
        self.turn = 0
        self.edits: list[str] = []

    def event(self, type_: str, data: dict[str, Any] | None, ephemeral: bool = False, pace: bool = True) -> None:
        line: dict[str, Any] = {"type": type_, "data": data or {}}
        if ephemeral:
            line["ephemeral"] = True
        line.update(id=_id(), timestamp=now_iso(), parentId=_id())
        self.emit(line, pace=pace)

    def start(self) -> None:
        self.event("session.mcp_servers_loaded", {"servers": []}, ephemeral=True, pace=False)
        self.event("session.tools_updated", {"model": self.model}, ephemeral=True, pace=False)
        self.event("user.message", {"content": self.prompt, "messageId": _id(), "turnId": "0"})
        self.event("assistant.turn_start", {"turnId": str(self.turn)})

    def _message(self, content: str, tool_requests: list[dict[str, Any]]) -> None:
        message_id = _id()
        if content:
            self.event("assistant.message_delta", {"messageId": message_id, "deltaContent": content}, ephemeral=True)
        self.event(
            "assistant.message",
            {
                "messageId": message_id,
                "model": self.model,
                "content": content,
                "toolRequests": tool_requests,
                "turnId": str(self.turn),
            },
        )

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        self._message(text, [])

    def noise(self, i: int) -> None:
        self.event(
            "assistant.message_delta", {"messageId": "flood", "deltaContent": f"[demo] flood line {i}\n"}, True, False
        )

    def _tool(self, name: str, arguments: dict[str, Any], error: str | None, result: str, edits: list[str]) -> bool:
        call_id = f"toolu_demo{uuid.uuid4().hex[:20]}"
        self.tool_calls += 1
        self._message("", [{"toolCallId": call_id, "name": name, "arguments": arguments, "type": "function"}])
        self.event("tool.execution_start", {"toolCallId": call_id, "toolName": name, "arguments": arguments})
        data: dict[str, Any] = {"toolCallId": call_id, "model": self.model, "turnId": str(self.turn)}
        if error is None:
            data.update(success=True, result={"content": result})
            if edits:
                data["fileEdits"] = [{"path": p, "kind": "create"} for p in edits]
        else:
            data.update(success=False, error={"message": error, "code": "denied"})
        self.count(str(arguments), "")
        self.event("tool.execution_complete", data)
        self.event("assistant.turn_end", {"turnId": str(self.turn)})
        self.turn += 1
        self.event("assistant.turn_start", {"turnId": str(self.turn)})
        return error is None

    def write(self, path: Path, content: str) -> bool:
        arguments = {"path": str(path), "file_text": content}
        error = None
        if "write" in self.denied:
            error = DENIED_BY_RULE.format(rule="write")
        elif not self.all_paths and not within(path, self.roots()):
            error = NO_RESPONSE
        if error is None:
            self.do_write(path, content)
            self.edits.append(str(path))
        return self._tool(
            "create", arguments, error, f"Created file {path} with {len(content)} characters", [str(path)]
        )

    def shell(self, command: Command) -> str | None:
        arguments = {"command": command.display, "description": "[demo] check"}
        if "shell" in self.denied:
            self._tool("bash", arguments, DENIED_BY_RULE.format(rule="shell"), "", [])
            return None
        out = self.run_command(command)[0]
        self._tool("bash", arguments, None, out, [])
        return out

    def _result(self, code: int) -> None:
        usage = {
            "premiumRequests": 0,
            "totalApiDurationMs": 20 * self.turn,
            "codeChanges": {"linesAdded": len(self.edits), "linesRemoved": 0, "filesModified": self.edits},
        }
        self.emit(
            {"type": "result", "timestamp": now_iso(), "sessionId": self.session_id, "exitCode": code, "usage": usage},
            pace=False,
        )

    def finish(self, final_text: str) -> int:
        self.event("assistant.turn_end", {"turnId": str(self.turn)})
        self.event("assistant.idle", {}, ephemeral=True, pace=False)
        self._result(0)
        if not self.stream:
            self.raw((self.last_text + "\n").encode())
        return 0

    def fail(self, cause: str) -> int:
        base = os.environ.get("COPILOT_PROVIDER_BASE_URL", "https://api.demo.invalid")
        error_type, status, message = {
            "auth_error": (
                "authentication",
                401,
                f"Authentication failed with provider at {base} (HTTP 401).\n  Check your "
                "COPILOT_PROVIDER_API_KEY, COPILOT_PROVIDER_API_KEY_COMMAND, or COPILOT_PROVIDER_BEARER_TOKEN.",
            ),
            "rate_limit": (
                "rate_limit",
                429,
                "Failed to get response from the AI model; retried 5 times (total retry wait time: 5.00 "
                "seconds) Last error: 429 [demo] rate limited",
            ),
            "server_error": (
                "query",
                500,
                "Failed to get response from the AI model; retried 5 times (total retry wait time: 16.88 "
                "seconds) Last error: 500 [demo] internal error",
            ),
        }[cause]
        self.start()
        self.event("session.error", {"errorType": error_type, "message": message, "statusCode": status})
        self._result(1)
        if not self.stream:
            self.err(message)
        return 1


def _parser() -> Parser:
    p = Parser("copilot", "error: {message}" + USAGE_TAIL, 1)
    p.add_argument("rest", nargs="*")  # copilot takes no positional: any is refused below
    for flags in (
        ("-p", "--prompt"),
        ("--output-format",),
        ("--model",),
        ("--resume",),
        ("--session-id",),
        ("-C",),
        ("--secret-env-vars",),
        ("--max-ai-credits",),
    ):
        p.add_argument(*flags)
    for flags in (("--add-dir",), ("--allow-tool",), ("--deny-tool",), ("--available-tools",), ("--excluded-tools",)):
        p.add_argument(*flags, action="append")
    for flags in (
        ("--allow-all-tools",),
        ("--allow-all-paths",),
        ("--allow-all-urls",),
        ("--allow-all",),
        ("--yolo",),
        ("--no-auto-update",),
        ("--no-ask-user",),
        ("--no-custom-instructions",),
        ("--acp",),
        ("-v", "--version"),
    ):
        p.add_argument(*flags, action="store_true")
    return p


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_cli(argv, "rest")
    if unknown or args.rest:
        raise UsageExit(f"error: unexpected argument '{[*unknown, *args.rest][0]}' found{USAGE_TAIL}")
    if args.version:
        print(f"GitHub Copilot CLI {VERSION} [demo].", flush=True)
        return 0
    if os.environ.get("COPILOT_OFFLINE") == "true" and not os.environ.get("COPILOT_PROVIDER_BASE_URL"):
        print("Offline mode requires a local model provider. Set COPILOT_PROVIDER_BASE_URL to configure one.")
        return 1
    if args.acp:
        return serve("copilot", VERSION)  # the prompt comes over ACP
    cwd = Path(args.C) if args.C else Path.cwd()
    session_id = args.session_id or (args.resume if args.resume and args.resume is not True else None)
    prompt = args.prompt if args.prompt is not None else (piped_input(None) or "")
    if not prompt.strip():
        raise UsageExit("error: no prompt given (-p or piped stdin)" + USAGE_TAIL)
    return run(Copilot(args, prompt, cwd, session_id))


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
