"""Demo ``codex``: codex-cli 0.169.0 ``exec --json``: flags, thread/turn/items, sandbox, errors."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

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

VERSION = "0.169.0"
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
USAGE_TAIL = "\n\nUsage: codex exec [OPTIONS] [PROMPT] [COMMAND]\n\nFor more information, try '--help'."
NOT_TRUSTED = "Not inside a trusted directory and --skip-git-repo-check was not specified."
ROUTER = "{ts} ERROR codex_core::tools::router: error=patch rejected: {why}; rejected by user approval settings"


class Codex(DemoAgent):
    name = "codex"

    def __init__(self, args: Any, prompt: str, cwd: Path, session_id: str | None) -> None:
        super().__init__(prompt, cwd, [Path(d) for d in args.add_dir or []], session_id, stream=args.json)
        self.args = args
        self.sandbox = (
            "danger-full-access"
            if args.dangerously_bypass_approvals_and_sandbox
            else (
                args.sandbox
                or _config_sandbox(args.config)
                or ("workspace-write" if args.approve_for_me else "read-only")
            )
        )
        self.item = 0

    def _item(
        self,
        item_type: str,
        event: str = "item.completed",
        item_id: str | None = None,
        pace: bool = True,
        **fields: Any,
    ) -> str:
        if item_id is None:
            item_id = f"item_{self.item}"
            self.item += 1
        self.emit({"type": event, "item": {"id": item_id, "type": item_type, **fields}}, pace=pace)
        return item_id

    def start(self) -> None:
        self.emit({"type": "thread.started", "thread_id": self.session_id})
        self.emit({"type": "turn.started"})
        self._item("reasoning", text=f"[demo] Planning how to handle: {self.task[:120]}")

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        self._item("agent_message", text=text)

    def noise(self, i: int) -> None:
        self._item("agent_message", pace=False, text=f"[demo] flood line {i}")

    def _stderr_router(self, why: str) -> None:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
        self.err(ROUTER.format(ts=ts, why=why))

    def write(self, path: Path, content: str) -> bool:
        self.tool_calls += 1
        self.count(content, content)
        if self.sandbox == "read-only":
            self._stderr_router("writing is blocked by read-only sandbox")
            self.say(f"[demo] I could not write {path}: Read-only file system (os error 30).")
            return False
        if self.sandbox == "workspace-write" and not within(path, self.roots()):
            self._stderr_router(f"writing outside of the project ({path})")
            self.say(f"[demo] I could not write {path}: Read-only file system (os error 30).")
            return False
        changes = [{"path": str(path), "kind": "update" if path.exists() else "add"}]
        item_id = self._item("file_change", "item.started", changes=changes, status="in_progress")
        self.do_write(path, content)
        self._item("file_change", item_id=item_id, changes=changes, status="completed")
        return True

    def shell(self, command: Command) -> str | None:
        self.tool_calls += 1
        if command.writes and self.sandbox == "read-only":
            return None  # a sandbox failure prints no item at all
        shown = f"/bin/bash -lc {shlex.quote(command.display)}"
        item_id = self._item(
            "command_execution",
            "item.started",
            command=shown,
            aggregated_output="",
            exit_code=None,
            status="in_progress",
        )
        out, code = self.run_command(command)
        self.count(out, "")
        self._item(
            "command_execution",
            item_id=item_id,
            command=shown,
            aggregated_output=out,
            exit_code=code,
            status="completed" if code == 0 else "failed",
        )
        return out

    def _usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.tokens_in,
            "cached_input_tokens": self.tokens_in // 6,
            "cache_write_input_tokens": 0,
            "output_tokens": self.tokens_out,
            "reasoning_output_tokens": self.tokens_out // 4,
        }

    def finish(self, final_text: str) -> int:
        if self.args.output_last_message:
            Path(self.args.output_last_message).write_text(final_text, encoding="utf-8")
        self.emit({"type": "turn.completed", "usage": self._usage()}, pace=False)
        if not self.stream:
            self.raw((final_text + "\n").encode())
        return 0

    def fail(self, cause: str) -> int:
        message = {
            "auth_error": "unexpected status 401 Unauthorized: [demo] invalid_api_key, "
            "url: https://api.openai.com/v1/responses",
            "rate_limit": "exceeded retry limit, last status: 429 Too Many Requests",
            "server_error": ("We’re currently experiencing high demand, which may cause temporary errors."),
        }[cause]
        self.emit({"type": "thread.started", "thread_id": self.session_id})
        self.emit({"type": "turn.started"})
        if cause != "rate_limit":
            self.emit({"type": "error", "message": f"Reconnecting... 1/5 ({message})"})
        self.emit({"type": "error", "message": message})
        self.emit({"type": "turn.failed", "error": {"message": message}}, pace=False)
        if not self.stream:
            self.err(f"ERROR: {message}")
        return 1


def _config_sandbox(config: list[str] | None) -> str | None:
    for item in config or []:
        key, _, value = item.partition("=")
        if key.strip() == "sandbox_mode" and value.strip().strip("\"'") in SANDBOXES:
            return value.strip().strip("\"'")
    return None


def _parser() -> Parser:
    p = Parser("codex exec", "error: {message}" + USAGE_TAIL, 2)
    for flags in (
        ("--json", "--experimental-json"),
        ("--dangerously-bypass-approvals-and-sandbox",),
        ("--approve-for-me",),
        ("--skip-git-repo-check",),
        ("--trust",),
        ("--ephemeral",),
        ("--oss",),
        ("--ignore-user-config",),
        ("--ignore-rules",),
        ("--strict-config",),
        ("--last",),
        ("--all",),
    ):
        p.add_argument(*flags, action="store_true")
    for flags in (
        ("-o", "--output-last-message"),
        ("--output-schema",),
        ("-C", "--cd"),
        ("-s", "--sandbox"),
        ("-m", "--model"),
        ("--local-provider",),
        ("-p", "--profile"),
        ("--color",),
    ):
        p.add_argument(*flags)
    for flags in (
        ("--add-dir",),
        ("-c", "--config"),
        ("--enable",),
        ("--disable",),
        ("-i", "--image"),
    ):
        p.add_argument(*flags, action="append")
    p.add_argument("positional", nargs="*")
    return p


def main(argv: list[str]) -> int:
    if argv[:1] in (["--version"], ["-V"]):
        print(f"codex-cli {VERSION} [demo]", flush=True)
        return 0
    if argv[:1] == ["app-server"]:  # JSON-RPC over stdio, asked through the orchestrator's bridge
        from meta_orchestrator.actors.agents.demo.codex_app import main as app_server

        return app_server(argv[1:])
    sub = next((i for i, a in enumerate(argv) if a in ("exec", "e")), None)
    if sub is None:
        raise UsageExit("[demo] the demo codex supports only `codex exec`" + USAGE_TAIL, 2)
    args = _exec_arguments(argv[:sub], argv[sub + 1 :])
    cwd = Path(args.cd) if args.cd else Path.cwd()
    if not cwd.is_dir():
        raise UsageExit("Error: No such file or directory (os error 2)")
    scenario = scenario_for("codex")
    in_repo = any((d / ".git").exists() for d in (cwd.resolve(), *cwd.resolve().parents))
    if scenario == "force_not_git_repo" or (
        not args.skip_git_repo_check and not args.trust and (not in_repo or scenario == "not_git_repo")
    ):
        raise UsageExit(NOT_TRUSTED)
    session_id, prompt = _session_and_prompt(list(args.positional), bool(args.last))
    if prompt in ("", "-"):  # the prompt is read from stdin, to its end (§2.1)
        if not prompt and sys.stdin is not None and not sys.stdin.isatty():
            DemoAgent.err("Reading prompt from stdin...")
        prompt = piped_input(None) or ""
        if not prompt.strip():
            raise UsageExit("No prompt provided via stdin.")
    elif not sys.stdin or not sys.stdin.isatty():
        DemoAgent.err("Reading additional input from stdin...")
    return run(Codex(args, prompt, cwd, session_id))


def _exec_arguments(before: list[str], rest: list[str]) -> argparse.Namespace:
    """``codex [global options] exec [options]``: the options as exec takes them."""
    pre: list[str] = []
    skip = False
    for token in before:  # global options: -a is accepted here (only here), the rest apply to exec
        if skip:
            skip = False
        elif token in ("-a", "--ask-for-approval"):
            skip = True
        elif not token.startswith(("-a=", "--ask-for-approval=")):
            pre.append(token)
    args, unknown = _parser().parse_cli(pre + rest, "positional")
    for token in unknown:
        raise UsageExit(f"error: unexpected argument '{token.split('=')[0]}' found" + USAGE_TAIL, 2)
    if args.sandbox is not None and args.sandbox not in SANDBOXES:
        raise UsageExit(
            f"error: invalid value '{args.sandbox}' for '--sandbox <SANDBOX_MODE>'\n  "
            f"[possible values: {', '.join(SANDBOXES)}]" + USAGE_TAIL,
            2,
        )
    return args


def _session_and_prompt(positional: list[str], last: bool) -> tuple[str | None, str]:
    """``resume <id> <prompt>`` / ``fork ...`` / ``<prompt>``: the session resumed and the prompt."""
    session_id = None
    if positional[:1] in (["resume"], ["fork"]):
        verb = positional.pop(0)
        target = None if last else (positional.pop(0) if positional else None)
        if verb == "resume" and target:
            session_id = target
    return session_id, " ".join(positional)


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
