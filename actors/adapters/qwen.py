"""qwen-code (``qwen -o stream-json``): command line and stream.

A Gemini CLI fork (its flags, tools and ``~/.qwen`` folder) whose stream-json is shaped like
Claude's (``system/init``, ``assistant``, ``user`` tool results, ``result``): the parser is
Claude's with qwen's tool names, its denial text, its API errors and its ``stream_event``
and ``system/retry`` lines. Verified against @qwen-code/qwen-code 0.24.4.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
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
from meta_orchestrator.actors.adapters.claude import ClaudeParser, project_folder_name
from meta_orchestrator.actors.adapters.common import as_dict, as_int, as_list, as_str, classify, clip
from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.messages.base import AgentName

# A tool the approval mode refused (plan, default: no edit or shell without a person):
# 'Qwen Code requires permission to use "write_file", but that permission was declined.
# Matching deny rule: "edit".'
_DENIED = re.compile(r'requires permission to use "(?P<tool>[^"]+)", but that permission was declined')
# An API error as qwen prints it, in an assistant text block and the result's error.message:
# '[API Error: 401 {"type":"error","error":{"type":"authentication_error",...}}]'; a 429 after
# its retries carries no status: '[API Error: mock rate limited]'.
_API_ERROR = re.compile(r"^\[API Error: (?:(?P<status>\d{3})\b)?")


_UNTRUSTED = "because the current folder is not trusted"  # 'Approval mode overridden to "default" because ...'


def _api_cause(text: str, status: int | None) -> tuple[str | None, bool | None]:
    """(cause, retryable) of a failed run: the HTTP status first, then the words."""
    if status in (401, 403):
        return "auth", False
    if status == 429:
        return "rate_limit", True
    if status is not None and status >= 500:
        return "server", True
    return classify(text)


class QwenParser(ClaudeParser):
    """qwen's stream-json: Claude's lines with qwen's tools, plus ``stream_event`` and retries."""

    agent: AgentName = "qwen"
    write_tools = frozenset({"write_file", "edit", "notebook_edit"})
    task_tools = frozenset({"todo_write", "task_create", "task_update"})
    findings_tool = None
    denials = (_DENIED,)
    fast_shape = None  # its text blocks may be API errors (``_on_assistant``): every line is read as a dict

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """``stream_event`` (goal state, deltas) is status; the rest is Claude's shape."""
        if type_ == "stream_event":
            if self.session_id is None:
                self.session_id = as_str(obj.get("session_id"))
            event = as_dict(obj.get("event"))
            return [draft("status", kind="stream_event", text=as_str(event.get("type")) or "stream_event")]
        return super()._dispatch(type_, obj)

    def _on_system(self, obj: dict[str, Any]) -> list[Draft]:
        """``system/retry``: qwen waits (a 429: 60 s and more, up to 10 times) before trying again."""
        if as_str(obj.get("subtype")) != "retry":
            return super()._on_system(obj)
        data = as_dict(obj.get("data"))
        attempt, most, delay = as_int(data.get("attempt")), as_int(data.get("maxRetries")), as_int(data.get("delayMs"))
        wait = f" in {delay / 1000:g} s" if delay is not None else ""
        return [
            draft(
                "status",
                kind="retry",
                retryable=True,
                details=data or None,
                text=f"retrying the API request{wait} ({attempt}/{most})",
            )
        ]

    def _on_assistant(self, obj: dict[str, Any]) -> list[Draft]:
        """An API error arrives as a plain text block ``[API Error: ...]``; a result follows."""
        blocks = [as_dict(b) for b in as_list(as_dict(obj.get("message")).get("content"))]
        text = as_str(blocks[0].get("text")) if len(blocks) == 1 else None
        if text and (match := _API_ERROR.match(text)):
            status = int(match["status"]) if match["status"] else None
            cause, retryable = _api_cause(text, status)
            return [
                draft(
                    "error",
                    kind="api_error",
                    terminal=False,
                    retryable=retryable,
                    text=clip(text),
                    details={"api_error_status": status, "cause": cause},
                )
            ]
        return super()._on_assistant(obj)

    def _on_result(self, obj: dict[str, Any]) -> list[Draft]:
        """Success is Claude's; a failure says why in ``error.message`` (no ``result``)."""
        if obj.get("is_error") is not True:
            drafts = super()._on_result(obj)
            total = as_int(as_dict(obj.get("usage")).get("total_tokens"))
            self.total_tokens = total if total is not None else self.total_tokens
            return drafts
        usage = obj.get("usage")
        self.usage = usage if isinstance(usage, dict) else self.usage
        subtype = as_str(obj.get("subtype")) or ""
        text = (
            as_str(as_dict(obj.get("error")).get("message"))
            or as_str(obj.get("result"))
            or f"qwen run failed ({subtype})"
        )
        match = _API_ERROR.match(text)
        status = int(match["status"]) if match and match["status"] else None
        cause, retryable = _api_cause(f"{subtype} {text}", status)
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="result",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                usage=self.usage,
                details={"subtype": subtype, "api_error_status": status, "cause": cause},
            ),
            *self._result_denials(obj),
        ]

    def feed_stderr(self, line: str) -> list[Draft]:
        """With ``security.folderTrust.enabled``, an untrusted folder silently drops the run to
        the ``default`` mode (no edits, no shell): only stderr says so."""
        if _UNTRUSTED in line:
            return [draft("blocker", kind="trust", text=clip(line.strip()), details={"cause": "repo_trust"})]
        return []

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """Exit 1 for an API error after its retries, a bad flag or an unknown session; 55 when
        ``--max-wall-time`` or ``--max-tool-calls`` ran out (its help)."""
        if returncode == 1:
            return "error result, usage error or unknown session (see stderr)", None
        if returncode == 55:
            return "--max-wall-time or --max-tool-calls exceeded", False
        return "unexpected exit code", None


_RUN = "qwen-code 0.24.4 run"  # read off the real program against the scripted model server
_BUNDLE = "qwen-code 0.24.4 bundle"  # its source text, not triggered in a run

# Its rows of the error table.
QWEN_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("qwen", "bad_flag", r"Cannot use both --yolo \(-y\) and --approval-mode", source=_RUN),
    error_pattern("qwen", "bad_flag", r"Unknown arguments?: (?P<arg>\S+)", source=_BUNDLE),
    error_pattern("qwen", "bad_flag", r"Invalid values:", source=_BUNDLE),
    error_pattern(
        "qwen",
        "repo_trust",
        r'Approval mode overridden to "default" because the current folder is not trusted',
        source=_RUN,
    ),
    error_pattern("qwen", "session_not_found", r"No saved session found with title", source=_RUN),
    error_pattern("qwen", "auth", r"\[API Error: 40[13]\b", source=_RUN),
    error_pattern("qwen", "auth", r"authentication_error|permission_error", source=_RUN),
    error_pattern("qwen", "rate_limit", r"\[API Error: 429\b|rate_limit_error", source=_RUN),
    error_pattern("qwen", "server", r"\[API Error: 5\d\d\b|\bapi_error\b|overloaded_error", source=_RUN),
    error_pattern("qwen", "turn_cap", r"max(?:imum)? session turns", source=_BUNDLE),
    error_pattern(
        "qwen", "mode_too_strict", r'requires permission to use "[^"]+", but that permission was declined', source=_RUN
    ),
)


# ~/.qwen/oauth_creds.json: the Qwen OAuth tokens qwen refreshes (0.24.4 sharedTokenManager).
QWEN_TOKENS = MappingProxyType(
    {
        "access_token": (str,),
        "refresh_token": (str,),
        "token_type": (str,),
        "resource_url": (str,),
        "expiry_date": (int, float),
    }
)


class QwenAdapter(AgentAdapter):
    """``qwen -o stream-json --approval-mode auto-edit|plan …`` with the prompt on stdin."""

    name: AgentName = "qwen"
    default_executable = "qwen"
    package = "@qwen-code/qwen-code"
    credentials = (
        "an API key for its auth type: ANTHROPIC_API_KEY (--auth-type anthropic, ANTHROPIC_BASE_URL), "
        "OPENAI_API_KEY with OPENAI_BASE_URL and OPENAI_MODEL (openai, e.g. DashScope or OpenRouter), "
        "GEMINI_API_KEY (gemini); or security.auth.selectedType and modelProviders in ~/.qwen/settings.json"
    )
    grant_dir_flag = "--include-directories"
    bypass_flags = ("--yolo", "-y", "yolo")
    error_patterns = QWEN_ERRORS
    advice = MappingProxyType(
        {
            "mode_too_strict": "qwen's approval mode refused a tool: allow it with "
            '[agents.qwen] extra_args = ["--allowed-tools", "run_shell_command(npm test)"]',
            "rate_limit": "qwen retried its 429s (60 s and more apart, up to 10 times): wait, or set "
            "model.generationConfig.maxRetries in ~/.qwen/settings.json",
            "repo_trust": "qwen does not trust {target} (security.folderTrust.enabled in ~/.qwen/settings.json) "
            "and ran without edits: trust the folder in an interactive qwen, or point "
            "QWEN_CODE_TRUSTED_FOLDERS_PATH ([agents.qwen] env) at a trustedFolders.json that lists it",
            "auth": "qwen's API key was refused: check the key of its auth type (ANTHROPIC_API_KEY, "
            "OPENAI_API_KEY, ...) in [agents.qwen] env or your environment",
        }
    )
    colour = "\033[35m"
    # Names the 0.24.4 bundle reads for its auth types (AUTH_ENV_MAPPINGS), model choice, home
    # and behaviour; a settings modelProviders entry may name its own envKey: pass_env it.
    vendor_env = (
        "QWEN_*",  # QWEN_HOME, QWEN_MODEL, QWEN_OAUTH, QWEN_CODE_*, QWEN_SYSTEM_MD, ...
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_MODEL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "OPENAI_MODEL",
        "DASHSCOPE_API_KEY",
        "DASHSCOPE_PROXY_BASE_URL",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
        "GEMINI_MODEL",
        "GOOGLE_API_KEY",
        "GOOGLE_MODEL",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "WEB_SEARCH_*",
    )
    protocols = ("acp", "stream")
    acp_args = ("--acp",)  # 0.24.4 answers ACP's initialize on stdio (protocolVersion 1)

    state_places = (
        StatePlace(
            real=Path(".qwen"),
            name="qwen-dir",
            copied=("settings.json", ".env", "oauth_creds.json", "installation_id", "QWEN.md", "output-language.md"),
            # settings.json names mcpServers and hooks; .env sets its variables; an extension
            # brings its own servers; trustedFolders.json and mcp approvals decide what runs.
            settings=("settings.json", ".env", "extensions/", "trustedFolders.json"),
            credentials=MappingProxyType({"oauth_creds.json": QWEN_TOKENS}),
        ),
    )

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """``~/.qwen`` (or ``$QWEN_HOME``, the folder itself) with this run's entries of
        ``projects/`` (its sessions and memory: resume finds a session there by the cwd)."""
        (place,) = super().cli_state(env, folders).places
        if env.get("QWEN_HOME"):
            place = replace(place, real=Path(env["QWEN_HOME"]))
        # 0.24.4's sanitizeCwd: every character but [a-zA-Z0-9] becomes "-" (claude's rule, uncut).
        projects = tuple(f"projects/{project_folder_name(str(f))}" for f in folders)
        return CliState(places=(replace(place, copied=(*place.copied, *projects)),))

    def folder_check(self, in_git_repo: bool) -> str:
        """0.24.4 checks folder trust only with ``security.folderTrust.enabled`` (then an untrusted
        folder runs in ``default`` mode, said on stderr); there is no flag to skip it."""
        return "trust is checked only when security.folderTrust.enabled is set"

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        """qwen refuses -y/--yolo beside --approval-mode, which the adapter always sets."""
        kept, dropped = drop_args(extra_args, ("-y", "--yolo"))
        if not dropped:
            return None
        return ArgsFixed(
            kept,
            "bad_flag",
            "Cannot use both --yolo (-y) and --approval-mode together. Use --approval-mode=yolo instead.",
            f"dropped {', '.join(dropped)}: the adapter always sets --approval-mode "
            '(use extra_args = ["--approval-mode", "yolo"] with allow_bypass)',
        )

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The prompt goes on stdin: with no prompt argument headless qwen reads it there (0.24.4,
        ``--resume`` too). ``plan`` refuses every edit and shell command with a denial (a review
        cannot write); ``auto-edit`` approves edits, not shell commands."""
        argv: list[str] = [
            *spec.executable,
            "-o",
            "stream-json",
            "--approval-mode",
            "plan" if spec.mode == "read_only" else "auto-edit",
        ]
        for extra in spec.extra_dirs:  # a missing folder is accepted silently (0.24.4)
            argv += ["--include-directories", str(extra)]
        if spec.model:
            argv += ["-m", spec.model]
        if spec.resume_session_id:
            argv += ["--resume", spec.resume_session_id]
        argv += spec.extra_args
        return Launch(argv=tuple(argv), env=dict(spec.env), cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def acp_options(self, spec: LaunchSpec) -> tuple[tuple[str, ...], dict[str, str]]:
        """Over ACP ``default`` asks before every edit and shell command (its own default, ``auto``,
        lets a model classifier approve calls unasked, 0.24.4); a review is ``plan``."""
        args, env = super().acp_options(spec)
        return ("--approval-mode", "plan" if spec.mode == "read_only" else "default", *args), env

    def new_parser(self) -> QwenParser:
        """A fresh parser for one run."""
        return QwenParser()
