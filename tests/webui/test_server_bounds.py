"""The web servers' bounds, on 127.0.0.1, for the dashboard and ``orchestrate serve`` alike:
idle and half-sent connections hold no thread, a request past the cap is answered 503 at
once, slow requests and slow readers are cut, live streams (WebSocket, SSE) are not."""

from __future__ import annotations

import base64
import json
import os
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pykka
import pytest

from meta_orchestrator.config.settings import ConfigError, WebSettings, load_settings
from meta_orchestrator.webui.gateway import Gateway
from meta_orchestrator.messages.gateway import GetGatewayAddress, GetGatewayStats
from meta_orchestrator.messages.session import SessionStateChanged
from meta_orchestrator.webui.serve import ServeError, SessionsServer
from tests.conftest import wait_for
from tests.webui.test_gateway import TOKEN, session_snapshot
from tests.webui.test_gateway_ws import WsClient

IDLE = 1000
FILES_NEEDED = 2 * IDLE + 512  # both ends of each idle connection live in this process


@pytest.fixture(scope="module", autouse=True)
def _enough_files() -> Iterator[None]:
    """Room for both ends of a thousand connections (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FILES_NEEDED:
        if hard != resource.RLIM_INFINITY and hard < FILES_NEEDED:
            pytest.fail(f"this test needs {FILES_NEEDED} open files; the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILES_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@dataclass
class Served:
    """A running server: where it listens, and what the dashboard's actor is (if it is one)."""

    kind: str
    port: int
    gateway: Any = None


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Starts the dashboard or ``serve`` with the given ``[web]`` limits; stops it after."""
    stops: list[Callable[[], None]] = []

    def _start(kind: str, **limits: Any) -> Served:
        if kind == "dashboard":
            ref = Gateway.start(WebSettings(port=0, **limits), tmp_path / "session", TOKEN)
            return Served(kind, ref.ask(GetGatewayAddress(), timeout=5).port, ref)
        workspace = tmp_path / "workspace"
        workspace.mkdir(exist_ok=True)
        server = SessionsServer(workspace, port=0, token=TOKEN, web=WebSettings(**limits)).start()
        stops.append(server.stop)
        return Served(kind, server.port)

    yield _start
    for stop in stops:
        stop()


# --- raw HTTP on sockets -------------------------------------------------------------------------


def head(port: int, method: str = "GET", path: str = "/api/health", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"X-Orchestrate-Token: {TOKEN}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes (a timeout fails the test)."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size and (chunk := sock.recv(size - len(got))):
        got += chunk
    return got


def ask(port: int, request: bytes | None = None) -> tuple[int, bytes, bytes]:
    """One request on a fresh connection: (status, head, body); the server closes after it."""
    with connect(port) as sock:
        sock.sendall(request or head(port))
        answer = read_all(sock)
    top, _, body = answer.partition(b"\r\n\r\n")
    return int(top.split(b" ", 2)[1]), top, body


class Peer:
    """A client connection the test watches: what it received, and whether the server closed it."""

    def __init__(self, port: int, sends: bytes = b"") -> None:
        self.sock = connect(port)
        self.got = bytearray()
        if sends:
            self.sock.sendall(sends)

    def closed(self) -> bytes | None:
        """What the server sent, once it has closed the connection; None while it is open."""
        self.sock.settimeout(0.05)
        try:
            while chunk := self.sock.recv(65536):
                self.got += chunk
        except TimeoutError:
            return None
        except ConnectionResetError:
            pass
        return bytes(self.got)


def threads_now() -> int:
    return psutil.Process().num_threads()


# --- idle and half-sent connections ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dashboard", "serve"])
def test_a_thousand_idle_connections_hold_no_thread_and_a_request_is_still_answered(start, kind: str):
    served = start(kind)  # the defaults a user gets
    assert ask(served.port)[0] == 200
    before = threads_now()
    idle: list[socket.socket] = []
    try:
        for i in range(IDLE):
            sock = connect(served.port)
            idle.append(sock)
            if i % 2:  # half of them start a request and never finish it
                sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        began = time.perf_counter()
        status, top, body = ask(served.port)
        took = time.perf_counter() - began
        during = threads_now()
    finally:
        for sock in idle:
            sock.close()
    print(f"\n{kind}: with {IDLE} idle connections open, an authorised GET took {took * 1000:.1f} ms")
    assert status == 200 and json.loads(body)["ok"] is True
    assert b"Connection: close" in top  # no kept-alive connection waits idle after a response
    assert during <= before + 2, f"{during} threads with {IDLE} idle connections, {before} before"


@pytest.mark.parametrize("kind", ["dashboard", "serve"])
def test_half_sent_requests_are_closed_after_the_request_timeout(start, kind: str):
    served = start(kind, request_timeout_s=0.5)
    silent = Peer(served.port)
    half_head = Peer(served.port, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:")
    body_head = head(served.port, "POST", "/api/control/pause", Content_Type="application/json", Content_Length="40")
    half_body = Peer(served.port, body_head + b'{"agent":')
    try:
        began = time.monotonic()
        wait_for(lambda: silent.closed() is not None, timeout=5, message="the silent connection closed")
        assert silent.got == b""  # it asked nothing: nothing to answer
        answer = wait_for(half_head.closed, timeout=5, message="the half-sent head closed")
        assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 0.5s" in answer
        body_answer = wait_for(half_body.closed, timeout=5, message="the half-sent body closed")
        assert time.monotonic() - began >= 0.4  # not before the timeout
        # The dashboard reads the body and says it was cut short; serve has no such route.
        assert body_answer.startswith(b"HTTP/1.1 400 " if kind == "dashboard" else b"HTTP/1.1 404 ")
    finally:
        for peer in (silent, half_head, half_body):
            peer.sock.close()
    assert ask(served.port)[0] == 200


def test_a_head_too_long_is_refused_431(start):
    served = start("serve")
    with connect(served.port) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nX-Long: " + b"a" * 70_000)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")


# --- the cap --------------------------------------------------------------------------------------


def open_stream(port: int) -> socket.socket:
    """An SSE stream of the dashboard, read up to its first line."""
    sock = connect(port)
    sock.sendall(head(port, path="/api/stream"))
    got = b""
    while b"retry:" not in got:
        got += sock.recv(4096)
    assert got.startswith(b"HTTP/1.1 200 ")
    return sock


def test_dashboard_streams_count_toward_the_cap_and_past_it_a_request_is_answered_503(start):
    served = start("dashboard", max_connections=3, request_timeout_s=0.5)
    streams = [open_stream(served.port) for _ in range(3)]
    try:
        before = threads_now()
        refused = [ask(served.port) for _ in range(30)]
        after = threads_now()
        assert {status for status, _, _ in refused} == {503}
        assert b"Retry-After: 1" in refused[0][1] and b"web.max_connections" in refused[0][2]
        assert after <= before + 1, f"{after} threads after 30 refusals, {before} before"
        streams.pop().close()
        wait_for(lambda: ask(served.port)[0] == 200, timeout=5, message="a slot free again")
    finally:
        for sock in streams:
            sock.close()


def big_session(workspace: Path, megabytes: int) -> str:
    folder = workspace / "s-big"
    folder.mkdir(parents=True)
    state = {"session_id": "s-big", "status": "completed", "task": "x" * (megabytes << 20)}
    (folder / "state.json").write_text(json.dumps(state))
    return "s-big"


def test_serve_slow_readers_hold_slots_up_to_the_send_timeout_and_past_the_cap_get_503(start, tmp_path: Path):
    # A reader is given up send_timeout_s after it stopped taking: long enough that both are
    # still held when the third request comes on a loaded machine.
    served = start("serve", max_connections=2, send_timeout_s=5.0)
    session = big_session(tmp_path / "workspace", 16)
    readers = []
    try:
        for _ in range(2):  # each asks for 16 MB and reads only its first bytes
            reader = connect(served.port, rcvbuf=4096)
            reader.sendall(head(served.port, path=f"/api/sessions/{session}"))
            assert read_exactly(reader, 12) == b"HTTP/1.1 200"
            readers.append(reader)
        assert ask(served.port)[0] == 503
        # The server gives a reader that takes nothing up after send_timeout_s: slots free again.
        wait_for(lambda: ask(served.port)[0] == 200, timeout=60, message="the stalled writes given up")
    finally:
        for sock in readers:
            sock.close()


# --- live streams ---------------------------------------------------------------------------------


def test_dashboard_streams_outlive_the_request_timeout_and_still_get_frames(start):
    served = start("dashboard", request_timeout_s=0.5, ping_interval_s=0.2)
    ws = WsClient.connect(
        f"ws://127.0.0.1:{served.port}/ws", headers={"X-Orchestrate-Token": TOKEN}, subprotocols=["orchestrate"]
    )
    sse = open_stream(served.port)
    late = Peer(served.port, b"GET /")  # opened after both streams: once it is cut, their timeout is past too
    try:
        assert json.loads(ws.receive(timeout=5))["type"] == "snapshot"
        wait_for(late.closed, timeout=5, message="the half-sent request cut")
        served.gateway.tell(SessionStateChanged(snapshot=session_snapshot(task="after the timeout")))
        frame = json.loads(ws.receive(timeout=5))
        assert frame["type"] == "session" and frame["data"]["task"] == "after the timeout"
        sse.settimeout(5)
        got = b""
        while b"after the timeout" not in got:
            chunk = sse.recv(65536)
            assert chunk, "the SSE stream was closed"
            got += chunk
    finally:
        ws.close()
        sse.close()
        late.sock.close()


def test_a_websocket_peer_that_answers_no_ping_is_closed(start):
    served = start("dashboard", ping_interval_s=0.3)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = head(
        served.port,
        path="/ws",
        Upgrade="websocket",
        Connection="Upgrade",
        Sec_WebSocket_Key=key,
        Sec_WebSocket_Version="13",
        Sec_WebSocket_Protocol="orchestrate",
    )
    peer = Peer(served.port, upgrade)  # reads what comes, answers nothing
    try:
        wait_for(lambda: len(served.gateway.ask(GetGatewayStats(), timeout=5).clients) == 1, timeout=5)
        began = time.monotonic()
        got = wait_for(peer.closed, timeout=5, message="the silent WebSocket closed")
        assert got.startswith(b"HTTP/1.1 101 ") and time.monotonic() - began < 3
        assert b"Ping/Pong timeout" in got  # the close frame says why
        wait_for(lambda: not served.gateway.ask(GetGatewayStats(), timeout=5).clients, timeout=5)
    finally:
        peer.sock.close()


def test_serve_on_a_taken_port_says_so(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ServeError, match=r"already in use.*--port"):
            SessionsServer(tmp_path, port=taken.getsockname()[1], token=TOKEN)


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["max_connections = 0", "request_timeout_s = 0", "max_wating = 3"])
def test_bad_connection_limits_are_refused_with_the_key(tmp_path: Path, line: str):
    path = tmp_path / "config.toml"
    path.write_text(f"[web]\n{line}\n")
    with pytest.raises(ConfigError, match=line.split()[0]):
        load_settings(path)


def test_no_thread_is_left_behind(start):
    """Every connection thread ends once its peer is gone (the threads of this module's servers)."""
    served = start("dashboard", request_timeout_s=0.3)
    for _ in range(5):
        ask(served.port)
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith(f"gateway-http-{served.port}-request")],
        timeout=5,
        message="the request threads ended",
    )
