"""The Recovery actor's pattern table: real CLI messages and exit codes -> an error class.

Every pattern comes from ../shared/reference/agent-clis.md (§1.5/§1.6 claude, §2.5/§2.6
codex, §3.1-§3.6 gemini, §4 classification table) unless its ``source`` says otherwise. The
table is data: ``[[recovery.patterns]]`` entries in the config file are added in front of
it (a user's pattern wins), and ``classify_run`` is a pure function of the run's evidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# Classes in the order they are tried: the cause of a failure before its side effects
# (a 401 run also prints "Reconnecting..."; a refused root bypass also exits 1).
CAUSE_ORDER: tuple[str, ...] = (
    "not_installed",
    "bad_workdir",
    "root_bypass",
    "bad_flag",
    "repo_trust",
    "account",
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
    "crash",
)

# Which env var / package each CLI needs (reference table at the top and §1.3, §2.3, §3.3).
CREDENTIALS = {
    "claude": "ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`)",
    "codex": "CODEX_API_KEY (codex 0.169 exec does not send OPENAI_API_KEY; or run "
    "`printenv OPENAI_API_KEY | codex login --with-api-key`)",
    "gemini": "GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT and "
    "GOOGLE_CLOUD_LOCATION); with GOOGLE_GEMINI_BASE_URL also pin "
    '{"security":{"auth":{"selectedType":"gemini-api-key"}}} in ~/.gemini/settings.json',
}
# Why an account (not a missing key) is refused, and the ways out.
ACCOUNT_ADVICE = {
    "gemini": "gemini refused this Google account: since 2026-06-18 Gemini Code Assist for individuals "
    "no longer serves personal accounts (403 'no valid license', #3501). Use a paid GEMINI_API_KEY "
    "(from Google AI Studio, billing on) or Vertex AI (GOOGLE_GENAI_USE_VERTEXAI=true with "
    "GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION) in [agents.gemini] env, or move its roles "
    "([session] roles / role_fallback, or [agents.gemini] enabled = false)",
}
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli"}


@dataclass(frozen=True)
class ErrorPattern:
    """One real message (a regex, case-insensitive) or exit code that identifies a class."""

    cli: str  # "claude" | "codex" | "gemini" | "*"
    cause: str
    regex: str | None = None
    exit_codes: tuple[int, ...] = ()
    source: str = "reference"
    compiled: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.regex is not None:
            object.__setattr__(self, "compiled", re.compile(self.regex, re.IGNORECASE))


def _p(cli: str, cause: str, regex: str | None = None, *codes: int, source: str = "reference") -> ErrorPattern:
    return ErrorPattern(cli=cli, cause=cause, regex=regex, exit_codes=codes, source=source)


PATH = r"(?P<path>/[^\s,\"']+|[^\s,\"']+)"

BUILTIN_PATTERNS: tuple[ErrorPattern, ...] = (
    # -- any CLI: what the worker itself reports (process_host.describe_spawn_error) --------
    _p("*", "not_installed", r"executable '(?P<exe>[^']+)' not found", source="worker"),
    _p("*", "not_installed", r"executable '(?P<exe>[^']+)' is not executable", source="worker"),
    _p("*", "bad_workdir", r"working directory (?P<path>\S+) does not exist", source="worker"),
    # -- claude (§1.2, §1.5, §1.6, §4) -----------------------------------------------------
    _p("claude", "root_bypass", r"--dangerously-skip-permissions cannot be used with root/sudo"),
    _p("claude", "bad_flag", r"error: unknown option '(?P<arg>[^']+)'"),
    _p("claude", "bad_flag", r"error: option '(?P<arg>[^']+)' argument '[^']*' is invalid"),
    _p("claude", "auth", r"authentication_failed"),
    _p("claude", "auth", r"Not logged in"),
    _p("claude", "auth", r"Failed to authenticate"),
    _p("claude", "rate_limit", r"Request rejected \(429\)"),
    _p("claude", "rate_limit", r"\brate_limit\b"),
    _p("claude", "context", r"prompt_too_long|Prompt is too long"),
    _p("claude", "turn_cap", r"error_max_turns|Reached maximum number of turns"),
    _p("claude", "session_not_found", r"No conversation found with session ID"),
    _p("claude", "session_not_found", r"--resume requires a valid session ID"),
    _p(
        "claude",
        "invalid_model",
        r"not_found_error.*model|model.*(?:not found|does not exist)",
        source="Anthropic API error type (not captured in the reference)",
    ),
    _p("claude", "network", r"Unable to connect to API"),
    _p("claude", "server", r"API Error: 5\d\d|server-side issue|\bserver_error\b|overloaded"),
    _p(
        "claude",
        "outside_path",
        r"requested permissions to (?:write to|read from) "
        r"(?P<path>.+?), but you haven't granted it yet",
    ),
    _p("claude", "mode_too_strict", r"was blocked\. For security, Claude Code may only"),
    _p("claude", "mode_too_strict", r"running in don't ask mode"),
    _p("claude", "mode_too_strict", r"Cannot write to .+ while in plan mode"),
    # -- codex (§2.1, §2.2, §2.5, §2.6, §4) ------------------------------------------------
    _p("codex", "bad_workdir", r"Error: No such file or directory \(os error 2\)"),
    _p("codex", "bad_flag", r"error: unexpected argument '(?P<arg>[^']+)' found"),
    _p("codex", "bad_flag", r"error: invalid value '[^']*' for '(?P<arg>[^']+)'"),
    _p(
        "codex",
        "repo_trust",
        r"Not inside a trusted directory and --skip-git-repo-check "
        r"was not specified",
    ),
    _p("codex", "auth", r"401 Unauthorized|403 Forbidden"),
    _p("codex", "auth", r"Missing environment variable: `?(?P<var>[A-Z0-9_]+)"),
    _p("codex", "rate_limit", r"429 Too Many Requests"),
    _p("codex", "rate_limit", r"Quota exceeded"),
    _p("codex", "context", r"ran out of room in the model's context window"),
    _p("codex", "session_not_found", r"no rollout found for thread id"),
    _p(
        "codex",
        "invalid_model",
        r"model_not_found|model .* does not exist",
        source="OpenAI API error code (not captured in the reference)",
    ),
    _p("codex", "network", r"stream disconnected before completion"),
    _p("codex", "network", r"waiting for network"),
    _p("codex", "server", r"high demand|unexpected status 5\d\d"),
    _p("codex", "outside_path", r"Read-only file system"),
    _p("codex", "outside_path", r"writing is blocked by read-only sandbox"),
    _p("codex", "mode_too_strict", r"rejected by user approval settings"),
    # -- gemini (§3.1-§3.6, §4) ------------------------------------------------------------
    _p("gemini", "bad_workdir", r"Directory does not exist: (?P<path>\S+)"),
    _p("gemini", "bad_flag", r"Unknown arguments?: (?P<arg>\S+)"),
    _p("gemini", "bad_flag", r"Cannot use both --yolo \(-y\) and --approval-mode"),
    _p("gemini", "bad_flag", r"Invalid values:"),
    _p("gemini", "repo_trust", r"not running in a trusted directory"),
    _p("gemini", "repo_trust", None, 55),
    # Since 2026-06-18 Code Assist for individuals refuses personal Google accounts: a 403 on
    # every request, and at sign-in the client is refused (issue text; the server's words,
    # not in the pinned 0.61 sources). Tried before "auth": the same run also matches 403/147.
    _p("gemini", "account", r"do not have a valid license of this product|\(#3501\)", source="issue 10 (server 403)"),
    _p(
        "gemini",
        "account",
        r"client is no longer supported for Gemini Code Assist for individuals",
        source="issue 10 (sign-in)",
    ),
    # gemini-cli 0.61 packages/core/src/code_assist/setup.ts: IneligibleTierError,
    # ValidationRequiredError, ProjectIdRequiredError (an account, not a key, problem).
    _p("gemini", "account", r"IneligibleTierError|Account validation required:", source="gemini-cli 0.61 setup.ts"),
    _p(
        "gemini",
        "account",
        r"This account requires setting the GOOGLE_CLOUD_PROJECT",
        source="gemini-cli 0.61 setup.ts",
    ),
    _p("gemini", "auth", r"Please set an Auth method|Invalid auth method selected"),
    _p("gemini", "auth", r"UNAUTHENTICATED|\"code\":40[13]\b"),
    _p("gemini", "auth", None, 41, 145, 147),
    _p("gemini", "rate_limit", r"exhausted your daily quota|RESOURCE_EXHAUSTED|\"code\":429\b"),
    _p("gemini", "rate_limit", r"Please wait and try again later"),
    _p("gemini", "rate_limit", None, 173),
    _p("gemini", "context", None, 144),
    _p("gemini", "turn_cap", r"FatalTurnLimitedError|max(?:imum)? session turns"),
    _p("gemini", "turn_cap", None, 53),
    _p("gemini", "session_not_found", r"Invalid session identifier"),
    _p(
        "gemini",
        "invalid_model",
        r"models/\S+ is not found|NOT_FOUND.*model",
        source="Gemini API error status (not captured in the reference)",
    ),
    _p("gemini", "sandbox", r"FatalSandboxError"),
    _p("gemini", "sandbox", None, 44),
    _p("gemini", "network", r"fetch failed sending request"),
    _p("gemini", "server", r"\"code\":5\d\d\b|status: 5\d\d|\bINTERNAL\b|\bUNAVAILABLE\b"),
    _p("gemini", "server", None, 244, 247),
    _p("gemini", "outside_path", r"Path not in workspace: Attempted path \"(?P<path>[^\"]+)\""),
    _p(
        "gemini",
        "mode_too_strict",
        r"tool_not_registered|policy_violation|"
        r"Tool execution denied by policy",
    ),
)


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
        regex = entry.get("match")
        codes = tuple(int(c) for c in entry.get("exit_codes", ()) or ())  # type: ignore[union-attr]
        try:
            user.append(
                ErrorPattern(
                    cli=str(entry.get("cli", "*")),
                    cause=cause,
                    regex=str(regex) if regex else None,
                    exit_codes=codes,
                    source="config",
                )
            )
        except re.error as exc:
            raise ValueError(f"recovery pattern {regex!r} is not a valid regex: {exc}") from None
    return (*user, *BUILTIN_PATTERNS)


def classify_run(
    evidence: Evidence, patterns: Sequence[ErrorPattern] = BUILTIN_PATTERNS, only: Iterable[str] | None = None
) -> Classification | None:
    """The first class (in ``CAUSE_ORDER``; config patterns first within a class) whose
    pattern matches a line or the exit code. A failed run nothing explains is a ``crash``;
    a successful run is only ever classed by its refusals (outside_path, mode_too_strict).
    """
    allowed = set(only) if only is not None else set(CAUSE_ORDER)
    if evidence.succeeded:
        allowed &= {"outside_path", "mode_too_strict"}
    mine = [p for p in patterns if p.cli in ("*", evidence.agent)]
    for cause in CAUSE_ORDER:
        if cause not in allowed:
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
