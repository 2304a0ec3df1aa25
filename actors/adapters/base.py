"""What every CLI adapter provides, and the line handling they share.

An adapter is pure: it builds a command line and turns stdout lines into event drafts.
It never spawns, reads pipes or touches files; the worker actor does that.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple

from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.events import EVENT_TYPES, EventPayload, EventType
from meta_orchestrator.messages.worker import RunOutcome


class Draft(NamedTuple):
    """An event before the worker stamps agent, seq, timestamp and raw line on it."""

    type: EventType
    payload: EventPayload


_EVENT_TYPES = frozenset(EVENT_TYPES)


def draft(type_: EventType, **payload: Any) -> Draft:
    """Shorthand: ``draft("progress", text="hi", kind="text")``; validated here, once."""
    if type_ not in _EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; one of {', '.join(EVENT_TYPES)}")
    return Draft(type_, EventPayload(**payload))


@dataclass(frozen=True)
class LaunchSpec:
    """Everything an adapter needs to build one run's command line."""

    executable: tuple[str, ...]
    prompt: str
    workdir: Path
    extra_dirs: tuple[Path, ...] = ()
    mode: Literal["write", "read_only"] = "write"
    model: str | None = None
    resume_session_id: str | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """A ready-to-spawn process: argv, the full environment and the working directory."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


@dataclass(frozen=True)
class CliState:
    """Where a CLI keeps its sessions, auth and settings (bound read-write in the OS sandbox)."""

    dirs: tuple[Path, ...] = ()  # created (0700) when missing, so the CLI can use them
    files: tuple[Path, ...] = ()  # bound only when they exist


class StreamParser(ABC):
    """Turns one run's stdout lines into drafts and remembers what the run amounted to.

    Subclasses implement ``feed_object`` (one decoded JSON object) and ``finish``.
    """

    def __init__(self) -> None:
        self.session_id: str | None = None
        self.final_text: str = ""
        self.usage: dict[str, Any] | None = None
        self.cost_usd: float | None = None
        self.total_tokens: int | None = None
        self.files_written: list[str] = []
        self.permission_denials: list[str] = []
        self.error: str | None = None
        self.terminal_seen: bool = False
        self.succeeded: bool = False

    def feed_line(self, data: bytes, total_bytes: int | None = None) -> list[Draft]:
        """Parse one stdout line. Bad lines become ``error`` drafts; the stream goes on."""
        total = len(data) if total_bytes is None else total_bytes
        if total > len(data):
            return [
                draft(
                    "error",
                    kind="parse_error",
                    retryable=False,
                    terminal=False,
                    text=f"line of {total} bytes is longer than the parser accepts; "
                    "kept whole in the side file named by raw_file",
                )
            ]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [
                draft(
                    "error",
                    kind="parse_error",
                    terminal=False,
                    text=f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                )
            ]
        stripped = text.strip()
        if not stripped:
            return []
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            cut = " (cut short?)" if stripped.startswith("{") else ""
            return [
                draft(
                    "error",
                    kind="parse_error",
                    terminal=False,
                    text=f"line is not JSON{cut}: {exc.msg} at column {exc.colno}",
                )
            ]
        if not isinstance(obj, dict):
            return [
                draft(
                    "error",
                    kind="parse_error",
                    terminal=False,
                    text=f"line is JSON but not an object: {type(obj).__name__}",
                )
            ]
        return self.feed_object(obj)

    @abstractmethod
    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """Turn one decoded stdout object into drafts (possibly none is impossible: see worker)."""

    def feed_stderr(self, line: str) -> list[Draft]:
        """One stderr line. Most CLIs print diagnostics there; adapters pick out the few that
        matter (codex reports sandbox denials only on stderr). Default: nothing."""
        return []

    @abstractmethod
    def finish(self, returncode: int | None, stderr_tail: tuple[str, ...]) -> list[Draft]:
        """The process is gone: flush buffers, synthesise the end if no terminal event came."""

    def outcome(self) -> RunOutcome:
        """What this run amounted to."""
        return RunOutcome(
            success=self.succeeded,
            final_text=self.final_text,
            session_id=self.session_id,
            usage=self.usage,
            cost_usd=self.cost_usd,
            total_tokens=self.total_tokens,
            files_written=tuple(dict.fromkeys(self.files_written)),
            permission_denials=tuple(self.permission_denials),
            error=self.error,
            terminal_event_seen=self.terminal_seen,
        )


class AgentAdapter(ABC):
    """Builds the command line for one CLI and makes parsers for its stream."""

    name: AgentName
    default_executable: str
    # The CLI's own state, relative to $HOME: writable inside the OS sandbox.
    state_dirs: tuple[str, ...] = ()
    state_files: tuple[str, ...] = ()

    @abstractmethod
    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The exact argv, environment and cwd for this run (stdin is always closed)."""

    @abstractmethod
    def new_parser(self) -> StreamParser:
        """A fresh parser for one run."""

    def cli_state(self, env: Mapping[str, str]) -> CliState:
        """The state folders and files of this CLI for a run with environment ``env``."""
        home = Path(env.get("HOME") or Path.home())
        return CliState(dirs=tuple(home / d for d in self.state_dirs), files=tuple(home / f for f in self.state_files))

    def version_argv(self, executable: tuple[str, ...]) -> tuple[str, ...]:
        """Command that prints the CLI's version (preflight)."""
        return (*executable, "--version")
