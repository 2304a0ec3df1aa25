"""Codex through ``codex app-server``: asked before every command and patch, by the one broker.

Run as the run's process (inside the OS sandbox, like claude's hook: isolated interpreter)::

    python -I -m meta_orchestrator.actors.agents.codex_app_bridge [--policy <file> --policy-sha256 <hex>]
        --cwd <workdir> --sandbox <mode> [--model M] [--resume <thread id>] -- codex app-server ...

It starts codex's JSON-RPC server as its child (same process group: a stop of the run's group
ends both; the child also dies with the bridge), reads the prompt from its own stdin (never
argv), then ``initialize`` / ``initialized``, ``thread/start`` (or ``thread/resume``) with an
approval policy that asks before every command and patch, and ``turn/start``. Codex's requests

* ``item/commandExecution/requestApproval`` -> ``tool_broker.decide("Bash", {"command"})``
* ``item/fileChange/requestApproval`` -> ``decide("Write"|"Edit", {"file_path"})`` per path (the
  paths come from the item's ``item/started``: the request names only the item); any one
  denied -> ``decline``
* ``item/permissions/requestApproval`` -> each write path as a ``Write``; nothing is granted
  unless every one is allowed (network or patterns: never)

are answered ``accept`` / ``decline``; any other request gets a JSON-RPC error. Stdout: one
JSON line per notification codex sent, as codex sent it, plus the bridge's own lines
(``{"bridge": "thread" | "approval" | "request" | "end", ...}``). Exit 0 when the turn
completed, 1 when it failed or codex broke the protocol or died, 2 on a usage error.

Standard library only (and the broker): it runs inside the OS sandbox beside codex.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV, Policy
from meta_orchestrator.actors.sandbox.tool_broker import BrokerAnswer, decide

AGENT = "codex"
# Asks before every command and every patch (measured with codex 0.169.0: even ``ls`` is asked
# under danger-full-access); "on-request" would let the model decide when to ask.
APPROVAL_POLICY = "untrusted"
# No sandbox policy (the guard is off): codex asks nothing and its own sandbox decides, as in
# exec. Accepting its asks instead would widen it: an accepted patch is written wherever it
# points, even outside workspace-write's folders (measured with 0.169.0).
UNGUARDED_APPROVAL_POLICY = "never"
REPLY_TIMEOUT_S = 120.0  # codex answers initialize / thread/start / turn/start in well under this
STOP_GRACE_S = 3.0
METHOD_NOT_FOUND = -32601
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Per-token and per-chunk notifications: the completed items carry the whole text and output,
# so these would only flood the run's event log (initialize's optOutNotificationMethods).
NOT_WANTED = (
    "item/agentMessage/delta",
    "item/reasoning/textDelta",
    "item/reasoning/summaryTextDelta",
    "item/reasoning/summaryPartAdded",
    "item/commandExecution/outputDelta",
    "item/fileChange/outputDelta",
    "command/exec/outputDelta",
    "account/rateLimits/updated",
)
_PR_SET_PDEATHSIG = 1


class BridgeError(Exception):
    """Codex broke the protocol, died, or refused a request: the run ends with this message."""


def emit(obj: dict[str, Any]) -> None:
    """One line on stdout, at once (the worker records lines as they come)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (codex's messages are checked, not trusted)."""
    return value if isinstance(value, dict) else {}


def load_policy(path: str | None, sha256: str, workdir: str | None) -> Policy | None:
    """The session's policy for this run, checked against its hash like the hook does; None
    without one (no sandbox guard: codex is told not to ask, its own sandbox decides)."""
    if not path:
        return None
    with open(path, "rb") as f:
        raw = f.read()
    if sha256 and not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), sha256):
        raise BridgeError(f"{path} is not the policy this session wrote (it was changed)")
    policy = Policy.from_json(json.loads(raw.decode("utf-8"))).for_run(workdir)
    return replace(policy, agent=AGENT)


def _die_with_parent() -> None:
    """In the child before exec: killed when the bridge dies, whatever killed the bridge."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """Codex's app-server process: its stdin for our messages, a thread reading its stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - the argv is the worker's
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._read, name="codex-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # EOF: codex closed its stdout (it exited or is dying)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE_S)
            if self.proc.returncode is not None:
                raise BridgeError(self._exited()) from None
            raise BridgeError(f"codex app-server stopped reading its input ({exc})") from None

    def next_message(self, timeout_s: float | None) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise BridgeError(f"codex app-server sent nothing for {timeout_s:g}s") from None
        if line is None:
            self.proc.wait()
            raise BridgeError(self._exited())
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BridgeError(f"codex app-server sent a line that is not JSON ({exc}): {line[:200]!r}") from None
        if not isinstance(obj, dict):
            raise BridgeError(f"codex app-server sent JSON that is not a message: {line[:200]!r}")
        return obj

    def _exited(self) -> str:
        return f"codex app-server exited (exit {self.proc.returncode}) before the turn ended"

    def stop(self) -> int | None:
        """End codex (its stdin closed, then TERM, then KILL) and reap it."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.proc.send_signal(sig)
            try:
                return self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.poll()


@dataclass
class Bridge:
    """One run: the JSON-RPC conversation with codex, its approvals, the turn's end."""

    child: Child
    policy: Policy | None
    cwd: str
    next_id: int = 1
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # item id -> its item/started item
    turn_end: dict[str, Any] | None = None

    # -- requests we make -------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Send a request; handle whatever codex sends meanwhile; its result (or BridgeError)."""
        request_id = self.next_id
        self.next_id += 1
        self.child.send({"id": request_id, "method": method, "params": params})
        while True:
            msg = self.child.next_message(REPLY_TIMEOUT_S)
            if msg.get("id") == request_id and "method" not in msg:
                if isinstance(msg.get("error"), dict):
                    error = msg["error"]
                    raise BridgeError(f"{method}: {error.get('message') or error} (code {error.get('code')})")
                result = msg.get("result")
                if not isinstance(result, dict):
                    raise BridgeError(f"{method}: codex answered without a result object")
                return result
            self.handle(msg)

    def run_turn(self) -> dict[str, Any]:
        """Handle everything codex sends until its ``turn/completed``; that turn."""
        while self.turn_end is None:
            self.handle(self.child.next_message(None))  # a turn may wait on the user: no deadline here
        return self.turn_end

    # -- what codex sends -------------------------------------------------------------------------

    def handle(self, msg: dict[str, Any]) -> None:
        method = msg.get("method")
        if not isinstance(method, str):
            if "id" in msg and ("result" in msg or "error" in msg):
                return  # an answer to a request we no longer wait for
            raise BridgeError(f"codex app-server sent a message that is neither request nor notification: {msg}")
        params = _dict(msg.get("params"))
        if "id" in msg:
            self.answer(msg["id"], method, params)
            return
        emit(msg)
        if method == "item/started" and isinstance(params.get("item"), dict):
            item = params["item"]
            self.items[str(item.get("id"))] = item
        elif method == "turn/completed":
            self.turn_end = _dict(params.get("turn"))

    def answer(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        """Answer one request codex made."""
        judge = {
            "item/commandExecution/requestApproval": self._command,
            "item/fileChange/requestApproval": self._file_change,
            "item/permissions/requestApproval": self._permissions,
        }.get(method)
        if judge is None:
            emit({"bridge": "request", "method": method, "answered": "error", "params": params})
            message = f"{method} is not supported by the orchestrator's codex bridge"
            self.child.send({"id": request_id, "error": {"code": METHOD_NOT_FOUND, "message": message}})
            return
        result = judge(params)
        self.child.send({"id": request_id, "result": result})

    def _command(self, params: dict[str, Any]) -> dict[str, Any]:
        command = shell_script(str(params.get("command") or ""))
        cwd = str(params.get("cwd") or self.cwd)
        answer = self._decide("Bash", {"command": command}, cwd, params)
        decision = "accept" if answer.allow else "decline"
        self._record(params, "Bash", {"command": command}, decision, answer)
        return {"decision": decision}

    def _file_change(self, params: dict[str, Any]) -> dict[str, Any]:
        item = self.items.get(str(params.get("itemId")))
        calls = file_change_calls(item)
        if not calls:  # fail closed: a patch whose paths we never saw is not approved blind
            answer = BrokerAnswer(False, "the patch's files are unknown (no item/started for it)", "default")
            self._record(params, "Write", {}, "decline", answer)
            return {"decision": "decline"}
        for tool, path in calls:
            answer = self._decide(tool, {"file_path": path}, self.cwd, params)
            self._record(params, tool, {"file_path": path}, "accept" if answer.allow else "decline", answer)
            if not answer.allow:
                return {"decision": "decline"}
        return {"decision": "accept"}

    def _permissions(self, params: dict[str, Any]) -> dict[str, Any]:
        asked = _dict(params.get("permissions"))
        writes, other = permission_writes(asked)
        granted = not other
        for path in writes:
            answer = self._decide("Write", {"file_path": path}, str(params.get("cwd") or self.cwd), params)
            self._record(params, "Write", {"file_path": path}, "accept" if answer.allow else "decline", answer)
            granted = granted and answer.allow
        if other:
            why = BrokerAnswer(False, f"not in the policy's words, so not granted: {', '.join(other)}", "policy")
            self._record(params, "permissions", {"requested": other}, "decline", why)
        return {"permissions": asked if granted else {}, "scope": "turn"}

    def _decide(self, tool: str, tool_input: dict[str, Any], cwd: str, params: dict[str, Any]) -> BrokerAnswer:
        if self.policy is None:
            return BrokerAnswer(False, "no sandbox policy for this run, and codex was told not to ask", "none")
        answer = decide(self.policy, tool, tool_input, cwd, str(params.get("itemId") or "") or None)
        return answer or BrokerAnswer(True, "allowed by the sandbox policy")

    @staticmethod
    def _record(
        params: dict[str, Any], tool: str, tool_input: dict[str, Any], decision: str, answer: BrokerAnswer
    ) -> None:
        emit(
            {
                "bridge": "approval",
                "itemId": params.get("itemId"),
                "tool": tool,
                "input": tool_input,
                "decision": decision,
                "by": answer.by,
                "reason": answer.reason,
            }
        )


def shell_script(command: str) -> str:
    """The command the model asked for: codex runs each as ``/bin/bash -lc '<script>'`` (0.169.0),
    which the policy would take for a nested shell; the script is what is judged."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    shells = ("bash", "sh", "zsh", "dash")
    if len(words) == 3 and os.path.basename(words[0]) in shells and words[1] in ("-c", "-lc", "-ic"):
        return words[2]
    return command


def file_change_calls(item: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A fileChange item's changes in the policy's words: ``Write`` for a new file, ``Edit``
    for an update or delete, and a move's destination as a ``Write``."""
    calls: list[tuple[str, str]] = []
    for change in (item or {}).get("changes") or []:
        if not isinstance(change, dict) or not isinstance(change.get("path"), str):
            continue
        kind = _dict(change.get("kind"))
        calls.append(("Write" if kind.get("type") == "add" else "Edit", change["path"]))
        if isinstance(kind.get("move_path"), str):
            calls.append(("Write", kind["move_path"]))
    return calls


def permission_writes(asked: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The write paths a permissions request names, and what else it asks (never granted)."""
    fs = _dict(asked.get("fileSystem"))
    writes = [p for p in fs.get("write") or [] if isinstance(p, str)]
    other: list[str] = []
    for entry in fs.get("entries") or []:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, dict) or entry.get("access") == "read":
            continue
        if path.get("type") == "path" and isinstance(path.get("path"), str):
            writes.append(path["path"])
        else:
            other.append(f"{entry.get('access')} {path.get('pattern') or path.get('value')}")
    network = _dict(asked.get("network"))
    if network.get("enabled"):
        other.append("network")
    return writes, other


def thread_params(args: argparse.Namespace, guarded: bool) -> dict[str, Any]:
    """``thread/start`` / ``thread/resume``: where, how sandboxed, asking before every call
    (``guarded``: there is a policy to ask)."""
    approval = APPROVAL_POLICY if guarded else UNGUARDED_APPROVAL_POLICY
    params: dict[str, Any] = {"cwd": args.cwd, "sandbox": args.sandbox, "approvalPolicy": approval}
    if args.model:
        params["model"] = args.model
    if args.resume:
        params["threadId"] = args.resume
    return params


def converse(bridge: Bridge, args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """initialize, the thread, one turn with ``prompt``; the finished turn."""
    client = {"name": "meta-orchestrator", "title": None, "version": "1"}
    bridge.call("initialize", {"clientInfo": client, "capabilities": {"optOutNotificationMethods": list(NOT_WANTED)}})
    bridge.child.send({"method": "initialized"})
    started = bridge.call(
        "thread/resume" if args.resume else "thread/start", thread_params(args, bridge.policy is not None)
    )
    thread = _dict(started.get("thread"))
    thread_id = thread.get("id")
    if not isinstance(thread_id, str):
        raise BridgeError("codex started no thread (its answer names no thread id)")
    emit({"bridge": "thread", "threadId": thread_id, "resumed": bool(args.resume), "model": started.get("model")})
    text_input = [{"type": "text", "text": prompt, "text_elements": []}]
    bridge.call("turn/start", {"threadId": thread_id, "input": text_input})
    return bridge.run_turn()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meta_orchestrator.actors.agents.codex_app_bridge")
    parser.add_argument("--policy", default=None)
    parser.add_argument("--policy-sha256", default="")
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--sandbox", choices=("read-only", "workspace-write", "danger-full-access"), required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("the codex app-server command is missing after --")
    return args


def _stop_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    """Run one turn; the exit status says how it went."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    child: Child | None = None
    try:
        policy = load_policy(args.policy, args.policy_sha256, os.environ.get(RUN_WORKDIR_ENV) or args.cwd)
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise BridgeError("no prompt on stdin")
        child = Child(args.command)
        turn = converse(Bridge(child, policy, args.cwd), args, prompt)
        status = str(turn.get("status") or "?")
        error = turn.get("error") if isinstance(turn.get("error"), dict) else None
        emit({"bridge": "end", "status": status, "error": (error or {}).get("message")})
        return EXIT_OK if status == "completed" else EXIT_FAILED
    except (BridgeError, OSError, ValueError, KeyError) as exc:
        emit({"bridge": "end", "status": "failed", "error": str(exc)})
        return EXIT_FAILED
    finally:
        if child is not None:
            child.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
