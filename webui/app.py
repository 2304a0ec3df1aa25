"""The dashboard's Flask app: the page, the JSON API and the WebSocket route.

The routes reach the gateway actor only through a ``DashboardLink``: they read the latest
``DashboardView`` (an immutable record the actor swaps whole), tell it what a socket did,
and hand controls and answers to functions that *tell* the coordinator. They never wait on
an actor, so a flood of facts in the actor's inbox cannot slow an API call.

Each WebSocket request thread is the only writer of its socket: it drains a bounded outbox
that only the actor fills, and tells the actor what the browser sends (``ControlReceived``).
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from uuid import uuid4

import simple_websocket
from flask import Flask, Response, jsonify, request, send_from_directory
from flask.json.provider import DefaultJSONProvider
from flask_sock import Sock
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException
from wsproto.events import Ping

from meta_orchestrator.actors.history.event_pages import read_events_page, read_review, read_reviews
from meta_orchestrator.messages.base import Message, utc_now
from meta_orchestrator.messages.frames import ErrorData, ErrorFrame, format_utc, one_message
from meta_orchestrator.messages.gateway import (
    CONTROL_ACTIONS,
    AnswerBody,
    ClientConnected,
    ClientDisconnected,
    ControlBody,
    ControlReceived,
)
from meta_orchestrator.webui.outboxes import OutboxItem
from meta_orchestrator.webui.stream import add_stream_route
from meta_orchestrator.webui.security import PAGE_CSP, SECURITY_HEADERS, WS_PROTOCOL, Guard
import contextlib

logger = logging.getLogger(__name__)

# The package's own files, wherever it is installed (a wheel or an editable checkout).
STATIC_DIR = Path(str(resources.files("meta_orchestrator.webui") / "static"))
MAX_WS_MESSAGE = 64 * 1024
MAX_BODY = 64 * 1024
BATCH_MAX = 256
SINCE_DIGITS = 15


@dataclass(frozen=True)
class DashboardView:
    """What the HTTP views read: swapped by the actor, never mutated."""

    session: dict[str, Any] | None = None
    workers: tuple[dict[str, Any], ...] = ()
    facts: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()
    ended: dict[str, Any] | None = None
    changes_json: str = "null"  # the latest changes frame's data, as sent
    seq: int = 0


@dataclass(frozen=True)
class DashboardLink:
    """All the routes may use of the gateway actor.

    Attributes:
        guard: the token, port and Host allowlist checks.
        session_dir: ``workspace/<session_id>``: the ``<agent>.jsonl`` files, ``reviews/``.
        client_queue: frames buffered per browser.
        ping_interval_s: a WebSocket is pinged this often (closed when a ping went unanswered),
            an SSE stream gets a comment line: a dead peer is noticed.
        epoch: the gateway's run; a reconnect with another epoch starts from a snapshot.
        view: the latest ``DashboardView``.
        tell: tells the actor a socket's message; False once the actor has stopped.
        control: tells the coordinator a control; the error text, or ``None``.
        answer: tells the coordinator an answer; (HTTP status, error or ``None``).
        close: the user pressed "close dashboard".
    """

    guard: Guard
    session_dir: Path
    client_queue: int
    ping_interval_s: float
    epoch: str
    view: Callable[[], DashboardView]
    tell: Callable[[Message], bool]
    control: Callable[[str, str | None], str | None]
    answer: Callable[[AnswerBody], tuple[int, str | None]]
    close: Callable[[], None]


class InOrderJSON(DefaultJSONProvider):
    """Flask's JSON with the keys in the order they were built (the frames' order), not sorted."""

    sort_keys = False


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: what is wrong; ...``."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def _short(value: str | None, keep: int = 40) -> str:
    text = value or ""
    return repr(text if len(text) <= keep else text[:keep] + "...")


def create_app(link: DashboardLink) -> Flask:
    """The dashboard's routes."""
    app = Flask("orchestrator_dashboard", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.config["SOCK_SERVER_OPTIONS"] = {
        "max_message_size": MAX_WS_MESSAGE,
        "subprotocols": [WS_PROTOCOL],
        # No pings from the library's reader thread: this request's thread sends them (``Pinger``).
        "ping_interval": None,
    }
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json = InOrderJSON(app)
    sock = Sock(app)

    _add_guard(app, link)
    _add_read_routes(app, link)
    _add_file_routes(app, link)
    _add_action_routes(app, link)
    add_stream_route(app, link)

    @app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api_unknown(rest: str) -> Response:
        return _refuse(404, f"no such API endpoint: {request.method} /api/{_short(rest, 100)[1:-1]}")

    _prepare_websockets(app)
    _add_socket_route(sock, link)
    return app


def _prepare_websockets(app: Flask) -> None:
    """What a ``/ws`` request needs before flask-sock's view accepts it (hooks run first)."""

    @app.before_request
    def prepare() -> None:
        if request.path != "/ws":
            return
        # simple-websocket 1.1 accepts every permessage-deflate offer (no option turns it off)
        # and browsers always offer it: zlib ran on every frame over 127.0.0.1, for about a
        # fifth more of the gateway's CPU in a flood (docs/benchmarks.md). Without the offer
        # the handshake agrees no extension.
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        # The library's socket from the start: the handshake too goes through it, and the
        # library's close of it leaves Werkzeug's own socket open (``OneWriterSocket.close``).
        sock = request.environ.get("werkzeug.socket")
        if sock is not None:
            request.environ["werkzeug.socket"] = OneWriterSocket(sock)


def _refuse(status: int, reason: str) -> Response:
    """A JSON error answer, logged with who asked."""
    logger.warning("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, reason)
    response = jsonify(error=reason)
    response.status_code = status
    return response


def _json_body() -> tuple[Any, Response | None]:
    """The request's JSON body ({} when empty), or the refusal that says why it is not JSON."""
    raw = request.get_data(cache=False, as_text=False)
    if not raw.strip():
        return {}, None
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, _refuse(400, f"the request body is not valid JSON: {exc}")


def _add_guard(app: Flask, link: DashboardLink) -> None:
    """The token, Host, Origin and body rules before every request; safe headers after."""

    @app.before_request
    def guard() -> Response | None:
        refusal = link.guard.check(request.method, request.path, request.headers, request.args.get("token"))
        return None if refusal is None else _refuse(refusal.status, refusal.reason)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        if request.path == "/" or request.path.endswith(".html"):
            response.headers["Content-Security-Policy"] = PAGE_CSP
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        response = jsonify(error=f"{exc.name}: {exc.description}" if exc.description else exc.name)
        response.status_code = exc.code or 500
        return response


def _add_read_routes(app: Flask, link: DashboardLink) -> None:
    """The page and the read-only API over the state the gateway keeps (its view)."""

    @app.get("/")
    def index() -> Response:
        # The page itself is not secret; it takes ?token= from its address, keeps it in
        # sessionStorage and removes it from the address bar.
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/api/health")
    def health() -> Response:
        return jsonify(ok=True, server_time=format_utc(utc_now()))

    @app.get("/api/session")
    def session_() -> Response:
        view = link.view()
        return jsonify(session=view.session, ended=view.ended, seq=view.seq)

    @app.get("/api/workers")
    def workers() -> Response:
        return jsonify(workers=list(link.view().workers))

    @app.get("/api/decisions")
    def decisions() -> Response:
        return jsonify(decisions=list((link.view().session or {}).get("decisions") or ()))

    @app.get("/api/changes")
    def changes() -> Response:
        # Diffs of up to megabytes: the text the frame carried, never parsed again.
        return Response('{"changes":' + link.view().changes_json + "}", mimetype="application/json")

    @app.get("/api/resources")
    def resources_() -> Response:
        samples = [
            {"type": kind, "data": item}
            for kind, items in link.view().facts
            if kind in ("resources", "limit")
            for item in items
        ]
        return jsonify(resources=samples)


def _add_file_routes(app: Flask, link: DashboardLink) -> None:
    """The read-only API over the session's files: reviews, and pages of events."""

    @app.get("/api/reviews")
    def reviews() -> Response:
        return jsonify(reviews=read_reviews(link.session_dir))

    @app.get("/api/reviews/<review_id>")
    def review(review_id: str) -> Response:
        found = read_review(link.session_dir, review_id)
        if found is None:
            return _refuse(404, f"unknown review id {_short(review_id)}")
        return jsonify(found)

    @app.get("/api/events")
    def events() -> Response:
        args = request.args
        unknown = sorted(set(args) - {"since", "agent", "type", "limit"})
        if unknown:
            return _refuse(400, f"unknown query parameter(s): {', '.join(_short(u) for u in unknown[:5])}")
        raw_limit = args.get("limit", "200")
        if not (_is_seq(raw_limit) and len(raw_limit) <= 4):
            return _refuse(400, f"limit must be a whole number from 1 to 1000, not {_short(raw_limit)}")
        try:
            page = read_events_page(
                link.session_dir, args.get("since"), args.get("agent") or None, args.get("type") or None, int(raw_limit)
            )
        except ValueError as exc:
            return _refuse(400, str(exc))
        return jsonify(page)


def _add_action_routes(app: Flask, link: DashboardLink) -> None:
    """Controls, answers and closing the dashboard: each only tells."""

    @app.post("/api/control/<action>")
    def control(action: str) -> Response:
        if action not in CONTROL_ACTIONS:
            return _refuse(404, f"unknown action {_short(action)}; expected one of {', '.join(CONTROL_ACTIONS)}")
        body, error = _json_body()
        if error is not None:
            return error
        try:
            parsed = ControlBody.model_validate(body)
        except ValidationError as exc:
            return _refuse(400, describe(exc))
        failure = link.control(action, parsed.agent)
        if failure:
            # An agent no adapter knows is the request's fault; anything else is ours.
            return _refuse(400 if failure.startswith("agent:") else 503, failure)
        response = jsonify(ok=True, action=action, agent=parsed.agent)
        response.status_code = 202
        return response

    @app.post("/api/answer")
    def answer() -> Response:
        body, error = _json_body()
        if error is not None:
            return error
        try:
            parsed = AnswerBody.model_validate(body)
        except ValidationError as exc:
            return _refuse(400, describe(exc))
        status, failure = link.answer(parsed)
        if failure:
            return _refuse(status, failure)
        response = jsonify(ok=True, question_id=parsed.question_id)
        response.status_code = status
        return response

    @app.post("/api/close")
    def close() -> Response:
        logger.info("the user closed the dashboard from the page")
        link.close()
        response = jsonify(ok=True)
        response.status_code = 202
        return response


def _add_socket_route(sock: Sock, link: DashboardLink) -> None:
    """The live feed: one WebSocket per browser, its only writer this request's thread."""

    @sock.route("/ws")
    def websocket(ws: simple_websocket.Server) -> None:
        raw_since = request.args.get("since")
        if raw_since is not None and not _is_seq(raw_since):
            _refuse_socket(ws, f"since must be the seq of the last frame (a whole number), not {_short(raw_since)}")
            return
        since = int(raw_since) if raw_since is not None else None
        if request.args.get("epoch") not in (None, link.epoch):
            since = None  # another gateway's numbering: start from a snapshot
        outbox: queue.Queue[OutboxItem] = queue.Queue(maxsize=link.client_queue)
        client = uuid4().hex[:12]

        def hangup() -> None:
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)

        remote = request.remote_addr
        if not link.tell(ClientConnected(client=client, outbox=outbox, since=since, remote=remote, hangup=hangup)):
            _finish(ws)
            return
        reason = "closed by the gateway"
        pinger = Pinger(ws, link.ping_interval_s)
        try:
            while (frames := _next(ws, outbox, client, link.tell, pinger)) is not None:
                # The only thread that writes to this socket. Frames that queued up while it
                # sent go out as one "batch" message: one send instead of many under load.
                ready = [item for item in frames if item is not None]
                if ready:
                    ws.send(one_message(ready))
                if frames[-1] is None:
                    break
        except simple_websocket.ConnectionClosed:
            reason = "closed by the browser"
        except OSError as exc:
            reason = f"socket error: {exc}"
        finally:
            code, message = None, None
            if pinger.unanswered:  # the close frame says why, as simple-websocket's own pings did
                reason, code, message = "no answer to a ping", 1008, "Ping/Pong timeout"
            link.tell(ClientDisconnected(client=client, reason=reason))
            _finish(ws, code=code, reason=message)


class Pinger:
    """Pings a WebSocket from the thread that sends its frames, and knows when one went unanswered.

    simple-websocket can ping from its reader thread, but a send of its own beside ours put a
    ping inside a frame (see ``OneWriterSocket``); its reader thread still notes each pong."""

    def __init__(self, ws: simple_websocket.Server, interval_s: float) -> None:
        self.interval_s = interval_s
        self._ws = ws
        self._due = time.monotonic() + interval_s
        self.unanswered = False  # a ping went unanswered: the socket is closed for it

    def ping_if_due(self) -> bool:
        """Ping when the interval has passed since the last; False: the last was never answered."""
        now = time.monotonic()
        if now < self._due:
            return True
        if not self._ws.pong_received:
            self.unanswered = True
            return False
        self._ws.pong_received = False
        self._ws.sock.send(self._ws.ws.send(Ping()))
        self._due = now + self.interval_s
        return True


class OneWriterSocket:
    """A WebSocket's socket whose sends never interleave and are always whole.

    simple-websocket answers the browser's pings and closes from its reader thread while this
    request's thread sends frames, each with one ``socket.send``. A send to a slow browser
    waits for room in the buffer, and the kernel lets another thread's send in meanwhile: its
    pings (when it sent them) landed inside frames, and the browser closed the socket as
    corrupt (1007, seen in a 64-agent flood). A ``send`` may also be cut short (a signal),
    and the library ignores what it returns. Here each send is whole, one at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sending = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._sending:
            self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        """Shut the socket down and leave closing it to the server, which owns the connection.

        simple-websocket's reader thread closes its socket as the WebSocket ends, often before
        Werkzeug's request handler is done with it: Werkzeug then put the closed socket (fd -1)
        in a selector to drain it and logged "Error on request ... Invalid file descriptor" at
        nearly every close. Shut down, it reads as ended and a write fails as a dropped
        connection, which Werkzeug ignores; the server closes it after the handler."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def __getattr__(self, name: str) -> Any:  # recv, fileno, shutdown: the socket's own
        return getattr(self._sock, name)


def _is_seq(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= SINCE_DIGITS


def _refuse_socket(ws: simple_websocket.Server, reason: str) -> None:
    """Tell the browser why in an ``error`` frame, then close: bad input is not a traceback."""
    logger.warning("refused a WebSocket: %s", reason)
    with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
        ws.send(ErrorFrame(data=ErrorData(error=reason)).model_dump_json())
    _finish(ws, code=1008, reason="bad request")


def _finish(ws: simple_websocket.Server, code: int | None = None, reason: str | None = None) -> None:
    """Close the socket's write side after the close frame.

    Werkzeug writes an HTTP response once the WSGI app returns; on an upgraded socket the
    browser would read it as a corrupt frame ("Invalid frame header"). With the write side
    shut, that write fails as a dropped connection, which Werkzeug ignores quietly.
    """
    with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
        ws.close(reason=code, message=reason)
    with contextlib.suppress(OSError):
        ws.sock.shutdown(socket.SHUT_WR)


def _next(
    ws: simple_websocket.Server,
    outbox: queue.Queue[OutboxItem],
    client: str,
    tell: Callable[[Message], bool],
    pinger: Pinger,
) -> list[Any] | None:
    """Forward what the browser sent, ping it when due, then wait briefly for frames.

    Returns the frames queued so far (at most ``BATCH_MAX``; a trailing None means close
    after sending them), or None: close now (the gateway said so, or a ping went unanswered).
    """
    while True:
        if not pinger.ping_if_due():
            logger.warning("closing a WebSocket: its ping of %gs ago went unanswered", pinger.interval_s)
            return None
        while (raw := ws.receive(timeout=0)) is not None:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            if not tell(ControlReceived(client=client, raw=text)):
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
