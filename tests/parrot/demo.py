"""The ``parrot`` CLI's demo agent: the shared demo behaviour rendered in parrot's stream."""

from __future__ import annotations

import sys
from pathlib import Path

from meta_orchestrator.actors.agents.demo.common import (
    Command,
    DemoAgent,
    Parser,
    UsageExit,
    guarded,
    piped_input,
    run,
    within,
)

VERSION = "parrot 1.0.0"


class Parrot(DemoAgent):
    name = "parrot"

    def __init__(self, prompt: str, cwd: Path, grants: list[Path], session_id: str | None, read_only: bool) -> None:
        super().__init__(prompt, cwd, grants, session_id)
        self.read_only = read_only

    def start(self) -> None:
        self.emit({"event": "hello", "session": self.session_id})

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        self.emit({"event": "say", "text": text})

    def noise(self, i: int) -> None:
        self.emit({"event": "say", "text": f"[demo] flood line {i}"}, pace=False)

    def write(self, path: Path, content: str) -> bool:
        self.tool_calls += 1
        if self.read_only or not within(path, self.roots()):
            self.say(f"[demo] parrot may not write {path}")
            return False
        self.do_write(path, content)
        self.emit({"event": "wrote", "path": str(path)})
        return True

    def shell(self, command: Command) -> str | None:
        self.tool_calls += 1
        if command.writes and self.read_only:
            return None
        out, code = self.run_command(command)
        self.emit({"event": "ran", "command": command.display, "exit": code})
        return out

    def finish(self, final_text: str) -> int:
        self.emit({"event": "bye", "ok": True, "tokens": self.tokens_in + self.tokens_out})
        return 0

    def fail(self, cause: str) -> int:
        if cause == "auth_error":
            self.err("parrot: no key in PARROT_KEY")
            return 4
        self.emit({"event": "bye", "ok": False, "error": f"parrot failed: {cause}"})
        return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["--version"]:
        print(VERSION)
        return 0
    if argv[:1] != ["run"]:
        raise UsageExit("parrot: usage: parrot run --jsonl --dir <dir> [-- <prompt>] (else the prompt on stdin)", 2)
    parser = Parser("parrot", "parrot: {message}", 2)
    parser.add_argument("--jsonl", action="store_true", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--grant", action="append", default=[])
    parser.add_argument("--any-dir", action="store_true")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--model")
    parser.add_argument("--resume")
    parser.add_argument("prompt", nargs="*")
    args, unknown = parser.parse_cli(argv[1:], "prompt")
    if unknown:
        raise UsageExit(f"parrot: unknown option {unknown[0]}", 2)
    workdir = Path(args.dir)
    if not args.any_dir and not any((d / ".git").exists() for d in (workdir, *workdir.parents)):
        raise UsageExit(f"parrot: {workdir} is not a git repository", 3)
    prompt = " ".join(args.prompt) or piped_input(None) or ""  # no prompt argument: parrot reads stdin
    agent = Parrot(prompt, workdir, [Path(g) for g in args.grant], args.resume, args.read_only)
    return run(agent)


if __name__ == "__main__":
    sys.exit(guarded(main, sys.argv[1:]))
