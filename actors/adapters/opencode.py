"""opencode (``opencode run --format json``, the prompt on stdin): command line and stream.

Measured with ``opencode-ai`` 1.18.33 (a native binary) against the scripted model server:

* ``opencode run`` reads the message from stdin when no message is on its command line.
* Each stdout line is one part of the session, ``sessionID`` on every line: ``step_start``,
  ``text`` (a whole text part), ``tool_use`` (once, when the call has ended: ``part.state``
  ``status`` completed or error, ``input``, ``output`` or ``error``), ``step_finish``
  (``reason`` "tool-calls" or "stop", ``tokens``, ``cost``) and ``error`` (``error.name``,
  ``error.data.message``, ``statusCode``). There is no closing line: a run that ends with
  exit 0 after its steps succeeded.
* Settings come from its config files, merged; ``OPENCODE_CONFIG_CONTENT`` (JSON) is merged
  over them, so the adapter passes its own settings there and never writes a file; the
  user's own config (``~/.config/opencode/opencode.json``: providers, ``baseURL``) is read.
* ``OPENCODE_PERMISSION`` (JSON) is merged over every config's ``permission``: a review run
  denies ``edit`` and ``bash``, and opencode then does not even offer those tools. An ``ask``
  is rejected at once in ``run`` (stderr ``! permission requested: ...; auto-rejecting``).
* A 401 ends the run at once (exit 1), a 429 after about 9 attempts in 9 s (exit 1); a 500,
  a cut stream or a refused connection is retried without end and prints nothing (not even
  with ``--print-logs``): only the stall rule ends that run. An unknown ``-m`` model gives an
  ``UnknownError`` line, "Unexpected server error. Check server logs for details.", exit 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
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
    as_float,
    as_int,
    as_str,
    classify,
    clip,
    require_dict,
)
from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.actors.adapters.protocol import extract_markers, strip_markers
from meta_orchestrator.messages.base import AgentName

_WRITE_TOOLS = frozenset({"write", "edit", "patch", "multiedit"})
# What ``run`` says of a call its permission rules asked about (it cannot ask anyone).
_REJECTED = "rejected permission"
# A tool its rules deny is not offered; a model that calls it anyway gets this.
_UNAVAILABLE = "unavailable tool"
_PERMISSION_ASKED = re.compile(r"permission requested: (?P<what>.+?); auto-rejecting")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Start-up fetches off: models.dev's catalogue (the bundled one is used) and its updater.
# Its plugin package install in the config folder is npm's: see ``state_places`` (.npmrc).
_QUIET_ENV = {"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1"}
_SETTINGS = {"autoupdate": False, "share": "disabled"}
# A review reads: no file tool that writes, no shell (whose commands could write).
_READ_ONLY_RULES = {"edit": "deny", "bash": "deny"}
# Over ACP: every edit and shell command asked, so the broker decides it.
_ACP_ASK_RULES = {"edit": "ask", "bash": "ask"}


class OpencodeParser(GuardedParser):
    """opencode's JSON lines: step_start, text, tool_use, step_finish, error."""

    agent: AgentName = "opencode"

    def __init__(self) -> None:
        super().__init__()
        self._turn_text: list[str] = []  # text parts since the last tool call
        self._tokens: dict[str, int] = {}
        self._cost = 0.0
        self._failed = False  # an error line came: no later step makes the run a success

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """Route one line by its type; every line names the session."""
        self.session_id = as_str(obj.get("sessionID")) or self.session_id
        part = require_dict(obj, "part")
        match type_:
            case "step_start":
                return [draft("status", kind="init", session_id=self.session_id, text="step started")]
            case "text":
                return self._on_text(part)
            case "reasoning":
                return [draft("progress", kind="reasoning", text=clip(as_str(part.get("text"))))]
            case "tool_use":
                return self._on_tool(part)
            case "step_finish":
                return self._on_step_finish(part)
            case "error":
                return self._on_error(require_dict(obj, "error"))
        return [draft("status", kind="unknown", text=type_)]

    def _on_text(self, part: dict[str, Any]) -> list[Draft]:
        """A whole text part (not a delta): its markers are read at once."""
        text = as_str(part.get("text")) or ""
        self._turn_text.append(text)
        return [draft("progress", kind="text", text=clip(text)), *extract_markers(text)]

    def _on_tool(self, part: dict[str, Any]) -> list[Draft]:
        """One ended tool call: the call, then its result, a written file or a refusal."""
        self._turn_text = []  # the final answer is the text after the last tool call
        name = as_str(part.get("tool")) or "?"
        state = require_dict(part, "state")
        tool_input = as_dict(state.get("input"))
        path = as_str(tool_input.get("filePath"))
        summary = as_str(tool_input.get("description")) or as_str(tool_input.get("command")) or path or name
        if name == "todowrite":
            call = draft("task", kind="todo", tool=name, tool_input=tool_input, text="todo list updated")
        else:
            call = draft("progress", kind="tool_call", tool=name, tool_input=tool_input, text=clip(summary), file=path)
        call_id = as_str(part.get("callID"))
        if as_str(state.get("status")) == "completed" and name != "invalid":
            output = as_str(state.get("output")) or ""
            self.note_tool_result(True, output)
            drafts = [
                call,
                draft("progress", kind="tool_result", tool=name, text=clip(output), details={"tool_id": call_id}),
            ]
            if name in _WRITE_TOOLS and path:
                self.files_written.append(path)
                drafts.append(draft("milestone", kind="file_written", file=path, tool=name, text=f"{name} {path}"))
            return drafts
        message = as_str(state.get("error")) or as_str(state.get("output")) or "tool failed"
        self.note_tool_result(False, message)
        if _REJECTED in message or _UNAVAILABLE in message:
            self.permission_denials.append(message)
            denial = draft(
                "blocker", kind="denial", tool=name, text=clip(message), file=path, tool_input=tool_input or None
            )
            return [call, denial]
        details = {"tool_id": call_id, "is_error": True}
        return [call, draft("progress", kind="tool_result", tool=name, text=clip(message), details=details)]

    def _on_step_finish(self, part: dict[str, Any]) -> list[Draft]:
        """One model step ended: its tokens and cost add up; the run may end after it."""
        tokens = as_dict(part.get("tokens"))
        for key in ("input", "output", "reasoning", "total"):
            self._tokens[key] = self._tokens.get(key, 0) + (as_int(tokens.get(key)) or 0)
        self._cost += as_float(part.get("cost")) or 0.0
        self.usage = dict(self._tokens)
        self.total_tokens = self._tokens.get("total")
        self.cost_usd = round(self._cost, 6)
        if not self._failed:
            self._mark_terminal(ok=True)  # opencode prints no closing line: each step may be the last
        reason = as_str(part.get("reason"))
        return [draft("status", kind="step_finish", text=f"step finished ({reason or 'no reason'})", usage=self.usage)]

    def _on_error(self, error: dict[str, Any]) -> list[Draft]:
        """The run's fatal error (an API error after opencode's own retries)."""
        data = as_dict(error.get("data"))
        name = as_str(error.get("name")) or "error"
        status = as_int(data.get("statusCode"))
        message = as_str(data.get("message")) or name
        text = f"{name}: {message}" + (f" (HTTP {status})" if status else "")
        cause, retryable = classify(f"({status})" if status else text)
        if status is not None:
            retryable = status in (408, 409, 429) or status >= 500
        self._failed = True
        self._mark_terminal(ok=False, error=text)
        details = {"cause": cause, "status": status, "error_name": name}
        return [draft("error", kind="result", terminal=True, retryable=retryable, text=clip(text), details=details)]

    def feed_stderr(self, line: str) -> list[Draft]:
        """``run`` rejects what its rules ``ask`` about and says so only on stderr."""
        found = _PERMISSION_ASKED.search(_ANSI.sub("", line))
        if not found:
            return []
        text = f"opencode rejected a call its rules ask about: {found.group('what')}"
        self.permission_denials.append(text)
        return [draft("blocker", kind="denial", text=clip(text))]

    def finish(self, returncode: int | None, stderr_tail: tuple[str, ...]) -> list[Draft]:
        """A clean exit after a successful step is the end of the run: its answer is the last text."""
        drafts: list[Draft] = []
        if self._ok and returncode == 0:
            self.final_text = "\n".join(t for t in self._turn_text if t).strip()
            drafts += [
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
        return drafts + super().finish(returncode, stderr_tail)

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """opencode exits 1 for every failure (an API error, a bad flag, a missing session)."""
        return ("failed (its error line or stderr says why)", None)


# Its rows of the error table (the real 1.18.33's messages against the scripted server).
OPENCODE_ERRORS: tuple[ErrorPattern, ...] = (
    error_pattern("opencode", "bad_workdir", r"Failed to change directory to (?P<path>\S+)", source="opencode 1.18.33"),
    error_pattern("opencode", "auth", r"\(HTTP 40[13]\)|\"statusCode\":40[13]\b", source="opencode 1.18.33"),
    error_pattern("opencode", "auth", r"invalid x-api-key|authentication_error", source="Anthropic's 401 body"),
    error_pattern("opencode", "rate_limit", r"\(HTTP 429\)|\"statusCode\":429\b", source="opencode 1.18.33"),
    error_pattern("opencode", "context", r"prompt is too long|context_length_exceeded", source="providers' 400 bodies"),
    error_pattern("opencode", "session_not_found", r"Session not found", source="opencode 1.18.33 -s"),
    # An unknown -m model: opencode says only this (an UnknownError line, exit 1); its usual cause.
    error_pattern(
        "opencode", "invalid_model", r"Unexpected server error\. Check server logs", source="opencode 1.18.33 -m"
    ),
    error_pattern("opencode", "server", r"\(HTTP 5\d\d\)|\"statusCode\":5\d\d\b", source="opencode 1.18.33"),
    error_pattern("opencode", "mode_too_strict", r"rejected permission|unavailable tool|auto-rejecting"),
)


def _provider_tokens() -> Mapping[str, Any]:
    """One provider's entry in auth.json: an API key, or OAuth tokens opencode refreshes."""
    return MappingProxyType(
        {"type": (str,), "key": (str,), "refresh": (str,), "access": (str,), "expires": (int,), "accountId": (str,)}
    )


# ~/.local/share/opencode/auth.json (``opencode auth login``): provider id -> its entry. The
# providers whose OAuth login opencode refreshes; another provider's key is copied in only.
OPENCODE_TOKENS = MappingProxyType(
    {name: _provider_tokens() for name in ("anthropic", "openai", "github-copilot", "opencode")}
)


class OpencodeAdapter(AgentAdapter):
    """``opencode run --format json --dir DIR [-m provider/model] [-s SESSION]``, prompt on stdin."""

    name: AgentName = "opencode"
    default_executable = "opencode"
    package = "opencode-ai"
    credentials = (
        "a provider's key in its variable (ANTHROPIC_API_KEY, OPENAI_API_KEY, OPENROUTER_API_KEY, ...) or "
        "`opencode auth login` (~/.local/share/opencode/auth.json); a provider's baseURL in "
        "~/.config/opencode/opencode.json or OPENCODE_CONFIG_CONTENT in [agents.opencode] env"
    )
    grant_dir_flag = "--dir"  # its one working folder; other folders are granted by its rules
    bypass_flags = ("--auto",)  # approves every call its rules do not deny
    error_patterns = OPENCODE_ERRORS
    advice = MappingProxyType(
        {
            "auth": "opencode's provider refused the key: set it in [agents.opencode] env (ANTHROPIC_API_KEY, "
            "OPENAI_API_KEY, ...) or run `opencode auth login`",
            "invalid_model": "opencode could not use that model (it says only 'Unexpected server error'): "
            "[agents.opencode] model is provider/model, as `opencode models` lists them",
            "server": "{agent}'s provider kept failing; opencode retries a 5xx without end, so the stall "
            "limit ended the run",
            "mode_too_strict": "opencode's rules denied or asked about a call, and `run` rejects every ask: "
            "allow it in the permission of ~/.config/opencode/opencode.json or set [agents.opencode] "
            "allow_bypass with --auto inside the OS sandbox",
        }
    )
    colour = "\033[36m"
    vendor_env = (
        "OPENCODE_CONFIG",
        "OPENCODE_CONFIG_DIR",
        "OPENCODE_CONFIG_CONTENT",
        "OPENCODE_AUTH_CONTENT",
        "OPENCODE_API_KEY",
        "OPENCODE_MODELS_PATH",
        "OPENCODE_DISABLE_*",
        "OPENCODE_ENABLE_*",
        "OPENCODE_EXPERIMENTAL*",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_CACHE_HOME",
        "XDG_STATE_HOME",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_GENERATIVE_AI_API_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "VERTEX_LOCATION",
        "AZURE_*",
        "AWS_*",
        "GROQ_API_KEY",
        "DEEPSEEK_API_KEY",
        "MISTRAL_API_KEY",
        "XAI_API_KEY",
        "TOGETHER_AI_API_KEY",
        "GITHUB_TOKEN",
    )
    # ACP first: each edit and shell command is asked (``acp_options``). Its stream remains
    # (``protocol = "stream"``), where ``run`` rejects every ask and watches the rest.
    protocols = ("acp", "stream")
    acp_args = ("acp",)  # verified: `opencode acp` answers `initialize` on stdio
    # `opencode acp` serves its own HTTP server on 127.0.0.1 (default --port 0: any free port)
    # and its ACP agent is that server's client; in the OS sandbox Landlock refused the connect
    # and every `session/new` failed ("OpenCode service failure", service "directory").
    acp_port_flag = "--port"
    state_places = (
        # Its settings, agents, commands and plugins. opencode installs its plugin package here
        # with npm at every start unless node_modules has it: copied, so no run fetches it.
        StatePlace(
            real=Path(".config/opencode"),
            name="opencode-config",
            copied=(
                "opencode.json",
                "opencode.jsonc",
                "config.json",
                "AGENTS.md",
                ".npmrc",
                "package.json",
                "package-lock.json",
                "node_modules",
                "agent",
                "command",
                "mode",
            ),
            # opencode.json names plugins, MCP servers and rules; plugin/ holds code it loads.
            settings=("opencode.json", "plugin/", "plugins/"),
        ),
        # Sessions (opencode.db, for -s), logs, snapshots and the credentials of `auth login`.
        StatePlace(
            real=Path(".local/share/opencode"),
            name="opencode-data",
            copied=("auth.json",),
            credentials=MappingProxyType({"auth.json": OPENCODE_TOKENS}),
        ),
        StatePlace(real=Path(".cache/opencode"), name="opencode-cache", copied=("models.json",)),
        StatePlace(real=Path(".local/state/opencode"), name="opencode-state"),  # locks, prompt history
    )

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        """Its four folders, each under its XDG base when that variable is set."""
        home = Path(env.get("HOME") or Path.home())
        bases = {
            ".config": env.get("XDG_CONFIG_HOME"),
            ".local/share": env.get("XDG_DATA_HOME"),
            ".cache": env.get("XDG_CACHE_HOME"),
            ".local/state": env.get("XDG_STATE_HOME"),
        }
        places = []
        for place in self.state_places:
            xdg = bases.get(str(place.real.parent))
            real = Path(xdg) / place.real.name if xdg else home / place.real
            places.append(replace(place, real=real))
        return CliState(places=tuple(places))

    def folder_check(self, in_git_repo: bool) -> str:
        """opencode asks about paths outside --dir (external_directory), and run rejects asks."""
        return "paths outside --dir are asked about and rejected headless"

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The command line; the prompt on stdin (``run`` reads it there when no message is given)."""
        argv = [*spec.executable, "run", "--format", "json", "--dir", str(spec.workdir)]
        if spec.model:
            argv += ["-m", spec.model]
        if spec.resume_session_id:
            argv += ["-s", spec.resume_session_id]
        argv += spec.extra_args
        env = {**spec.env, **_QUIET_ENV}
        env["OPENCODE_CONFIG_CONTENT"] = json.dumps({**_user_json(spec.env, "OPENCODE_CONFIG_CONTENT"), **_SETTINGS})
        env["OPENCODE_PERMISSION"] = json.dumps(self._rules(spec))
        return Launch(argv=tuple(argv), env=env, cwd=spec.workdir, stdin=spec.prompt.encode("utf-8"))

    def acp_options(self, spec: LaunchSpec) -> tuple[tuple[str, ...], dict[str, str]]:
        """Over ACP its edits and shell commands are asked (``session/request_permission``, so the
        broker decides); its defaults would run them unasked (1.18.33). A review still denies them.
        No folder flag: ``opencode acp`` has no ``--dir`` (its folder is the session's cwd); the
        granted folders are in its rules. In the OS sandbox, ``--port`` of its own server."""
        env = self.build_launch(spec).env
        rules = self._rules(spec)
        if spec.mode != "read_only":
            rules = {**_ACP_ASK_RULES, **rules}
        env["OPENCODE_PERMISSION"] = json.dumps(rules)
        return self.serve_args(spec), env

    @staticmethod
    def _rules(spec: LaunchSpec) -> dict[str, Any]:
        """Its permission rules for this run: the granted folders allowed, a review read-only."""
        if spec.mode == "read_only":
            return dict(_READ_ONLY_RULES)
        if not spec.extra_dirs:
            return {}
        # The last matching rule wins: outside folders are still asked (and so rejected).
        granted = {f"{Path(d).as_posix().rstrip('/')}/*": "allow" for d in spec.extra_dirs}
        return {"external_directory": {"*": "ask", **granted}}

    def new_parser(self) -> OpencodeParser:
        """A fresh parser for one run."""
        return OpencodeParser()


def _user_json(env: Mapping[str, str], name: str) -> dict[str, Any]:
    """The user's JSON object in variable ``name`` (a provider with its baseURL), or nothing."""
    try:
        value = json.loads(env.get(name) or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
