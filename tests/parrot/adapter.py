"""The ``parrot`` CLI's adapter: ``parrot run --jsonl --dir <dir> [--grant <dir>]...``, the prompt
on stdin (parrot reads it there when its command line holds none).

Its stream is one JSON object per line with an ``event`` field: ``hello`` (the session id),
``say`` (assistant text, with the reporting protocol's markers), ``wrote`` (a file),
``ran`` (a shell command), then ``bye`` (ok, or the error). It refuses a folder outside a git
repository unless run with ``--any-dir`` (exit 3, "parrot: <dir> is not a git repository").
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meta_orchestrator.actors.adapters.base import AgentAdapter, Draft, Launch, LaunchSpec, draft
from meta_orchestrator.actors.adapters.common import GuardedParser, as_int, as_str, clip
from meta_orchestrator.actors.adapters.errors import error_pattern
from meta_orchestrator.actors.adapters.protocol import strip_markers, text_drafts

NAME = "parrot"


class ParrotParser(GuardedParser):
    """One parrot run's stream."""

    agent = NAME

    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """parrot names its lines with ``event``; the guarded dispatch reads ``type``."""
        return super().feed_object({**obj, "type": obj.get("event")})

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        match type_:
            case "hello":
                self.session_id = as_str(obj.get("session"))
                return [draft("status", kind="init", session_id=self.session_id, text="parrot started")]
            case "say":
                text = as_str(obj.get("text")) or ""
                self.final_text = text
                return text_drafts(text)
            case "wrote":
                path = as_str(obj.get("path")) or "?"
                self.files_written.append(path)
                return [draft("progress", kind="file_change", text=f"wrote {path}", file=path)]
            case "ran":
                code = as_int(obj.get("exit"))
                return [draft("progress", kind="command", text=clip(f"ran {obj.get('command')} (exit {code})"))]
            case "bye":
                ok = obj.get("ok") is True
                self.usage = {"total_tokens": as_int(obj.get("tokens")) or 0}
                self.total_tokens = self.usage["total_tokens"]
                self._mark_terminal(ok=ok, error=as_str(obj.get("error")))
                if not ok:
                    return [draft("error", kind="result", terminal=True, text=self.error)]
                return [
                    draft("milestone", kind="result", text="parrot done", session_id=self.session_id),
                    draft(
                        "review",
                        kind="result",
                        text=strip_markers(self.final_text),
                        usage=self.usage,
                        files=tuple(dict.fromkeys(self.files_written)),
                        session_id=self.session_id,
                    ),
                ]
        return [draft("status", kind="unknown", text=f"parrot line without a known event: {type_!r}")]

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        if returncode == 3:
            return "the folder is not a git repository", False
        return "unexpected exit code", None


class ParrotAdapter(AgentAdapter):
    """The whole of what the orchestrator knows about parrot."""

    name = NAME
    default_executable = NAME
    package = "parrot-cli"
    credentials = "PARROT_KEY"
    trust_flag = "--any-dir"
    grant_dir_flag = "--grant"
    bypass_flags = ("--anything-goes",)
    error_patterns = (
        error_pattern(NAME, "repo_trust", r"parrot: \S+ is not a git repository"),
        error_pattern(NAME, "auth", r"parrot: no key in (?P<var>[A-Z_]+)"),
    )
    advice = MappingProxyType({"repo_trust": "parrot refused {target}: run `git init` there"})
    colour = "\033[32m"

    vendor_env = ("PARROT_*",)

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """``parrot run --jsonl --any-dir --dir <dir> [--grant d]... [--read-only] [--model m]`` < prompt."""
        argv = [*spec.executable, "run", "--jsonl", "--any-dir", "--dir", str(spec.workdir)]
        for extra in spec.extra_dirs:
            argv += ["--grant", str(extra)]
        if spec.mode == "read_only":
            argv.append("--read-only")
        if spec.model:
            argv += ["--model", spec.model]
        if spec.resume_session_id:
            argv += ["--resume", spec.resume_session_id]
        argv += spec.extra_args
        return Launch(argv=tuple(argv), env=dict(spec.env), cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def new_parser(self) -> ParrotParser:
        """A fresh parser for one run."""
        return ParrotParser()

    def demo_argv(self) -> tuple[str, ...]:
        """Its demo agent is a script beside this module (the tests are not installed)."""
        return (sys.executable, str(Path(__file__).with_name("demo.py")))
