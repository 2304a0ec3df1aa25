"""A small ACP agent of the tests' own: JSON-RPC 2.0 over stdio, one message a line.

``python tests/agents/acp_agent.py`` answers ``initialize``, ``session/new``, ``session/load``
(it replays one earlier chunk) and ``session/prompt``. A prompt with the orchestrator's
headers (Kind:, Role:) gets the demo agents' work (``actors.agents.demo.common.run``: a plan,
files written, a review), rendered as ACP ``session/update`` notifications; writes are made
without asking, shell commands only after ``session/request_permission``. Keyword lines in a
prompt script one run for the tests:

* ``ACP:bash <command>``: ask, then run ``sh -c <command>`` in the session's folder if allowed
* ``ACP:write <path>`` / ``ACP:ask-write <path>``: write the file (the second asks first)
* ``ACP:plan``: a plan update
* ``ACP:unknown-request``: ask the client something it does not offer, say what came back
* ``ACP:garbage``: print a line that is not JSON
* ``ACP:die``: exit 3 in the middle of the prompt
* ``ACP:stop <reason>``: end the turn with that stop reason
* ``ACP:auth-error``: answer the prompt with ACP's authentication error

``--version`` prints its version (preflight asks for it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.common import Command, DemoAgent, marker, new_id, run

VERSION = "acp-fixture 1.0.0"
CHUNK = 40
OPTIONS = [
    {"optionId": "yes-once", "name": "Allow", "kind": "allow_once"},
    {"optionId": "yes-always", "name": "Always allow", "kind": "allow_always"},
    {"optionId": "no-once", "name": "Reject", "kind": "reject_once"},
]
_KEYWORD = re.compile(r"^ACP:([a-z-]+)[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read() -> dict[str, Any] | None:
    line = sys.stdin.readline()
    if not line:
        return None
    return json.loads(line)


class AcpDemo(DemoAgent):
    """One prompt turn, rendered as ACP messages."""

    name = "acp"

    def __init__(self, prompt: str, cwd: Path, session_id: str, request_id: Any) -> None:
        super().__init__(prompt, cwd, [], session_id)
        self.request_id = request_id
        self.calls = 0
        self.answered = False

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
        call = {"toolCallId": f"call-{self.calls}", "title": title, "kind": kind, "status": "pending", "rawInput": raw}
        if path:
            call["locations"] = [{"path": path}]
        self.update({"sessionUpdate": "tool_call", **call})
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

    def write(self, path: Path, content: str, ask_first: bool = False) -> bool:
        call = self.tool_call("edit", f"Write {path}", {"file_path": str(path), "content": content}, str(path))
        if ask_first and not self.permitted(call):
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
        code, text = (
            (-32000, "Authentication required") if cause == "auth_error" else (-32603, f"Internal error: {cause}")
        )
        send({"jsonrpc": "2.0", "id": self.request_id, "error": {"code": code, "message": text}})
        self.answered = True
        return 1

    # -- a scripted turn ------------------------------------------------------------------------

    def play(self) -> None:
        if self.headers.get("kind") or self.headers.get("role"):
            run(self)  # the orchestrator's own prompts: the demo agents' work
            return
        self.start()
        for keyword, argument in _KEYWORD.findall(self.prompt):
            if self.keyword(keyword, argument):
                return
        self.say("All done.\n" + marker("milestone", "scripted turn finished", progress=100))
        self.finish(self.last_text)

    def keyword(self, keyword: str, argument: str) -> bool:
        """One scripted step; True when it ended the turn."""
        if keyword == "bash":
            self.say(f"Running `{argument}`.\n" + marker("progress", "running a command", progress=50))
            self.shell(Command(argument, ["sh", "-c", argument], writes=True))
        elif keyword in ("write", "ask-write"):
            self.write(
                self.cwd / argument, f"written by the ACP fixture: {argument}\n", ask_first=keyword == "ask-write"
            )
        elif keyword == "plan":
            entries = [
                {"content": "look", "priority": "high", "status": "completed"},
                {"content": "write", "priority": "medium", "status": "pending"},
            ]
            self.update({"sessionUpdate": "plan", "entries": entries})
        elif keyword == "unknown-request":
            answer = self.ask("fs/mystery", {"sessionId": self.session_id})
            self.say(f"The client answered: {json.dumps(answer.get('error') or answer.get('result'))}\n")
        elif keyword == "garbage":
            self.raw(b"this line is not JSON-RPC\n")
        elif keyword == "die":
            self.say("I am about to crash.\n")
            os._exit(3)
        elif keyword == "stop":
            self.finish(self.last_text, argument or "refusal")
            return True
        elif keyword == "auth-error":
            self.fail("auth_error")
            return True
        return False


def serve() -> int:
    sessions: dict[str, str] = {}
    while (message := read()) is not None:
        method, request_id = message.get("method"), message.get("id")
        params = message.get("params") or {}
        if method == "initialize":
            result = {
                "protocolVersion": 1,
                "agentCapabilities": {"loadSession": True, "promptCapabilities": {}},
                "authMethods": [],
                "agentInfo": {"name": "acp-fixture", "version": VERSION},
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
        elif method == "session/prompt":
            text = "".join(b.get("text", "") for b in params.get("prompt", []) if isinstance(b, dict))
            session_id = params.get("sessionId")
            turn = AcpDemo(text, Path(sessions.get(session_id, os.getcwd())), session_id, request_id)
            turn.play()
            if not turn.answered:
                turn.finish(turn.last_text)
        elif request_id is not None and method is not None:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no {method}"}})
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--version"]:
        print(VERSION)
        sys.exit(0)
    sys.exit(serve())
