"""The Recovery actor's pattern table: real CLI messages and exit codes -> an error class.

Each CLI's rows live with its adapter (``AgentAdapter.error_patterns``), taken from the
real messages in the reference of the CLIs unless a row's ``source`` says otherwise; the
rows here hold for every CLI. The table is data: ``[[recovery.patterns]]`` entries in the
config file are added in front of it (a user's pattern wins), and ``classify_run`` is a
pure function of the run's evidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.actors.adapters.acp import acp_errors
from meta_orchestrator.actors.adapters.registry import agent_names, get_adapter

# Classes in the order they are tried: the cause of a failure before its side effects
# (a 401 run also prints "Reconnecting..."; a refused root bypass also exits 1).
CAUSE_ORDER: tuple[str, ...] = (
    "node_lost",  # the machine went: whatever the CLI printed last is not why it ended
    "hang",  # the stall limit ended it: what it printed before (retries, say) did not end it
    "not_installed",
    "bad_workdir",
    "root_bypass",
    "bad_flag",
    "repo_trust",
    "account",  # before auth: a refused account also answers 403 / exit 147
    "auth",
    "rate_limit",
    "context",
    "turn_cap",
    "session_not_found",
    "invalid_model",
    "sandbox",
    "network",
    "server",
    "outside_path",
    "mode_too_strict",
    "malformed",  # only without a terminal event: a stream that ended well had stray lines only
    "crash",
)

# The rows that hold for every CLI: what the worker itself reports (process_host.describe_spawn_error,
# remote_workdir.finish), and the ACP client for every CLI driven over ACP. Each CLI's own rows
# live with its adapter (``AgentAdapter.error_patterns``).
GENERIC_PATTERNS: tuple[ErrorPattern, ...] = (
    error_pattern("*", "node_lost", r"^node lost: the cluster node .* was lost", source="worker"),
    error_pattern("*", "not_installed", r"executable '(?P<exe>[^']+)' not found", source="worker"),
    error_pattern("*", "not_installed", r"executable '(?P<exe>[^']+)' is not executable", source="worker"),
    error_pattern("*", "bad_workdir", r"working directory (?P<path>\S+) does not exist", source="worker"),
    *acp_errors("*"),
    # The resource monitor's stop reason (limit_rules.Breach.reason) for a silent run.
    error_pattern("*", "hang", r"^stall limit: ", source="resource monitor"),
    # The stream parser's words for a line it could not read (adapters.base.LineParser).
    error_pattern(
        "*", "malformed", r"^line is (?:not JSON|not valid UTF-8|JSON but not an object)", source="stream parser"
    ),
)


def builtin_patterns() -> tuple[ErrorPattern, ...]:
    """The generic rows, then every registered adapter's slice of the table."""
    return (*GENERIC_PATTERNS, *(p for name in agent_names() for p in get_adapter(name).error_patterns))


@dataclass(frozen=True)
class Evidence:
    """What a run left behind, in the order it is searched (most telling first)."""

    agent: str
    lines: tuple[str, ...] = ()
    returncode: int | None = None
    terminal_event_seen: bool = True
    succeeded: bool = False


@dataclass(frozen=True)
class Classification:
    """The class of a run's failure, the line that showed it, and what the regex captured."""

    cause: str
    evidence: str
    groups: dict[str, str] = field(default_factory=dict)
    source: str = "reference"


def compile_patterns(extra: Iterable[dict[str, object]] = ()) -> tuple[ErrorPattern, ...]:
    """The table with user patterns (from ``[[recovery.patterns]]``) in front.

    Raises:
        ValueError: a user pattern is not a valid regex or names an unknown class.
    """
    user = []
    for entry in extra:
        cause = str(entry.get("cause", ""))
        if cause not in CAUSE_ORDER:
            raise ValueError(f"recovery pattern cause {cause!r} is not one of {', '.join(CAUSE_ORDER)}")
        cli = str(entry.get("cli", "*"))
        if cli != "*" and cli not in agent_names():
            raise ValueError(f"recovery pattern cli {cli!r} is not one of *, {', '.join(agent_names())}")
        regex = entry.get("match")
        listed = entry.get("exit_codes") or ()
        if not isinstance(listed, (list, tuple)) or not all(isinstance(c, int) for c in listed):
            raise ValueError(f"recovery pattern exit_codes {listed!r} is not a list of whole numbers")
        codes = tuple(int(c) for c in listed)
        try:
            user.append(
                ErrorPattern(
                    cli=cli,
                    cause=cause,
                    regex=str(regex) if regex else None,
                    exit_codes=codes,
                    source="config",
                )
            )
        except re.error as exc:
            raise ValueError(f"recovery pattern {regex!r} is not a valid regex: {exc}") from None
    return (*user, *builtin_patterns())


def classify_run(
    evidence: Evidence, patterns: Sequence[ErrorPattern] | None = None, only: Iterable[str] | None = None
) -> Classification | None:
    """The first class (in ``CAUSE_ORDER``; config patterns first within a class) whose
    pattern matches a line or the exit code. A failed run nothing explains is a ``crash``;
    a successful run is only ever classed by its refusals (outside_path, mode_too_strict).
    """
    if patterns is None:
        patterns = builtin_patterns()
    allowed = set(only) if only is not None else set(CAUSE_ORDER)
    if evidence.succeeded:
        allowed &= {"outside_path", "mode_too_strict"}
    mine = [p for p in patterns if p.cli in ("*", evidence.agent)]
    for cause in CAUSE_ORDER:
        if cause not in allowed or (cause == "malformed" and evidence.terminal_event_seen):
            continue
        for pattern in (p for p in mine if p.cause == cause):
            if pattern.compiled is not None:
                for line in evidence.lines:
                    match = pattern.compiled.search(line)
                    if match:
                        groups = {k: v for k, v in match.groupdict().items() if v}
                        return Classification(cause, _clip(line), groups, pattern.source)
            if pattern.exit_codes and evidence.returncode in pattern.exit_codes:
                return Classification(cause, f"exit code {evidence.returncode}", {}, pattern.source)
    if (
        "crash" in allowed
        and not evidence.succeeded
        and (evidence.returncode is None or evidence.returncode != 0 or not evidence.terminal_event_seen)
    ):
        line = next((ln for ln in evidence.lines if ln.strip()), "")
        shown = line or f"exit code {evidence.returncode}"
        return Classification("crash", _clip(shown), {}, "exit status")
    return None


def _clip(text: str, limit: int = 500) -> str:
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
