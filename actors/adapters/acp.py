"""A CLI driven over ACP (Agent Client Protocol): its command line through the bridge, its stream.

A run over ACP is the orchestrator's own ACP client, ``actors.agents.acp_bridge``, started as
the run's process with the agent's ACP command after ``--``; the bridge prints every message
the agent sent and lines of its own (``{"bridge": ...}``), and ``AcpParser`` turns those into
the same drafts as every other CLI's stream. Two ways to get such an adapter:

* a built-in adapter that lists ``"acp"`` in ``protocols`` with its ``acp_args``, when
  ``[agents.<name>] protocol = "acp"``: ``AcpDriven(adapter)`` keeps all it knows (state,
  variables, error rows, advice) and changes only how a run starts and is read;
* any other CLI that speaks ACP, by configuration alone: ``[agents.<name>] protocol = "acp"``
  with its ``command`` (``ConfiguredAcpAdapter``).
"""

from __future__ import annotations

import shlex
from dataclasses import replace
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meta_orchestrator.actors.adapters.base import (
    POLICY_FILE_ENV,
    POLICY_SHA256_ENV,
    AgentAdapter,
    ArgsFixed,
    CliState,
    Draft,
    Launch,
    LaunchSpec,
    StatePlace,
    StreamParser,
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
)
from meta_orchestrator.actors.adapters.errors import ErrorPattern, error_pattern
from meta_orchestrator.actors.adapters.protocol import MarkerBuffer, strip_markers

BRIDGE_MODULE = "meta_orchestrator.actors.agents.acp_bridge"
# Set for a run over ACP (the file by ``sandbox.start.sandboxed``, its hash by the worker as
# each run starts); the adapter moves them onto the bridge's command line and out of the
# agent's environment.
POLICY_ENV = POLICY_FILE_ENV  # the one name for every bridge (base.py)

WRITE_KINDS = frozenset({"edit", "delete", "move", "write"})
FINAL_TEXT_LIMIT = 1_000_000
# The prompt's stop reasons that are not a finished turn: (error class, what it means).
_STOPS: dict[str, tuple[str | None, str]] = {
    "max_tokens": ("context", "the agent hit its token limit"),
    "max_turn_requests": ("turn_cap", "the agent hit its limit of model requests in one turn"),
    "refusal": (None, "the agent refused to go on"),
    "cancelled": (None, "the turn was cancelled"),
}
_BRIDGE_EXITS: dict[int, tuple[str, bool | None]] = {
    1: ("the ACP client ended the run on an error (its last line says which)", None),
    2: ("the ACP client could not start the run (the policy file or the prompt)", False),
}


def acp_errors(name: str) -> tuple[ErrorPattern, ...]:
    """Rows every CLI driven over ACP shares (``name`` "*": Recovery's generic table): the ACP
    client's own words for what went wrong."""
    return (
        error_pattern(name, "auth", r"Authentication required|answered \S+ with error -32000", source="ACP"),
        error_pattern(name, "crash", r"closed its output before answering|stopped reading its input", source="bridge"),
        error_pattern(name, "crash", r"printed (?:a line|JSON) that is not (?:JSON-RPC|a JSON-RPC)", source="bridge"),
        error_pattern(name, "turn_cap", r"stop reason max_turn_requests", source="ACP"),
        error_pattern(name, "context", r"stop reason max_tokens", source="ACP"),
    )


class AcpParser(GuardedParser):
    """The bridge's lines: the agent's messages as they were, and the bridge's own."""

    def __init__(self, agent: str, patterns: tuple[ErrorPattern, ...] = ()) -> None:
        super().__init__()
        self.agent = agent
        self._patterns = patterns
        self._markers = MarkerBuffer()
        self._turn_text: list[str] = []
        self._turn_chars = 0
        self._chunk_tokens = 0  # qwen's per-response usage (see _take_chunk_usage)
        self._tools: dict[str, dict[str, Any]] = {}  # toolCallId -> the call as last told
        self._denied: set[str] = set()
        self._announced: set[str] = set()

    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """Name each line's type (a bridge line, an update, a request, an answer) and dispatch."""
        if isinstance(obj.get("bridge"), str):
            type_ = f"bridge/{obj['bridge']}"
        elif obj.get("method") == "session/update":
            type_ = "update/" + str(as_dict(as_dict(obj.get("params")).get("update")).get("sessionUpdate"))
        elif isinstance(obj.get("method"), str):
            type_ = f"request/{obj['method']}"
        else:
            type_ = "response"
        return super().feed_object({**obj, "type": type_})

    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        kind, _, name = type_.partition("/")
        if kind == "update":
            return self._on_update(name, as_dict(as_dict(obj.get("params")).get("update")))
        if kind == "bridge":
            return self._on_bridge(name, obj)
        if kind == "request" and name == "session/request_permission":
            # Some agents (gemini 0.61) announce a call only in this request, before it runs.
            call = as_dict(as_dict(obj.get("params")).get("toolCall"))
            return [*self._markers.flush(), *self._on_tool({**call, "sessionUpdate": "permission_request"})]
        if kind == "request":
            return [draft("status", kind="acp_request", text=name)]
        error = obj.get("error")
        if isinstance(error, dict):
            text = f"{as_str(error.get('message')) or 'error'} (code {error.get('code')})"
            return [draft("error", kind="agent_error", terminal=False, text=clip(text), details=self._cause(text))]
        return [draft("status", kind="acp_answer", text=f"answer to request {obj.get('id')}")]

    # -- session/update -----------------------------------------------------------------------

    def _on_update(self, name: str, update: dict[str, Any]) -> list[Draft]:
        match name:
            case "agent_message_chunk":
                self._take_chunk_usage(as_dict(as_dict(update.get("_meta")).get("usage")))
                return self._on_text(as_dict(update.get("content")))
            case "tool_call" | "tool_call_update":
                handled = self._on_tool(update)
                return [*self._markers.flush(), *handled]
            case "plan":
                entries = [as_dict(e) for e in as_list(update.get("entries"))]
                lines = [f"[{as_str(e.get('status')) or '?'}] {as_str(e.get('content')) or ''}" for e in entries]
                return [draft("progress", kind="plan", text=clip("\n".join(lines)) or "plan updated")]
            case "agent_thought_chunk":
                text = as_str(as_dict(update.get("content")).get("text"))
                return [draft("status", kind="thought", text=clip(text))]
            case "user_message_chunk":
                return [
                    draft("status", kind="prompt_echo", text=clip(as_str(as_dict(update.get("content")).get("text"))))
                ]
        return [draft("status", kind="acp_update", text=name)]

    def _on_text(self, content: dict[str, Any]) -> list[Draft]:
        text = as_str(content.get("text"))
        if text is None:
            return [draft("status", kind="acp_content", text=as_str(content.get("type")) or "content")]
        self._turn_text.append(text)
        self._turn_chars += len(text)
        if self._turn_chars > FINAL_TEXT_LIMIT:
            joined = "".join(self._turn_text)[-FINAL_TEXT_LIMIT:]
            self._turn_text, self._turn_chars = [joined], len(joined)
        return [draft("progress", kind="text", text=text), *self._markers.feed(text)]

    def _on_tool(self, update: dict[str, Any]) -> list[Draft]:
        call_id = as_str(update.get("toolCallId")) or "?"
        known = self._tools.setdefault(call_id, {})
        known.update({k: v for k, v in update.items() if v is not None and k != "sessionUpdate"})
        status = as_str(update.get("status"))
        drafts: list[Draft] = []
        if call_id not in self._announced:  # the call itself, once, before what became of it
            self._announced.add(call_id)
            drafts.append(self._call_draft(call_id, known))
        if status in ("completed", "failed"):
            drafts += self._result_drafts(call_id, known, status == "completed")
        return drafts or [draft("status", kind="tool_update", text=f"{call_id} {status or 'updated'}")]

    def _call_draft(self, call_id: str, call: dict[str, Any]) -> Draft:
        raw = as_dict(call.get("rawInput"))
        if as_str(call.get("kind")) == "execute" and not as_str(raw.get("command")) and as_str(call.get("title")):
            raw = {**raw, "command": call["title"]}  # gemini names the command only in the title
        path = _path_of(call)
        summary = as_str(call.get("title")) or as_str(raw.get("command")) or path or call_id
        return draft(
            "progress",
            kind="tool_call",
            tool=_tool_name(call),
            tool_input=raw or None,
            text=clip(summary),
            file=path,
            details={"tool_id": call_id, "acp_kind": as_str(call.get("kind"))},
        )

    def _result_drafts(self, call_id: str, call: dict[str, Any], ok: bool) -> list[Draft]:
        said = _content_text(call) or ("done" if ok else "tool failed")
        name = _tool_name(call)
        if not ok and call_id in self._denied:
            return []  # its denial is already a blocker
        self.note_tool_result(ok, said)
        drafts = [
            draft(
                "progress",
                kind="tool_result",
                tool=name,
                text=clip(said),
                details={"tool_id": call_id, **({} if ok else {"is_error": True})},
            )
        ]
        path = _path_of(call)
        if ok and as_str(call.get("kind")) in WRITE_KINDS and path:
            self.files_written.append(path)
            drafts.append(draft("milestone", kind="file_written", file=path, tool=name, text=f"{name} {path}"))
        return drafts

    # -- the bridge's own lines ---------------------------------------------------------------

    def _on_bridge(self, name: str, obj: dict[str, Any]) -> list[Draft]:
        match name:
            case "session":
                self.session_id = as_str(obj.get("sessionId")) or self.session_id
                loaded = " (loaded)" if obj.get("loaded") else ""
                return [draft("status", kind="init", session_id=self.session_id, text=f"session started{loaded}")]
            case "permission":
                return self._on_permission(obj)
            case "result":
                handled = self._on_result(obj)
                return [*self._markers.flush(), *handled]
            case "error":
                text = as_str(obj.get("text")) or "the ACP client failed"
                self._mark_terminal(ok=False, error=text)
                details = {**self._cause(text), "bridge": as_str(obj.get("kind"))}
                return [
                    *self._markers.flush(),
                    draft("error", kind="acp", terminal=True, text=clip(text), details=details),
                ]
            case "notice":
                return [draft("status", kind="acp_notice", text=clip(as_str(obj.get("text"))))]
        return [draft("status", kind="unknown", text=f"bridge/{name}")]

    def _on_permission(self, obj: dict[str, Any]) -> list[Draft]:
        tool = as_str(obj.get("tool")) or as_str(obj.get("title")) or as_str(obj.get("kind")) or "?"
        tool_input = as_dict(obj.get("tool_input"))
        reason = as_str(obj.get("reason")) or ""
        details = {"by": as_str(obj.get("by")), "tool_id": as_str(obj.get("toolCallId")), "option": obj.get("optionId")}
        if obj.get("decision") == "allow":
            return [
                draft(
                    "status",
                    kind="permission",
                    tool=tool,
                    tool_input=tool_input or None,
                    text=clip(reason),
                    details=details,
                )
            ]
        if call_id := as_str(obj.get("toolCallId")):
            self._denied.add(call_id)
        self.permission_denials.append(reason)
        return [
            draft(
                "blocker",
                kind="denial",
                tool=tool,
                tool_input=tool_input or None,
                file=as_str(tool_input.get("file_path")),
                text=clip(reason),
                details=details,
            )
        ]

    def _on_result(self, obj: dict[str, Any]) -> list[Draft]:
        self.session_id = as_str(obj.get("sessionId")) or self.session_id
        self._take_usage(as_dict(obj.get("usage")), as_dict(obj.get("meta")))
        stop = as_str(obj.get("stopReason")) or "?"
        if stop == "end_turn":
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
        cause, meaning = _STOPS.get(stop, (None, "the turn ended unfinished"))
        text = f"{meaning} (stop reason {stop})"
        self._mark_terminal(ok=False, error=text)
        return [
            draft(
                "error",
                kind="result",
                terminal=True,
                retryable=False,
                text=text,
                usage=self.usage,
                details={"cause": cause, "stop_reason": stop},
            )
        ]

    def _take_chunk_usage(self, usage: dict[str, Any]) -> None:
        """qwen (0.24.4) puts each model response's usage on a text chunk's ``_meta``, none on
        the prompt's result: summed here, used when the result names none."""
        total = as_int(usage.get("totalTokens"))
        if total is not None:
            self._chunk_tokens += total

    def _take_usage(self, usage: dict[str, Any], meta: dict[str, Any]) -> None:
        """ACP's ``usage`` (``totalTokens``), gemini's ``_meta.quota.token_count``, or qwen's
        chunks' ``_meta.usage``."""
        counted = as_dict(as_dict(meta.get("quota")).get("token_count"))
        if not usage and not counted and self._chunk_tokens:
            usage = {"totalTokens": self._chunk_tokens}
        if usage:
            self.usage = usage
            self.total_tokens = as_int(usage.get("totalTokens")) or as_int(usage.get("total_tokens"))
        elif counted:
            self.usage = counted
            parts = [as_int(counted.get(k)) for k in ("input_tokens", "output_tokens")]
            self.total_tokens = sum(p for p in parts if p is not None) or None

    def _cause(self, text: str) -> dict[str, Any]:
        """The error class of ``text``: this agent's rows first, then the common table."""
        for pattern in self._patterns:
            if pattern.compiled is not None and pattern.compiled.search(text):
                return {"cause": pattern.cause}
        cause, _ = classify(text)
        return {"cause": cause}

    def _flush(self) -> list[Draft]:
        return self._markers.flush()

    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        return _BRIDGE_EXITS.get(returncode, ("unexpected exit code of the ACP client", None))


def _path_of(call: dict[str, Any]) -> str | None:
    raw = as_dict(call.get("rawInput"))
    for key in ("file_path", "filePath", "path", "absolute_path", "abs_path"):
        if value := as_str(raw.get(key)):
            return value
    for location in as_list(call.get("locations")):
        if value := as_str(as_dict(location).get("path")):
            return value
    return None


def _tool_name(call: dict[str, Any]) -> str:
    """The policy's name for the call where there is one (a command is Bash, an edit Write)."""
    kind = as_str(call.get("kind"))
    if kind == "execute":
        return "Bash"
    if kind in WRITE_KINDS:
        return "Write"
    return kind or as_str(call.get("title")) or "tool"


def _content_text(call: dict[str, Any]) -> str | None:
    parts = []
    for item in as_list(call.get("content")):
        item = as_dict(item)
        inner = as_dict(item.get("content"))
        if text := as_str(inner.get("text")):
            parts.append(text)
        elif item.get("type") == "diff" and (path := as_str(item.get("path"))):
            parts.append(f"edited {path}")
    return "\n".join(parts) or None


def bridge_launch(name: str, spec: LaunchSpec, agent_argv: tuple[str, ...]) -> Launch:
    """The run's process: the bridge, with the policy the sandbox gave it, then the agent's command."""
    env = dict(spec.env)
    policy, digest = env.pop(POLICY_ENV, ""), env.pop(POLICY_SHA256_ENV, "")
    argv: list[str] = [sys.executable, "-I", "-m", BRIDGE_MODULE, "--agent", name]
    if policy:
        argv += ["--policy", policy, "--policy-sha256", digest]
    if spec.mode == "read_only":
        argv.append("--read-only")
    if spec.resume_session_id:
        argv += ["--resume", spec.resume_session_id]
    if spec.model:
        argv += ["--model", spec.model]
    return Launch(tuple([*argv, "--", *agent_argv]), env, spec.workdir, stdin=spec.prompt.encode("utf-8"))


# What a CLI's adapter knows that holds whichever way it is driven.
_KNOWLEDGE = (
    "acp_args",
    "acp_port_flag",
    "package",
    "credentials",
    "trust_flag",
    "grant_dir_flag",
    "bypass_flags",
    "advice",
    "colour",
    "vendor_env",
    "state_places",
    "error_patterns",
)


class AcpDriven(AgentAdapter):
    """A built-in CLI run over ACP: everything its adapter knows, but started and read over ACP."""

    protocols = ("acp",)

    def __init__(self, base: AgentAdapter) -> None:
        if base.acp_args is None:
            raise ValueError(f"{base.name} does not speak ACP (its adapter names no acp_args)")
        self.base = base
        self.name = base.name
        self.default_executable = base.default_executable
        # What the base adapter declares per class is this one's per instance (setattr: the
        # base class types them as class variables). The ACP client's own error rows are the
        # generic table's; the CLI's rows still name its own messages.
        for attribute in _KNOWLEDGE:
            setattr(self, attribute, getattr(base, attribute))

    def run_protocol(self, configured: str | None, resuming: bool) -> str:
        """ACP; a resumed run of a CLI whose ``session/load`` cannot find its sessions goes by
        its stream, which can (gemini 0.61: its tool calls are then watched, not asked)."""
        return "stream" if resuming and not self.base.acp_resumes else "acp"

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The bridge with ``<cli> <acp_args> <its ACP options (trust flag, folder grants)> <extra args>``;
        a run ``run_protocol`` sent by the stream, the CLI's own stream launch."""
        if self.run_protocol(None, resuming=bool(spec.resume_session_id)) == "stream":
            env = {k: v for k, v in spec.env.items() if k not in (POLICY_ENV, POLICY_SHA256_ENV)}
            return self.base.build_launch(replace(spec, env=env))
        own, env = self.base.acp_options(spec)
        agent = (*spec.executable, *(self.acp_args or ()), *own, *spec.extra_args)
        return bridge_launch(self.name, replace(spec, env=env), agent)

    def new_parser(self) -> AcpParser:
        return AcpParser(self.name, (*self.error_patterns, *acp_errors(self.name)))

    def parser_for(self, protocol: str) -> StreamParser:
        return self.base.new_parser() if protocol == "stream" else self.new_parser()

    def cli_state(self, env: Mapping[str, str], folders: tuple[Path, ...] = ()) -> CliState:
        return self.base.cli_state(env, folders)

    def env_patterns(self, environ: Mapping[str, str], extra_args: tuple[str, ...]) -> tuple[str, ...]:
        return self.base.env_patterns(environ, extra_args)

    def version_argv(self, executable: tuple[str, ...]) -> tuple[str, ...]:
        return self.base.version_argv(executable)

    def version_env(self) -> Mapping[str, str]:
        return self.base.version_env()

    def install_hint(self) -> str:
        return self.base.install_hint()

    def fix_before_launch(
        self, extra_args: tuple[str, ...], *, allow_bypass: bool, env: Mapping[str, str], euid: int
    ) -> ArgsFixed | None:
        return self.base.fix_before_launch(extra_args, allow_bypass=allow_bypass, env=env, euid=euid)

    def folder_check(self, in_git_repo: bool) -> str:
        return self.base.folder_check(in_git_repo)


class ConfiguredAcpAdapter(AgentAdapter):
    """Any CLI that speaks ACP, known from its ``[agents.<name>]`` table alone."""

    protocols = ("acp",)
    acp_args = ()

    def __init__(
        self,
        name: str,
        command: str,
        state_dirs: tuple[str, ...] = (),
        state_copy: tuple[str, ...] = (),
        install: str | None = None,
    ) -> None:
        argv = tuple(shlex.split(command))
        if not argv:
            raise ValueError(f"[agents.{name}] command is empty")
        self.name = name
        self.command = argv
        self.default_executable = argv[0]
        self._install = install
        # Per instance what adapters declare per class (setattr: typed as class variables). The
        # ACP client's error rows are the generic table's (``acp_errors``). Each state folder
        # gets the session's private copy; ``state_copy`` names what of the user's is copied
        # into it (its settings, its login).
        known: dict[str, Any] = {
            "credentials": f"what {argv[0]} itself needs (pass its variables with [agents.{name}] pass_env)",
            "error_patterns": (),
            "state_places": tuple(
                StatePlace(real=Path(d), name=f"{name}-state-{i}", copied=state_copy) for i, d in enumerate(state_dirs)
            ),
            "advice": MappingProxyType(
                {"crash": f"{name} broke the ACP conversation: check its command in [agents.{name}] and its stderr log"}
            ),
        }
        for attribute, value in known.items():
            setattr(self, attribute, value)

    def build_launch(self, spec: LaunchSpec) -> Launch:
        """The bridge with the configured command (``spec.executable``) and the extra args."""
        return bridge_launch(self.name, spec, (*spec.executable, *spec.extra_args))

    def new_parser(self) -> AcpParser:
        return AcpParser(self.name, (*self.error_patterns, *acp_errors(self.name)))

    def install_hint(self) -> str:
        return self._install or f"put {self.default_executable} on PATH or set [agents.{self.name}] command"

    def demo_argv(self) -> tuple[str, ...]:
        """No demo of its own: the configured command is what runs."""
        return self.command


__all__ = [
    "BRIDGE_MODULE",
    "POLICY_ENV",
    "POLICY_SHA256_ENV",
    "AcpDriven",
    "AcpParser",
    "ConfiguredAcpAdapter",
    "acp_errors",
    "bridge_launch",
]
