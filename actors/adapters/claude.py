"""Claude Code (``claude -p --output-format stream-json --verbose``): command line and stream."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import msgspec

from meta_orchestrator.actors.adapters.base import (
    OFF_VALUES,
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
    as_dict,
    as_float,
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

# Tool_result texts that mean "the permission mode or workspace refused this" (§1.5 A, A',
# B, C, E). (D) "No such tool available" is a removed tool, not a denial: plain progress.
_DENIALS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"requested permissions to (?:write to|read from) (?P<path>.+?), "
        r"but you haven't granted it yet"
    ),
    re.compile(r"\S+ in '(?P<path>[^']*)' was blocked\. For security, Claude Code may only"),
    re.compile(
        r"Permission to use \S+ has been denied because Claude Code is running "
        r"in don't ask mode"
    ),
    re.compile(r"Cannot write to (?P<path>.+?) while in plan mode"),
)
_WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
_TASK_TOOLS = frozenset({"TaskCreate", "TaskUpdate", "TodoWrite"})
_API_ERROR_RETRYABLE = {
    "authentication_failed": False,
    "rate_limit": True,
    "server_error": True,
    "invalid_request": False,
}


def _denial(text: str, patterns: tuple[re.Pattern[str], ...] = _DENIALS) -> re.Match[str] | None:
    """The §1.5 pattern (or a fork's) a tool_result error text matches, if any."""
    for pattern in patterns:
        if (match := pattern.search(text)) is not None:
            return match
    return None


def _block_text(content: Any) -> str:
    """A tool_result's ``content``: a string, or a list of ``{"type": "text"}`` blocks."""
    if isinstance(content, str):
        return content
    parts = [as_str(as_dict(block).get("text")) for block in as_list(content)]
    return "\n".join(part for part in parts if part)


class _TextBlock(msgspec.Struct, gc=False):
    type: Literal["text"]
    text: str


class _OneTextMessage(msgspec.Struct, gc=False):
    content: tuple[_TextBlock]  # exactly one block


class _AssistantText(msgspec.Struct, gc=False):
    """An assistant line of one text block: most lines a model's answer streams as."""

    type: Literal["assistant"]
    message: _OneTextMessage
    session_id: str | None = None
    error: Any = msgspec.UNSET  # a synthetic API error: read as a dict


class ClaudeParser(GuardedParser):
    """Claude's stream-json: system / assistant / user / result lines."""

    fast_shape: ClassVar[msgspec.json.Decoder[Any] | None] = msgspec.json.Decoder(_AssistantText)

    agent: AgentName = "claude"
    # Its tool names; a fork with Claude-shaped events (qwen) names its own.
    write_tools: frozenset[str] = _WRITE_TOOLS
    task_tools: frozenset[str] = _TASK_TOOLS
    findings_tool: str | None = "ReportFindings"
    denials: tuple[re.Pattern[str], ...] = _DENIALS

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[str, tuple[str, dict[str, Any]]] = {}  # tool_use id -> (name, input)
        self._denied: dict[str, str] = {}  # tool_use id (or text) -> denial description

    def feed_fast(self, line: _AssistantText) -> list[Draft] | None:
        """What ``_dispatch`` makes of an assistant line of one text block."""
        if line.error is not msgspec.UNSET:
            return None
        if self.session_id is None and line.session_id:
            self.session_id = line.session_id
        return text_drafts(line.message.content[0].text)

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """Route one line by its top-level type."""
        if self.session_id is None and (sid := as_str(obj.get("session_id"))):
            self.session_id = sid  # every line carries it; a bare resume failure has no init
        match type_:
            case "system":
                return self._on_system(obj)
            case "assistant":
                return self._on_assistant(obj)
            case "user":
                return self._on_user(obj)
            case "result":
                return self._on_result(obj)
        return [draft("status", kind="unknown", text=type_)]

    def _on_system(self, obj: dict[str, Any]) -> list[Draft]:
        """init (session and model), api_retry, status; other subtypes are only logged."""
        subtype = as_str(obj.get("subtype")) or ""
        if subtype == "init":
            self.session_id = as_str(obj.get("session_id")) or self.session_id
            details = {
                key: obj[key]
                for key in ("cwd", "permissionMode", "apiKeySource", "claude_code_version")
                if as_str(obj.get(key))
            }
            return [
                draft(
                    "status",
                    kind="init",
                    session_id=self.session_id,
                    model=as_str(obj.get("model")),
                    text="session started",
                    details=details or None,
                )
            ]
        if subtype == "api_retry":
            attempt, most = as_int(obj.get("attempt")), as_int(obj.get("max_retries"))
            reason = as_str(obj.get("error")) or "unknown"
            details = {
                key: obj.get(key) for key in ("attempt", "max_retries", "retry_delay_ms", "error_status", "error")
            }
            return [
                draft(
                    "status",
                    kind="retry",
                    retryable=True,
                    details=details,
                    text=f"retrying the API request ({attempt}/{most}): {reason}",
                )
            ]
        if subtype == "status":
            return [draft("status", kind="status", text=as_str(obj.get("status")))]
        return [draft("status", kind="unknown", text=f"system/{subtype}")]

    def _on_assistant(self, obj: dict[str, Any]) -> list[Draft]:
        """One content block per line: text, thinking or tool_use; or a synthetic API error."""
        message = require_dict(obj, "message")
        if "error" in obj:  # synthetic message: the API call failed, a result follows
            return [self._api_error(obj, message)]
        content = message.get("content")
        if type(content) is list and len(content) == 1:  # most lines: one text block
            block = content[0]
            if type(block) is dict and block.get("type") == "text" and type(text := block.get("text")) is str:
                return text_drafts(text)
        drafts: list[Draft] = []
        for block in as_list(message.get("content")):
            block = as_dict(block)
            match as_str(block.get("type")):
                case "text":
                    text = as_str(block.get("text")) or ""
                    drafts.extend(text_drafts(text))  # whole block: markers complete
                case "thinking":
                    drafts.append(draft("progress", kind="reasoning", text=clip(as_str(block.get("thinking")))))
                case "tool_use":
                    drafts.extend(self._on_tool_use(block))
                case other:
                    drafts.append(draft("status", kind="unknown", text=f"assistant/{other}"))
        return drafts

    def _api_error(self, obj: dict[str, Any], message: dict[str, Any]) -> Draft:
        """The synthetic assistant line of §1.6: its ``error`` code and the message text."""
        code = as_str(obj.get("error")) or repr(obj.get("error"))
        text = _block_text(message.get("content")) or code
        cause, retryable = classify(f"{code} {text}")
        return draft(
            "error",
            kind="api_error",
            terminal=False,
            retryable=_API_ERROR_RETRYABLE.get(code, retryable),
            text=clip(text),
            details={"error": code, "cause": cause},
        )

    def _on_tool_use(self, block: dict[str, Any]) -> list[Draft]:
        """A tool call; task tools become ``task``, ReportFindings becomes ``finding``s."""
        name = as_str(block.get("name")) or "?"
        tool_input = as_dict(block.get("input"))
        if tool_id := as_str(block.get("id")):
            self._tools[tool_id] = (name, tool_input)
        if name in self.task_tools:
            text = (
                as_str(tool_input.get("subject"))
                or as_str(tool_input.get("status"))
                or f"{len(as_list(tool_input.get('todos')))} todos"
            )
            return [draft("task", kind="todo", tool=name, tool_input=tool_input, text=clip(text))]
        if name == self.findings_tool:
            findings = [as_dict(item) for item in as_list(tool_input.get("findings"))]
            drafts = [
                draft(
                    "finding",
                    kind="tool_call",
                    tool=name,
                    text=clip(as_str(item.get("summary")) or ""),
                    file=as_str(item.get("file")),
                    line=as_int(item.get("line")),
                    details={"failure_scenario": item.get("failure_scenario")},
                )
                for item in findings
            ]
            return drafts or [draft("progress", kind="tool_call", tool=name, tool_input=tool_input)]
        summary = as_str(tool_input.get("description")) or as_str(tool_input.get("command"))
        return [
            draft(
                "progress",
                kind="tool_call",
                tool=name,
                tool_input=tool_input,
                text=clip(summary or name),
                file=as_str(tool_input.get("file_path")),
            )
        ]

    def _on_user(self, obj: dict[str, Any]) -> list[Draft]:
        """Tool results: progress, a milestone for a written file, a blocker for a denial."""
        content = require_dict(obj, "message").get("content")
        if isinstance(content, str):  # a plain user turn (e.g. a slash command's expansion)
            return [draft("status", kind="prompt_echo", text=clip(content))]
        drafts: list[Draft] = []
        for block in as_list(content):
            block = as_dict(block)
            if block.get("type") == "tool_result":
                drafts.extend(self._on_tool_result(block))
            else:
                drafts.append(draft("status", kind="unknown", text=f"user/{as_str(block.get('type'))}"))
        return drafts

    def _on_tool_result(self, block: dict[str, Any]) -> list[Draft]:
        """One tool_result block (the marker scan never looks here: it may echo files)."""
        tool_id = as_str(block.get("tool_use_id")) or ""
        name, tool_input = self._tools.get(tool_id, (None, {}))
        text = _block_text(block.get("content"))
        self.note_tool_result(block.get("is_error") is not True, text)
        if block.get("is_error") is True:
            if (match := _denial(text, self.denials)) is not None:
                path = match.groupdict().get("path")
                self._denied[tool_id or text] = text
                self.permission_denials = list(self._denied.values())
                return [
                    draft(
                        "blocker",
                        kind="denial",
                        text=clip(text),
                        tool=name,
                        file=path or as_str(tool_input.get("file_path")),
                        tool_input=tool_input or None,
                    )
                ]
            return [
                draft(
                    "progress",
                    kind="tool_result",
                    tool=name,
                    text=clip(text),
                    details={"is_error": True, "tool_use_id": tool_id},
                )
            ]
        drafts = [draft("progress", kind="tool_result", tool=name, text=clip(text), details={"tool_use_id": tool_id})]
        path = as_str(tool_input.get("file_path")) or as_str(tool_input.get("notebook_path"))
        if name in self.write_tools and path:
            self.files_written.append(path)
            drafts.append(draft("milestone", kind="file_written", file=path, tool=name, text=f"{name} {path}"))
        return drafts

    def _on_result(self, obj: dict[str, Any]) -> list[Draft]:
        """The end of the run: totals, the final answer, denials, or the terminal error."""
        usage = obj.get("usage")
        self.usage = usage if isinstance(usage, dict) else self.usage
        self.cost_usd = as_float(obj.get("total_cost_usd"))
        if isinstance(usage, dict):
            self.total_tokens = sum(
                as_int(usage.get(key)) or 0
                for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
            )
        drafts = self._result_denials(obj)
        subtype = as_str(obj.get("subtype")) or ""
        is_error = obj.get("is_error")
        # API errors are subtype "success" + is_error true: is_error decides; the subtype only
        # when is_error is missing altogether.
        failed = is_error is True or (is_error is None and subtype != "success")
        if not failed:
            self.final_text = as_str(obj.get("result")) or ""
            self._mark_terminal(ok=True)
            turns = as_int(obj.get("num_turns"))
            drafts[:0] = [
                draft(
                    "milestone",
                    kind="result",
                    session_id=self.session_id,
                    text=f"run completed in {turns} turns" if turns else "run completed",
                ),
                draft(
                    "review",
                    kind="result",
                    text=strip_markers(self.final_text),
                    files=tuple(dict.fromkeys(self.files_written)),
                    usage=self.usage,
                    cost_usd=self.cost_usd,
                    session_id=self.session_id,
                ),
            ]
            return drafts
        errors = [e for e in as_list(obj.get("errors")) if isinstance(e, str)]
        text = as_str(obj.get("result")) or "; ".join(errors) or f"claude run failed ({subtype})"
        status = as_int(obj.get("api_error_status"))
        reason = as_str(obj.get("terminal_reason"))
        cause, retryable = classify(f"{subtype} {reason or ''} {text}")
        if status is not None and cause is None:
            cause, retryable = (
                ("rate_limit", True) if status == 429 else (("server", True) if status >= 500 else ("api", False))
            )
        self._mark_terminal(ok=False, error=text)
        drafts.insert(
            0,
            draft(
                "error",
                kind="result",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                usage=self.usage,
                cost_usd=self.cost_usd,
                details={"subtype": subtype, "api_error_status": status, "terminal_reason": reason, "cause": cause},
            ),
        )
        return drafts

    def _result_denials(self, obj: dict[str, Any]) -> list[Draft]:
        """One blocker summing up ``permission_denials[]`` (the authoritative list)."""
        entries = [as_dict(entry) for entry in as_list(obj.get("permission_denials"))]
        if not entries:
            return []
        described = []
        for entry in entries:
            tool_input = as_dict(entry.get("tool_input"))
            target = (
                as_str(tool_input.get("file_path"))
                or as_str(tool_input.get("command"))
                or as_str(tool_input.get("path"))
                or ""
            )
            line = f"{as_str(entry.get('tool_name')) or '?'} {target}".strip()
            described.append(line)
            key = as_str(entry.get("tool_use_id")) or line
            self._denied.setdefault(key, line)  # keeps the tool_result's own text if seen
        self.permission_denials = list(self._denied.values())
        return [
            draft(
                "blocker",
                kind="denial",
                text=f"{len(entries)} permission denial(s): {'; '.join(described)}",
                details={"permission_denials": entries},
            )
        ]

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """Claude exits 1 for any error result, usage error or refusal (§1.6)."""
        if returncode == 1:
            return "error result, usage error or refusal (see stderr)", None
        return "unexpected exit code", None


# Its rows of the error table (reference §1.2, §1.5, §1.6, §4).
CLAUDE_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("claude", "root_bypass", r"--dangerously-skip-permissions cannot be used with root/sudo"),
    error_pattern("claude", "bad_flag", r"error: unknown option '(?P<arg>[^']+)'"),
    error_pattern("claude", "bad_flag", r"error: option '(?P<arg>[^']+)' argument '[^']*' is invalid"),
    error_pattern("claude", "auth", r"authentication_failed"),
    error_pattern("claude", "auth", r"Not logged in"),
    error_pattern("claude", "auth", r"Failed to authenticate"),
    # Its words for a 401 whose message names x-api-key (the real API's); measured on 2.1.197.
    error_pattern("claude", "auth", r"Invalid API key · Fix external API key"),
    error_pattern("claude", "rate_limit", r"Request rejected \(429\)"),
    error_pattern("claude", "rate_limit", r"\brate_limit\b"),
    error_pattern("claude", "context", r"prompt_too_long|Prompt is too long"),
    error_pattern("claude", "turn_cap", r"error_max_turns|Reached maximum number of turns"),
    error_pattern("claude", "session_not_found", r"No conversation found with session ID"),
    error_pattern("claude", "session_not_found", r"--resume requires a valid session ID"),
    error_pattern(
        "claude",
        "invalid_model",
        r"not_found_error.*model|model.*(?:not found|does not exist)",
        source="Anthropic API error type (not captured in the reference)",
    ),
    error_pattern("claude", "network", r"Unable to connect to API"),
    error_pattern("claude", "server", r"API Error: 5\d\d|server-side issue|\bserver_error\b|overloaded"),
    error_pattern(
        "claude",
        "outside_path",
        r"requested permissions to (?:write to|read from) (?P<path>.+?), but you haven't granted it yet",
    ),
    error_pattern("claude", "mode_too_strict", r"was blocked\. For security, Claude Code may only"),
    error_pattern("claude", "mode_too_strict", r"running in don't ask mode"),
    error_pattern("claude", "mode_too_strict", r"Cannot write to .+ while in plan mode"),
)


# The cloud credentials claude reads only when told to use that provider (reference §1.3):
# an AWS key in the user's shell reaches claude only when claude is set to use Bedrock.
_PROVIDER_ENV: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CLAUDE_CODE_USE_BEDROCK", ("AWS_*",)),
    (
        "CLAUDE_CODE_USE_VERTEX",
        (
            "CLOUD_ML_REGION",
            "VERTEX_REGION_*",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_PROJECT",
            "GCLOUD_PROJECT",
        ),
    ),
    ("CLAUDE_CODE_USE_FOUNDRY", ("AZURE_*",)),
)


# ~/.claude/.credentials.json: the OAuth tokens claude refreshes (2.1.197 writes these keys).
CLAUDE_TOKENS = MappingProxyType(
    {
        "claudeAiOauth": MappingProxyType(
            {
                "accessToken": (str,),
                "refreshToken": (str,),
                "expiresAt": (int,),
                "scopes": (list,),
                "subscriptionType": (str, type(None)),
                "rateLimitTier": (str, type(None)),
                "clientId": (str, type(None)),
            }
        )
    }
)
_PROJECT_NAME_MAX = 200  # claude 2.1.197: longer names are cut and get a hash


def project_folder_name(cwd: str) -> str:
    """The name of ``cwd``'s folder in ``~/.claude/projects`` (claude 2.1.197's rule)."""
    name = re.sub(r"[^a-zA-Z0-9]", "-", cwd)
    if len(name) <= _PROJECT_NAME_MAX:
        return name
    digest = 0
    for char in cwd:  # Java's String.hashCode, as a signed 32-bit int
        digest = (digest * 31 + ord(char)) & 0xFFFFFFFF
    digest = digest - (1 << 32) if digest >= 1 << 31 else digest
    return f"{name[:_PROJECT_NAME_MAX]}-{_base36(abs(digest))}"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def _policy_hook_switches(settings: dict[str, Any], off_env: tuple[str, ...]) -> list[str]:
    strict = settings.get("strictPluginOnlyCustomization")
    given_env = settings.get("env")
    env: dict[str, Any] = given_env if isinstance(given_env, dict) else {}
    switches = [key for key in ("disableAllHooks", "allowManagedHooksOnly") if settings.get(key) is True]
    if strict is True or (isinstance(strict, list) and "hooks" in strict):
        switches.append("strictPluginOnlyCustomization")
    return switches + [f"env.{name}" for name in off_env if str(env.get(name) or "").strip().lower() not in OFF_VALUES]


class ClaudeAdapter(AgentAdapter):
    """``claude -p --output-format stream-json --verbose …`` with the prompt on stdin (§1, §6)."""

    name: AgentName = "claude"
    default_executable = "claude"
    package = "@anthropic-ai/claude-code"
    credentials = "ANTHROPIC_API_KEY (or CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`)"
    grant_dir_flag = "--add-dir"
    bypass_flags = ("--dangerously-skip-permissions", "bypassPermissions")
    hook_settings_flag = "--settings"  # a settings file whose PreToolUse hook asks the sandbox
    # Only that file and managed settings: the user's, the project's and the local settings
    # (all writable by an agent) could set disableAllHooks, or env CLAUDE_CODE_SAFE_MODE or
    # CLAUDE_CODE_SHELL_PREFIX, each of which switches the hook off or takes it over (2.1.197).
    hook_settings_args = ("--setting-sources", "")
    hook_off_flags = ("--bare", "--safe-mode", "--settings", "--setting-sources")
    hook_off_env = ("CLAUDE_CODE_SAFE_MODE", "CLAUDE_CODE_SIMPLE", "CLAUDE_CODE_SHELL_PREFIX")
    # Managed settings on Linux (2.1.197): managed-settings.json, then managed-settings.d/*.json.
    managed_settings_dir = Path("/etc/claude-code")

    def hook_off_by_policy(self) -> list[str]:
        """Managed settings that keep the session's hook from running: ``disableAllHooks``,
        ``allowManagedHooksOnly``, ``strictPluginOnlyCustomization`` covering hooks, or an
        off-switch in their ``env`` (applied after every other source)."""
        folder = self.managed_settings_dir
        found = []
        for path in [folder / "managed-settings.json", *sorted((folder / "managed-settings.d").glob("*.json"))]:
            try:
                settings = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # absent, or claude ignores it too
            if isinstance(settings, dict):
                found += [f"{path}: {key}" for key in _policy_hook_switches(settings, self.hook_off_env)]
        return found

    error_patterns = CLAUDE_ERRORS
    advice = MappingProxyType(
        {
            "root_bypass": "claude refuses bypassPermissions as root: drop it from [agents.claude] "
            "extra_args, or (only inside a real sandbox) set IS_SANDBOX=1 in [agents.claude] env",
            "turn_cap": "claude hit its turn cap: raise --max-turns in [agents.claude] extra_args",
            "mode_too_strict": "claude's permission mode refused a tool: allow it with "
            '[agents.claude] extra_args = ["--allowedTools", "Bash(...)"]',
        }
    )
    colour = "\033[33m"
    vendor_env = (
        "ANTHROPIC_*",  # keys, token, base URL, models, custom headers, Bedrock/Vertex/Foundry endpoints
        "CLAUDE_CODE_*",
        "CLAUDE_CONFIG_DIR",
        "IS_SANDBOX",
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "DISABLE_NON_ESSENTIAL_MODEL_CALLS",
        "DISABLE_PROMPT_CACHING",
        "API_TIMEOUT_MS",
        "BASH_DEFAULT_TIMEOUT_MS",
        "BASH_MAX_TIMEOUT_MS",
        "BASH_MAX_OUTPUT_LENGTH",
        "MAX_THINKING_TOKENS",
        "MAX_MCP_OUTPUT_TOKENS",
        "MCP_TIMEOUT",
        "MCP_TOOL_TIMEOUT",
        "USE_BUILTIN_RIPGREP",
    )

    def env_patterns(self, environ: Mapping[str, str], extra_args: tuple[str, ...]) -> tuple[str, ...]:
        """Its own names, and a cloud provider's credentials when ``CLAUDE_CODE_USE_<provider>`` is set."""
        chosen = [names for switch, names in _PROVIDER_ENV if environ.get(switch, "").lower() not in ("", "0", "false")]
        return (*super().env_patterns(environ, extra_args), *(n for names in chosen for n in names))

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        """As root, claude refuses its bypass flag unless IS_SANDBOX=1 (§1.2). Only where the user
        allowed bypass: otherwise the sandbox preflight refuses the flag with its own message."""
        if not allow_bypass or euid != 0 or env.get("IS_SANDBOX") == "1":
            return None
        kept, dropped = drop_args(
            extra_args, ("--dangerously-skip-permissions",), pairs=(("--permission-mode", "bypassPermissions"),)
        )
        if not dropped:
            return None
        return ArgsFixed(
            kept,
            "root_bypass",
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            f"running as root without IS_SANDBOX=1: dropped {', '.join(dropped)} from "
            "[agents.claude] extra_args; claude runs with --permission-mode acceptEdits",
        )

    state_places = (
        StatePlace(
            real=Path(".claude"),
            name="claude-dir",
            copied=("settings.json", ".credentials.json", "CLAUDE.md"),
            settings=("settings.json", "settings.local.json"),
            credentials=MappingProxyType({".credentials.json": CLAUDE_TOKENS}),
        ),
        # Never read-only: claude rewrites it on every start. It must exist in the copy, or
        # claude could not keep it from one run to the next.
        StatePlace(
            real=Path(".claude.json"),
            name="claude.json",
            folder=False,
            pinned=(
                "mcpServers",  # user scope
                "projects.*.mcpServers",  # local scope (claude mcp add's default)
                "projects.*.enabledMcpjsonServers",  # approvals of a project's .mcp.json
                "projects.*.disabledMcpjsonServers",
                "projects.*.enableAllProjectMcpServers",
            ),
        ),
    )

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """``~/.claude`` with this run's entries of ``projects/`` (its folders' history and
        memory, not the user's whole history), and ``~/.claude.json``; both in
        ``$CLAUDE_CONFIG_DIR`` when it is set."""
        state = super().cli_state(env, folders)
        projects = tuple(f"projects/{project_folder_name(str(f))}" for f in folders)
        folder, config = state.places
        if env.get("CLAUDE_CONFIG_DIR"):  # both live there then (2.1.197)
            folder = replace(folder, real=Path(env["CLAUDE_CONFIG_DIR"]))
            config = replace(config, real=folder.real / ".claude.json")
        return CliState(places=(replace(folder, copied=(*folder.copied, *projects)), config))

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The exact command line: ``-p`` with no prompt reads it from stdin (§0, verified with
        2.1.197, ``--resume`` too), so no option can swallow it and ``ps`` never shows it."""
        argv: list[str] = [
            *spec.executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            "plan" if spec.mode == "read_only" else "acceptEdits",
        ]
        for extra in spec.extra_dirs:
            argv += ["--add-dir", str(extra)]
        if spec.model:
            argv += ["--model", spec.model]
        if spec.resume_session_id:
            argv += ["--resume", spec.resume_session_id]
        argv += spec.extra_args
        env = dict(spec.env)  # a copy: the caller's mapping is shared between runs
        env.setdefault("CLAUDE_CODE_MAX_RETRIES", "3")  # default 10 retries take > 2 min
        env["DISABLE_AUTOUPDATER"] = "1"
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
        return Launch(argv=tuple(argv), env=env, cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def new_parser(self) -> ClaudeParser:
        """A fresh parser for one run."""
        return ClaudeParser()
