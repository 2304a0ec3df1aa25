"""Gemini CLI (``gemini -p … --output-format stream-json``): command line and stream."""

from __future__ import annotations

from types import MappingProxyType
from collections.abc import Mapping
import logging
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.base import (
    AgentAdapter,
    ArgsFixed,
    CliState,
    Draft,
    Launch,
    LaunchSpec,
    StatePlace,
    draft,
    drop_args,
)
from meta_orchestrator.actors.adapters.common import (
    GuardedParser,
    as_int,
    as_str,
    classify,
    clip,
    require_dict,
)
from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.actors.adapters.protocol import MarkerBuffer, strip_markers
from meta_orchestrator.messages.base import AgentName

logger = logging.getLogger(__name__)

_WRITE_TOOLS = frozenset({"write_file", "replace"})
# tool_result error types that mean "the workspace or approval mode refused this" (§3.4, §3.5)
_DENIAL_TYPES = frozenset({"tool_not_registered", "policy_violation"})

# §3.6; API errors exit with their HTTP status mod 256.
_EXIT_CODES: dict[int, tuple[str, bool | None]] = {
    1: ("general error (network failure after retries, bad flag, missing include dir, sandbox failure)", None),
    41: ("authentication error (no or invalid auth method, missing key)", False),
    42: ("input error (empty prompt or bad --resume)", False),
    44: ("sandbox error", False),
    52: ("configuration error", False),
    53: ("turn limit reached (FatalTurnLimitedError)", False),
    54: ("fatal tool execution error", None),
    55: ("untrusted workspace", False),
    130: ("cancelled", None),
    144: ("API error HTTP 400 (bad request, e.g. context too long)", False),
    145: ("API error HTTP 401 (unauthenticated)", False),
    147: ("API error HTTP 403 (forbidden)", False),
    173: ("API error HTTP 429 (rate limit or quota)", True),
    244: ("API error HTTP 500 (server error)", True),
}

FINAL_TEXT_LIMIT = 1_000_000  # characters of a turn's text kept as the final answer


class GeminiParser(GuardedParser):
    """Gemini stream-json: init, message (deltas), tool_use, tool_result, error, result."""

    agent: AgentName = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self._markers = MarkerBuffer()
        self._turn_text: list[str] = []  # assistant deltas since the last tool_result
        self._turn_chars = 0
        self._tools: dict[str, tuple[str, dict[str, Any]]] = {}  # tool_id -> (name, parameters)

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """Route one line by its type."""
        match type_:
            case "init":
                self.session_id = as_str(obj.get("session_id")) or self.session_id
                return [
                    draft(
                        "status",
                        kind="init",
                        session_id=self.session_id,
                        model=as_str(obj.get("model")),
                        text="session started",
                    )
                ]
            case "message":
                return self._on_message(obj)
            # A tool call or the end completes the pending text line: its markers come
            # first. The handler runs first so a malformed line leaves the buffer intact.
            case "tool_use":
                handled = self._on_tool_use(obj)
                return [*self._markers.flush(), *handled]
            case "tool_result":
                handled = self._on_tool_result(obj)
                return [*self._markers.flush(), *handled]
            case "error":
                return self._on_error(obj)
            case "result":
                handled = self._on_result(obj)
                return [*self._markers.flush(), *handled]
        return [draft("status", kind="unknown", text=type_)]

    def _on_message(self, obj: dict[str, Any]) -> list[Draft]:
        """The echoed prompt (status) or a chunk of assistant text (buffered for markers)."""
        content = as_str(obj.get("content"))
        role = as_str(obj.get("role"))
        if role == "user":
            return [draft("status", kind="prompt_echo", text=clip(content))]
        if role != "assistant" or content is None:
            return [draft("status", kind="unknown", text=f"message/{role}")]
        self._turn_text.append(content)
        self._turn_chars += len(content)
        if self._turn_chars > FINAL_TEXT_LIMIT:
            # A flood must not grow memory: keep the newest text, where the answer ends.
            joined = "".join(self._turn_text)[-FINAL_TEXT_LIMIT:]
            self._turn_text, self._turn_chars = [joined], len(joined)
        # Chunks are cut anywhere: markers are only read from whole lines of the buffer.
        return [draft("progress", kind="text", text=content), *self._markers.feed(content)]

    def _on_tool_use(self, obj: dict[str, Any]) -> list[Draft]:
        """A tool call; write_todos is a plan change."""
        name = as_str(obj.get("tool_name")) or "?"
        parameters = require_dict(obj, "parameters")
        if tool_id := as_str(obj.get("tool_id")):
            self._tools[tool_id] = (name, parameters)
        if name == "write_todos":
            return [draft("task", kind="todo", tool=name, tool_input=parameters, text="todo list updated")]
        summary = (
            as_str(parameters.get("description"))
            or as_str(parameters.get("command"))
            or as_str(parameters.get("file_path"))
            or name
        )
        return [
            draft(
                "progress",
                kind="tool_call",
                tool=name,
                tool_input=parameters,
                text=clip(summary),
                file=as_str(parameters.get("file_path")),
            )
        ]

    def _on_tool_result(self, obj: dict[str, Any]) -> list[Draft]:
        """Success (a milestone for a written file) or a tool error (a blocker if a denial)."""
        self._turn_text = []  # the final answer is the text after the last tool result
        self._turn_chars = 0
        tool_id = as_str(obj.get("tool_id")) or ""
        name, parameters = self._tools.get(tool_id, (None, {}))
        if as_str(obj.get("status")) == "success":
            self.note_tool_result(True, as_str(obj.get("output")) or "")
            drafts = [
                draft(
                    "progress",
                    kind="tool_result",
                    tool=name,
                    text=clip(as_str(obj.get("output"))),
                    details={"tool_id": tool_id},
                )
            ]
            # Kept as given (may be relative to the workspace): the model's own path.
            path = as_str(parameters.get("file_path"))
            if name in _WRITE_TOOLS and path:
                self.files_written.append(path)
                drafts.append(draft("milestone", kind="file_written", file=path, tool=name, text=f"{name} {path}"))
            return drafts
        error = require_dict(obj, "error")
        error_type = as_str(error.get("type"))
        message = as_str(error.get("message")) or as_str(obj.get("output")) or "tool failed"
        self.note_tool_result(False, message)
        if error_type in _DENIAL_TYPES or (error_type == "invalid_tool_params" and "Path not in workspace" in message):
            self.permission_denials.append(message)
            return [
                draft(
                    "blocker",
                    kind="denial",
                    tool=name,
                    text=clip(message),
                    file=as_str(parameters.get("file_path")),
                    tool_input=parameters or None,
                    details={"error_type": error_type},
                )
            ]
        return [
            draft(
                "progress",
                kind="tool_result",
                tool=name,
                text=clip(message),
                details={"tool_id": tool_id, "is_error": True, "error_type": error_type},
            )
        ]

    def _on_error(self, obj: dict[str, Any]) -> list[Draft]:
        """A non-fatal error event (loop detected, turns exceeded…); a result follows."""
        text = as_str(obj.get("message")) or "error"
        cause, retryable = classify(text)
        return [
            draft(
                "error",
                kind="agent_error",
                terminal=False,
                retryable=retryable,
                severity=as_str(obj.get("severity")),
                text=clip(text),
                details={"cause": cause},
            )
        ]

    def _on_result(self, obj: dict[str, Any]) -> list[Draft]:
        """The end of the run: the last turn's text and stats, or the fatal error."""
        stats = obj.get("stats")
        if isinstance(stats, dict):
            self.usage = stats
            self.total_tokens = as_int(stats.get("total_tokens"))
        if as_str(obj.get("status")) == "success":
            self.final_text = "".join(self._turn_text).strip()
            self._mark_terminal(ok=True)
            return [
                draft("milestone", kind="result", text="run completed", session_id=self.session_id),
                draft(
                    "review",
                    kind="result",
                    text=strip_markers(self.final_text),
                    usage=self.usage,
                    files=tuple(dict.fromkeys(self.files_written)),
                    session_id=self.session_id,
                ),
            ]
        error = require_dict(obj, "error")
        error_type = as_str(error.get("type"))
        text = as_str(error.get("message")) or f"gemini run failed ({error_type or 'no reason'})"
        cause, retryable = classify(f"{error_type or ''} {text}")
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="result",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                usage=self.usage,
                details={"error_type": error_type, "cause": cause},
            )
        ]

    def _flush(self) -> list[Draft]:
        """A marker on the very last line has no newline after it."""
        return self._markers.flush()

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """The §3.6 table, including HTTP statuses truncated to 8 bits."""
        return _EXIT_CODES.get(returncode, ("unexpected exit code (an HTTP status mod 256?)", None))


# Its rows of the error table (reference §3.1-§3.6, §4).
GEMINI_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("gemini", "bad_workdir", r"Directory does not exist: (?P<path>\S+)"),
    error_pattern("gemini", "bad_flag", r"Unknown arguments?: (?P<arg>\S+)"),
    error_pattern("gemini", "bad_flag", r"Cannot use both --yolo \(-y\) and --approval-mode"),
    error_pattern("gemini", "bad_flag", r"Invalid values:"),
    error_pattern("gemini", "repo_trust", r"not running in a trusted directory"),
    error_pattern("gemini", "repo_trust", None, 55),
    # Since 2026-06-18 Code Assist for individuals refuses personal Google accounts: a 403 on
    # every request, and at sign-in the client is refused (the server's words, not in the
    # pinned 0.61 sources). Tried before "auth": the same run also matches 403 / exit 147.
    error_pattern(
        "gemini", "account", r"do not have a valid license of this product|\(#3501\)", source="server 403 (2026-06)"
    ),
    error_pattern(
        "gemini",
        "account",
        r"client is no longer supported for Gemini Code Assist for individuals",
        source="sign-in (2026-06)",
    ),
    # gemini-cli 0.61 packages/core/src/code_assist/setup.ts: IneligibleTierError,
    # ValidationRequiredError, ProjectIdRequiredError (an account, not a key, problem).
    error_pattern(
        "gemini", "account", r"IneligibleTierError|Account validation required:", source="gemini-cli 0.61 setup.ts"
    ),
    error_pattern(
        "gemini",
        "account",
        r"This account requires setting the GOOGLE_CLOUD_PROJECT",
        source="gemini-cli 0.61 setup.ts",
    ),
    error_pattern("gemini", "auth", r"Please set an Auth method|Invalid auth method selected"),
    error_pattern("gemini", "auth", r"UNAUTHENTICATED|\"code\":40[13]\b"),
    error_pattern("gemini", "auth", None, 41, 145, 147),
    error_pattern("gemini", "rate_limit", r"exhausted your daily quota|RESOURCE_EXHAUSTED|\"code\":429\b"),
    error_pattern("gemini", "rate_limit", r"Please wait and try again later"),
    error_pattern("gemini", "rate_limit", None, 173),
    error_pattern("gemini", "context", None, 144),
    error_pattern("gemini", "turn_cap", r"FatalTurnLimitedError|max(?:imum)? session turns"),
    error_pattern("gemini", "turn_cap", None, 53),
    error_pattern("gemini", "session_not_found", r"Invalid session identifier"),
    error_pattern(
        "gemini",
        "invalid_model",
        r"models/\S+ is not found|NOT_FOUND.*model",
        source="Gemini API error status (not captured in the reference)",
    ),
    error_pattern("gemini", "sandbox", r"FatalSandboxError"),
    error_pattern("gemini", "sandbox", None, 44),
    error_pattern("gemini", "network", r"fetch failed sending request"),
    error_pattern("gemini", "server", r"\"code\":5\d\d\b|status: 5\d\d|\bINTERNAL\b|\bUNAVAILABLE\b"),
    error_pattern("gemini", "server", None, 244, 247),
    error_pattern("gemini", "outside_path", r"Path not in workspace: Attempted path \"(?P<path>[^\"]+)\""),
    error_pattern("gemini", "mode_too_strict", r"tool_not_registered|policy_violation|Tool execution denied by policy"),
)


# ~/.gemini/oauth_creds.json: the Google OAuth tokens gemini refreshes (google-auth-library's
# Credentials).
GEMINI_TOKENS = MappingProxyType(
    {
        "access_token": (str,),
        "refresh_token": (str,),
        "scope": (str,),
        "token_type": (str,),
        "id_token": (str,),
        "expiry_date": (int,),
    }
)


class GeminiAdapter(AgentAdapter):
    """``gemini -p "" --output-format stream-json --skip-trust …`` with the prompt on stdin (§3, §6)."""

    name: AgentName = "gemini"
    default_executable = "gemini"
    package = "@google/gemini-cli"
    credentials = (
        "GEMINI_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=true with GOOGLE_CLOUD_PROJECT and "
        "GOOGLE_CLOUD_LOCATION); with GOOGLE_GEMINI_BASE_URL also pin "
        '{"security":{"auth":{"selectedType":"gemini-api-key"}}} in ~/.gemini/settings.json'
    )
    trust_flag = "--skip-trust"
    # 0.61.0's --help: "--acp  Starts the agent in ACP mode"; --experimental-acp is deprecated.
    protocols = ("acp", "stream")
    acp_args = ("--acp",)
    # 0.61.0 saves a session it ran over ACP but its session/load answers -32603 "No previous
    # sessions found for this project."; ``--resume <id>`` of its stream finds it.
    acp_resumes = False
    grant_dir_flag = "--include-directories"
    bypass_flags = ("--yolo", "-y", "yolo")
    error_patterns = GEMINI_ERRORS
    advice = MappingProxyType(
        {
            "repo_trust": "gemini refused {target} as untrusted even with --skip-trust: set "
            "GEMINI_CLI_TRUST_WORKSPACE=true in [agents.gemini] env or trust the folder "
            "in an interactive gemini session",
            "account": "gemini refused this Google account: since 2026-06-18 Gemini Code Assist for "
            "individuals no longer serves personal accounts (403 'no valid license', #3501). Use a paid "
            "GEMINI_API_KEY (from Google AI Studio, billing on) or Vertex AI (GOOGLE_GENAI_USE_VERTEXAI=true "
            "with GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION) in [agents.gemini] env, or move its roles "
            "([session] roles / role_fallback, or [agents.gemini] enabled = false)",
            "turn_cap": "gemini hit model.maxSessionTurns: raise it in ~/.gemini/settings.json",
            "sandbox": "gemini's container sandbox failed: remove -s/--sandbox from "
            "[agents.gemini] extra_args or install its image",
            "mode_too_strict": "gemini's approval mode did not offer the tool (shell needs "
            "yolo): set [agents.gemini] allow_bypass inside an outer sandbox",
        }
    )
    colour = "\033[34m"
    # Names the 0.61 bundle reads (process.env), less those of its IDE companion (an auth
    # token) and of its own container sandbox.
    vendor_env = (
        "GEMINI_API_KEY",
        "GEMINI_API_KEY_AUTH_MECHANISM",
        "GEMINI_DEFAULT_AUTH_TYPE",
        "GEMINI_MODEL",
        "GEMINI_SYSTEM_MD",
        "GEMINI_CLI_HOME",
        "GEMINI_CLI_TRUST_WORKSPACE",
        "GEMINI_CLI_TRUSTED_FOLDERS_PATH",
        "GEMINI_CLI_SYSTEM_SETTINGS_PATH",
        "GEMINI_CLI_CUSTOM_HEADERS",
        "GEMINI_CLI_USE_COMPUTE_ADC",
        "GEMINI_CLI_NO_RELAUNCH",
        "GOOGLE_API_KEY",
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_VERTEX_BASE_URL",
        "GOOGLE_GENAI_*",  # USE_VERTEXAI, USE_GCA, API_VERSION
        "GOOGLE_CLOUD_*",  # PROJECT, LOCATION, QUOTA_PROJECT, ACCESS_TOKEN, ...
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GCLOUD_PROJECT",
        "CLOUDSDK_CONFIG",
        "CODE_ASSIST_*",
        "CLOUD_SHELL",
    )

    def version_env(self) -> Mapping[str, str]:
        # gemini relaunches itself as a child node process, --version too: without that, its
        # probe takes a third to a half of the time (1.7-2.5 s against 3.0-4.8 s at load 5-8; 0.61.0).
        return {"GEMINI_CLI_NO_RELAUNCH": "true"}

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        """gemini refuses -y/--yolo beside --approval-mode, which the adapter always sets (§3.2)."""
        kept, dropped = drop_args(extra_args, ("-y", "--yolo"))
        if not dropped:
            return None
        return ArgsFixed(
            kept,
            "bad_flag",
            "Cannot use both --yolo (-y) and --approval-mode together.",
            f"dropped {', '.join(dropped)}: the adapter always sets --approval-mode",
        )

    def folder_check(self, in_git_repo: bool) -> str:
        """gemini checks folder trust even headless (§3.1)."""
        return "trust is checked headless"

    state_places = (
        StatePlace(
            real=Path(".gemini"),
            name="gemini-dir",
            copied=("settings.json", "oauth_creds.json", "google_accounts.json", "installation_id", "GEMINI.md"),
            # settings.json names mcpServers and hooks; an extension brings its own servers.
            settings=("settings.json", "extensions/"),
            credentials=MappingProxyType({"oauth_creds.json": GEMINI_TOKENS}),
        ),
    )

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """``~/.gemini``, or ``$GEMINI_CLI_HOME/.gemini`` when that is set (reference §3.3)."""
        home = env.get("GEMINI_CLI_HOME")
        return super().cli_state({**env, "HOME": home} if home else env, folders)

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The exact command line; missing extra dirs are dropped (gemini dies on them).

        The prompt goes on stdin: headless gemini reads it there and joins it to ``-p``'s text,
        which is empty here (verified with 0.61: the prompt reaches the model exactly, on
        ``--resume`` too). gemini waits 500 ms for stdin's first bytes and keeps 8 MiB.
        """
        argv: list[str] = [
            *spec.executable,
            "-p",
            "",
            "--output-format",
            "stream-json",
            "--skip-trust",
            # default registers only read tools: right for reviews. plan mode
            # would refuse writes with policy_violation blockers instead.
            "--approval-mode",
            "default" if spec.mode == "read_only" else "auto_edit",
        ]
        for extra in spec.extra_dirs:
            # A non-existent --include-directories entry is fatal for gemini (exit 1,
            # "Directory does not exist"), unlike claude/codex which ignore it: drop it.
            if not extra.is_dir():
                logger.warning("gemini: dropping missing extra dir %s", extra)
                continue
            argv += ["--include-directories", str(extra)]
        if spec.model:
            argv += ["-m", spec.model]
        if spec.resume_session_id:
            argv += ["--resume", spec.resume_session_id]
        argv += spec.extra_args
        env = dict(spec.env)  # a copy: the caller's mapping is shared between runs
        # Same as --skip-trust; also covers a relaunched child that might not see the flag.
        env.setdefault("GEMINI_CLI_TRUST_WORKSPACE", "true")
        return Launch(argv=tuple(argv), env=env, cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def new_parser(self) -> GeminiParser:
        """A fresh parser for one run."""
        return GeminiParser()
