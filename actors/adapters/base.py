"""What every CLI adapter provides, and the line handling they share.

An adapter is everything the orchestrator knows about one CLI: its command line, its
stream format, the flags that grant a folder, lift its folder check or switch its own
permission checks off, where it is installed from and which credentials it needs, which
variables of the environment it receives, its rows of the error table and the advice for
each error class. Recovery, preflight, the sandbox and the reviewer ask the adapter; no
other module names a CLI.

An adapter is pure: it builds a command line and turns stdout lines into event drafts.
It never spawns, reads pipes or touches files; the worker actor does that.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal, NamedTuple

import msgspec

from meta_orchestrator.actors.adapters.errors import ErrorPattern
from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.events import EVENT_TYPES, EventPayload, EventType, text_payload
from meta_orchestrator.messages.worker import RunOutcome


class Draft(NamedTuple):
    """An event before the worker stamps agent, seq, timestamp and raw line on it."""

    type: EventType
    payload: EventPayload


_EVENT_TYPES = frozenset(EVENT_TYPES)
_TEXT_KEYS = frozenset({"text", "kind"})


def draft(type_: EventType, **payload: Any) -> Draft:
    """Shorthand: ``draft("progress", text="hi", kind="text")``; validated here, once.

    A payload of text and kind alone (most lines of a flood) is two strings, which need no
    validation: it is built without, at a third of the cost."""
    if type_ not in _EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}; one of {', '.join(EVENT_TYPES)}")
    if payload.keys() <= _TEXT_KEYS:
        kind, text = payload.get("kind"), payload.get("text")
        if (kind is None or type(kind) is str) and (text is None or type(text) is str):
            return Draft(type_, text_payload(kind, text))
    return Draft(type_, EventPayload(**payload))


_DECODER = msgspec.json.Decoder()


def decode_json(text: str) -> Any:
    """``json.loads``, six times faster on what agents print (msgspec, which keeps integers
    past 64 bits exact, where orjson makes them floats); what msgspec refuses and the standard
    library takes (NaN, lone surrogates) is read as before, and an error is the standard
    library's, which says where."""
    try:
        return _DECODER.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


# Set for a CLI asked through a bridge (codex app-server) when the sandbox guard runs: the
# session's policy file and its sha256, which the adapter puts on the bridge's command line.
POLICY_FILE_ENV = "ORCHESTRATE_TOOL_POLICY"
POLICY_SHA256_ENV = "ORCHESTRATE_TOOL_POLICY_SHA256"


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
    # The run is inside the orchestrator's OS sandbox: a CLI whose own sandbox cannot nest in
    # it (codex's bwrap, as root) turns its own off and relies on ours.
    confined: bool = False
    protocol: str = "stream"  # how the CLI is driven (``AgentAdapter.protocols``)
    # The port its ACP agent's own server listens on (``AgentAdapter.acp_port_flag``), chosen
    # free for a run in the OS sandbox, whose Landlock lets that run alone connect to it.
    serve_port: int | None = None


@dataclass(frozen=True)
class Launch:
    """A ready-to-spawn process: argv, the full environment, the working directory and what
    it reads on stdin (the prompt: any local user can read a command line with ``ps``)."""

    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: Path
    stdin: bytes | None = None  # written to the CLI's stdin, which is then closed; None: closed at once


# What every CLI process needs from the orchestrator's environment (names or ``*`` globs):
# where programs and home are, who runs it, locale, terminal, temp folder, the shell its
# tools run in, proxies and CA bundles (a corporate network needs them to reach the API).
# NODE_OPTIONS can load code, but only the user can have set it in this environment.
BASE_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "NODE_OPTIONS",
)


# A credential file's token fields: name -> the JSON types it may hold, or a nested shape.
TokenShape = Mapping[str, "tuple[type, ...] | TokenShape"]


@dataclass(frozen=True)
class StatePlace:
    """One place a CLI keeps its state in the user's home: a folder or a file.

    A run gets a private copy of it (made from the user's at the session's first run), bound
    at ``real`` inside the OS sandbox; the user's own is never writable inside. Paths in
    ``copied``, ``settings`` and ``credentials`` are relative to a folder place.
    """

    real: Path  # the user's: where the CLI looks for it
    name: str  # its name in the session's private copy
    folder: bool = True
    copied: tuple[str, ...] = ()  # what the copy is made from (a folder place); a file place: the file
    settings: tuple[str, ...] = ()  # read-only inside (they configure hooks, MCP servers, notify); "x/": a folder
    credentials: Mapping[str, TokenShape] = field(default_factory=dict)  # token files that flow back, validated
    # A file place's JSON keys reset to the user's before every run (``a.*.b``: ``b`` in each
    # entry of ``a``): MCP servers in a file the CLI itself rewrites, which cannot be read-only.
    pinned: tuple[str, ...] = ()


@dataclass(frozen=True)
class CliState:
    """Where a CLI keeps its sessions, auth and settings, for one run."""

    places: tuple[StatePlace, ...] = ()


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
        self.tool_results_ok = 0  # tool calls that ended well
        self.tool_failures: list[str] = []  # what each failed tool call said, in order

    # The shape of the line a flood is made of (for claude, an assistant line of one text
    # block), as msgspec structs: read straight into them, such a line costs half of what a
    # dict does. A line of another shape fails to decode at its first difference (a literal
    # ``type``, say) and is read as a dict, through ``feed_object``, as every line was before.
    fast_shape: ClassVar[msgspec.json.Decoder[Any] | None] = None

    def feed_fast(self, line: Any) -> list[Draft] | None:
        """Drafts for a line ``fast_shape`` read, exactly those ``feed_object`` would make of
        it; None: let ``feed_object`` read it."""
        return None

    def _read_fast(self, shape: msgspec.json.Decoder[Any], data: bytes) -> list[Draft] | None:
        try:
            line = shape.decode(data)
        except msgspec.DecodeError:  # another shape (or not JSON): read as a dict
            return None
        return self.feed_fast(line)

    def note_tool_result(self, ok: bool, text: str) -> None:
        """Count one finished tool call (a command, a patch); a failure keeps its words."""
        if ok:
            self.tool_results_ok += 1
        else:
            self.tool_failures.append(text)

    def feed_line(self, data: bytes, total_bytes: int | None = None) -> list[Draft]:
        """Parse one stdout line. Bad lines become ``error`` drafts; the stream goes on."""
        total = len(data) if total_bytes is None else total_bytes
        if total == len(data):
            if self.fast_shape is not None and (drafts := self._read_fast(self.fast_shape, data)) is not None:
                return drafts  # a flood's usual line, read into a struct
            # Most lines: JSON that msgspec reads from the bytes (checking their UTF-8, ignoring
            # JSON's whitespace around it). Anything else is read below, which says what is wrong.
            try:
                obj = _DECODER.decode(data)
            except msgspec.DecodeError:
                pass
            else:
                if type(obj) is dict:
                    return self.feed_object(obj)
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
            obj = decode_json(stripped)
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

    def outcome(self, writing: bool = False) -> RunOutcome:
        """What this run amounted to. ``writing``: a run meant to change files; one whose every
        tool call failed (a CLI whose own sandbox broke: nothing ran, nothing was written) is
        not a success, whatever the CLI said of it."""
        success, error = self.succeeded, self.error
        if writing and success and self.tool_failures and not self.tool_results_ok:
            # Each distinct failure, shortened: the words that say why (a sandbox that could not
            # start, a read-only file system) are what recovery classifies.
            said = list(dict.fromkeys(" ".join(text.split())[:300] for text in self.tool_failures))[:4]
            success = False
            error = f"every tool call failed ({len(self.tool_failures)}); they said: {' | '.join(said)}"
        return RunOutcome(
            success=success,
            final_text=self.final_text,
            session_id=self.session_id,
            usage=self.usage,
            cost_usd=self.cost_usd,
            total_tokens=self.total_tokens,
            files_written=tuple(dict.fromkeys(self.files_written)),
            permission_denials=tuple(self.permission_denials),
            error=error,
            terminal_event_seen=self.terminal_seen,
        )


@dataclass(frozen=True)
class ArgsFixed:
    """Flags dropped from a user's ``extra_args`` before launch because the CLI would refuse them."""

    extra_args: tuple[str, ...]  # what is kept
    cause: str  # the error class the flags would have caused
    evidence: str  # the CLI's own message for it
    action: str  # what was done, said to the user


def drop_args(
    args: tuple[str, ...],
    flags: tuple[str, ...],
    with_value: tuple[str, ...] = (),
    pairs: tuple[tuple[str, str], ...] = (),
) -> tuple[tuple[str, ...], list[str]]:
    """``args`` without ``flags`` (and the value after ``with_value`` flags, and ``pairs``)."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if name in flags:
            dropped.append(arg)
        elif name in with_value:
            dropped.append(arg if "=" in arg or nxt is None else f"{arg} {nxt}")
            i += 0 if "=" in arg else 1
        elif any(arg == a and nxt == b for a, b in pairs):
            dropped.append(f"{arg} {nxt}")
            i += 1
        elif any(arg == f"{a}={b}" for a, b in pairs):
            dropped.append(arg)
        else:
            kept.append(arg)
        i += 1
    return tuple(kept), dropped


OFF_VALUES = frozenset({"", "0", "false", "no", "off"})  # an environment switch set to one of these is off


class AgentAdapter(ABC):
    """Builds the command line for one CLI, makes parsers for its stream, and knows its quirks.

    Subclasses set ``name`` and ``default_executable`` and implement ``build_launch`` and
    ``new_parser``; the other attributes default to "this CLI has no such thing".
    """

    name: AgentName
    default_executable: str
    package: ClassVar[str | None] = None  # the npm package it installs from
    credentials: ClassVar[str] = "the credentials its documentation names"
    trust_flag: ClassVar[str | None] = None  # lifts the CLI's own folder check (always on its command line)
    grant_dir_flag: ClassVar[str] = "--add-dir"  # grants one more folder
    bypass_flags: ClassVar[tuple[str, ...]] = ()  # flags or values that switch its permission checks off
    hook_settings_flag: ClassVar[str | None] = None  # passes a settings file with the sandbox's tool hook
    # Go with that file: no other settings source (files an agent can write) is read.
    hook_settings_args: ClassVar[tuple[str, ...]] = ()
    # What would switch the hook off or replace its file: refused while the hook is on.
    hook_off_flags: ClassVar[tuple[str, ...]] = ()
    hook_off_env: ClassVar[tuple[str, ...]] = ()
    error_patterns: ClassVar[tuple[ErrorPattern, ...]] = ()  # its rows of the error table
    # Error class -> what the user should do, with {agent} and {target} filled in; classes
    # not named here get Recovery's generic advice.
    advice: ClassVar[Mapping[str, str]] = MappingProxyType({})
    colour: ClassVar[str] = ""  # ANSI colour of its name on the console
    # Its vendor's variables (keys, endpoints, its own settings) it receives beside BASE_ENV;
    # the rest of the orchestrator's environment is dropped (see env_patterns).
    vendor_env: ClassVar[tuple[str, ...]] = ()
    # The CLI's own state in $HOME (see ``cli_state``); a run gets a private copy of each.
    state_places: ClassVar[tuple[StatePlace, ...]] = ()  # ``real`` relative to $HOME
    # How it can be driven: "stream" (its headless JSON stream: ``build_launch``/``new_parser``),
    # "acp" (Agent Client Protocol over stdio, started with ``acp_args``), "app-server" (codex's
    # JSON-RPC server). The first is the default; ``[agents.<name>] protocol`` picks another.
    protocols: ClassVar[tuple[str, ...]] = ("stream",)
    acp_args: ClassVar[tuple[str, ...] | None] = None  # the arguments that make it speak ACP on stdio
    # Over ACP its ``session/load`` finds the sessions it saved; when not, a resumed run goes
    # by its stream (``run_protocol``), whose resume finds them.
    acp_resumes: ClassVar[bool] = True
    # Its ACP agent is a client of an HTTP server it starts for itself on 127.0.0.1 (opencode):
    # the flag naming that server's port. Its default, any free port, is one Landlock refuses.
    acp_port_flag: ClassVar[str | None] = None

    @abstractmethod
    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The exact argv, environment, cwd and stdin for this run; the prompt never in argv."""

    @abstractmethod
    def new_parser(self) -> StreamParser:
        """A fresh parser for one run."""

    def acp_options(self, spec: LaunchSpec) -> tuple[tuple[str, ...], dict[str, str]]:
        """Over ACP: the arguments after ``acp_args`` (its trust flag, its granted folders) and
        the environment for this run; a CLI whose own settings would let a call run unasked
        makes it ask here."""
        grants = [a for d in spec.extra_dirs if d.is_dir() for a in (self.grant_dir_flag, str(d))]
        trust = (self.trust_flag,) if self.trust_flag else ()
        return (*trust, *grants, *self.serve_args(spec)), dict(spec.env)

    def serve_args(self, spec: LaunchSpec) -> tuple[str, ...]:
        """The port of the server its ACP agent starts for itself, when the run chose one."""
        return (self.acp_port_flag, str(spec.serve_port)) if self.acp_port_flag and spec.serve_port else ()

    def protocol_for(self, configured: str | None) -> str:
        """The protocol a run uses: the configured one, else the CLI's first choice.

        Raises:
            ValueError: the CLI cannot be driven that way.
        """
        if configured is None:
            return self.protocols[0]
        if configured not in self.protocols:
            raise ValueError(f"{self.name} cannot be driven by {configured!r}; it speaks {', '.join(self.protocols)}")
        return configured

    def run_protocol(self, configured: str | None, resuming: bool) -> str:
        """The protocol one run uses: ``protocol_for``, unless a resumed run cannot go that way."""
        return self.protocol_for(configured)

    def parser_for(self, protocol: str) -> StreamParser:
        """A fresh parser for one run driven by ``protocol``."""
        return self.new_parser()

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """The state places of this CLI for a run with environment ``env`` working in ``folders``."""
        home = Path(env.get("HOME") or Path.home())
        return CliState(places=tuple(replace(p, real=home / p.real) for p in self.state_places))

    def env_patterns(self, environ: Mapping[str, str], extra_args: tuple[str, ...]) -> tuple[str, ...]:
        """The variable names (or ``*`` globs) this CLI receives from ``environ``; an adapter
        adds those that only a setting in ``environ`` or its ``extra_args`` asks for."""
        return (*BASE_ENV, *self.vendor_env)

    def version_argv(self, executable: tuple[str, ...]) -> tuple[str, ...]:
        """Command that prints the CLI's version (preflight)."""
        return (*executable, "--version")

    def version_env(self) -> Mapping[str, str]:
        """Set for the version probe alone: the CLI's own switches off work ``--version`` needs
        not do (the start waits on the slowest probe before the dashboard answers)."""
        return {}

    def install_hint(self) -> str:
        """How to install the CLI, as a command when there is one."""
        return f"npm install -g {self.package}" if self.package else f"put {self.default_executable} on PATH"

    def advise(self, cause: str, target: Path) -> str | None:
        """This CLI's advice for an error class, or None for the generic one."""
        text = self.advice.get(cause)
        return text.format(agent=self.name, target=target) if text is not None else None

    def bypass_flags_in(self, args: tuple[str, ...] | list[str]) -> list[str]:
        """The arguments that would switch the CLI's own permission checks off."""
        found = []
        for arg in args:
            name, _, value = arg.partition("=")
            if arg in self.bypass_flags or name in self.bypass_flags or (value and value in self.bypass_flags):
                found.append(arg)
        return found

    def hook_args(self, settings_file: str) -> tuple[str, ...]:
        """The arguments that give the CLI the sandbox's tool hook (after every other argument:
        for a repeated option the last one wins)."""
        if self.hook_settings_flag is None:
            return ()
        return (self.hook_settings_flag, settings_file, *self.hook_settings_args)

    def hook_off_switches(self, args: tuple[str, ...] | list[str], env: Mapping[str, str]) -> list[str]:
        """The arguments and environment variables that would switch the tool hook off."""
        found = [arg for arg in args if arg.partition("=")[0] in self.hook_off_flags]
        on = [name for name in self.hook_off_env if env.get(name, "").strip().lower() not in OFF_VALUES]
        return found + [f"{name}={env[name]}" for name in on]

    def hook_off_by_policy(self) -> list[str]:
        """What the administrator's managed settings say that switches the tool hook off (no
        argument outranks them)."""
        return []

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        """Drop user flags this CLI is known to refuse (preflight), or None when all are fine."""
        return None

    def folder_check(self, in_git_repo: bool) -> str:
        """What the CLI checks about the target folder before it works there (preflight's record)."""
        return "no folder check"

    def demo_argv(self) -> tuple[str, ...]:
        """The command of its demo agent, which prints this CLI's exact stream format."""
        return (sys.executable, "-m", "meta_orchestrator.actors.agents.demo", self.name)
