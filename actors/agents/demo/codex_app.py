"""Demo ``codex app-server``: the JSON-RPC of codex-cli 0.169.0 over stdio, one thread, one turn.

Messages as the real server sends them (no ``"jsonrpc"`` member; requests to the client count
from 0): it answers ``initialize``, ``thread/start`` / ``thread/resume`` and ``turn/start``, then
plays the demo scenario as notifications (``turn/started``, ``item/started`` /
``item/completed`` with camelCase items, ``thread/tokenUsage/updated``, ``error``,
``turn/completed``) and asks ``item/commandExecution/requestApproval`` /
``item/fileChange/requestApproval`` before each command and patch, doing it only on ``accept``.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.common import Command, DemoAgent, UsageExit, new_id, run, within

FAILURES = {
    "auth_error": (
        "unexpected status 401 Unauthorized: [demo] invalid_api_key, url: https://api.openai.com/v1/responses"
    ),
    "rate_limit": "exceeded retry limit, last status: 429 Too Many Requests",
    "server_error": "We’re currently experiencing high demand, which may cause temporary errors.",
}


class Rpc:
    """The client on our stdin/stdout: one JSON message a line."""

    def __init__(self) -> None:
        self.next_id = 0

    @staticmethod
    def send(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    @staticmethod
    def read() -> dict[str, Any]:
        line = sys.stdin.readline()
        if not line:
            raise UsageExit("[demo] the client closed stdin", 0)
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise UsageExit(f"[demo] not a JSON-RPC message: {line[:100]}")
        return obj

    def expect(self, *methods: str) -> dict[str, Any]:
        """The next request or notification of the client, which must be one of ``methods``."""
        while True:
            msg = self.read()
            if msg.get("method") in methods:
                return msg
            if "id" in msg and "method" in msg:
                self.send({"id": msg["id"], "error": {"code": -32600, "message": f"[demo] unexpected {msg['method']}"}})

    def ask(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """A request to the client; its result."""
        request_id = self.next_id
        self.next_id += 1
        self.send({"method": method, "id": request_id, "params": params})
        while True:
            msg = self.read()
            result = msg.get("result")
            if msg.get("id") == request_id and "method" not in msg:
                return result if isinstance(result, dict) else {}


class CodexAppServer(DemoAgent):
    """One turn of the demo codex, rendered as app-server notifications."""

    name = "codex"

    def __init__(self, rpc: Rpc, prompt: str, thread: dict[str, Any], turn_id: str) -> None:
        super().__init__(prompt, Path(thread["cwd"]), [], thread["id"])
        self.rpc = rpc
        self.sandbox = thread["sandbox"]
        self.asks = thread["approval"] != "never"  # "never": its sandbox alone decides, as in exec
        self.turn_id = turn_id
        self.item = 0
        self.turn_over = False  # turn/completed sent: the server waits for the client to leave

    def note(self, method: str, **params: Any) -> None:
        self.rpc.send({"method": method, "params": {"threadId": self.session_id, **params}})

    def _item(self, phase: str, item: dict[str, Any]) -> None:
        self.note(f"item/{phase}", item=item, turnId=self.turn_id)

    def _new_item(self) -> str:
        self.item += 1
        return f"item_{self.item}"

    def start(self) -> None:
        self.note("turn/started", turn={"id": self.turn_id, "items": [], "status": "inProgress", "error": None})
        text = f"[demo] Planning how to handle: {self.task[:120]}"
        self._item("completed", {"type": "reasoning", "id": self._new_item(), "summary": [text], "content": []})

    def say(self, text: str) -> None:
        self.count("", text)
        self.last_text = text
        item = {"type": "agentMessage", "id": self._new_item(), "text": text, "phase": None}
        self._item("started", item)
        self._item("completed", item)

    def noise(self, i: int) -> None:
        self.say(f"[demo] flood line {i}")

    def write(self, path: Path, content: str) -> bool:
        self.tool_calls += 1
        self.count(content, content)
        if self.sandbox == "read-only" or (self.sandbox == "workspace-write" and not within(path, self.roots())):
            self.say(f"[demo] I could not write {path}: Read-only file system (os error 30).")
            return False
        kind = "update" if path.exists() else "add"
        changes = [{"path": str(path), "kind": {"type": kind}, "diff": content}]
        item: dict[str, Any] = {
            "type": "fileChange",
            "id": self._new_item(),
            "status": "inProgress",
            "changes": changes,
        }
        self._item("started", item)
        if not self._allowed("item/fileChange/requestApproval", self._approval(item["id"])):
            self._item("completed", {**item, "status": "declined"})
            return False
        self.do_write(path, content)
        self._item("completed", {**item, "status": "completed"})
        return True

    def shell(self, command: Command) -> str | None:
        self.tool_calls += 1
        shown = f"/bin/bash -lc {shlex.quote(command.display)}"
        item: dict[str, Any] = {"type": "commandExecution", "id": self._new_item(), "command": shown}
        item.update(cwd=str(self.cwd), status="inProgress", aggregatedOutput=None, exitCode=None, commandActions=[])
        self._item("started", item)
        params = {**self._approval(item["id"]), "command": shown, "cwd": str(self.cwd), "kind": "command"}
        if not self._allowed("item/commandExecution/requestApproval", params):
            self._item("completed", {**item, "status": "declined"})
            return None
        out, code = self.run_command(command)
        self.count(out, "")
        status = "completed" if code == 0 else "failed"
        self._item("completed", {**item, "status": status, "aggregatedOutput": out, "exitCode": code})
        return out

    def _allowed(self, method: str, params: dict[str, Any]) -> bool:
        """Asked first (unless told never to ask): only ``accept`` lets it run."""
        return not self.asks or self.rpc.ask(method, params).get("decision") in ("accept", "acceptForSession")

    def _approval(self, item_id: str) -> dict[str, Any]:
        return {"threadId": self.session_id, "turnId": self.turn_id, "itemId": item_id, "startedAtMs": 0}

    def _usage(self) -> None:
        total = {
            "totalTokens": self.tokens_in + self.tokens_out,
            "inputTokens": self.tokens_in,
            "cachedInputTokens": self.tokens_in // 6,
            "outputTokens": self.tokens_out,
            "reasoningOutputTokens": self.tokens_out // 4,
        }
        self.note("thread/tokenUsage/updated", turnId=self.turn_id, tokenUsage={"total": total, "last": total})

    def finish(self, final_text: str) -> int:
        self._usage()
        self.note("turn/completed", turn={"id": self.turn_id, "items": [], "status": "completed", "error": None})
        self.turn_over = True
        return 0

    def fail(self, cause: str) -> int:
        message = FAILURES[cause]
        error = {"message": message, "codexErrorInfo": None, "additionalDetails": None}
        self.note("error", error=error, willRetry=False, turnId=self.turn_id)
        self.note("turn/completed", turn={"id": self.turn_id, "items": [], "status": "failed", "error": error})
        self.turn_over = True
        return 0  # the server lives on; the client ends it by closing stdin


def main(argv: list[str]) -> int:
    """``codex app-server [options]``: serve one client until the turn is over."""
    rpc = Rpc()
    init = rpc.expect("initialize")
    rpc.send({"id": init["id"], "result": {"userAgent": "codex_demo/0.169.0", "platformOs": "linux"}})
    rpc.expect("initialized")
    start = rpc.expect("thread/start", "thread/resume")
    params = start.get("params") or {}
    thread = {
        "id": params.get("threadId") or new_id(),
        "cwd": params.get("cwd") or str(Path.cwd()),
        "sandbox": params.get("sandbox") or "read-only",
        "approval": params.get("approvalPolicy") or "on-request",
    }
    rpc.send({"id": start["id"], "result": {"thread": {"id": thread["id"]}, "model": params.get("model") or "demo"}})
    turn = rpc.expect("turn/start")
    texts = [i.get("text", "") for i in (turn.get("params") or {}).get("input") or [] if isinstance(i, dict)]
    turn_id = new_id()
    rpc.send({"id": turn["id"], "result": {"turn": {"id": turn_id, "items": [], "status": "inProgress"}}})
    agent = CodexAppServer(rpc, "\n".join(texts), thread, turn_id)
    code = run(agent)
    if agent.turn_over:
        sys.stdin.read()  # the client ends the server by closing its stdin
    return code
