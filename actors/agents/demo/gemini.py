"""Demo ``gemini``: Gemini CLI 0.61.0: flags, stream-json, approval modes, trust, exit codes."""

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
    now_iso,
    piped_input,
    run,
    scenario_for,
    within,
)

STDIN_WAIT_S = 0.5  # gemini stops waiting for piped input after 500 ms

VERSION = "0.61.0"
MODES = ("default", "auto_edit", "yolo", "plan")
CHUNK = 120
UNTRUSTED = (
    "Gemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`, set "
    "the `GEMINI_CLI_TRUST_WORKSPACE=true` environment variable, or trust this directory in "
    "interactive mode. For more details, see "
    "https://geminicli.com/docs/cli/trusted-folders/#headless-and-automated-environments"
)
NO_INPUT = "No input provided via stdin. Input can be provided by piping data into gemini or using the --prompt option."
NOT_FOUND = 'Tool "{tool}" not found. Did you mean one of: "read_file", "update_topic", "grep_search"?'
PLAN_DENIED = (
    "Tool execution denied by policy. You are in Plan Mode and cannot modify source code. You may "
    "ONLY use write_file or replace to save plans to the designated plans directory as .md files."
)


# The API's refusals in gemini's words (§3.6), in its stream's result and, over ACP, in the
# error a prompt is answered with; client_retired at sign-in (issue 10's wording).
RETIRED = "This client is no longer supported for Gemini Code Assist for individuals. [demo]"
LICENCE_403 = (
    '[API Error: {"error":{"code":403,"message":"You do not have a valid license of this '
    'product [demo] (#3501)","status":"PERMISSION_DENIED"}}]'
)
QUOTA = "[API Error: You have exhausted your daily quota on this model.]\nPlease wait and try again later. [demo]"
INTERNAL_500 = '[API Error: {"error":{"code":500,"message":"[demo] internal error","status":"INTERNAL"}}]'
ACP_FAILURES = {
    "license_refused": (-32603, LICENCE_403),
    "client_retired": (-32603, RETIRED),
    "rate_limit": (-32603, QUOTA),
    "server_error": (-32603, INTERNAL_500),
}


class Gemini(DemoAgent):
    name = "gemini"

    def __init__(self, args: Any, prompt: str, dirs: list[Path], session_id: str | None) -> None:
        super().__init__(prompt, Path.cwd(), dirs, session_id, stream=args.output_format == "stream-json")
        self.args = args
        self.mode = "yolo" if args.yolo else (args.approval_mode or "default")
        self.model = args.model or os.environ.get("GEMINI_MODEL") or "gemini-2.5-flash"
        self.project_tmp = Path.home() / ".gemini" / "tmp" / self.cwd.name
        self.turn_text = ""

    def start(self) -> None:
        self.emit(
            {
                "type": "init",
                "timestamp": now_iso(),
                "session_id": self.session_id,
                "model": self.model,
            }
        )
        self.emit({"type": "message", "timestamp": now_iso(), "role": "user", "content": self.prompt})

    def say(self, text: str) -> None:
        self.count("", text)
        if self.turn_text and not self.turn_text.endswith("\n"):
            text = "\n" + text
        self.turn_text += text
        self.last_text = self.turn_text
        for i in range(0, len(text), CHUNK):  # deltas cut anywhere, as the real stream does
            self.emit(
                {
                    "type": "message",
                    "timestamp": now_iso(),
                    "role": "assistant",
                    "content": text[i : i + CHUNK],
                    "delta": True,
                }
            )

    def noise(self, i: int) -> None:
        self.emit(
            {
                "type": "message",
                "timestamp": now_iso(),
                "role": "assistant",
                "content": f"[demo] flood line {i}\n",
                "delta": True,
            },
            pace=False,
        )

    def _tool(
        self,
        name: str,
        params: dict[str, Any],
        error: tuple[str, str] | None,
        output: str | None = None,
    ) -> bool:
        tool_id = f"{name}__{name}_{int(time.time() * 1000)}_0"
        self.tool_calls += 1
        self.turn_text = ""
        self.emit(
            {
                "type": "tool_use",
                "timestamp": now_iso(),
                "tool_name": name,
                "tool_id": tool_id,
                "parameters": params,
            }
        )
        line: dict[str, Any] = {"type": "tool_result", "timestamp": now_iso(), "tool_id": tool_id}
        if error:
            kind, message = error
            line.update(status="error", output=message, error={"type": kind, "message": message})
            self.err(f"Error executing tool {name}: {message}")
        else:
            line["status"] = "success"
            if output is not None:
                line["output"] = output
        self.count(json.dumps(params) + (output or ""), "")
        self.emit(line)
        return error is None

    def _outside(self, path: Path) -> tuple[str, str] | None:
        if within(path, self.roots()):
            return None
        roots = ", ".join(str(r) for r in self.roots())
        return (
            "invalid_tool_params",
            (
                f'Path not in workspace: Attempted path "{path}" resolves outside the allowed '
                f"workspace directories: {roots} or the project temp directory: {self.project_tmp}"
            ),
        )

    def write(self, path: Path, content: str) -> bool:
        params = {"file_path": str(path), "content": content}
        error: tuple[str, str] | None
        if self.mode == "default":
            error = ("tool_not_registered", NOT_FOUND.format(tool="write_file"))
        elif self.mode == "plan":
            error = (
                "policy_violation",
                PLAN_DENIED
                if within(path, self.roots())
                else (
                    f"Access denied: plan path ({path}) must be within the designated plans "
                    f"directory ({self.project_tmp / 'plans'})."
                ),
            )
        else:
            error = self._outside(path)
        if error is None:
            self.do_write(path, content)
        return self._tool("write_file", params, error)

    def shell(self, command: Command) -> str | None:
        if self.mode == "yolo" or command.writes:
            error = None if self.mode == "yolo" else ("tool_not_registered", NOT_FOUND.format(tool="run_shell_command"))
            out = self.run_command(command)[0] if error is None else None
            self._tool(
                "run_shell_command",
                {"command": command.display, "description": "[demo] check"},
                error,
                None if out is None else out.rstrip("\n"),
            )
            return out
        if command.argv[0] == "ls":  # read-only tools stand in for a shell in the stricter modes
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in self.cwd.iterdir())
            self._tool("list_directory", {"dir_path": str(self.cwd)}, None, f"Listed {len(names)} item(s).")
            return "\n".join(names)
        texts = []
        for name in command.argv[1:]:
            path = self.cwd / name
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            self._tool("read_file", {"file_path": str(path)}, self._outside(path), text)
            texts.append(text)
        return "".join(texts)

    def _stats(self, zero: bool = False) -> dict[str, Any]:
        cached = 0 if zero else self.tokens_in // 8
        tin, tout = (0, 0) if zero else (self.tokens_in, self.tokens_out)
        per = {
            "total_tokens": tin + tout,
            "input_tokens": tin,
            "output_tokens": tout,
            "cached": cached,
            "input": tin - cached,
        }
        return {
            **per,
            "duration_ms": 0 if zero else int((time.monotonic() - self.started) * 1000),
            "tool_calls": 0 if zero else self.tool_calls,
            "models": {self.model: per},
        }

    def finish(self, final_text: str) -> int:
        self.emit(
            {"type": "result", "timestamp": now_iso(), "status": "success", "stats": self._stats()},
            pace=False,
        )
        if self.args.output_format == "json":
            self.raw(
                (
                    json.dumps(
                        {
                            "session_id": self.session_id,
                            "response": self.last_text,
                            "stats": self._stats(),
                        }
                    )
                    + "\n"
                ).encode()
            )
        elif not self.stream:
            self.raw((self.last_text + "\n").encode())
        return 0

    def fail(self, cause: str) -> int:
        if cause == "auth_error":
            home = Path(os.environ.get("GEMINI_CLI_HOME") or Path.home())
            self.err(
                f"Please set an Auth method in your {home / '.gemini' / 'settings.json'} or "
                "specify one of the following environment variables before running: "
                "GEMINI_API_KEY, GOOGLE_GENAI_USE_VERTEXAI, GOOGLE_GENAI_USE_GCA"
            )
            return 41
        if cause == "client_retired":
            # At sign-in, before any request (issue 10's wording; the text is the server's).
            self.err(RETIRED)
            return 41
        self.start()
        if cause == "license_refused":
            # A 403 API error: the result carries it, the exit code is the status mod 256 (§3.6).
            message, code = LICENCE_403, 147
        elif cause == "rate_limit":
            message, code = QUOTA, 173
        else:
            message, code = INTERNAL_500, 244
        self.emit(
            {
                "type": "result",
                "timestamp": now_iso(),
                "status": "error",
                "error": {"type": "unknown", "message": message},
                "stats": self._stats(zero=True),
            },
            pace=False,
        )
        if not self.stream:
            self.err(message)
        return code


def _parser() -> Parser:
    p = Parser("gemini", "{message}", 1)
    p.add_argument("query", nargs="*")
    for flags in (
        ("-p", "--prompt"),
        ("-o", "--output-format"),
        ("-m", "--model"),
        ("--approval-mode",),
        ("-r", "--resume"),
        ("--session-id",),
        ("--delete-session",),
        ("--session-file",),
    ):
        p.add_argument(*flags)
    for flags in (
        ("--include-directories",),
        ("--policy",),
        ("--admin-policy",),
        ("--allowed-mcp-server-names",),
        ("--allowed-tools",),
        ("-e", "--extensions"),
    ):
        p.add_argument(*flags, action="append")
    for flags in (
        ("-y", "--yolo"),
        ("--skip-trust",),
        ("-s", "--sandbox"),
        ("--list-sessions",),
        ("--raw-output",),
        ("--acp",),
        ("-d", "--debug"),
        ("-v", "--version"),
    ):
        p.add_argument(*flags, action="store_true")
    p.add_argument("-w", "--worktree", nargs="?", const=True)
    return p


def _granted_dirs(values: list[str] | None) -> list[Path]:
    """The ``--include-directories`` folders; one that does not exist ends the run, as in gemini."""
    dirs = [Path(d.strip()).expanduser() for v in values or [] for d in v.split(",") if d.strip()]
    for d in dirs:
        if not d.is_dir():
            raise UsageExit(
                f"[WARN] Skipping unreadable directory: {d} (Directory does not exist: {d})\nAn "
                f"unexpected critical error occurred:Error: Directory does not exist: {d}"
            )
    return dirs


def main(argv: list[str]) -> int:
    args, unknown = _parser().parse_cli(argv, "query")
    if unknown:
        raise UsageExit(f"Unknown arguments: {', '.join(u.lstrip('-').split('=')[0] for u in unknown)}")
    if args.version:
        print(f"{VERSION} [demo]", flush=True)
        return 0
    if args.yolo and args.approval_mode:
        raise UsageExit("Cannot use both --yolo (-y) and --approval-mode together. Use --approval-mode=yolo instead.")
    if args.approval_mode is not None and args.approval_mode not in MODES:
        raise UsageExit(
            f'Invalid values:\n  Argument: approval-mode, Given: "{args.approval_mode}", Choices: '
            + ", ".join(f'"{m}"' for m in MODES)
        )
    dirs = _granted_dirs(args.include_directories)
    scenario = scenario_for("gemini")
    trusted = args.skip_trust or os.environ.get("GEMINI_CLI_TRUST_WORKSPACE") == "true"
    if scenario == "force_untrusted" or not trusted:
        raise UsageExit(UNTRUSTED, 55)
    if args.acp:
        return serve("gemini", VERSION, failures=ACP_FAILURES)  # the prompt comes over ACP
    prompt = " ".join(x for x in [args.prompt or "", *args.query] if x)
    piped = piped_input(STDIN_WAIT_S)  # headless gemini puts stdin before -p's text (§3.1)
    if piped:
        prompt = f"{piped}\n\n{prompt}" if prompt else piped
    session_id = args.session_id
    if args.resume is not None:
        if is_uuid(args.resume):
            session_id = args.resume
        elif not (args.resume == "latest" or args.resume.isdigit()):
            raise UsageExit(
                f'Error resuming session: Invalid session identifier "{args.resume}".\n'
                "  Use --list-sessions to see available sessions, then use --resume {number}, "
                "--resume {uuid}, or --resume latest.",
                42,
            )
    agent = Gemini(args, prompt, dirs, session_id)
    if scenario not in ("auth_error", "client_retired") and not prompt.strip():
        raise UsageExit(NO_INPUT, 42)
    return run(agent)


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
