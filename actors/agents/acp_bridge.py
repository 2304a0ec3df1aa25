"""The ACP client a run over ACP is: ``python -I -m meta_orchestrator.actors.agents.acp_bridge
[--policy <file> --policy-sha256 <hex>] [--agent NAME] [--read-only] [--resume ID] [--model M] -- <agent command...>``.

The worker starts this as the run's process, inside the OS sandbox, with the prompt on stdin
(never in argv). It starts the agent's ACP command as its child (same process group, so a
pause or a stop reaches both; killed with it), and drives it over the child's stdio: JSON-RPC
2.0, one message a line: ``initialize`` (no fs or terminal capability offered: the agent uses
its own tools, which is what the sandbox confines), ``session/new`` (cwd = the run's folder,
no MCP servers) or ``session/load`` when resuming and the agent can, ``session/set_model`` when
the run names a model, then ``session/prompt``.

Before a tool runs the agent asks ``session/request_permission``; the answer is
``tool_broker.decide``'s, the one decision every CLI's calls get, with the call in the policy's
words (``execute`` -> ``Bash`` + ``command``; ``edit``/``delete``/``move`` -> ``Write`` +
``file_path``; other kinds: allowed, as the policy allows reads). It picks the agent's own
``allow_once`` or ``reject_once`` option.

Its stdout is what the adapter parses (``actors.adapters.acp``): every message the agent sent,
as it is (an ``available_commands_update`` with the commands' names alone), one JSON line
each, and lines of its own, ``{"bridge": <what>, ...}``: ``session`` (the session id),
``permission`` (each decision), ``result`` (the prompt's stop reason and usage), ``notice``
and ``error`` (what went wrong; the exit status is then 1). It never waits on an agent that
died, printed something that is not JSON-RPC, or asked something unknown (that gets a
JSON-RPC error answer). Standard library and the broker only: it runs where the hook does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO, Any

from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV, Policy
from meta_orchestrator.actors.sandbox.tool_broker import BrokerAnswer, decide

PROTOCOL_VERSION = 1
EXIT_GRACE_S = 3.0  # after the result the agent gets this long to exit on its own
WRITE_KINDS = frozenset({"edit", "delete", "move", "write"})
PATH_KEYS = (
    "file_path",
    "filePath",
    "fileName",
    "path",
    "absolute_path",
    "abs_path",
    "notebook_path",
)  # fileName: copilot
METHOD_NOT_FOUND = -32601
PR_SET_PDEATHSIG = 1


class BridgeError(Exception):
    """The run cannot go on; ``kind`` names why (agent_exited, garbage, protocol, rpc_error)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


@dataclass(frozen=True)
class PolicyCall:
    """A permission request in the policy's words: ``tool`` None is a call the policy allows."""

    tool: str | None
    tool_input: dict[str, Any]


def policy_call(tool_call: dict[str, Any]) -> PolicyCall:
    """The call an ACP ``toolCall`` is, named as the policy names calls."""
    kind = tool_call.get("kind")
    raw = tool_call.get("rawInput")
    raw_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if kind == "execute":
        command = raw_input.get("command")
        if isinstance(command, list):
            command = shlex.join(str(part) for part in command)
        if not isinstance(command, str) or not command:
            # The command is not where ACP agents put it: judge the title the user would see.
            command = str(tool_call.get("title") or "")
        return PolicyCall("Bash", {"command": command})
    if kind in WRITE_KINDS:
        path = next((raw_input[k] for k in PATH_KEYS if isinstance(raw_input.get(k), str) and raw_input[k]), None)
        if path is None:
            locations = tool_call.get("locations")
            paths = (
                [loc.get("path") for loc in locations if isinstance(loc, dict)] if isinstance(locations, list) else []
            )
            path = next((p for p in paths if isinstance(p, str) and p), None)
        return PolicyCall("Write", {"file_path": path} if path else {})
    return PolicyCall(None, raw_input)


def commands_by_name(message: dict[str, Any]) -> dict[str, Any]:
    """An ``available_commands_update`` with each command's name alone; any other message as it
    is. qwen's carries every command's description and hints and every skill's whole body
    (about 560 KB a run, in ``_meta``): printed as it is, each run's events would record it,
    and nothing reads more of it than the names."""
    params = message.get("params")
    if not isinstance(params, dict):
        return message
    update = params.get("update")
    if not isinstance(update, dict) or update.get("sessionUpdate") != "available_commands_update":
        return message
    commands = update.get("availableCommands")
    listed = commands if isinstance(commands, list) else []
    names = [c["name"] for c in listed if isinstance(c, dict) and isinstance(c.get("name"), str)]
    shrunk = {"sessionUpdate": "available_commands_update", "availableCommands": [{"name": n} for n in names]}
    return {**message, "params": {**params, "update": shrunk}}


def pick_option(options: Any, allow: bool) -> str | None:
    """The agent's own option for this decision: once rather than always."""
    kinds = ("allow_once", "allow_always") if allow else ("reject_once", "reject_always")
    offered = [o for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    for kind in kinds:
        for option in offered:
            if option.get("kind") == kind and isinstance(option.get("optionId"), str):
                return str(option["optionId"])
    return None


class Bridge:
    """One ACP connection to the child agent, and what it prints for the adapter."""

    def __init__(
        self,
        child: subprocess.Popen[bytes],
        out: IO[str],
        judge: Callable[[PolicyCall, str | None], BrokerAnswer | None],
    ) -> None:
        self._child = child
        self._out = out
        self._judge = judge
        self._next_id = 0
        self.quiet = False  # a session being loaded replays its history: not this run's events
        self.replayed = 0

    # -- what it prints ----------------------------------------------------------------------

    def emit(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._out.flush()

    def note(self, what: str, **fields: Any) -> None:
        self.emit({"bridge": what, **fields})

    # -- JSON-RPC ----------------------------------------------------------------------------

    def send(self, obj: dict[str, Any]) -> None:
        stdin = self._child.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(obj) + "\n").encode())
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise BridgeError("agent_exited", f"the agent stopped reading its input ({exc})") from None

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Call ``method`` and handle what the agent sends meanwhile, until its answer."""
        self._next_id += 1
        my_id = self._next_id
        self.send({"jsonrpc": "2.0", "id": my_id, "method": method, "params": params})
        while True:
            message = self.read()
            if "method" not in message and message.get("id") == my_id:
                self.emit(message)
                if "error" in message:
                    error = message["error"] if isinstance(message["error"], dict) else {}
                    raise BridgeError(
                        "rpc_error",
                        f"the agent answered {method} with error {error.get('code')}: {error.get('message')}",
                    )
                result = message.get("result")
                return result if isinstance(result, dict) else {}
            self.handle(message)

    def read(self) -> dict[str, Any]:
        stdout = self._child.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            code = self._child.poll()
            if code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._child.wait(timeout=EXIT_GRACE_S)
            said = "still running" if code is None else f"exit code {code}"
            raise BridgeError("agent_exited", f"the agent closed its output before answering ({said})")
        try:
            message = json.loads(line)
        except ValueError:
            shown = line[:200].decode("utf-8", errors="replace").strip()
            raise BridgeError("garbage", f"the agent printed a line that is not JSON-RPC: {shown!r}") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise BridgeError("garbage", f"the agent printed JSON that is not a JSON-RPC 2.0 message: {line[:200]!r}")
        return message

    def handle(self, message: dict[str, Any]) -> None:
        """A notification (printed), a request of the agent's (answered), or a stray answer."""
        method = message.get("method")
        if self.quiet and method == "session/update":
            self.replayed += 1
            return
        self.emit(commands_by_name(message) if method == "session/update" else message)
        if method is None or "id" not in message:
            return
        if method == "session/request_permission":
            params = message.get("params")
            self.send({"jsonrpc": "2.0", "id": message["id"], "result": self.permission(params)})
            return
        self.note(
            "notice", kind="unknown_request", text=f"the agent asked {method!r}, which this client does not offer"
        )
        self.send(
            {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": METHOD_NOT_FOUND, "message": f"method not found: {method}"},
            }
        )

    def permission(self, params: Any) -> dict[str, Any]:
        """The broker's decision on one call, as the agent's own option."""
        params = params if isinstance(params, dict) else {}
        tool_call = params.get("toolCall") if isinstance(params.get("toolCall"), dict) else {}
        call = policy_call(tool_call)
        call_id = tool_call.get("toolCallId") if isinstance(tool_call.get("toolCallId"), str) else None
        answer = self._judge(call, call_id)
        allow = answer is None or answer.allow
        option = pick_option(params.get("options"), allow)
        self.note(
            "permission",
            toolCallId=call_id,
            kind=tool_call.get("kind"),
            title=tool_call.get("title"),
            tool=call.tool,
            tool_input=call.tool_input,
            decision="allow" if allow else "deny",
            by=answer.by if answer is not None else "policy",
            reason=answer.reason if answer is not None else "allowed by the policy",
            optionId=option,
        )
        if option is None:
            return {"outcome": {"outcome": "cancelled"}}
        return {"outcome": {"outcome": "selected", "optionId": option}}


def run_session(bridge: Bridge, prompt: str, cwd: str, resume: str | None, model: str | None = None) -> str:
    """initialize, a session (new or loaded), its model, the prompt; returns the stop reason."""
    init = bridge.request(
        "initialize",
        {
            "protocolVersion": PROTOCOL_VERSION,
            "clientCapabilities": {"fs": {"readTextFile": False, "writeTextFile": False}, "terminal": False},
            "clientInfo": {"name": "meta-orchestrator", "version": "1"},
        },
    )
    offered = init.get("agentCapabilities")
    capabilities: dict[str, Any] = offered if isinstance(offered, dict) else {}
    session_id: Any = None
    if resume and capabilities.get("loadSession"):
        bridge.quiet = True
        bridge.request("session/load", {"sessionId": resume, "cwd": cwd, "mcpServers": []})
        bridge.quiet = False
        session_id = resume
        bridge.note("session", sessionId=session_id, loaded=True, replayed=bridge.replayed)
    else:
        if resume:
            bridge.note("notice", kind="no_resume", text="the agent cannot load a session; a new one is started")
        session_id = bridge.request("session/new", {"cwd": cwd, "mcpServers": []}).get("sessionId")
        if not isinstance(session_id, str):
            raise BridgeError("protocol", "the agent's session/new answer names no sessionId")
        bridge.note("session", sessionId=session_id, loaded=False)
    if model:
        choose_model(bridge, session_id, model)
    result = bridge.request("session/prompt", {"sessionId": session_id, "prompt": [{"type": "text", "text": prompt}]})
    stop = result.get("stopReason")
    bridge.note("result", sessionId=session_id, stopReason=stop, usage=result.get("usage"), meta=result.get("_meta"))
    return str(stop)


def choose_model(bridge: Bridge, session_id: str, model: str) -> None:
    """ACP's (unstable) ``session/set_model``; an agent without it keeps its own model, said so."""
    try:
        bridge.request("session/set_model", {"sessionId": session_id, "modelId": model})
    except BridgeError as exc:
        if exc.kind != "rpc_error":
            raise
        bridge.note("notice", kind="model_not_set", text=f"the model stays the agent's own: {exc}")


def load_policy(path: str, digest: str, agent: str) -> Policy:
    """The session's policy for this run, refused when it is not the one the session wrote."""
    with open(path, "rb") as f:
        raw = f.read()
    if digest and not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), digest):
        raise ValueError(f"{path} is not the policy this session wrote (it was changed)")
    policy = Policy.from_json(json.loads(raw.decode("utf-8"))).for_run(os.environ.get(RUN_WORKDIR_ENV))
    return replace(policy, agent=agent) if agent else policy


def make_judge(
    policy: Policy | None, read_only: bool, cwd: str
) -> Callable[[PolicyCall, str | None], BrokerAnswer | None]:
    """The decision on one call: a read-only run writes nothing; else the broker's."""

    def judge(call: PolicyCall, call_id: str | None) -> BrokerAnswer | None:
        if read_only and call.tool == "Write":
            return BrokerAnswer(False, "this run is read-only: it changes no file")
        if policy is None or call.tool is None:
            return None
        return decide(policy, call.tool, call.tool_input, cwd, call_id)

    return judge


def _die_with_parent() -> None:
    """In the child before exec: killed when the bridge dies, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _end_child(child: subprocess.Popen[bytes]) -> None:
    """Close its input, give it a moment to exit, then end it; always reaped."""
    with contextlib.suppress(OSError, ValueError):
        if child.stdin is not None:
            child.stdin.close()
    try:
        child.wait(timeout=EXIT_GRACE_S)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _on_term(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meta_orchestrator.actors.agents.acp_bridge")
    parser.add_argument("--policy", default="")
    parser.add_argument("--policy-sha256", default="")
    parser.add_argument("--agent", default="")
    parser.add_argument("--read-only", action="store_true")
    parser.add_argument("--resume", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("the agent's command is missing after --")
    return args


def main(argv: list[str]) -> int:
    """Drive the agent once; exit 0 when the prompt got its result, 1 on failure, 2 unusable input."""
    out = sys.stdout
    signal.signal(signal.SIGTERM, _on_term)
    try:
        args = _arguments(argv)
        cwd = os.getcwd()
        policy = load_policy(args.policy, args.policy_sha256, args.agent) if args.policy else None
        prompt = sys.stdin.buffer.read().decode("utf-8")
        if not prompt.strip():
            raise ValueError("the prompt on stdin is empty")
    except (OSError, ValueError) as exc:
        out.write(json.dumps({"bridge": "error", "kind": "setup", "text": str(exc)}) + "\n")
        return 2
    try:
        child = subprocess.Popen(  # noqa: S603 - the configured agent command, run as given
            args.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads here
        )
    except OSError as exc:
        out.write(json.dumps({"bridge": "error", "kind": "spawn", "text": f"cannot start {args.command[0]}: {exc}"}))
        out.write("\n")
        return 1
    ended = False
    try:
        bridge = Bridge(child, out, make_judge(policy, args.read_only, cwd))
        run_session(bridge, prompt, cwd, args.resume, args.model)
        ended = True
        return 0
    except BridgeError as exc:
        bridge_note(out, exc.kind, str(exc))
        return 1
    except SystemExit:
        bridge_note(out, "stopped", "the run was stopped; the agent is ended")
        raise
    except Exception as exc:  # noqa: BLE001 - whatever broke, the line says it and the agent is ended
        bridge_note(out, "internal", f"the ACP client failed: {exc!r}")
        return 1
    finally:
        if not ended:
            with contextlib.suppress(OSError):
                child.terminate()  # a failed or stopped run: no grace for the agent
        _end_child(child)


def bridge_note(out: IO[str], kind: str, text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        out.write(json.dumps({"bridge": "error", "kind": kind, "text": text}) + "\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
