"""The Gateway actor: the dashboard's state, its fan-out to browsers, and their queues.

The gateway is a *listener*. Workers, the coordinator and the other actors tell it facts;
it keeps the latest state, turns each fact into one serialised frame through the wire
contract (``messages.frames``: ``FRAME_OF``) and offers that same string to every browser.
A fact without an entry in that table is not shown on the dashboard.

Threads and who owns what:

* the actor thread owns all state, the delta sequence number and every client's record;
* ``gateway-http`` runs the bounded WSGI server (``webui.http_server``: one thread per request
  whose head has arrived, at most ``web.max_connections``) with the routes of ``webui.app``,
  which reach this actor only through a ``DashboardLink``;
* each WebSocket request thread is the *only writer* of its socket: it drains a bounded
  outbox that only the actor fills (``webui.outboxes``). A browser that falls behind never
  blocks the actor: when its outbox is full the actor empties it and puts a fresh snapshot
  instead. A browser whose writer made no progress for ``stall_timeout_s`` is hung up on and
  dropped.
* HTTP views never wait on any actor: they read a ``DashboardView``, an immutable record the
  actor replaces whenever the session, a worker or a fact changes (one reference swap).
  Control requests are *told* to the coordinator.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from uuid import uuid4

import pykka
from pydantic import BaseModel, ValidationError

from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.supervision.supervision import report_crash_of
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.base import Message, utc_now
from meta_orchestrator.messages.frames import (
    AckData,
    AckFrame,
    ErrorData,
    ErrorFrame,
    EventData,
    HelloData,
    HelloFrame,
    PongData,
    PongFrame,
    SessionEndedData,
    SnapshotData,
    encode_frame,
    frame_for,
)
from meta_orchestrator.messages.gateway import (
    BROWSER_REQUEST,
    AnswerBody,
    AnswerRequest,
    ClientConnected,
    ClientDisconnected,
    ControlReceived,
    ControlRequest,
    GatewayAddress,
    GatewayStats,
    GetGatewayAddress,
    GetGatewayStats,
    PingRequest,
    ResyncRequest,
)
from meta_orchestrator.messages.session import (
    AnswerGiven,
    ControlRequested,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
)
from meta_orchestrator.messages.session_delta import WHOLE_EVERY, session_delta
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.worker import EventsRecorded, WorkerSnapshot, WorkerStateChanged
from meta_orchestrator.webui.app import DashboardLink, DashboardView, create_app, describe
from meta_orchestrator.webui.dashboard_server import DashboardServer, GatewayError
from meta_orchestrator.webui.outboxes import Outboxes
from meta_orchestrator.webui.security import Guard, allowed_hosts

logger = logging.getLogger(__name__)

MAX_FRAME_EVENT = 256 * 1024  # an event larger than this goes to browsers with a cut `raw`
RAW_KEPT = 16 * 1024
_CLOSED_QUESTION = ("answered", "expired")
_SNAPSHOT_TAIL = '"changes":null,"events":[],"recent":[]}'


@dataclass
class _Ring:
    """Recent strings, numbered by consecutive keys, with a count and a byte bound.

    Kept as the batches they came in (an agent's pipe read is hundreds of events), so keeping
    one costs a few steps whatever its length; only the oldest batch is ever cut.
    """

    max_items: int
    max_bytes: int
    # (key of the first text, the texts, their length together), oldest first
    chunks: deque[tuple[int, tuple[str, ...], int]] = field(default_factory=deque)
    count: int = 0
    size: int = 0

    def __len__(self) -> int:
        return self.count

    @property
    def first_key(self) -> int | None:
        return self.chunks[0][0] if self.chunks else None

    def append(self, key: int, text: str) -> None:
        self.extend(key, (text,), len(text))

    def extend(self, first_key: int, texts: tuple[str, ...], size: int | None = None) -> None:
        """Keep ``texts``, numbered from ``first_key`` (the key after the last one kept);
        ``size``: their length together, when the caller knows it."""
        if not texts:
            return
        size = sum(map(len, texts)) if size is None else size
        self.chunks.append((first_key, texts, size))
        self.count += len(texts)
        self.size += size
        while self.count > self.max_items or self.size > self.max_bytes:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        """Drop what the bounds need from the oldest batch (all of it, or its first texts)."""
        first_key, texts, size = self.chunks[0]
        drop = self.count - self.max_items
        if self.size > self.max_bytes:
            excess, freed, n = self.size - self.max_bytes, 0, 0
            while n < len(texts) and freed < excess:
                freed += len(texts[n])
                n += 1
            drop = max(drop, n)
        if drop >= len(texts):
            self.chunks.popleft()
            self.count -= len(texts)
            self.size -= size
            return
        dropped = sum(map(len, texts[:drop]))
        self.chunks[0] = (first_key + drop, texts[drop:], size - dropped)
        self.count -= drop
        self.size -= dropped

    def texts(self) -> Iterator[str]:
        for _, texts, _ in self.chunks:
            yield from texts

    def after(self, key: int) -> list[str]:
        """The texts kept whose key is greater than ``key``, oldest first."""
        found: list[str] = []
        for first_key, texts, _ in self.chunks:
            if first_key + len(texts) - 1 > key:
                found.extend(texts[max(key - first_key + 1, 0) :])
        return found


def _for_browsers(event: Event, data: str) -> str:
    """An event's frame data: its line, or past ``MAX_FRAME_EVENT`` the line with ``raw`` cut
    (the whole line stays in <agent>.jsonl)."""
    if len(data) <= MAX_FRAME_EVENT:
        return data
    raw = event.raw or ""
    cut = EventData(**event.model_dump(exclude={"raw"}), raw=raw[:RAW_KEPT], raw_cut=len(raw))
    return cut.model_dump_json(exclude_none=True)


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
        self._facts_kept = facts_kept
        self.epoch = uuid4().hex[:12]

        self._seq = 0
        self._events_seen = 0
        self._events = _Ring(max_items=events_kept, max_bytes=16 * 1024 * 1024)
        self._frames = _Ring(max_items=frames_kept, max_bytes=32 * 1024 * 1024)
        self._session: SessionSnapshot | None = None
        self._session_changes = 0
        self._session_view: dict[str, Any] | None = None
        self._workers: dict[str, WorkerSnapshot] = {}
        self._worker_views: dict[str, dict[str, Any]] = {}
        # per frame type: (seq, encoded frame, data as JSON-ready dict), oldest first
        self._facts: dict[str, deque[tuple[int, str, dict[str, Any]]]] = {}
        self._ended: SessionEndedData | None = None
        self._changes_json = "null"  # the latest changes frame's data, spliced into snapshots
        self._clients = Outboxes(self._snapshot, stall_timeout_s)
        self._snapshot_cache: tuple[int, str] | None = None
        self._started_at = utc_now()
        self.view = DashboardView()
        self._server = DashboardServer(settings, next_free_port)
        self.host = settings.host
        self.port = self._server.port
        self.app = create_app(self._link())
        self._server.mount(self.app)

    # -- lifecycle --

    def on_start(self) -> None:
        self._server.start()
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
        self._clients.close_all()
        self._server.stop()
        self._clients.hang_up_stuck()

    # -- the switchboard --

    def on_receive(self, message: object) -> object:
        match message:
            case EventsRecorded():
                return self._on_events(message)
            case WorkerStateChanged():
                return self._on_worker_state_changed(message)
            case SessionStateChanged():
                return self._on_session_state_changed(message)
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

    def _on_events(self, message: EventsRecorded) -> None:
        """Number and keep each event; offer the batch to every browser as one queue item.

        The data of an ``event`` frame is the line already written to ``<agent>.jsonl``
        (``Event`` serialised without its empty fields, as ``EventData``), serialised once upstream
        (or here, for a batch read back from disk without its lines).
        """
        lines = message.jsonl_lines()
        if max(map(len, lines)) > MAX_FRAME_EVENT:
            lines = tuple(_for_browsers(event, data) for event, data in zip(message.events, lines, strict=True))
        seen, seq, count = self._events_seen, self._seq, len(lines)
        self._events_seen, self._seq = seen + count, seq + count
        frames = tuple(
            [
                f'{{"type":"event","seq":{n},"data":{data}}}'
                for n, data in zip(range(seq + 1, seq + count + 1), lines, strict=True)
            ]
        )  # encode_frame
        self._events.extend(seen + 1, lines)
        self._frames.extend(seq + 1, frames)
        # One outbox item for the batch, its frames apart: a socket sends them as one message,
        # a stream writes them one by one, and neither parses them again.
        self._clients.offer_all(frames[0] if count == 1 else frames)

    def _on_worker_state_changed(self, message: WorkerStateChanged) -> None:
        # One entry per run slot: claude, claude#2, ... (a review worker has its own snapshot too).
        self._workers[message.snapshot.name] = message.snapshot
        self._worker_views[message.snapshot.name] = message.snapshot.model_dump(mode="json")
        self._publish("worker", message.snapshot.model_dump_json())

    def _on_session_state_changed(self, message: SessionStateChanged) -> None:
        """A ``session_delta`` frame with what changed (an assignment, a decision...); the whole
        session as a ``session`` frame first, every ``WHOLE_EVERY`` changes, and when a
        delta cannot say it. A browser that connects or falls behind gets it in a snapshot."""
        before, whole_due = self._session_view, self._session_changes % WHOLE_EVERY == 0
        self._session_changes += 1
        self._session = message.snapshot
        self._session_view = message.snapshot.model_dump(mode="json")
        delta = None if before is None or whole_due else session_delta(before, self._session_view)
        if delta is None:
            self._publish("session", message.snapshot.model_dump_json())
        else:
            self._publish("session_delta", delta.model_dump_json())

    def _on_other_fact(self, message: BaseModel) -> None:
        found = frame_for(message)
        if found is None:
            logger.debug("the dashboard does not show %s", type(message).__name__)
            return
        kind, data = found
        data_json = data.model_dump_json()
        if isinstance(message, SessionEnded):
            self._ended = data  # type: ignore[assignment]
            self._publish(kind, data_json)
            return
        if kind == "changes":  # state: the latest replaces the one before, for every snapshot
            self._changes_json = data_json
            self._publish(kind, data_json)
            return
        frame = self._publish(kind, data_json, keep_view=False)
        kept = self._facts.setdefault(kind, deque(maxlen=self._facts_kept))
        kept.append((self._seq, frame, data.model_dump(mode="json")))
        self.view = self._make_view()

    def _publish(self, kind: str, data_json: str, keep_view: bool = True) -> str:
        """State is already updated: number the delta, keep it, offer it to every browser."""
        self._seq += 1
        frame = encode_frame(kind, self._seq, data_json)  # serialised once for all clients
        self._frames.append(self._seq, frame)
        if keep_view:
            self.view = self._make_view()
        self._clients.offer_all(frame)
        return frame

    def _make_view(self) -> DashboardView:
        return DashboardView(
            session=self._session_view,
            workers=tuple(self._worker_views[a] for a in sorted(self._worker_views)),
            facts=tuple((k, tuple(d for _, _, d in v)) for k, v in self._facts.items()),
            ended=self._ended.model_dump(mode="json") if self._ended is not None else None,
            changes_json=self._changes_json,
            seq=self._seq,
        )

    # -- clients --

    def _on_client_connected(self, message: ClientConnected) -> None:
        record = self._clients.add(message)
        since = message.since
        if since is not None and self._can_resume(since):
            missed = self._frames.after(since)
            hello = HelloFrame(data=HelloData(since=since, seq=self._seq, epoch=self.epoch, missed=len(missed)))
            self._clients.offer(record, hello.model_dump_json())
            for frame in missed:
                self._clients.offer(record, frame)
            logger.info(
                "browser %s (%s) resumed after seq %d: %d frames", message.client, message.remote, since, len(missed)
            )
        else:
            self._clients.offer(record, self._snapshot())
            logger.info("browser %s (%s) connected", message.client, message.remote)

    def _can_resume(self, since: int) -> bool:
        if since == self._seq:
            return True
        first = self._frames.first_key
        if since > self._seq or first is None:
            return False
        return first <= since + 1

    def _on_client_disconnected(self, message: ClientDisconnected) -> None:
        if self._clients.remove(message.client):
            logger.info("browser %s disconnected (%s)", message.client, message.reason)

    def _on_control_received(self, message: ControlReceived) -> None:
        record = self._clients.get(message.client)
        if record is None:
            return
        try:
            request_ = BROWSER_REQUEST.validate_json(message.raw)
        except ValidationError as exc:
            refused = ErrorFrame(data=ErrorData(error=describe(exc), request=message.raw[:500]))
            self._clients.offer(record, refused.model_dump_json())
            return
        error: str | None = None
        match request_:
            case PingRequest():
                self._clients.offer(record, PongFrame(data=PongData(seq=self._seq)).model_dump_json())
                return
            case ResyncRequest():
                self._clients.replace_by_snapshot(record)
                return
            case ControlRequest():
                error = send_control(self._coordinator, request_.action, request_.agent)
            case AnswerRequest():
                error = send_answer(self._coordinator, self.view.session, request_)[1]
        if error:
            reply: ErrorFrame | AckFrame = ErrorFrame(data=ErrorData(error=error))
        else:
            reply = AckFrame(data=AckData(request=request_.model_dump(mode="json")))
        self._clients.offer(record, reply.model_dump_json())

    def _snapshot(self) -> str:
        """The whole state as one frame; cached until the next delta.

        The head is ``SnapshotData`` serialised with no changes, events or recent frames;
        those are spliced in as the strings already sent (each valid by the same contract),
        so a large diff is serialised once per merge, not once per snapshot.
        """
        if self._snapshot_cache is not None and self._snapshot_cache[0] == self._seq:
            return self._snapshot_cache[1]
        head = SnapshotData(
            epoch=self.epoch,
            seq=self._seq,
            server_time=utc_now(),
            started_at=self._started_at,
            session=self._session,
            workers=tuple(self._workers[a] for a in sorted(self._workers)),
            ended=self._ended,
            events_seen=self._events_seen,
        ).model_dump_json()
        assert head.endswith(_SNAPSHOT_TAIL), "changes, events and recent are the last fields of SnapshotData"
        events = ",".join(self._events.texts())
        recent = ",".join(frame for _, frame, _ in sorted(f for kept in self._facts.values() for f in kept))
        changes = self._changes_json
        data = f'{head[: -len(_SNAPSHOT_TAIL)]}"changes":{changes},"events":[{events}],"recent":[{recent}]}}'
        frame = encode_frame("snapshot", self._seq, data)
        self._snapshot_cache = (self._seq, frame)
        return frame

    def _link(self) -> DashboardLink:
        """What the routes may use of this actor (see ``webui.app``)."""
        actor_ref = self.actor_ref

        def tell(message: Message) -> bool:
            try:
                actor_ref.tell(message)
            except pykka.ActorDeadError:
                return False
            return True

        return DashboardLink(
            guard=Guard(token=self._token, port=self.port, hosts=allowed_hosts(self.host)),
            session_dir=self._session_dir,
            client_queue=self._settings.client_queue,
            ping_interval_s=self._settings.ping_interval_s,
            epoch=self.epoch,
            view=lambda: self.view,  # one attribute read: the actor swaps the record whole
            tell=tell,
            control=lambda action, agent: send_control(self._coordinator, action, agent),
            answer=lambda body: send_answer(self._coordinator, self.view.session, body),
            close=self._close_requested.set,
        )

    # -- questions --

    def address(self) -> GatewayAddress:
        """Where the dashboard listens, and the address (with token) to give the user."""
        return self._server.address(self._token)

    def _stats(self) -> GatewayStats:
        return GatewayStats(
            seq=self._seq,
            events_seen=self._events_seen,
            events_kept=len(self._events),
            frames_kept=len(self._frames),
            clients_dropped=self._clients.dropped,
            clients=tuple(box.stats() for box in self._clients),
        )


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
        coordinator.tell(
            AnswerGiven(
                question_id=answer.question_id, answer=answer.answer, approve=answer.approve, source="dashboard"
            )
        )
    except pykka.ActorDeadError:
        return 503, "the coordinator has stopped"
    logger.info("dashboard answered question %s (approve=%s)", answer.question_id, answer.approve)
    return 202, None


__all__ = ["Gateway", "GatewayError", "find_question", "send_answer", "send_control", "unknown_agent"]
