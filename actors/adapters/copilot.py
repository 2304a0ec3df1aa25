"""GitHub Copilot CLI (``copilot --output-format json``, BYOK): command line and stream.

Measured on ``@github/copilot`` 1.0.102 against the scripted model server. The prompt goes on
stdin: without ``-p`` a piped stdin is the prompt (on ``--resume`` too). Every line is one
event ``{"type", "data", "id", "timestamp", "parentId", "ephemeral"?}``; ``ephemeral`` lines
(skills loaded, deltas, model calls, idle) repeat what a lasting line says later, so only the
lasting ones are read: ``user.message``, ``assistant.message`` (whole text, ``toolRequests``),
``tool.execution_start``/``_complete`` (``success``, ``fileEdits``, ``error.code``),
``session.error`` (``errorType``, ``statusCode``) and the last line, ``result`` (top-level
``sessionId``, ``exitCode``, ``usage``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meta_orchestrator.actors.adapters.base import (
    AgentAdapter,
    CliState,
    Draft,
    Launch,
    LaunchSpec,
    StatePlace,
    draft,
)
from meta_orchestrator.actors.adapters.common import (
    GuardedParser,
    as_dict,
    as_int,
    as_list,
    as_str,
    classify,
    clip,
    require_dict,
)
from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.actors.adapters.protocol import strip_markers, text_drafts
from meta_orchestrator.messages.base import AgentName

# Copilot's tools named in the sandbox policy's words (policy.SHELL_TOOLS / WRITE_TOOLS), so
# the watch and the broker judge them like claude's; the path key stays copilot's ``path``.
POLICY_NAMES = MappingProxyType({"bash": "Bash", "create": "Write", "edit": "Edit"})
# session.error errorType -> (cause, retryable); the message is classified when the type is new.
_ERROR_TYPES: dict[str, tuple[str, bool]] = {
    "authentication": ("auth", False),
    "rate_limit": ("rate_limit", True),
}
# Lasting events that only mark the rhythm of a run.
_QUIET = MappingProxyType({"assistant.turn_start": "turn_start", "assistant.turn_end": "turn_end"})
# Secrets copilot strips from its shell's environment and redacts from output (--secret-env-vars).
SECRET_VARS = ("COPILOT_PROVIDER_API_KEY", "COPILOT_PROVIDER_BEARER_TOKEN", "COPILOT_GITHUB_TOKEN")
# Review runs: the rules that refuse every file tool (create, edit) and every shell command.
READ_ONLY_DENIALS = ("write", "shell")


class CopilotParser(GuardedParser):
    """Copilot's JSONL: lasting events only; ephemeral ones become a quiet status."""

    agent: AgentName = "copilot"

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[str, tuple[str, dict[str, Any]]] = {}  # toolCallId -> (name, arguments)
        self._turn_text = ""  # the last assistant text since the last tool result
        self._session_error: tuple[str, str | None, bool | None] | None = None  # (text, cause, retryable)

    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """Ephemeral lines say nothing a lasting line will not: one quiet status each."""
        if obj.get("ephemeral") is True:
            return [draft("status", kind="ephemeral", text=as_str(obj.get("type")))]
        return super().feed_object(obj)

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        data = require_dict(obj, "data")
        match type_:
            case "session.start":  # written to session-state/<id>/events.jsonl; 1.0.102 -p does not print it
                self.session_id = as_str(data.get("sessionId")) or self.session_id
                model = as_str(data.get("selectedModel"))
                return [draft("status", kind="init", session_id=self.session_id, model=model, text="session started")]
            case "user.message":
                return [draft("status", kind="prompt_echo", text=clip(as_str(data.get("content"))))]
            case "assistant.message":
                return self._on_message(data)
            case "tool.execution_start":
                name = as_str(data.get("toolName")) or "?"
                return [draft("status", kind="tool_started", tool=POLICY_NAMES.get(name, name))]
            case "tool.execution_complete":
                return self._on_tool_complete(data)
            case "session.error":
                return self._on_error(data)
            case "result":
                return self._on_result(obj)
        return [draft("status", kind=_QUIET.get(type_, "unknown"), text=type_)]

    def _on_message(self, data: dict[str, Any]) -> list[Draft]:
        """The whole text of one model turn (markers complete), then its tool calls."""
        text = as_str(data.get("content")) or ""
        drafts = text_drafts(text) if text else []
        if text:
            self._turn_text = text
        for request in as_list(data.get("toolRequests")):
            request = as_dict(request)
            name = as_str(request.get("name")) or "?"
            arguments = as_dict(request.get("arguments"))
            if call_id := as_str(request.get("toolCallId")):
                self._tools[call_id] = (name, arguments)
            summary = (
                as_str(request.get("intentionSummary"))
                or as_str(arguments.get("description"))
                or as_str(arguments.get("command"))
            )
            drafts.append(
                draft(
                    "progress",
                    kind="tool_call",
                    tool=POLICY_NAMES.get(name, name),
                    tool_input=arguments,
                    text=clip(summary or name),
                    file=as_str(arguments.get("path")),
                    details={"copilot_tool": name, "tool_call_id": call_id},
                )
            )
        return drafts or [draft("status", kind="empty_message", text="assistant.message")]

    def _on_tool_complete(self, data: dict[str, Any]) -> list[Draft]:
        """A finished tool call: its written files, or a denial (a blocker) or a failure."""
        self._turn_text = ""  # the final answer is the text after the last tool result
        call_id = as_str(data.get("toolCallId")) or ""
        name, arguments = self._tools.get(call_id, ("?", {}))
        tool = POLICY_NAMES.get(name, name)
        if data.get("success") is True:
            result = as_dict(data.get("result"))
            said = as_str(result.get("content")) or ""
            self.note_tool_result(True, said)
            drafts = [
                draft("progress", kind="tool_result", tool=tool, text=clip(said), details={"tool_call_id": call_id})
            ]
            for edit in as_list(data.get("fileEdits")):
                if path := as_str(as_dict(edit).get("path")):
                    self.files_written.append(path)
                    drafts.append(draft("milestone", kind="file_written", file=path, tool=tool, text=f"{name} {path}"))
            return drafts
        error = as_dict(data.get("error"))
        message = as_str(error.get("message")) or "tool failed"
        self.note_tool_result(False, message)
        if as_str(error.get("code")) == "denied":
            self.permission_denials.append(message)
            return [
                draft(
                    "blocker",
                    kind="denial",
                    tool=tool,
                    text=clip(message),
                    file=as_str(arguments.get("path")),
                    tool_input=arguments or None,
                    details={"code": "denied"},
                )
            ]
        return [
            draft(
                "progress",
                kind="tool_result",
                tool=tool,
                text=clip(message),
                details={"tool_call_id": call_id, "is_error": True, "code": as_str(error.get("code"))},
            )
        ]

    def _on_error(self, data: dict[str, Any]) -> list[Draft]:
        """The API failed after copilot's own retries; the result line (exit code 1) follows."""
        text = as_str(data.get("message")) or "copilot session error"
        error_type = as_str(data.get("errorType"))
        status = as_int(data.get("statusCode"))
        cause, retryable = _ERROR_TYPES.get(error_type or "", (None, None))
        if cause is None:
            cause, retryable = classify(text)
        if cause is None and status is not None:
            cause, retryable = ("server", True) if status >= 500 else ("api", False)
        self._session_error = (text, cause, retryable)
        return [
            draft(
                "error",
                kind="api_error",
                terminal=False,
                retryable=retryable,
                text=clip(text),
                details={"error_type": error_type, "status_code": status, "cause": cause},
            )
        ]

    def _on_result(self, obj: dict[str, Any]) -> list[Draft]:
        """The last line: session id, exit code and usage; success when the exit code is 0."""
        self.session_id = as_str(obj.get("sessionId")) or self.session_id
        usage = obj.get("usage")
        self.usage = usage if isinstance(usage, dict) else self.usage
        code = as_int(obj.get("exitCode"))
        if code == 0 and self._session_error is None:
            self.final_text = self._turn_text.strip()
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
        text, cause, retryable = self._session_error or (f"copilot run failed (exit code {code})", None, None)
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="result",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                usage=self.usage,
                exit_code=code,
                details={"cause": cause},
            )
        ]

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """Copilot exits 1 on every failure it reports (API errors after its retries included)."""
        if returncode == 1:
            return "copilot reported an error (API error after its retries, bad flag, failed start)", None
        return "unexpected exit code", None


# Its rows of the error table: the real messages of 1.0.102 (against the scripted server).
COPILOT_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("copilot", "not_installed", r"no platform package found", source="copilot 1.0.102 npm-loader"),
    # The bundled package could not be unpacked into ~/.cache/copilot/pkg (a read-only home).
    error_pattern("copilot", "sandbox", r"Failed to extract bundled package", source="copilot 1.0.102"),
    error_pattern("copilot", "bad_flag", r"error: unexpected argument|error: invalid value", source="copilot 1.0.102"),
    error_pattern("copilot", "auth", r"Authentication failed with provider at", source="copilot 1.0.102"),
    error_pattern("copilot", "auth", r"No authentication information found", source="copilot 1.0.102 cli-main.js"),
    # COPILOT_OFFLINE without COPILOT_PROVIDER_BASE_URL (printed on stdout, exit 1).
    error_pattern("copilot", "auth", r"Offline mode requires a local model provider", source="copilot 1.0.102"),
    error_pattern("copilot", "rate_limit", r"Last error: 429\b", source="copilot 1.0.102"),
    error_pattern("copilot", "server", r"Last error: 5\d\d\b", source="copilot 1.0.102"),
    error_pattern("copilot", "network", r"Last error: .*(?:fetch failed|ECONNREFUSED)", source="copilot 1.0.102"),
    error_pattern("copilot", "session_not_found", r"No session, task, or name matched", source="copilot 1.0.102"),
    error_pattern(
        "copilot",
        "outside_path",
        r"Permission denied because no interactive user response was available",
        source="copilot 1.0.102",
    ),
    error_pattern(
        "copilot",
        "mode_too_strict",
        r"Permission to run this tool was denied due to the following rules",
        source="copilot 1.0.102",
    ),
)


class CopilotAdapter(AgentAdapter):
    """``copilot --output-format json --allow-all-tools --no-auto-update …`` with the prompt on stdin."""

    name: AgentName = "copilot"
    default_executable = "copilot"
    package = "@github/copilot"
    credentials = (
        "a model provider of your own (BYOK: COPILOT_PROVIDER_TYPE=anthropic|openai|azure, "
        "COPILOT_PROVIDER_BASE_URL, COPILOT_PROVIDER_API_KEY, COPILOT_MODEL), or a GitHub login with "
        "Copilot access given as COPILOT_GITHUB_TOKEN (the OS sandbox hides the system keyring `copilot login` uses)"
    )
    grant_dir_flag = "--add-dir"
    # --allow-all-tools is always on (copilot refuses headless runs without it); these lift the
    # path and URL checks too.
    bypass_flags = ("--allow-all", "--yolo", "--allow-all-paths", "--allow-all-urls")
    error_patterns = COPILOT_ERRORS
    advice = MappingProxyType(
        {
            "auth": "copilot was refused by its model provider: check COPILOT_PROVIDER_API_KEY (or "
            "COPILOT_PROVIDER_BEARER_TOKEN) and COPILOT_PROVIDER_BASE_URL in [agents.copilot] env, or give "
            "COPILOT_GITHUB_TOKEN for a GitHub login",
            "rate_limit": "copilot's provider refused for rate limits after copilot's 5 retries: wait, or move "
            "its roles ([session] roles / role_fallback)",
            "server": "copilot's provider kept failing (5 retries over ~17 s): its roles move to the next agent",
            "sandbox": "copilot could not unpack its bundled package into its cache: run `copilot --help` once "
            "outside the sandbox, or check that ~/.cache/copilot is writable",
            "outside_path": "copilot refused a path outside {target}: headless, a path outside the working "
            "folder and its --add-dir folders is denied",
            "mode_too_strict": "copilot's --deny-tool rules refused the tool (a review run may not write or "
            "run commands)",
        }
    )
    colour = "\033[36m"
    # COPILOT_* holds its provider, model, home and token (COPILOT_GITHUB_TOKEN); GH_TOKEN and
    # GITHUB_TOKEN are general GitHub tokens, passed only when the user names them in pass_env.
    vendor_env = ("COPILOT_*", "XDG_CACHE_HOME")
    protocols = ("acp", "stream")
    acp_args = ("--acp",)

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """``$COPILOT_HOME`` (else ``~/.copilot``) and its package cache, where copilot unpacks itself.

        The cache is a private, empty folder: copilot unpacks its bundled package there on the
        agent's first run of a session (~5 s, ~235 MB); the user's cache is never writable inside.
        """
        home = Path(env.get("HOME") or Path.home())
        copilot_home = Path(env["COPILOT_HOME"]) if env.get("COPILOT_HOME") else home / ".copilot"
        cache = Path(env.get("XDG_CACHE_HOME") or home / ".cache") / "copilot"
        return CliState(
            places=(
                StatePlace(
                    real=copilot_home,
                    name="copilot-home",
                    copied=(
                        "config.json",
                        "settings.json",
                        "mcp-config.json",
                        "lsp-config.json",
                        "copilot-instructions.md",
                    ),
                    # MCP servers, language servers, hooks, custom agents and skills: what runs code.
                    settings=("settings.json", "mcp-config.json", "lsp-config.json", "hooks/", "agents/", "skills/"),
                ),
                StatePlace(real=cache, name="copilot-cache"),
            )
        )

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The exact command line; the prompt on stdin (copilot reads piped stdin when ``-p`` is absent)."""
        argv: list[str] = [
            *spec.executable,
            "--output-format",
            "json",
            "--allow-all-tools",  # required headless; the deny rules below still win
            "--no-auto-update",
            "--no-ask-user",
            f"--secret-env-vars={','.join(SECRET_VARS)}",
        ]
        if spec.mode == "read_only":
            argv += [f"--deny-tool={rule}" for rule in READ_ONLY_DENIALS]
        for extra in spec.extra_dirs:
            argv += ["--add-dir", str(extra)]
        if spec.model:
            argv += ["--model", spec.model]
        if spec.resume_session_id:
            argv += ["--resume", spec.resume_session_id]  # the id a word of its own, as history reads it
        argv += spec.extra_args
        env = dict(spec.env)  # a copy: the caller's mapping is shared between runs
        # Exactly "true" also trusts the working folder: its hooks, MCP servers and plugins, which
        # an agent can write into the checkout for the next run. --allow-all-tools is on anyway.
        env.pop("COPILOT_ALLOW_ALL", None)
        env.setdefault("COPILOT_AUTO_UPDATE", "false")
        if env.get("COPILOT_PROVIDER_BASE_URL"):
            # A provider of the user's own needs no GitHub: no login, telemetry or web tools.
            env.setdefault("COPILOT_OFFLINE", "true")
        return Launch(argv=tuple(argv), env=env, cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def acp_options(self, spec: LaunchSpec) -> tuple[tuple[str, ...], dict[str, str]]:
        """Over ACP it asks before its shell and file tools as it is (1.0.102): no
        ``--allow-all-tools``; the rest as for a stream run (no updater, secrets masked, offline
        with a provider of the user's own, no ``COPILOT_ALLOW_ALL``, which would skip the asking)."""
        args, _ = super().acp_options(spec)
        env = self.build_launch(spec).env
        return ("--no-auto-update", f"--secret-env-vars={','.join(SECRET_VARS)}", *args), env

    def new_parser(self) -> CopilotParser:
        """A fresh parser for one run."""
        return CopilotParser()
