"""The web servers' connections, bounded: one server for the dashboard and ``orchestrate serve``.

Werkzeug's threaded server starts a thread per connection, and that thread waits for the
request without a limit: a thousand idle sockets hold a thousand threads. Here the serving
thread reads every connection's request head itself (non-blocking, one selector for all),
and only a request whose head has arrived gets a thread, where Werkzeug's own handler runs
the WSGI app as before:

* ``request_timeout_s``: a request's line, headers and body must arrive within this of the
  connection opening. A head that does not is answered 408 by the serving thread (a silent
  connection is just closed); a body that does not fails its read (the app answers 400).
* ``max_connections``: requests being served at once, the live streams (WebSocket, SSE)
  among them. Past it a request is answered 503 at once by the serving thread: no thread.
* ``max_waiting``: connections still sending their head, held without a thread. Past it the
  oldest is closed, so idle sockets cannot keep a real request out.
* ``send_timeout_s``: a response write the peer takes nothing of for this long fails, and
  the kernel drops a peer that acknowledges nothing this long (``TCP_USER_TIMEOUT``).

A stream is never cut by the request timeout: it only bounds reads of the request, and a
WebSocket reads its socket directly. Werkzeug closes every connection after its response
(``Connection: close``), so there is no idle keep-alive connection to bound.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import select
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from meta_orchestrator.config.settings import WebSettings

logger = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024  # a request line and headers past this are answered 431
READ_CHUNK = 16 * 1024
ACCEPT_BATCH = 64  # accepts per wake-up, so reading heads is not starved by a flood
LINGER_S = 1.0  # after an answer from the serving thread: read on until the peer closes
ACCEPT_PAUSE_S = 0.1  # out of file descriptors: stop accepting this long
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_POLLRDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer shut its side
_WAKE = "wake"  # the selector's mark of the wake-up pipe
_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


@dataclass(eq=False)
class Connection:
    """An accepted connection: its socket, what it sent so far, and until when it may."""

    sock: socket.socket
    address: Any
    deadline: float  # monotonic: the request must have arrived whole by then
    head: bytearray = field(default_factory=bytearray)


class BoundedWSGIServer(BaseWSGIServer):
    """Werkzeug's WSGI server over an already-listening socket, with bounded connections.

    ``serve_forever`` runs the selector loop on the calling thread; ``shutdown`` (from any
    other thread) ends it. Requests already being served run on to their end.
    """

    multithread = True

    def __init__(self, host: str, port: int, app: Any, limits: WebSettings, fd: int, name: str) -> None:
        super().__init__(host, port, app, handler=BoundedRequestHandler, fd=fd)
        self.limits = limits
        self.name = name
        self.socket.setblocking(False)
        self._waiting: dict[socket.socket, Connection] = {}  # oldest first (by deadline too)
        self._closing: dict[socket.socket, float] = {}  # answered; linger until (monotonic)
        self._selector = selectors.DefaultSelector()
        self._active = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()  # not serving yet: a shutdown has nothing to wait for
        self._accept_paused_until = 0.0
        # A stop wakes the loop at once through this pipe: no polling for it, idle or not.
        self._wake_r, self._wake_w = os.pipe()
        self._wake_fds: tuple[int, ...] = (self._wake_r, self._wake_w)
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def active(self) -> int:
        """Requests and streams being served now (each on a thread of its own)."""
        return self._active

    # -- the loop --

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                self._resume_accepting(now)
                for key, _ in self._selector.select(self._wait_s(now, poll_interval)):
                    if key.data is None:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 64)
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
        finally:
            for sock in [*self._waiting, *self._closing]:
                self._forget(sock)
            self._selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # full: a wake-up is pending already
            os.write(self._wake_w, b"\0")
        self._stopped.wait(timeout=5)

    def server_close(self) -> None:
        super().server_close()
        fds, self._wake_fds = getattr(self, "_wake_fds", ()), ()  # werkzeug closes in __init__ too
        for fd in fds:  # once: a number closed twice may be someone else's by then
            os.close(fd)

    def _wait_s(self, now: float, poll_interval: float) -> float:
        """Until the next deadline, at most ``poll_interval`` (a stop wakes the loop itself)."""
        wait = poll_interval
        if self._accept_paused_until:
            wait = min(wait, self._accept_paused_until - now)
        if self._waiting:
            wait = min(wait, next(iter(self._waiting.values())).deadline - now)
        if self._closing:
            wait = min(wait, next(iter(self._closing.values())) - now)
        return max(0.0, wait)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES and not self._evict_oldest():
                    self._pause_accepting(exc)
                return
            if len(self._waiting) + len(self._closing) >= self.limits.max_waiting:
                self._evict_oldest()
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: Any) -> None:
        try:
            sock.setblocking(False)
            # A live frame goes out at once: with Nagle's algorithm a frame sent while the last
            # is unacknowledged waits for the peer's delayed ACK (40 ms on Linux).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: a peer that acknowledges nothing is dropped
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(self.limits.send_timeout_s * 1000))
        except OSError:  # gone already
            close_quietly(sock)
            return
        self._waiting[sock] = Connection(sock, address, time.monotonic() + self.limits.request_timeout_s)
        self._selector.register(sock, selectors.EVENT_READ, True)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        connection = self._waiting.get(sock)
        if connection is None:  # answered already: what it still sends is dropped
            if not data:
                self._forget(sock)
            return
        if not data:
            self._forget(sock)
            return
        searched_from = max(0, len(connection.head) - 3)
        connection.head += data
        if head_end(connection.head, searched_from) >= 0:
            self._dispatch(connection)
        elif len(connection.head) > MAX_HEAD:
            self._answer(connection.sock, 431, "the request's line and headers are too long")

    def _dispatch(self, connection: Connection) -> None:
        """The head is in: a thread serves the request, or 503 when every slot is taken."""
        self._selector.unregister(connection.sock)
        del self._waiting[connection.sock]
        with self._lock:
            busy = self._active >= self.limits.max_connections
            if not busy:
                self._active += 1
        if busy:
            self._answer(
                connection.sock,
                503,
                f"the server is busy: {self.limits.max_connections} requests and live streams are open "
                "(web.max_connections); try again shortly",
                registered=False,
            )
            return
        connection.sock.setblocking(True)
        try:
            threading.Thread(target=self._serve, args=(connection,), name=f"{self.name}-request", daemon=True).start()
        except RuntimeError as exc:  # the process can start no more threads
            with self._lock:
                self._active -= 1
            self._answer(connection.sock, 503, f"the server cannot start a thread ({exc})", registered=False)

    def _serve(self, connection: Connection) -> None:
        try:
            self.finish_request(connection, connection.address)  # type: ignore[arg-type]
        except Exception:
            self.handle_error(connection, connection.address)
        finally:
            with self._lock:
                self._active -= 1
            self.shutdown_request(connection)

    def _expire(self, now: float) -> None:
        """Close what ran out of time: heads past the request timeout, answers past the linger."""
        while self._waiting:
            connection = next(iter(self._waiting.values()))
            if connection.deadline > now:
                break
            if connection.head:
                self._answer(
                    connection.sock, 408, f"the request did not arrive within {self.limits.request_timeout_s:g}s"
                )
            else:
                self._forget(connection.sock)  # it never said anything: nothing to answer
        while self._closing:
            sock, until = next(iter(self._closing.items()))
            if until > now:
                break
            self._forget(sock)

    # -- answers and closing, from the serving thread --

    def _answer(self, sock: socket.socket, status: int, reason: str, registered: bool = True) -> None:
        """A short JSON answer without a thread; then read on briefly, so the peer sees it
        (closing with its request unread would reset the connection and lose the answer)."""
        self._waiting.pop(sock, None)
        body = json.dumps({"error": reason}).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            + ("Retry-After: 1\r\n" if status == 503 else "")
            + "Connection: close\r\n\r\n"
        )
        try:
            sock.setblocking(False)
            sock.send(head.encode() + body)  # a new socket's buffer takes a few hundred bytes
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._forget(sock)
            return
        if not registered:
            self._selector.register(sock, selectors.EVENT_READ, True)
        self._closing[sock] = time.monotonic() + LINGER_S

    def _evict_oldest(self) -> bool:
        """Make room: close the oldest answered connection, else the oldest waiting one."""
        for held in (self._closing, self._waiting):
            if held:
                self._forget(next(iter(held)))
                return True
        return False

    def _forget(self, sock: socket.socket) -> None:
        self._waiting.pop(sock, None)
        self._closing.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        close_quietly(sock)

    def _pause_accepting(self, exc: OSError) -> None:
        logger.warning("%s: cannot accept connections (%s); pausing %gs", self.name, exc, ACCEPT_PAUSE_S)
        self._selector.unregister(self.socket)
        self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S

    def _resume_accepting(self, now: float) -> None:
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, None)

    # -- what socketserver would do with a request object; ours is a Connection --

    def shutdown_request(self, request: Any) -> None:
        """As socketserver does: end the write side (what was sent still goes), then close."""
        sock = request.sock if isinstance(request, Connection) else request
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        close_quietly(sock)


class BoundedRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, reading the head the server already has, then the socket
    within the request's deadline; writing with a timeout on the peer's progress."""

    protocol_version = "HTTP/1.1"
    request: Connection
    server: BoundedWSGIServer

    def setup(self) -> None:
        self.connection = self.request.sock
        timeout = self.server.limits.request_timeout_s
        self.rfile = io.BufferedReader(
            RequestReader(self.connection, bytes(self.request.head), self.request.deadline, timeout)
        )
        self.wfile = ResponseWriter(self.connection, self.server.limits.send_timeout_s)


class RequestReader(io.RawIOBase):
    """The request's bytes: first those the server read, then the socket's until the deadline."""

    def __init__(self, sock: socket.socket, head: bytes, deadline: float, timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._head = bytearray(head)
        self._deadline = deadline
        self._timeout_s = timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            del self._head[:n]
            return n
        while True:
            if self._sock.fileno() < 0:
                return 0  # closed under us (a library closed an upgraded socket): nothing more to read
            if not wait_ready(self._sock, select.POLLIN, self._deadline - time.monotonic()):
                raise TimeoutError(f"the request did not arrive within {self._timeout_s:g}s")
            try:
                return self._sock.recv_into(buffer, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue


class ResponseWriter(io.BufferedIOBase):
    """Writes the whole of each write, failing when the peer takes nothing for ``timeout_s``."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        super().__init__()
        self._sock = sock
        self._timeout_s = timeout_s

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        while view:
            if self._sock.fileno() < 0:
                # Closed under us (a library closed an upgraded socket; the dashboard's only shuts
                # it, see ``OneWriterSocket.close``): a disconnect, ended quietly, not an error.
                raise BrokenPipeError("the connection was closed")
            try:
                view = view[self._sock.send(view, socket.MSG_DONTWAIT) :]
                continue
            except BlockingIOError:
                pass
            if not wait_ready(self._sock, select.POLLOUT, self._timeout_s):
                raise TimeoutError(f"the peer took nothing for {self._timeout_s:g}s")
        return len(data)

    def fileno(self) -> int:
        return self._sock.fileno()


def wait_ready(sock: socket.socket, events: int, timeout_s: float) -> bool:
    """Whether ``sock`` is ready (or in error) within ``timeout_s``; poll, not select: any fd."""
    if timeout_s <= 0:
        return False
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(math.ceil(timeout_s * 1000)))


def peer_has_closed(sock: socket.socket) -> bool:
    """Whether the peer of a stream that sends nothing (an SSE reader) has closed or reset it."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | _POLLRDHUP)
    events = poller.poll(0)
    if not events:
        return False
    if events[0][1] & (_POLLRDHUP | select.POLLHUP | select.POLLERR):
        return True
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def head_end(data: bytearray, start: int = 0) -> int:
    """Where the request head's blank line is (searching from ``start``), or -1: not yet."""
    ends = [i for i in (data.find(b"\r\n\r\n", start), data.find(b"\n\n", start)) if i >= 0]
    return -1 if not ends else min(ends)


def close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


__all__ = ["BoundedWSGIServer", "Connection", "head_end", "peer_has_closed"]
