"""The demo agents over ACP (``gemini --acp``, ``qwen --acp``, ``copilot --acp``, ``opencode acp``).

JSON-RPC 2.0 over stdio, one message a line: ``initialize``, ``session/new``, ``session/load``
(it replays one earlier chunk), ``session/set_model`` and ``session/prompt``. A prompt turn is
the demo's work (``common.run``: a plan, files written, a review, the scenarios) rendered as
``session/update`` notifications; like the real CLIs driven this way, every edit and shell
command is asked first (``session/request_permission``) and runs only if the client allows it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.common import Command, DemoAgent, new_id, run

CHUNK = 40
OPTIONS = [
    {"optionId": "yes-once", "name": "Allow", "kind": "allow_once"},
    {"optionId": "yes-always", "name": "Always allow", "kind": "allow_always"},
    {"optionId": "no-once", "name": "Reject", "kind": "reject_once"},
]
# A failure scenario -> the JSON-RPC error a prompt is answered with (the words each class is known by).
FAILURES: dict[str, tuple[int, str]] = {
    "auth_error": (-32000, "Authentication required"),
    "rate_limit": (-32603, "[demo] 429 Too Many Requests: rate limit exceeded, retry later"),
    "server_error": (-32603, "[demo] 500 Internal Server Error: the model service failed"),
    "license_refused": (-32603, "[demo] 403 Forbidden: your licence does not allow this client"),
    "client_retired": (-32603, "[demo] This client is no longer supported"),
}


def send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def read() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    if not line:
        return None
    return json.loads(line)


class AcpTurn(DemoAgent):
    """One prompt turn of a demo CLI, rendered as ACP messages."""

    def __init__(self, name: str, prompt: str, cwd: Path, session_id: str, request_id: Any, ask_writes: bool) -> None:
        self.name = name  # before DemoAgent's init: the scenario is looked up by it
        super().__init__(prompt, cwd, [], session_id)
        self.request_id = request_id
        self.ask_writes = ask_writes
        self.calls = 0
        self.answered = False
        self.failures = FAILURES

    # -- ACP ------------------------------------------------------------------------------------

    def update(self, update: dict[str, Any], pace: bool = True) -> None:
        self.emit(
            {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": self.session_id, "update": update}},
            pace,
        )

    def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request of the agent's; the client's answer (result or error)."""
        self.calls += 1
        my_id = f"agent-{self.calls}"
        send({"jsonrpc": "2.0", "id": my_id, "method": method, "params": params})
        while (message := read()) is not None:
            if message.get("id") == my_id and "method" not in message:
                return message
        sys.exit(4)  # the client went away

    def permitted(self, tool_call: dict[str, Any]) -> bool:
        answer = self.ask(
            "session/request_permission", {"sessionId": self.session_id, "toolCall": tool_call, "options": OPTIONS}
        )
        outcome = answer.get("result", {}).get("outcome", {})
        return outcome.get("outcome") == "selected" and outcome.get("optionId", "").startswith("yes")

    def tool_call(self, kind: str, title: str, raw: dict[str, Any], path: str | None = None) -> dict[str, Any]:
        self.calls += 1
        call: dict[str, Any] = {
            "toolCallId": f"call-{self.calls}",
            "title": title,
            "kind": kind,
            "status": "pending",
            "rawInput": raw,
        }
        if path:
            call["locations"] = [{"path": path}]
        self.update({"sessionUpdate": "tool_call", **call})
        self.tool_calls += 1
        return call

    def done(self, call: dict[str, Any], ok: bool, text: str, diff: dict[str, Any] | None = None) -> None:
        content = [diff] if diff else [{"type": "content", "content": {"type": "text", "text": text}}]
        status = "completed" if ok else "failed"
        self.update(
            {
                "sessionUpdate": "tool_call_update",
                "toolCallId": call["toolCallId"],
                "status": status,
                "content": content,
            }
        )

    # -- the demo's actions -----------------------------------------------------------------------

    def start(self) -> None:
        self.update({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "Reading the task."}})

    def say(self, text: str) -> None:
        self.count("", text)
        text = text if text.endswith("\n") else text + "\n"
        self.last_text += text
        for i in range(0, len(text), CHUNK):  # chunks cut anywhere, markers too
            self.update(
                {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text[i : i + CHUNK]}}
            )

    def write(self, path: Path, content: str, ask_first: bool | None = None) -> bool:
        call = self.tool_call("edit", f"Write {path}", {"file_path": str(path), "content": content}, str(path))
        if (self.ask_writes if ask_first is None else ask_first) and not self.permitted(call):
            self.done(call, False, "the user rejected this edit")
            return False
        try:
            self.do_write(path, content)
        except OSError as exc:
            self.done(call, False, f"{exc}")
            return False
        self.done(call, True, "", {"type": "diff", "path": str(path), "oldText": None, "newText": content})
        return True

    def shell(self, command: Command) -> str | None:
        call = self.tool_call("execute", command.display, {"command": command.display})
        if not self.permitted(call):
            self.done(call, False, "the user rejected this command")
            return None
        out, code = self.run_command(command)
        self.done(call, code == 0, out or f"exit code {code}")
        return out

    def noise(self, i: int) -> None:
        self.update(
            {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": f"noise {i}\n"}}, False
        )

    def finish(self, final_text: str, stop: str = "end_turn") -> int:
        usage = {
            "inputTokens": self.tokens_in,
            "outputTokens": self.tokens_out,
            "totalTokens": self.tokens_in + self.tokens_out,
        }
        send({"jsonrpc": "2.0", "id": self.request_id, "result": {"stopReason": stop, "usage": usage}})
        self.answered = True
        return 0

    def fail(self, cause: str) -> int:
        code, text = self.failures.get(cause, (-32603, f"Internal error: {cause}"))
        send({"jsonrpc": "2.0", "id": self.request_id, "error": {"code": code, "message": text}})
        self.answered = True
        return 1

    def play(self) -> int:
        """The turn; the code the process exits with when the scenario ends it (crash, failure)."""
        return run(self)


def serve(
    name: str,
    version: str,
    turn: type[AcpTurn] = AcpTurn,
    ask_writes: bool = True,
    set_model: bool = True,
    failures: dict[str, tuple[int, str]] | None = None,
) -> int:
    """Answer the client until it closes stdin; a turn that crashed or failed ends the process
    with its code, as a real agent's would. ``set_model`` False: no ``session/set_model``;
    ``failures``: the CLI's own words for a failure scenario (else ``FAILURES``)."""
    sessions: dict[str, str] = {}
    while (message := read()) is not None:
        method, request_id = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": 1,
                "agentCapabilities": {"loadSession": True, "promptCapabilities": {}},
                "authMethods": [],
                "agentInfo": {"name": name, "version": version},
            }
            send({"jsonrpc": "2.0", "id": request_id, "result": result})
        elif method == "session/new":
            session_id = new_id()
            sessions[session_id] = params.get("cwd") or os.getcwd()
            send({"jsonrpc": "2.0", "id": request_id, "result": {"sessionId": session_id}})
        elif method == "session/load":
            sessions[params["sessionId"]] = params.get("cwd") or os.getcwd()
            update = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "an earlier turn\n"}}
            send(
                {
                    "jsonrpc": "2.0",
                    "method": "session/update",
                    "params": {"sessionId": params["sessionId"], "update": update},
                }
            )
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "session/set_model" and set_model:
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "session/prompt":
            text = "".join(b.get("text", "") for b in params.get("prompt", []) if isinstance(b, dict))
            session_id = str(params.get("sessionId"))
            cwd = Path(sessions.get(session_id, os.getcwd()))
            current = turn(name, text, cwd, session_id, request_id, ask_writes)
            current.failures = {**FAILURES, **(failures or {})}
            code = current.play()
            if code:
                return code
            if not current.answered:
                current.finish(current.last_text)
        elif request_id is not None and method is not None:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no {method}"}})
    return 0
