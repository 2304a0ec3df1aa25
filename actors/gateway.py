"""The Gateway actor: the dashboard's web server, its HTTP API and its WebSockets.

The gateway is a *listener*. Workers and the coordinator tell it facts
(``EventRecorded``, ``WorkerStateChanged``, ``SessionStateChanged``, ``SessionEnded``, and
any later fact such as resource samples); it keeps the latest state, turns each fact into
one serialised frame, and offers that same string to every connected browser.

Threads and who owns what:

* the actor thread owns all state, the delta sequence number and every client's record;
* ``gateway-http`` runs Werkzeug's threaded WSGI server (one thread per request);
* each WebSocket request thread is the *only writer* of its socket: it drains a bounded
  outbox that only the actor fills, and tells the actor what the browser sends
  (``ControlReceived``). A browser that falls behind never blocks the actor: when its outbox
  is full the actor empties it and puts a fresh snapshot instead. A browser whose writer
  made no progress for ``stall_timeout_s`` is hung up on and dropped.
* HTTP views never wait on any actor: they read ``_View``, an immutable record the actor
  replaces whenever the session, a worker or a fact changes (one reference swap), so a
  flood of events queued in the actor's inbox cannot slow an API call. Control requests
  are *told* to the coordinator.

Events paging (``GET /api/events``) reads the session's ``<agent>.jsonl`` files, so nothing
is lost however long the session runs; see ``read_events_page`` for the cursor.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
from importlib import resources
import queue
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import pykka
import simple_websocket
from flask import Flask, Response, jsonify, request, send_from_directory
from flask_sock import Sock
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.runtime.supervision import report_crash_of
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.base import AGENT_NAMES
from meta_orchestrator.messages.events import EVENT_TYPES, Event
from meta_orchestrator.messages.gateway import (
    BROWSER_REQUEST,
    CONTROL_ACTIONS,
    AnswerBody,
    AnswerRequest,
    ClientConnected,
    ClientDisconnected,
    ClientStats,
    ControlBody,
    ControlReceived,
    ControlRequest,
    GatewayAddress,
    GatewayStats,
    GetGatewayAddress,
    GetGatewayStats,
    PingRequest,
    ResyncRequest,
    frame_type_of,
)
from meta_orchestrator.messages.session import (
    AnswerGiven,
    ControlRequested,
    SessionEnded,
    SessionStateChanged,
)
from meta_orchestrator.messages.worker import EventRecorded, EventsRecorded, WorkerStateChanged

logger = logging.getLogger(__name__)

# The package's own files, wherever it is installed (a wheel or an editable checkout).
STATIC_DIR = Path(str(resources.files("meta_orchestrator.webui") / "static"))
TOKEN_HEADER = "X-Orchestrate-Token"
TOKEN_COOKIE = "orchestrate_token"
MAX_WS_MESSAGE = 64 * 1024
MAX_FRAME_EVENT = 256 * 1024  # an event larger than this goes to browsers with a cut `raw`
RAW_KEPT = 16 * 1024
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
_CLOSED_QUESTION = ("answered", "closed", "resolved", "expired", "cancelled")


class GatewayError(Exception):
    """The dashboard cannot start (e.g. its port is in use); the message tells the user why."""


# --- state shared with request threads (immutable, replaced whole) ---------------------------


@dataclass(frozen=True)
class _View:
    """What the HTTP views read: swapped by the actor, never mutated."""

    session: dict[str, Any] | None = None
    workers: tuple[dict[str, Any], ...] = ()
    facts: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()
    ended: dict[str, Any] | None = None
    seq: int = 0


@dataclass
class _Client:
    """The actor's record of one browser; only the actor thread touches it."""

    client: str
    outbox: queue.Queue[str | None]
    remote: str | None
    hangup: Callable[[], None] | None
    frames_queued: int = 0
    resyncs: int = 0
    offered_since_resync: int = 0
    stuck_since: float | None = None


@dataclass
class _Ring:
    """Recent strings with a count and a byte bound."""

    max_items: int
    max_bytes: int
    items: deque[tuple[int, str]] = field(default_factory=deque)
    size: int = 0

    def append(self, key: int, text: str) -> None:
        self.items.append((key, text))
        self.size += len(text)
        while self.items and (len(self.items) > self.max_items or self.size > self.max_bytes):
            _, old = self.items.popleft()
            self.size -= len(old)


def _frame(kind: str, seq: int | None, data_json: str) -> str:
    return f'{{"type":{json.dumps(kind)},"seq":{"null" if seq is None else seq},"data":{data_json}}}'


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# --- the actor -------------------------------------------------------------------------------


class Gateway(pykka.ThreadingActor):
    """Owns the dashboard's web server; turns facts into frames for every browser.

    Args:
        settings: host, port (0: a free one) and the per-browser queue size.
        session_dir: ``workspace/<session_id>``: the ``<agent>.jsonl`` files, ``reviews/``.
        token: the session's secret; every API call and WebSocket must present it.
        coordinator: receives ``ControlRequested`` and ``AnswerGiven``; ``None``: controls
            answer 503.
        next_free_port: if the port is taken, try the next ones (the user asked for it).
        close_requested: set when the user presses "close dashboard" on the page
            (``POST /api/close``); the launcher waits on it after the session ended.
        events_kept / frames_kept / facts_kept: bounds of the in-memory history.
        stall_timeout_s: a browser whose writer made no progress this long is dropped.

    Raises:
        GatewayError: from ``Gateway.start(...)``, when the address cannot be bound.
    """

    def __init__(
        self,
        settings: WebSettings,
        session_dir: Path,
        token: str,
        coordinator: pykka.ActorRef[Any] | None = None,
        *,
        next_free_port: bool = False,
        close_requested: threading.Event | None = None,
        events_kept: int = 500,
        frames_kept: int = 5000,
        facts_kept: int = 600,
        stall_timeout_s: float = 30.0,
    ) -> None:
        super().__init__()
        if not token:
            raise GatewayError("the dashboard needs a non-empty token")
        self._settings = settings
        self._session_dir = Path(session_dir)
        self._token = token
        self._coordinator = coordinator
        self._close_requested = close_requested or threading.Event()
        self._stall_timeout_s = stall_timeout_s
        self._facts_kept = facts_kept
        self.epoch = uuid4().hex[:12]

        self._seq = 0
        self._events_seen = 0
        self._events = _Ring(max_items=events_kept, max_bytes=16 * 1024 * 1024)
        self._frames = _Ring(max_items=frames_kept, max_bytes=32 * 1024 * 1024)
        self._session: dict[str, Any] | None = None
        self._session_json = "null"
        self._workers: dict[str, dict[str, Any]] = {}
        self._facts: dict[str, deque[dict[str, Any]]] = {}
        self._ended: dict[str, Any] | None = None
        self._clients: dict[str, _Client] = {}
        self._clients_dropped = 0
        self._snapshot_cache: tuple[int, str] | None = None
        self._started_at = _now_iso()
        self.view = _View()

        if not _is_loopback(settings.host):
            logger.warning(
                "the dashboard listens on %s, not only this machine; anyone who can "
                "reach it and knows the token can steer the agents",
                settings.host,
            )
        listener = _bind(settings.host, settings.port, tries=20 if next_free_port else 1)
        self.host = settings.host
        self.port = listener.getsockname()[1]
        self.app = _create_app(self)
        try:
            self._server: BaseWSGIServer = make_server(
                self.host, self.port, self.app, threaded=True, fd=listener.fileno()
            )
        finally:
            listener.close()  # the server holds its own duplicate of the descriptor
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    def on_start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"gateway-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("dashboard listening on %s", self.address().base_url)

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        logger.error("gateway crashed: %r; closing the dashboard", exc)
        self._shutdown()
        report_crash_of(self, exc)  # the supervisor starts it again on the same port

    def _shutdown(self) -> None:
        for record in self._clients.values():
            _drain(record.outbox)
            record.outbox.put_nowait(None)  # the writer closes its socket
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and any(not c.outbox.empty() for c in self._clients.values()):
            time.sleep(0.02)
        for record in self._clients.values():
            if not record.outbox.empty() and record.hangup is not None:
                record.hangup()  # its writer is stuck in a send: unblock it
        self._clients.clear()

    # -- the switchboard --

    def on_receive(self, message: object) -> object:
        match message:
            case EventRecorded():
                return self._on_events((message.event,), (message.line,))
            case EventsRecorded():
                return self._on_events(message.events, message.lines or (None,) * len(message.events))
            case WorkerStateChanged():
                return self._on_worker_state_changed(message)
            case SessionStateChanged():
                return self._on_session_state_changed(message)
            case SessionEnded():
                return self._on_session_ended(message)
            case ClientConnected():
                return self._on_client_connected(message)
            case ClientDisconnected():
                return self._on_client_disconnected(message)
            case ControlReceived():
                return self._on_control_received(message)
            case GetGatewayAddress():
                return self.address()
            case GetGatewayStats():
                return self._stats()
            case BaseModel():
                return self._on_other_fact(message)
        return super().on_receive(message)

    # -- facts --

    def _on_events(self, events: Sequence[Event], lines: Sequence[str | None]) -> None:
        """Number and keep each event; offer the batch to every browser as one queue item."""
        frames = []
        for event, line in zip(events, lines):
            data = line or event.model_dump_json(exclude_none=True)  # serialised once, upstream
            if len(data) > MAX_FRAME_EVENT:
                record = event.to_record()
                raw = record.get("raw") or ""
                record["raw"] = raw[:RAW_KEPT]
                record["raw_cut"] = len(raw)  # the whole line stays in <agent>.jsonl
                data = _dumps(record)
            self._events_seen += 1
            self._events.append(self._events_seen, data)
            self._seq += 1
            frame = f'{{"type":"event","seq":{self._seq},"data":{data}}}'  # _frame, inlined: hot
            self._frames.append(self._seq, frame)
            frames.append(frame)
        if not frames:
            return
        item = frames[0] if len(frames) == 1 else _batch(frames)
        for record in list(self._clients.values()):
            self._offer(record, item)

    def _on_worker_state_changed(self, message: WorkerStateChanged) -> None:
        snapshot = message.snapshot.model_dump(mode="json")
        self._workers[message.snapshot.agent] = snapshot
        self._publish("worker", _dumps(snapshot))

    def _on_session_state_changed(self, message: SessionStateChanged) -> None:
        self._session = message.snapshot.model_dump(mode="json")
        self._session_json = _dumps(self._session)
        self._publish("session", self._session_json)

    def _on_session_ended(self, message: SessionEnded) -> None:
        self._ended = message.model_dump(mode="json")
        self._publish("session_ended", _dumps(self._ended))

    def _on_other_fact(self, message: BaseModel) -> None:
        kind = frame_type_of(message)
        data = message.model_dump(mode="json")
        self._facts.setdefault(kind, deque(maxlen=self._facts_kept)).append(data)
        self._publish(kind, _dumps(data))

    def _publish(self, kind: str, data_json: str) -> None:
        """State is already updated: number the delta, keep it, offer it to every browser."""
        self._seq += 1
        frame = _frame(kind, self._seq, data_json)  # serialised once for all clients
        self._frames.append(self._seq, frame)
        if kind != "event":
            self.view = self._make_view()
        for record in list(self._clients.values()):
            self._offer(record, frame)

    def _make_view(self) -> _View:
        return _View(
            session=self._session,
            workers=tuple(self._workers[a] for a in sorted(self._workers)),
            facts=tuple((k, tuple(v)) for k, v in self._facts.items()),
            ended=self._ended,
            seq=self._seq,
        )

    # -- clients --

    def _offer(self, record: _Client, frame: str) -> None:
        try:
            record.outbox.put_nowait(frame)
        except queue.Full:
            self._resync(record)
        else:
            record.frames_queued += 1
            record.offered_since_resync += 1

    def _resync(self, record: _Client) -> None:
        """The browser fell behind: replace what it has not read by one fresh snapshot."""
        capacity = record.outbox.maxsize
        # After the last resync the outbox held one frame; if it filled up with exactly the
        # frames offered since, the writer took nothing: it is stuck in a send.
        stuck = record.resyncs > 0 and record.offered_since_resync <= capacity - 1
        now = time.monotonic()
        if stuck:
            record.stuck_since = record.stuck_since or now
            if now - record.stuck_since >= self._stall_timeout_s:
                self._drop(record, f"no progress for {self._stall_timeout_s:.0f}s")
                return
        else:
            record.stuck_since = None
        _drain(record.outbox)
        record.outbox.put_nowait(self._snapshot())
        record.resyncs += 1
        record.frames_queued += 1
        record.offered_since_resync = 0
        if record.resyncs in (1, 10, 100) or record.resyncs % 1000 == 0:
            logger.info("browser %s fell behind (%d times); sent a fresh snapshot", record.client, record.resyncs)

    def _drop(self, record: _Client, reason: str) -> None:
        logger.warning("dropping browser %s (%s): %s", record.client, record.remote, reason)
        self._clients.pop(record.client, None)
        self._clients_dropped += 1
        _drain(record.outbox)
        record.outbox.put_nowait(None)
        if record.hangup is not None:
            record.hangup()

    def _on_client_connected(self, message: ClientConnected) -> None:
        record = _Client(client=message.client, outbox=message.outbox, remote=message.remote, hangup=message.hangup)
        self._clients[message.client] = record
        since = message.since
        if since is not None and self._can_resume(since):
            missed = [f for s, f in self._frames.items if s > since]
            hello = _dumps(
                {"resumed": True, "since": since, "seq": self._seq, "epoch": self.epoch, "missed": len(missed)}
            )
            self._offer(record, _frame("hello", None, hello))
            for frame in missed:
                self._offer(record, frame)
            logger.info(
                "browser %s (%s) resumed after seq %d: %d frames", message.client, message.remote, since, len(missed)
            )
        else:
            self._offer(record, self._snapshot())
            logger.info("browser %s (%s) connected", message.client, message.remote)

    def _can_resume(self, since: int) -> bool:
        if since == self._seq:
            return True
        if since > self._seq or not self._frames.items:
            return False
        return self._frames.items[0][0] <= since + 1

    def _on_client_disconnected(self, message: ClientDisconnected) -> None:
        if self._clients.pop(message.client, None) is not None:
            logger.info("browser %s disconnected (%s)", message.client, message.reason)

    def _on_control_received(self, message: ControlReceived) -> None:
        record = self._clients.get(message.client)
        try:
            request_ = BROWSER_REQUEST.validate_json(message.raw)
        except ValidationError as exc:
            self._reply(record, "error", {"error": _describe(exc), "request": message.raw[:500]})
            return
        match request_:
            case PingRequest():
                self._reply(record, "pong", {"seq": self._seq})
            case ResyncRequest():
                if record is not None:
                    _drain(record.outbox)
                    self._offer(record, self._snapshot())
            case ControlRequest():
                error = send_control(self._coordinator, request_.action, request_.agent)
                self._reply(
                    record,
                    "error" if error else "ack",
                    {"error": error} if error else {"request": request_.model_dump(mode="json")},
                )
            case AnswerRequest():
                error = send_answer(self._coordinator, self.view.session, request_)[1]
                self._reply(
                    record,
                    "error" if error else "ack",
                    {"error": error} if error else {"request": request_.model_dump(mode="json")},
                )

    def _reply(self, record: _Client | None, kind: str, data: dict[str, Any]) -> None:
        if record is not None:
            self._offer(record, _frame(kind, None, _dumps(data)))

    def _snapshot(self) -> str:
        """The whole state as one frame; cached until the next delta."""
        if self._snapshot_cache is not None and self._snapshot_cache[0] == self._seq:
            return self._snapshot_cache[1]
        head = _dumps(
            {
                "epoch": self.epoch,
                "seq": self._seq,
                "server_time": _now_iso(),
                "started_at": self._started_at,
                "workers": [self._workers[a] for a in sorted(self._workers)],
                "facts": {k: list(v) for k, v in self._facts.items()},
                "ended": self._ended,
                "events_seen": self._events_seen,
            }
        )
        events = ",".join(text for _, text in self._events.items)
        data = f'{head[:-1]},"session":{self._session_json},"events":[{events}]}}'
        frame = _frame("snapshot", self._seq, data)
        self._snapshot_cache = (self._seq, frame)
        return frame

    # -- questions --

    def address(self) -> GatewayAddress:
        """Where the dashboard listens, and the address (with token) to give the user."""
        host = self.host
        if _is_loopback(host) and host != "localhost" or host in ("0.0.0.0", "::", "[::]", ""):
            host = "127.0.0.1"  # a browsable address, also when bound to every interface
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        base = f"http://{host}:{self.port}"
        return GatewayAddress(host=self.host, port=self.port, base_url=base, url=f"{base}/?token={self._token}")

    def _stats(self) -> GatewayStats:
        return GatewayStats(
            seq=self._seq,
            events_seen=self._events_seen,
            events_kept=len(self._events.items),
            frames_kept=len(self._frames.items),
            clients_dropped=self._clients_dropped,
            clients=tuple(
                ClientStats(
                    client=c.client,
                    remote=c.remote,
                    queued=c.outbox.qsize(),
                    capacity=c.outbox.maxsize,
                    frames_queued=c.frames_queued,
                    resyncs=c.resyncs,
                )
                for c in self._clients.values()
            ),
        )


def _drain(outbox: queue.Queue[Any]) -> None:
    while True:
        try:
            outbox.get_nowait()
        except queue.Empty:
            return


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int, tries: int) -> socket.socket:
    """Bind and listen ourselves: Werkzeug would ``sys.exit`` on a port in use."""
    last: OSError | None = None
    for candidate in range(port, port + tries) if port else (0,):
        if candidate > 65535:
            break
        try:
            infos = socket.getaddrinfo(host.strip("[]"), candidate, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise GatewayError(f"cannot use dashboard host {host!r}: {exc}") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
            if candidate != port:
                logger.warning("port %d is in use; the dashboard uses port %d", port, candidate)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    if last is not None and last.errno == errno.EADDRINUSE:
        more = f" (tried {port}..{port + tries - 1})" if tries > 1 else ""
        raise GatewayError(
            f"port {port} on {host} is already in use{more}: stop the program using "
            f"it, or choose another with --port (0 picks a free port)"
        ) from None
    raise GatewayError(f"cannot listen on {host}:{port}: {last}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


# --- controls (called from request threads and from the actor; they only tell) ---------------


def unknown_agent(agent: str | None) -> str | None:
    """Why ``agent`` cannot be controlled (no adapter knows it), or ``None``."""
    if agent is None or agent in agent_names():
        return None
    return f"agent: unknown agent {agent!r}; expected one of {', '.join(agent_names())}"


def send_control(coordinator: pykka.ActorRef[Any] | None, action: str, agent: str | None) -> str | None:
    """Tell the coordinator a person's control request; the error text, or ``None``."""
    if (unknown := unknown_agent(agent)) is not None:
        return unknown
    if coordinator is None:
        return "no coordinator is attached to this dashboard"
    try:
        coordinator.tell(ControlRequested(action=action, agent=agent, source="dashboard"))
    except pykka.ActorDeadError:
        return "the coordinator has stopped"
    logger.info("dashboard asked to %s %s", action, agent or "the session")
    return None


def find_question(session: dict[str, Any] | None, question_id: str) -> dict[str, Any] | None:
    """The question with this id in the session snapshot, if any."""
    for question in (session or {}).get("questions") or ():
        if isinstance(question, dict) and str(question.get("id")) == question_id:
            return question
    return None


def send_answer(
    coordinator: pykka.ActorRef[Any] | None, session: dict[str, Any] | None, answer: AnswerBody
) -> tuple[int, str | None]:
    """Check the question is waiting, tell the coordinator; (HTTP status, error or None)."""
    question = find_question(session, answer.question_id)
    if question is None:
        return 404, f"unknown question id {answer.question_id!r}"
    if str(question.get("status", "")).lower() in _CLOSED_QUESTION or question.get("answered") is True:
        return 409, f"question {answer.question_id!r} is already {question.get('status', 'answered')}"
    if question.get("kind") == "confirmation" and answer.approve is None:
        return 400, "a confirmation needs approve: true or false"
    if coordinator is None:
        return 503, "no coordinator is attached to this dashboard"
    try:
        coordinator.tell(AnswerGiven(question_id=answer.question_id, answer=answer.answer, approve=answer.approve))
    except pykka.ActorDeadError:
        return 503, "the coordinator has stopped"
    logger.info("dashboard answered question %s (approve=%s)", answer.question_id, answer.approve)
    return 202, None


# --- events paging from the session files ----------------------------------------------------

_SEQ = re.compile(rb'"seq":\s*(\d+)')


def parse_cursor(since: str | None) -> dict[str, int]:
    """``since`` is ``<n>`` (every agent after seq n) or ``gemini:3,codex:0,claude:12``.

    Raises:
        ValueError: with a message saying what is wrong.
    """
    cursor = {agent: 0 for agent in AGENT_NAMES}
    if since is None or since.strip() == "":
        return cursor
    text = since.strip()
    if text.isdigit():
        return {agent: int(text) for agent in AGENT_NAMES}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        if not sep or name.strip() not in cursor or not value.strip().isdigit():
            example = ",".join(f"{agent}:{n}" for n, agent in enumerate(AGENT_NAMES[:2]))
            raise ValueError(f"since must be a number or agent:seq pairs like '{example}', not {since!r}")
        cursor[name.strip()] = int(value.strip())
    return cursor


def format_cursor(cursor: dict[str, int]) -> str:
    """The inverse of ``parse_cursor``."""
    return ",".join(f"{agent}:{cursor[agent]}" for agent in AGENT_NAMES)


def _scan_agent(path: Path, since: int, event_type: str | None, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """Complete records of one file with seq > since: (matching ones up to limit, last seq
    scanned, whether the file's complete lines were all scanned). A last line without its
    newline is being written: it is left for the next page."""
    found: list[dict[str, Any]] = []
    last = since
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return found, last, True
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn: the writer has not finished it
            match = _SEQ.search(line)
            if match is not None and int(match.group(1)) <= since:
                continue  # cheap skip without parsing the whole line
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("skipping an unreadable line in %s", path)
                continue
            seq = record.get("seq") if isinstance(record, dict) else None
            if not isinstance(seq, int) or seq <= since:
                continue
            if event_type is None or record.get("type") == event_type:
                if len(found) == limit:
                    return found, last, False
                found.append(record)
            last = seq
    return found, last, True


def read_events_page(
    session_dir: Path, since: str | None, agent: str | None = None, event_type: str | None = None, limit: int = 200
) -> dict[str, Any]:
    """One page of recorded events, read from ``<session_dir>/<agent>.jsonl``.

    The cursor is per agent, because each file numbers its own records (``seq`` from 1):
    ``since`` is ``gemini:3,codex:0,claude:12`` (or one number for every agent; 0 or absent:
    from the start). The page merges the agents' next records by timestamp and returns
    ``{"events": [...], "cursor": "<pass as since for the next page>", "more": bool}``.
    Each agent's records come out in seq order exactly once across pages, so paging never
    loses or repeats an event; with ``agent`` only that agent's file is read.

    Raises:
        ValueError: bad ``since``, ``agent``, ``type`` or ``limit``, saying which.
    """
    cursor = parse_cursor(since)
    if agent is not None and agent not in AGENT_NAMES:
        raise ValueError(f"unknown agent {agent!r}; expected one of {', '.join(AGENT_NAMES)}")
    if event_type is not None and event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    agents = (agent,) if agent else AGENT_NAMES
    scans = {a: _scan_agent(session_dir / f"{a}.jsonl", cursor[a], event_type, limit) for a in agents}
    merged = sorted(
        ((str(r.get("timestamp", "")), a, r["seq"], r) for a, (found, _, _) in scans.items() for r in found),
        key=lambda item: item[:3],
    )
    page = merged[:limit]
    taken: dict[str, int] = {}
    for _, a, seq, _ in page:
        taken[a] = taken.get(a, 0) + 1
    more = False
    for a, (found, last, complete) in scans.items():
        if taken.get(a, 0) == len(found):
            cursor[a] = last  # everything scanned went out (or was filtered away)
            more = more or not complete
        else:
            cursor[a] = found[taken.get(a, 0) - 1]["seq"] if taken.get(a) else cursor[a]
            more = True
    return {"events": [r for *_, r in page], "cursor": format_cursor(cursor), "more": more}


def read_reviews(session_dir: Path) -> list[dict[str, Any]]:
    """Every review under ``<session_dir>/reviews/<id>/``: its JSON files by name, oldest first."""
    root = session_dir / "reviews"
    reviews = []
    if not root.is_dir():
        return reviews
    for folder in root.iterdir():
        if folder.is_dir():
            review = read_review(session_dir, folder.name)
            if review is not None:
                reviews.append(review)
    reviews.sort(key=lambda r: (r["updated_at"], r["id"]))
    return reviews


def read_review(session_dir: Path, review_id: str) -> dict[str, Any] | None:
    """One review folder as ``{"id", "updated_at", "files": {stem: content}}``, or None."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", review_id) or review_id.startswith("."):
        return None
    folder = session_dir / "reviews" / review_id
    if not folder.is_dir():
        return None
    files: dict[str, Any] = {}
    newest = 0.0
    for path in sorted(folder.glob("*.json")):
        try:
            files[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            newest = max(newest, path.stat().st_mtime)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            files[path.stem] = {"unreadable": True}  # being written, or damaged
    updated = datetime.fromtimestamp(newest or folder.stat().st_mtime, UTC)
    return {"id": review_id, "updated_at": updated.isoformat().replace("+00:00", "Z"), "files": files}


# --- the Flask app ---------------------------------------------------------------------------


def _create_app(gateway: Gateway) -> Flask:
    """The dashboard's routes. Views read ``gateway.view`` and tell; they never wait."""
    app = Flask("orchestrator_dashboard", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_WS_MESSAGE}
    app.json.sort_keys = False
    sock = Sock(app)
    token = gateway._token
    actor_ref = gateway.actor_ref
    session_dir = gateway._session_dir
    client_queue = gateway._settings.client_queue

    def host_name(netloc: str) -> str:
        return (urlsplit(f"//{netloc}").hostname or "").lower()

    def host_ok() -> bool:
        # Only the name matters against DNS rebinding (a plain client may leave out the port).
        if not _is_loopback(gateway.host):
            return True
        return host_name(request.host) in {n.strip("[]") for n in _LOOPBACK_NAMES} | {gateway.host}

    def origin_ok(origin: str) -> bool:
        parts = urlsplit(origin)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return False
        return parts.hostname == host_name(request.host) and port == gateway.port

    def presented_token() -> str | None:
        return request.args.get("token") or request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE)

    def token_ok(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    def refuse(status: int, reason: str) -> Response:
        logger.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, reason)
        response = jsonify(error=reason)
        response.status_code = status
        return response

    @app.before_request
    def guard() -> Response | None:
        path = request.path
        if not host_ok():
            # A page on another site that resolves its name to 127.0.0.1 (DNS rebinding).
            return refuse(403, f"unexpected Host header {request.host!r}")
        if path == "/api/health" or not (path.startswith("/api/") or path == "/ws"):
            return None
        if not token_ok(presented_token()):
            given = presented_token()
            return refuse(
                401,
                "a wrong token" if given else "missing token: open the address the launcher printed (with ?token=...)",
            )
        if path == "/ws":
            origin = request.headers.get("Origin")
            # Browsers always send Origin; a plain client with the token may omit it.
            if origin is not None and not origin_ok(origin):
                return refuse(403, f"foreign Origin {origin!r}")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the address
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        if request.path == "/" or request.path.endswith(".html"):
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
            )
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = jsonify(error=f"{exc.name}: {exc.description}" if exc.description else exc.name)
        response.status_code = exc.code or 500
        return response

    @app.get("/")
    def index() -> Response:
        response = send_from_directory(STATIC_DIR, "index.html")
        given = request.args.get("token")
        if given is not None:
            if token_ok(given):
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            else:
                logger.warning("refused a page load from %s with a wrong token", request.remote_addr)
        return response

    @app.get("/api/health")
    def health() -> Response:
        return jsonify(ok=True, server_time=_now_iso())

    @app.get("/api/session")
    def session_() -> Response:
        view = gateway.view
        return jsonify(session=view.session, ended=view.ended, seq=view.seq)

    @app.get("/api/workers")
    def workers() -> Response:
        return jsonify(workers=list(gateway.view.workers))

    @app.get("/api/decisions")
    def decisions() -> Response:
        return jsonify(decisions=list((gateway.view.session or {}).get("decisions") or ()))

    @app.get("/api/reviews")
    def reviews() -> Response:
        return jsonify(reviews=read_reviews(session_dir))

    @app.get("/api/reviews/<review_id>")
    def review(review_id: str) -> Response:
        found = read_review(session_dir, review_id)
        if found is None:
            return refuse(404, f"unknown review id {review_id!r}")
        return jsonify(found)

    @app.get("/api/resources")
    def resources() -> Response:
        samples = [
            {"type": kind, "data": item} for kind, items in gateway.view.facts if "resource" in kind for item in items
        ]
        return jsonify(resources=samples)

    @app.get("/api/events")
    def events() -> Response:
        args = request.args
        unknown = sorted(set(args) - {"since", "agent", "type", "limit", "token"})
        if unknown:
            return refuse(400, f"unknown query parameter(s): {', '.join(unknown)}")
        try:
            limit = int(args.get("limit", "200"))
        except ValueError:
            return refuse(400, f"limit must be a whole number, not {args.get('limit')!r}")
        try:
            page = read_events_page(
                session_dir, args.get("since"), args.get("agent") or None, args.get("type") or None, limit
            )
        except ValueError as exc:
            return refuse(400, str(exc))
        return jsonify(page)

    def json_body() -> tuple[Any, Response | None]:
        raw = request.get_data(cache=False, as_text=False)
        if not raw.strip():
            return {}, None
        try:
            return json.loads(raw), None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, refuse(400, f"the request body is not valid JSON: {exc}")

    @app.post("/api/control/<action>")
    def control(action: str) -> Response:
        if action not in CONTROL_ACTIONS:
            return refuse(404, f"unknown action {action!r}; expected one of {', '.join(CONTROL_ACTIONS)}")
        body, error = json_body()
        if error is not None:
            return error
        try:
            parsed = ControlBody.model_validate(body)
        except ValidationError as exc:
            return refuse(400, _describe(exc))
        if (unknown := unknown_agent(parsed.agent)) is not None:
            return refuse(400, unknown)
        failure = send_control(gateway._coordinator, action, parsed.agent)
        if failure:
            return refuse(503, failure)
        response = jsonify(ok=True, action=action, agent=parsed.agent)
        response.status_code = 202
        return response

    @app.post("/api/answer")
    def answer() -> Response:
        body, error = json_body()
        if error is not None:
            return error
        try:
            parsed = AnswerBody.model_validate(body)
        except ValidationError as exc:
            return refuse(400, _describe(exc))
        status, failure = send_answer(gateway._coordinator, gateway.view.session, parsed)
        if failure:
            return refuse(status, failure)
        response = jsonify(ok=True, question_id=parsed.question_id)
        response.status_code = status
        return response

    @app.post("/api/close")
    def close() -> Response:
        logger.info("the user closed the dashboard from the page")
        gateway._close_requested.set()
        response = jsonify(ok=True)
        response.status_code = 202
        return response

    @app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api_unknown(rest: str) -> Response:
        return refuse(404, f"no such API endpoint: {request.method} /api/{rest}")

    @sock.route("/ws")
    def websocket(ws: simple_websocket.Server) -> None:
        since: int | None = None
        raw_since = request.args.get("since")
        if raw_since is not None and raw_since.isdigit():
            since = int(raw_since)
        if request.args.get("epoch") not in (None, gateway.epoch):
            since = None  # another gateway's numbering: start from a snapshot
        outbox: queue.Queue[str | None] = queue.Queue(maxsize=client_queue)
        client = uuid4().hex[:12]

        def hangup() -> None:
            try:
                ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        try:
            actor_ref.tell(
                ClientConnected(client=client, outbox=outbox, since=since, remote=request.remote_addr, hangup=hangup)
            )
        except pykka.ActorDeadError:
            return
        reason = "closed by the gateway"
        try:
            while (frames := _next(ws, outbox, client, actor_ref)) is not None:
                # The only thread that writes to this socket. Frames that queued up while it
                # sent go out as one "batch" message: one send instead of many under load.
                ws.send(frames[0] if len(frames) == 1 else _batch(frames))
                if frames[-1] is None:
                    break
        except simple_websocket.ConnectionClosed:
            reason = "closed by the browser"
        except OSError as exc:
            reason = f"socket error: {exc}"
        finally:
            try:
                actor_ref.tell(ClientDisconnected(client=client, reason=reason))
            except pykka.ActorDeadError:
                pass
            _finish(ws)

    return app


def _finish(ws: simple_websocket.Server) -> None:
    """Close the socket's write side after the close frame.

    Werkzeug writes an HTTP response once the WSGI app returns; on an upgraded socket the
    browser would read it as a corrupt frame ("Invalid frame header"). With the write side
    shut, that write fails as a dropped connection, which Werkzeug ignores quietly.
    """
    try:
        ws.close()
    except (simple_websocket.ConnectionClosed, OSError):
        pass
    try:
        ws.sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


BATCH_MAX = 256


BATCH_PREFIX = '{"type":"batch","seq":null,"data":['


def _batch(frames: list[Any]) -> str:
    """Several frames as one message: ``{"type": "batch", "seq": null, "data": [frame, ...]}``.

    A frame that is itself a batch is spliced in, so a browser never sees nesting."""
    parts = [f[len(BATCH_PREFIX) : -2] if f.startswith(BATCH_PREFIX) else f for f in frames if f]
    return BATCH_PREFIX + ",".join(p for p in parts if p) + "]}"


def _next(
    ws: simple_websocket.Server, outbox: queue.Queue[str | None], client: str, actor_ref: pykka.ActorRef[Any]
) -> list[Any] | None:
    """Forward what the browser sent, then wait briefly for frames.

    Returns the frames queued so far (at most ``BATCH_MAX``; a trailing None means close
    after sending them), or None: close now.
    """
    while True:
        while (raw := ws.receive(timeout=0)) is not None:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            try:
                actor_ref.tell(ControlReceived(client=client, raw=text))
            except pykka.ActorDeadError:
                return None
        try:
            first = outbox.get(timeout=0.1)
        except queue.Empty:
            continue
        if first is None:
            return None
        frames: list[Any] = [first]
        while len(frames) < BATCH_MAX:
            try:
                frame = outbox.get_nowait()
            except queue.Empty:
                break
            frames.append(frame)
            if frame is None:
                break
        return frames
