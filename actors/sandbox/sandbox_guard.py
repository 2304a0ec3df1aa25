"""SandboxGuard actor: the local channel claude's hook asks over, and the tool-call watch.

* At start it writes the session's sandbox files (``sandbox/policy.json`` and the claude
  settings with the PreToolUse hook) and listens on a Unix socket in a fresh 0700 directory,
  so only this user's processes can reach it.
* A hook asking about a high-risk call becomes an ``AskQuestion(kind="confirmation")`` to
  the coordinator (console now, the dashboard later) with the configured timeout and a
  default of no; the answer, or the expiry, goes back to the waiting hook.
* Every agent's recorded tool calls are searched for suspicious patterns; a match is a
  ``finding`` (``SecurityFinding``, appended to ``security.jsonl``) and, per the config, the
  worker is paused (and the user asked whether to let it go on) or stopped.

Threads only move bytes: the socket server's handler threads tell the actor and wait on
their own inbox; all decisions happen in the actor.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import selectors
import shutil
import socketserver
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import pykka

from meta_orchestrator.actors.adapters.registry import hooked_agent
from meta_orchestrator.actors.sandbox.hook_launch import claude_settings, hook_command, hook_deadline_s, pinned_env
from meta_orchestrator.actors.sandbox.policy import (
    BUILTIN_BLOCKED,
    BUILTIN_HIGH_RISK,
    Policy,
    find_suspicious,
    rules,
)
from meta_orchestrator.actors.files.session_files import open_private, private_dir, write_json_atomic
from meta_orchestrator.actors.supervision.supervision import ReplyInbox, report_crash_of, tell_all
from meta_orchestrator.config.settings import SandboxSettings
from meta_orchestrator.messages.base import worker_name
from meta_orchestrator.messages.events import Event, EventPayload
from meta_orchestrator.messages.resources import WatchWorkers
from meta_orchestrator.messages.sandbox import (
    ApprovalRequested,
    GetSandboxFiles,
    SandboxFiles,
    SecurityFinding,
    ToolCallBlockedReported,
    ToolCallDecided,
    ToolCallSummary,
)
from meta_orchestrator.messages.session import (
    AskQuestion,
    Question,
    QuestionAnswered,
    SandboxCallSubject,
    SecurityFindingSubject,
)
from meta_orchestrator.messages.worker import (
    EventsRecorded,
    PauseWorker,
    ResumeWorker,
    StopWorker,
    WorkerStateChanged,
)
import contextlib

log = logging.getLogger(__name__)

HOOK_TIMEOUT_MARGIN_S = 30  # claude kills a hook after its timeout; ours must answer first
MAX_REQUEST_BYTES = 1_000_000
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux


class _Channel(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The hooks' socket. Its loop sleeps until a connection or a stop: a stop wakes it
    through a pipe (socketserver's own loop would poll for it, idle or not)."""

    daemon_threads = True
    guard: pykka.ActorRef[Any]
    wait_s: float
    hook_agent: str  # the CLI whose tool hook asks over this channel
    secret: str

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(path, handler)
        self._wake_r, self._wake_w = os.pipe()
        self._wake_fds: tuple[int, ...] = (self._wake_r, self._wake_w)
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._served = threading.Event()
        self._served.set()  # not serving yet: a shutdown has nothing to wait for

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._served.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self:
                            self._handle_request_noblock()  # type: ignore[attr-defined]  # socketserver's own
        finally:
            self._served.set()

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self._wake_w, b"\0")
        self._served.wait(timeout=5)

    def server_close(self) -> None:
        super().server_close()
        fds, self._wake_fds = getattr(self, "_wake_fds", ()), ()  # werkzeug closes in __init__ too
        for fd in fds:  # once: a number closed twice may be someone else's by then
            os.close(fd)


class _ChannelHandler(socketserver.StreamRequestHandler):
    """One hook connection: one JSON line in, (for an ask) one JSON line out."""

    server: _Channel

    def handle(self) -> None:
        try:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            request = json.loads(line.decode() or "null")
            if not isinstance(request, dict):
                return
            if not hmac.compare_digest(str(request.get("secret") or ""), self.server.secret):
                # Only this session's hook knows the secret (its policy file, 0600 in a 0700
                # folder): anything else on the socket is refused, and never reaches the user.
                log.warning("sandbox channel: a request without this session's secret was refused")
                self._answer("deny", "not this session's hook; refused")
                return
            call = ToolCallSummary(
                agent=request.get("agent") or self.server.hook_agent,
                tool=str(request.get("tool_name") or "?"),
                tool_input=request.get("tool_input") if isinstance(request.get("tool_input"), dict) else {},
                cwd=request.get("cwd"),
                tool_use_id=request.get("tool_use_id"),
            )
        except (ValueError, OSError) as exc:
            log.warning("sandbox channel: bad request: %s", exc)
            return
        rule, reason = str(request.get("rule") or ""), str(request.get("reason") or "")
        try:
            if request.get("type") == "blocked":
                self.server.guard.tell(ToolCallBlockedReported(call=call, rule=rule, reason=reason))
                return
            inbox = ReplyInbox(queue.Queue(maxsize=1))  # the guard tells it the decision
            self.server.guard.tell(
                ApprovalRequested(request_id=uuid.uuid4().hex[:12], call=call, rule=rule, reason=reason, reply=inbox)
            )
        except pykka.ActorDeadError:
            self._answer("deny", "the orchestrator is shutting down")
            return
        try:
            decided: ToolCallDecided = inbox.queue.get(timeout=self.server.wait_s)
            self._answer(decided.decision, decided.reason)
        except queue.Empty:
            self._answer("deny", "no decision in time; denied by default")

    def _answer(self, decision: str, reason: str) -> None:
        try:
            self.wfile.write((json.dumps({"decision": decision, "reason": reason}) + "\n").encode())
            self.wfile.flush()
        except OSError:
            pass  # the hook gave up (claude's hook timeout); nothing runs without an allow


def _socket_dir() -> Path:
    base = Path(tempfile.gettempdir())
    if len(str(base)) > SOCKET_PATH_MAX - 30:
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="orch-sbx-", dir=base))  # mode 0700


class SandboxGuard(pykka.ThreadingActor):
    """Answers claude's hook over the local channel and watches every agent's tool calls."""

    def __init__(
        self,
        settings: SandboxSettings,
        session_dir: Path,
        target: Path,
        extra_dirs: Sequence[Path] = (),
        asker: Any = None,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        workers: Mapping[str, pykka.ActorRef[Any]] | None = None,  # by worker name (claude#2)
        home: str | None = None,
        checkouts: Path | None = None,
        launch_env: Mapping[str, str] | None = None,
    ) -> None:
        """``checkouts``: the session has a git workspace, its runs work in checkouts under this
        folder (each run may write its own, told by the worker); the target itself, the user's
        repository, is then outside. ``None``: every run works in the target.
        ``launch_env``: the environment the hooked CLI is started with (default: this process's),
        whose loader variables the settings file pins."""
        super().__init__()
        self._settings = settings
        self._session_dir = session_dir
        self._dir = session_dir / "sandbox"
        in_place = () if checkouts is not None else (target,)
        self._roots = tuple(str(Path(p).resolve()) for p in (*in_place, *extra_dirs))
        self._run_roots = (str(Path(checkouts if checkouts is not None else target).resolve()),)
        # The checkouts' git folders are the orchestrator's: it runs git there outside any sandbox.
        self._git_dirs = (str((session_dir / "git").resolve()),) if checkouts is not None else ()
        self._asker = asker
        self._listeners = tuple(listeners)
        self._workers: dict[str, Any] = dict(workers or {})
        self._home = home or os.path.expanduser("~")
        self._launch_env = dict(os.environ if launch_env is None else launch_env)
        self._suspicious = rules((), settings.suspicious_patterns, prefix="config_suspicious")
        self._pending: dict[str, ApprovalRequested] = {}  # question id -> hook waiting
        self._finding_questions: dict[str, str] = {}  # question id -> agent paused
        self._seen: set[tuple[str, int]] = set()
        self._socket_dir: Path | None = None
        self._server: _Channel | None = None
        self._files: SandboxFiles | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def on_start(self) -> None:
        private_dir(self._session_dir)
        private_dir(self._dir)
        self._socket_dir = _socket_dir()
        channel = str(self._socket_dir / "guard.sock")
        secret = secrets.token_urlsafe(32)
        server = _Channel(channel, _ChannelHandler)
        server.guard = self.actor_ref
        server.wait_s = self._settings.confirm_timeout_s + 5
        hooked = hooked_agent()
        server.hook_agent = hooked.name if hooked is not None else "?"
        server.secret = secret
        self._server = server
        threading.Thread(target=server.serve_forever, name="sandbox-channel", daemon=True).start()
        policy = Policy(
            agent=server.hook_agent,
            roots=self._roots,
            # temp files are ordinary work (and private to the run under the OS sandbox)
            write_roots=(*self._roots, *dict.fromkeys(("/tmp", os.path.realpath(tempfile.gettempdir())))),
            home=self._home,
            blocked=rules(BUILTIN_BLOCKED, self._settings.blocked_patterns, "config_blocked"),
            high_risk=rules(BUILTIN_HIGH_RISK, self._settings.high_risk_patterns, "config_high_risk"),
            confirm_writes_outside=self._settings.confirm_writes_outside_target,
            channel=channel,
            confirm_timeout_s=self._settings.confirm_timeout_s,
            protected=(str(self._dir.resolve()), str(self._socket_dir.resolve()), *self._git_dirs),
            secret=secret,
            run_roots=self._run_roots,
        )
        policy_file = self._dir / "policy.json"
        settings_file = self._dir / f"{server.hook_agent}-settings.json"
        write_json_atomic(policy_file, policy.to_json())
        digest = hashlib.sha256(policy_file.read_bytes()).hexdigest()
        timeout_s = self._settings.confirm_timeout_s + HOOK_TIMEOUT_MARGIN_S
        command = hook_command(policy_file, digest, deadline_s=hook_deadline_s(timeout_s))
        env = pinned_env(self._launch_env, hooked.hook_off_env if hooked is not None else ())
        write_json_atomic(settings_file, claude_settings(command, timeout_s, env))
        self._files = SandboxFiles(claude_settings=str(settings_file), policy=str(policy_file), channel=channel)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # The supervisor starts a new guard: new channel, the policy file rewritten to name it.
        self._close()
        report_crash_of(self, exception_value)

    def _close(self) -> None:
        for pending in self._pending.values():
            self._decide(pending, "deny", "unavailable", "the orchestrator is shutting down")
        self._pending.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- switchboard ----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case EventsRecorded():
                for event in message.events:
                    self._on_event(event)
                return None
            case ApprovalRequested():
                return self._on_approval_requested(message)
            case QuestionAnswered():
                return self._on_answer(message)
            case ToolCallBlockedReported():
                return self._on_blocked(message)
            case WatchWorkers():
                self._workers.update(dict(message.workers))
                return None
            case WorkerStateChanged():
                return None  # heard as a worker listener; only events matter here
            case GetSandboxFiles():
                return self._files
        return super().on_receive(message)

    # -- the hook's questions ---------------------------------------------------------------------

    def _on_approval_requested(self, message: ApprovalRequested) -> None:
        question = Question(
            id=f"sbx-{message.request_id}",
            kind="confirmation",
            asked_by="sandbox",
            agent=message.call.agent,
            text=f"{message.call.agent} wants to run a high-risk {message.call.tool} call "
            f"({message.reason}): {_describe(message.call)}. Allow it?",
            options=("yes", "no"),
            timeout_s=self._settings.confirm_timeout_s,
            default_answer="no",
            subject=SandboxCallSubject(
                rule=message.rule, tool=message.call.tool, tool_input=message.call.tool_input, cwd=message.call.cwd
            ),
        )
        self._pending[question.id] = message
        try:
            if self._asker is None:
                raise pykka.ActorDeadError("nobody to ask")
            self._asker.tell(AskQuestion(question=question, reply_to=self.actor_ref))
        except pykka.ActorDeadError:
            self._pending.pop(question.id, None)
            self._decide(message, "deny", "unavailable", f"{message.reason}; nobody can be asked, so it is denied")

    def _on_answer(self, message: QuestionAnswered) -> None:
        if (agent := self._finding_questions.pop(message.question_id, None)) is not None:
            self._after_finding_answer(agent, message)
            return
        pending = self._pending.pop(message.question_id, None)
        if pending is None:
            return
        if message.expired and message.answered_by == "unattended":
            self._decide(pending, "deny", "unavailable", "nobody could answer (unattended); denied by default")
        elif message.expired:
            self._decide(
                pending, "deny", "timeout", f"no answer within {self._settings.confirm_timeout_s:g}s; denied by default"
            )
        elif message.approve:
            self._decide(pending, "allow", "user", f"approved by the user ({message.answer})")
        else:
            self._decide(pending, "deny", "user", f"denied by the user ({message.answer})")

    def _decide(self, request: ApprovalRequested, decision: str, by: str, reason: str) -> None:
        fact = ToolCallDecided(
            request_id=request.request_id,
            call=request.call,
            decision=decision,
            decided_by=by,
            rule=request.rule,
            reason=reason,
        )
        if request.reply is not None:
            with contextlib.suppress(queue.Full):
                request.reply.tell(fact)
        self._record("decision", fact.model_dump(mode="json"))
        self._publish(fact)

    def _on_blocked(self, message: ToolCallBlockedReported) -> None:
        fact = ToolCallDecided(
            request_id=uuid.uuid4().hex[:12],
            call=message.call,
            decision="deny",
            decided_by="policy",
            rule=message.rule,
            reason=message.reason,
        )
        self._record("blocked", fact.model_dump(mode="json"))
        self._publish(fact)

    # -- the watch over every agent's tool calls ----------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.payload.kind != "tool_call":
            return
        key = (event.agent, event.seq or 0)
        if key in self._seen:
            return
        self._seen.add(key)
        findings = find_suspicious(
            event.payload.tool, event.payload.tool_input, event.payload.text, self._home, self._suspicious
        )
        if not findings:
            return
        action = self._settings.suspicious_action
        rules_hit = ", ".join(f.rule for f in findings)
        finding = Event(
            type="finding",
            agent=event.agent,
            assignment_id=event.assignment_id,
            payload=EventPayload(
                kind="security",
                severity="high",
                tool=event.payload.tool,
                tool_input=event.payload.tool_input,
                text=f"suspicious tool call ({rules_hit}): {findings[0].evidence}"[:500],
                details={
                    "rules": [f.rule for f in findings],
                    "evidence": [f.evidence for f in findings],
                    "event_seq": event.seq,
                    "action": action,
                },
            ),
        )
        self._record("finding", finding.to_record())
        self._publish(SecurityFinding(event=finding, rule=findings[0].rule, action=action))
        run = worker_name(event.agent, event.slot or 1)  # the worker of the run that made the call
        worker = self._workers.get(run)
        if worker is None or action == "warn":
            return
        reason = f"security finding: {rules_hit}"
        if action == "stop":
            worker.tell(StopWorker(reason=reason))
            return
        worker.tell(PauseWorker(reason=reason))
        question = Question(
            id=f"sbx-finding-{uuid.uuid4().hex[:8]}",
            kind="confirmation",
            asked_by="sandbox",
            agent=event.agent,
            options=("yes", "no"),
            text=f"{run} was paused: {finding.payload.text}. Let it go on? (no stops it)",
            subject=SecurityFindingSubject(rules=tuple(f.rule for f in findings), event_seq=event.seq),
            timeout_s=self._settings.confirm_timeout_s,  # unanswered: no, like every confirmation
            default_answer="no",
        )
        self._finding_questions[question.id] = run
        try:
            if self._asker is not None:
                self._asker.tell(AskQuestion(question=question, reply_to=self.actor_ref))
        except pykka.ActorDeadError:
            self._finding_questions.pop(question.id, None)

    def _after_finding_answer(self, agent: str, message: QuestionAnswered) -> None:
        worker = self._workers.get(agent)
        if worker is None:
            return
        if message.approve:
            worker.tell(ResumeWorker(reason="the user let it go on after a security finding"))
        else:
            worker.tell(StopWorker(reason="stopped by the user after a security finding"))

    # -- helpers --------------------------------------------------------------------------------------

    def _publish(self, fact: Any) -> None:
        tell_all(self._listeners, fact)

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        try:
            with open_private(self._session_dir / "security.jsonl") as out:
                out.write(json.dumps({"kind": kind, **data}, default=str) + "\n")
        except OSError as exc:
            log.error("cannot write security.jsonl: %s", exc)


def _describe(call: ToolCallSummary) -> str:
    value = call.tool_input.get("command") or call.tool_input.get("file_path") or call.tool_input
    return str(value)[:300]


__all__ = ["SandboxGuard"]
