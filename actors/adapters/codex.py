"""Codex CLI: ``codex exec --json`` (its thread/turn/item stream), or ``codex app-server``
through the orchestrator's bridge, which has every command and patch asked first."""

from __future__ import annotations

from types import MappingProxyType
from collections.abc import Mapping
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.base import (
    POLICY_FILE_ENV,
    POLICY_SHA256_ENV,
    StatePlace,
    StreamParser,
    TokenShape,
    AgentAdapter,
    ArgsFixed,
    CliState,
    Draft,
    Launch,
    LaunchSpec,
    draft,
    drop_args,
)
from meta_orchestrator.actors.adapters.common import (
    GuardedParser,
    ShapeError,
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

# A refused apply_patch or command leaves no item on stdout, only this stderr log (§2.5).
# A model provider's key variable set on the command line (``-c model_providers.<id>.env_key=NAME``
# or inside an inline table, reference §2.3): the provider needs that variable passed.
_ENV_KEY = re.compile(r"\benv_key\s*=\s*[\"']?(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
_ROUTER_REFUSAL = re.compile(r"codex_core::tools::router: error=(?P<why>.*)")


class CodexParser(GuardedParser):
    """Codex ``exec --json``: thread.started, turn.*, item.*, error."""

    agent: AgentName = "codex"

    def __init__(self) -> None:
        super().__init__()
        self._todos_done: set[str] = set()  # todo texts already reported as completed
        self._last_error: str | None = None

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """Route one line by its top-level type."""
        match type_:
            case "thread.started":
                self.session_id = as_str(obj.get("thread_id")) or self.session_id
                return [draft("status", kind="init", session_id=self.session_id, text="thread started")]
            case "turn.started":
                return [draft("status", kind="turn_started", text="turn started")]
            case "item.started" | "item.updated" | "item.completed":
                return self._on_item(type_.removeprefix("item."), require_dict(obj, "item"))
            case "turn.completed":
                return self._on_turn_completed(obj)
            case "turn.failed":
                return self._on_turn_failed(obj)
            case "error":
                return self._on_error(obj)
            case "item.plan.delta":
                return [
                    draft(
                        "task",
                        kind="plan",
                        text=clip(as_str(obj.get("delta"))),
                        details={"item_id": as_str(obj.get("item_id"))},
                    )
                ]
            case "request_user_input":
                # exec cannot answer: the agent is stuck until someone outside decides.
                questions = as_list(obj.get("questions"))
                text = "; ".join(str(as_dict(q).get("question") or q) for q in questions)
                return [
                    draft(
                        "blocker",
                        kind="question",
                        text=clip(text or "input requested"),
                        details={"questions": questions, "call_id": obj.get("call_id")},
                    )
                ]
        return [draft("status", kind="unknown", text=type_)]

    def _on_item(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """One item event; ``phase`` is started, updated or completed."""
        item_type = as_str(item.get("type")) or as_str(item.get("item_type")) or "?"
        handler = {
            "agent_message": self._on_agent_message,
            "reasoning": self._on_reasoning,
            "command_execution": self._on_command,
            "file_change": self._on_file_change,
            "mcp_tool_call": self._on_mcp_call,
            "collab_tool_call": self._on_collab_call,
            "web_search": self._on_web_search,
            "todo_list": self._on_todo_list,
            "plan": self._on_plan,
            "error": self._on_error_item,
        }.get(item_type)
        if handler is None:
            return [draft("status", kind="unknown", text=f"item.{phase}/{item_type}")]
        return handler(phase, item)

    def _on_agent_message(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """Interim commentary or the answer; only the last completed one is the answer."""
        text = as_str(item.get("text")) or ""
        if phase != "completed":  # the completed item repeats it whole: scan markers once
            return [draft("progress", kind="text", text=clip(text), details={"phase": phase})]
        self.final_text = text
        return text_drafts(text)

    def _on_reasoning(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """Model reasoning summary."""
        return [
            draft(
                "progress",
                kind="reasoning",
                text=clip(as_str(item.get("text"))),
                details=None if phase == "completed" else {"phase": phase},
            )
        ]

    def _on_command(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """A shell command: the call when started, its output and exit code when done."""
        command = as_str(item.get("command")) or ""
        status = as_str(item.get("status"))
        if phase == "started":
            return [
                draft("progress", kind="tool_call", tool="shell", text=clip(command), tool_input={"command": command})
            ]
        if status == "declined":  # refused by the approval policy: nothing ran
            return [
                draft(
                    "blocker",
                    kind="denial",
                    tool="shell",
                    text=f"command declined: {command}",
                    tool_input={"command": command},
                )
            ]
        exit_code = as_int(item.get("exit_code"))
        if phase == "completed":
            output = as_str(item.get("aggregated_output")) or ""
            self.note_tool_result(status == "completed" and exit_code == 0, output or f"{command}: {status}")
        return [
            draft(
                "progress",
                kind="tool_result",
                tool="shell",
                exit_code=exit_code,
                text=clip(as_str(item.get("aggregated_output"))),
                details={"command": command, "status": status, "phase": phase},
            )
        ]

    def _on_file_change(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """A patch: announced when started, one milestone per path once completed."""
        changes = [as_dict(change) for change in as_list(item.get("changes"))]
        paths = [path for change in changes if (path := as_str(change.get("path")))]
        status = as_str(item.get("status"))
        if phase == "completed":
            self.note_tool_result(status == "completed", f"patch {status or 'failed'}: {', '.join(paths)}")
        if phase == "completed" and status == "completed":
            self.files_written.extend(paths)
            return [
                draft(
                    "milestone",
                    kind="file_written",
                    file=path,
                    tool="apply_patch",
                    text=f"{as_str(change.get('kind')) or 'change'} {path}",
                )
                for change in changes
                if (path := as_str(change.get("path")))
            ] or [draft("progress", kind="tool_result", tool="apply_patch", text="empty patch")]
        kind = "tool_call" if phase == "started" else "tool_result"
        return [
            draft(
                "progress",
                kind=kind,
                tool="apply_patch",
                files=tuple(paths),
                text=f"patch {status or phase}: {', '.join(paths)}",
                details={"status": status, "phase": phase},
            )
        ]

    def _on_mcp_call(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """An MCP tool call and, when done, its result or error."""
        tool = f"{as_str(item.get('server')) or '?'}.{as_str(item.get('tool')) or '?'}"
        arguments = item.get("arguments")
        if phase == "started":
            return [
                draft(
                    "progress",
                    kind="tool_call",
                    tool=tool,
                    text=tool,
                    tool_input=arguments if isinstance(arguments, dict) else None,
                )
            ]
        error = as_str(as_dict(item.get("error")).get("message"))
        content = as_list(as_dict(item.get("result")).get("content"))
        text = error or "\n".join(str(as_dict(c).get("text", "")) for c in content)
        return [
            draft(
                "progress",
                kind="tool_result",
                tool=tool,
                text=clip(text),
                details={"status": as_str(item.get("status")), "is_error": bool(error)},
            )
        ]

    def _on_collab_call(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """A sub-agent operation (spawn_agent, send_input, wait, close_agent)."""
        tool = as_str(item.get("tool")) or "collab"
        return [
            draft(
                "progress",
                kind="tool_call" if phase == "started" else "tool_result",
                tool=tool,
                text=clip(as_str(item.get("prompt")) or tool),
                details={"status": as_str(item.get("status"))},
            )
        ]

    def _on_web_search(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """A web search."""
        query = as_str(item.get("query")) or ""
        return [
            draft(
                "progress",
                kind="tool_call",
                tool="web_search",
                text=clip(query),
                tool_input={"query": query},
                details={"phase": phase},
            )
        ]

    def _on_todo_list(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """The todo list, plus a milestone for each item that turned completed."""
        items = [as_dict(entry) for entry in as_list(item.get("items"))]
        done = [text for entry in items if entry.get("completed") is True and (text := as_str(entry.get("text")))]
        drafts = [
            draft(
                "task",
                kind="todo",
                text=f"{len(done)}/{len(items)} todos done",
                details={"items": items, "phase": phase},
            )
        ]
        for text in done:
            if text not in self._todos_done:
                self._todos_done.add(text)
                drafts.append(draft("milestone", kind="todo_done", text=clip(text)))
        return drafts

    def _on_plan(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """A plan item (its text is the plan)."""
        return [draft("task", kind="plan", text=clip(as_str(item.get("text"))), details={"phase": phase})]

    def _on_error_item(self, phase: str, item: dict[str, Any]) -> list[Draft]:
        """Non-fatal: e.g. "Falling back from WebSockets to HTTPS transport" (§2.6)."""
        return [draft("status", kind="warning", severity="warning", text=clip(as_str(item.get("message"))))]

    def _on_turn_completed(self, obj: dict[str, Any]) -> list[Draft]:
        """The turn ended well: usage (thread-cumulative: replaced, never added), the answer."""
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            self.total_tokens = (as_int(usage.get("input_tokens")) or 0) + (as_int(usage.get("output_tokens")) or 0)
        self._mark_terminal(ok=True)
        return [
            draft("milestone", kind="result", text="turn completed", session_id=self.session_id),
            draft(
                "review",
                kind="result",
                text=strip_markers(self.final_text),
                usage=self.usage,
                files=tuple(dict.fromkeys(self.files_written)),
                session_id=self.session_id,
            ),
        ]

    def _on_turn_failed(self, obj: dict[str, Any]) -> list[Draft]:
        """The turn failed: terminal."""
        error = obj.get("error")
        if error is not None and not isinstance(error, dict):
            raise ShapeError(f"turn.failed error is a {type(error).__name__}")
        text = as_str(as_dict(error).get("message")) or self._last_error or "turn failed"
        cause, retryable = classify(text)
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="turn_failed",
                terminal=True,
                retryable=retryable,
                text=clip(text),
                details={"cause": cause},
            )
        ]

    def _on_error(self, obj: dict[str, Any]) -> list[Draft]:
        """``Reconnecting...`` is a retry; any other error line waits for turn.failed."""
        text = as_str(obj.get("message")) or ""
        self._last_error = text  # names the cause if the run ends with no turn.failed
        if text.startswith("Reconnecting..."):
            return [draft("status", kind="retry", retryable=True, text=clip(text))]
        cause, retryable = classify(text)
        return [
            draft(
                "error",
                kind="api_error",
                terminal=False,
                retryable=retryable,
                text=clip(text or "error"),
                details={"cause": cause},
            )
        ]

    def _stderr_drafts(self, stderr_tail: tuple[str, ...]) -> list[Draft]:
        """Sandbox refusals that only the stderr log shows (§2.5)."""
        drafts = []
        for line in stderr_tail:
            if (match := _ROUTER_REFUSAL.search(line)) is not None:
                why = match.group("why").strip()
                self.permission_denials.append(why)
                self.note_tool_result(False, why)
                drafts.append(draft("blocker", kind="denial", text=clip(why), details={"source": "stderr"}))
        return drafts

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """Codex: 1 = turn failed or startup error, 2 = CLI usage error (§2.6)."""
        if returncode == 1:
            last = f"; last error: {self._last_error}" if self._last_error else ""
            return f"turn failed or startup error{last}", None
        if returncode == 2:
            return "CLI usage error (bad flag or value)", False
        return "unexpected exit code", None


# Its rows of the error table (reference §2.1, §2.2, §2.5, §2.6, §4).
CODEX_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("codex", "bad_workdir", r"Error: No such file or directory \(os error 2\)"),
    error_pattern("codex", "bad_flag", r"error: unexpected argument '(?P<arg>[^']+)' found"),
    error_pattern("codex", "bad_flag", r"error: invalid value '[^']*' for '(?P<arg>[^']+)'"),
    error_pattern("codex", "repo_trust", r"Not inside a trusted directory and --skip-git-repo-check was not specified"),
    error_pattern("codex", "auth", r"401 Unauthorized|403 Forbidden"),
    error_pattern("codex", "auth", r"Missing environment variable: `?(?P<var>[A-Z0-9_]+)"),
    error_pattern("codex", "rate_limit", r"429 Too Many Requests"),
    error_pattern("codex", "rate_limit", r"Quota exceeded"),
    error_pattern("codex", "context", r"ran out of room in the model's context window"),
    error_pattern("codex", "session_not_found", r"no rollout found for thread id"),
    error_pattern(
        "codex",
        "invalid_model",
        r"model_not_found|model .* does not exist",
        source="OpenAI API error code (not captured in the reference)",
    ),
    error_pattern("codex", "network", r"stream disconnected before completion"),
    error_pattern("codex", "network", r"waiting for network"),
    error_pattern("codex", "server", r"high demand|unexpected status 5\d\d"),
    error_pattern("codex", "outside_path", r"Read-only file system"),
    error_pattern("codex", "outside_path", r"writing is blocked by read-only sandbox"),
    error_pattern("codex", "mode_too_strict", r"rejected by user approval settings"),
    # Its own bwrap inside another sandbox, as root (more-clis.md: "Codex as root inside an outer
    # bubblewrap"): only the tool output says so, and the run exits 0.
    error_pattern("codex", "sandbox", r"bwrap: setting up uid map: Operation not permitted"),
    error_pattern("codex", "sandbox", r"bwrap: .*(?:Operation not permitted|No permissions to create)"),
    # apply_patch's words when that sandbox failed: the path and nothing after it (a read-only
    # file system names itself and is outside_path).
    error_pattern("codex", "sandbox", r"Failed to write file \S+\s*(?:$|\|)", source="real codex 0.169.0 as root"),
)


def _sandbox_mode(spec: LaunchSpec) -> str:
    """Codex's own sandbox: off inside ours (as root codex's bwrap cannot map its uid there,
    and every command and patch fails while the run exits 0; codex's docs say to use
    danger-full-access when the sandbox is provided outside), else by the run's mode."""
    if spec.confined:
        return "danger-full-access"
    return "read-only" if spec.mode == "read_only" else "workspace-write"


def _without_sandbox_flag(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` less any -s/--sandbox: a second one makes codex exit 2, and inside the OS
    sandbox the orchestrator sets it."""
    kept, _dropped = drop_args(args, (), ("-s", "--sandbox"))
    return kept


# $CODEX_HOME/auth.json: the ChatGPT tokens codex refreshes. The API key is not among them:
# codex never changes it, so a run may not either.
CODEX_TOKENS: TokenShape = MappingProxyType(
    {
        "tokens": MappingProxyType(
            {
                "id_token": (str,),
                "access_token": (str,),
                "refresh_token": (str,),
                "account_id": (str, type(None)),
            }
        ),
        "last_refresh": (str,),
    }
)


class CodexAdapter(AgentAdapter):
    """``codex app-server`` under the bridge, or ``codex exec --json --skip-git-repo-check -C <dir>
    -s <sandbox> … -``; the prompt on stdin either way (§2, §6)."""

    name: AgentName = "codex"
    default_executable = "codex"
    package = "@openai/codex"
    credentials = (
        "CODEX_API_KEY (codex 0.169 exec does not send OPENAI_API_KEY; or run "
        "`printenv OPENAI_API_KEY | codex login --with-api-key`)"
    )
    trust_flag = "--skip-git-repo-check"
    grant_dir_flag = "--add-dir"
    bypass_flags = ("--dangerously-bypass-approvals-and-sandbox", "danger-full-access", "--yolo")
    error_patterns = CODEX_ERRORS
    advice = MappingProxyType(
        {
            "repo_trust": "codex refused {target} as not a trusted git repository even with "
            "--skip-git-repo-check: run `git init` in {target} or trust it in $CODEX_HOME/config.toml",
            "mode_too_strict": "codex's sandbox refused the action: grant folders with "
            "--add-dir, or allow_bypass inside an outer sandbox",
            "sandbox": "codex's own sandbox could not start (its bubblewrap inside another sandbox, "
            'as root): run it under the orchestrator\'s OS sandbox (sandbox.os = "bwrap"), which turns '
            "codex's own off, or as an ordinary user",
        }
    )
    colour = "\033[35m"
    # CODEX_*: CODEX_API_KEY, CODEX_ACCESS_TOKEN, CODEX_HOME, CODEX_CA_CERTIFICATE.
    vendor_env = ("CODEX_*", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORGANIZATION", "OPENAI_PROJECT")

    def env_patterns(self, environ: Mapping[str, str], extra_args: tuple[str, ...]) -> tuple[str, ...]:
        """Its own names and the key variable of a model provider its ``extra_args`` define."""
        keys = (m.group("name") for arg in extra_args for m in _ENV_KEY.finditer(arg))
        return (*super().env_patterns(environ, extra_args), *keys)

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        """codex 0.169 exec refuses --full-auto and -a/--ask-for-approval (§2.2, exit 2)."""
        kept, dropped = drop_args(extra_args, ("--full-auto",), ("-a", "--ask-for-approval"))
        if not dropped:
            return None
        return ArgsFixed(
            kept,
            "bad_flag",
            f"error: unexpected argument '{dropped[0].split()[0]}' found",
            f"codex 0.169 exec no longer takes {', '.join(dropped)}: dropped them (the sandbox is set with -s)",
        )

    def folder_check(self, in_git_repo: bool) -> str:
        """codex refuses a folder outside a trusted git repository (§2.1)."""
        return "a git repository" if in_git_repo else "not a git repository"

    # app-server through the bridge (asked before every command and patch; verified with the
    # pinned 0.169.0 against the model server, inside bwrap too), or exec --json.
    protocols = ("app-server", "stream")
    state_places = (
        StatePlace(
            real=Path(".codex"),
            name="codex-home",
            copied=("config.toml", "auth.json", "AGENTS.md"),
            # config.toml names notify and [mcp_servers]; rules/ pre-approves commands.
            settings=("config.toml", "rules/"),
            credentials=MappingProxyType({"auth.json": CODEX_TOKENS}),
        ),
    )

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """``$CODEX_HOME`` when set (reference §2), else ``~/.codex``."""
        state = super().cli_state(env, folders)
        if env.get("CODEX_HOME"):
            return CliState(places=(replace(state.places[0], real=Path(env["CODEX_HOME"])),))
        return state

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """``exec --json`` or, for the app-server protocol, the bridge around ``app-server``."""
        if spec.protocol == "app-server":
            return _app_server_launch(spec)
        return _exec_launch(spec)

    def parser_for(self, protocol: str) -> StreamParser:
        """The bridge's lines for app-server, else exec's stream."""
        if protocol == "app-server":
            from meta_orchestrator.actors.adapters.codex_app import CodexAppParser  # it builds on CodexParser

            return CodexAppParser()
        return self.new_parser()

    def new_parser(self) -> CodexParser:
        """A fresh parser for one ``exec --json`` run."""
        return CodexParser()


BRIDGE_MODULE = "meta_orchestrator.actors.agents.codex_app_bridge"


def _app_server_launch(spec: LaunchSpec) -> Launch:
    """``python -I -m <bridge> [--policy F --policy-sha256 H] --cwd D --sandbox S ... -- codex app-server ...``:
    the bridge runs codex's JSON-RPC server and answers its approval requests by the policy.
    The interpreter is this one, isolated like claude's hook (no PYTHON* variables, no
    working folder on the import path); the prompt goes to the bridge's stdin."""
    bridge = [sys.executable, "-I", "-m", BRIDGE_MODULE]
    if spec.env.get(POLICY_FILE_ENV):
        bridge += ["--policy", spec.env[POLICY_FILE_ENV], "--policy-sha256", spec.env.get(POLICY_SHA256_ENV, "")]
    bridge += ["--cwd", str(spec.workdir), "--sandbox", _sandbox_mode(spec)]
    if spec.model:
        bridge += ["--model", spec.model]
    if spec.resume_session_id:
        bridge += ["--resume", spec.resume_session_id]
    codex = [*spec.executable, "app-server"]
    if spec.extra_dirs and not spec.confined:  # exec's --add-dir; app-server takes it as config
        roots = ", ".join(f'"{d}"' for d in spec.extra_dirs)
        codex += ["-c", f"sandbox_workspace_write.writable_roots=[{roots}]"]
    codex += ["--disable", "unbounded_connection_retries", *_without_sandbox_flag(spec.extra_args)]
    return Launch(argv=(*bridge, "--", *codex), env=dict(spec.env), cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))


def _exec_launch(spec: LaunchSpec) -> Launch:
    """The exact command line; ``resume <id>`` and ``-`` (read the prompt from stdin) come last."""
    argv: list[str] = [
        *spec.executable,
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-C",
        str(spec.workdir),
        "-s",
        _sandbox_mode(spec),
    ]
    for extra in spec.extra_dirs:
        argv += ["--add-dir", str(extra)]  # only effective in workspace-write; harmless
    if spec.model:
        argv += ["-m", spec.model]
    # Without this, codex retries "Reconnecting... waiting for network" forever (§0, §7).
    argv += ["--disable", "unbounded_connection_retries"]
    argv += _without_sandbox_flag(spec.extra_args) if spec.confined else spec.extra_args
    if spec.resume_session_id:
        argv += ["resume", spec.resume_session_id]
    argv.append("-")  # the prompt is read from stdin (§2.1; `resume <id> -` too, verified 0.169)
    return Launch(argv=tuple(argv), env=dict(spec.env), cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))
