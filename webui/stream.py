"""``GET /api/stream``: the WebSocket's frames as Server-Sent Events, for scripts and curl -N.

Each frame goes out as one SSE message whose ``data`` is the frame exactly as a WebSocket
receives it, and whose ``id`` is its delta seq; a batch is sent as the frames it holds, one
message each, so every delta has its own id. A reconnect that sends ``Last-Event-ID`` (or
``?since=``) gets the frames it missed from the gateway's ring, or a fresh snapshot when
they are gone, as a WebSocket does. Replies meant for one browser (``hello``) carry no id.

The stream is a client of the gateway like a socket: a bounded outbox that only the actor
fills, so a slow reader is given a snapshot instead of holding anyone up, and one whose
writes make no progress is hung up on. A comment line every ``web.ping_interval_s`` lets a
dead connection be noticed (its write fails once the kernel gives the peer up).
"""

from __future__ import annotations

import json
import queue
import re
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from uuid import uuid4

from flask import Flask, Response, jsonify, request

from meta_orchestrator.messages.gateway import ClientConnected, ClientDisconnected
from meta_orchestrator.webui.http_server import peer_has_closed
from meta_orchestrator.webui.outboxes import OutboxItem, frame_list
import contextlib

if TYPE_CHECKING:
    from meta_orchestrator.webui.app import DashboardLink

SINCE_DIGITS = 15
HANGUP_CHECK_S = 0.5  # a quiet stream looks this often whether its reader hung up
_HEAD = re.compile(r'^\{"type":"(\w+)","seq":(null|\d+),')


def sse_messages(item: str | tuple[str, ...]) -> str:
    """The SSE messages for one outbox item (a frame, or the frames of a batch of events),
    written in one go."""
    return "".join(_sse_message(frame) for frame in frame_list(item))


def _sse_message(frame: str) -> str:
    head = _HEAD.match(frame)
    if head is not None:
        seq = head.group(2)
    else:
        value = json.loads(frame).get("seq")
        seq = str(value) if isinstance(value, int) else "null"
    prefix = f"id: {seq}\n" if seq != "null" else ""
    return f"{prefix}data: {frame}\n\n"


def add_stream_route(app: Flask, link: DashboardLink) -> None:
    """Register ``/api/stream`` on the dashboard's app."""

    @app.get("/api/stream")
    def stream() -> Response:
        raw = request.headers.get("Last-Event-ID") or request.args.get("since")
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= SINCE_DIGITS):
            response = jsonify(
                error=f"since (or Last-Event-ID) must be a frame's seq, a whole number, not {raw[:40]!r}"
            )
            response.status_code = 400
            return response
        since = int(raw) if raw is not None else None
        outbox: queue.Queue[OutboxItem] = queue.Queue(maxsize=link.client_queue)
        client = "sse-" + uuid4().hex[:12]
        sock = request.environ.get("werkzeug.socket")

        def hangup() -> None:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

        if not link.tell(
            ClientConnected(client=client, outbox=outbox, since=since, remote=request.remote_addr, hangup=hangup)
        ):
            response = jsonify(error="the dashboard is shutting down")
            response.status_code = 503
            return response

        def generate() -> Iterator[str]:
            reason = "closed by the reader"
            try:
                yield "retry: 1000\n\n"
                quiet_since = time.monotonic()
                while True:
                    try:
                        frame = outbox.get(timeout=HANGUP_CHECK_S)
                    except queue.Empty:
                        if sock is not None and peer_has_closed(sock):
                            return  # its slot is free at once, not at the next keepalive
                        if time.monotonic() - quiet_since >= link.ping_interval_s:
                            quiet_since = time.monotonic()
                            yield ": keepalive\n\n"
                        continue
                    if frame is None:
                        reason = "closed by the gateway"
                        return
                    quiet_since = time.monotonic()
                    yield sse_messages(frame)
            finally:
                link.tell(ClientDisconnected(client=client, reason=reason))

        return Response(
            generate(),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
