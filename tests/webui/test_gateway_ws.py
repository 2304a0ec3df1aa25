"""The gateway's WebSocket with plain clients on 127.0.0.1: access, order, resume, slow clients."""

from __future__ import annotations

import json
import logging
from collections import deque
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pykka
import pytest
import simple_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request, TextMessage
from wsproto.events import Event as WsEvent
from wsproto.extensions import PerMessageDeflate

from meta_orchestrator.messages.frames import FRAME
from meta_orchestrator.messages.gateway import GatewayAddress, GetGatewayStats
from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, SessionStateChanged
from meta_orchestrator.messages.worker import EventsRecorded, WorkerStateChanged
from tests.conftest import ProbeHandle, wait_for
from tests.webui.test_gateway import (
    TOKEN,
    event,
    session_snapshot,
    start_gateway,
    worker_snapshot,
)


@pytest.fixture(autouse=True)
def _stop_actors() -> Any:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


def ws_url(address: GatewayAddress, **query: Any) -> str:
    params = urllib.parse.urlencode(query)
    return f"ws://127.0.0.1:{address.port}/ws" + (f"?{params}" if params else "")


class WsClient(simple_websocket.Client):
    """simple-websocket's client, keeping a frame that came with the handshake's answer.

    simple-websocket 1.1's client handshake reads the 101 answer together with whatever the
    server sent right after it, but takes only the handshake's event: a first frame read in the
    same recv stays parsed in the protocol object until more bytes arrive, which may never
    happen (on a busy machine the gateway's snapshot "did not come" for 5 s, though it was
    sent). The handshake runs before the client's reader thread starts: handling the rest here
    is race-free.
    """

    def handshake(self) -> None:
        super().handshake()
        self.connected = self._handle_events()


def connect(address: GatewayAddress, **query: Any) -> simple_websocket.Client:
    return WsClient.connect(ws_url(address, **query), headers={"X-Orchestrate-Token": TOKEN})


_PENDING: dict[int, deque[dict[str, Any]]] = {}


def _next_frame(client: simple_websocket.Client, timeout: float) -> dict[str, Any] | None:
    """One frame; the frames of a "batch" message come out one by one, in order."""
    pending = _PENDING.setdefault(id(client), deque())
    if not pending:
        raw = client.receive(timeout=timeout)
        if raw is None:
            return None
        FRAME.validate_json(raw)  # every message a browser receives keeps the contract
        frame = json.loads(raw)
        pending.extend(frame["data"] if frame["type"] == "batch" else [frame])
    return pending.popleft()


def receive(client: simple_websocket.Client, timeout: float = 5.0) -> dict[str, Any]:
    frame = _next_frame(client, timeout)
    assert frame is not None, f"no frame within {timeout}s"
    return frame


def receive_until(client: simple_websocket.Client, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Frames up to and including the first one the predicate accepts."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = _next_frame(client, max(0.01, deadline - time.monotonic()))
        if frame is None:
            continue
        frames.append(frame)
        if predicate(frames[-1]):
            return frames
    raise AssertionError(f"no matching frame within {timeout}s; got {[f['type'] for f in frames][-10:]}")


def stats(ref: pykka.ActorRef[Any]) -> Any:
    return ref.ask(GetGatewayStats(), timeout=5)


class RawClient:
    """A WebSocket client on a bare socket that reads only when told to (a stalled browser)."""

    def __init__(
        self, address: GatewayAddress, rcvbuf: int = 4096, target: str = "/ws", extensions: tuple[Any, ...] = ()
    ) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", address.port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(
            self.ws.send(
                Request(
                    host=f"127.0.0.1:{address.port}",
                    target=target,
                    extensions=list(extensions),
                    extra_headers=[(b"x-orchestrate-token", TOKEN.encode())],
                )
            )
        )
        self._text: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self.accepted: AcceptConnection | None = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for ev in self._pump():
                if isinstance(ev, AcceptConnection):
                    self.accepted = ev
                    return
                if isinstance(ev, RejectConnection):
                    raise ConnectionError(ev.status_code)
        raise AssertionError("no handshake answer")

    def _pump(self) -> list[WsEvent]:
        self.sock.settimeout(1.0)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("closed")
        self.ws.receive_data(data)
        events = list(self.ws.events())
        for ev in events:
            if isinstance(ev, CloseConnection):
                self.closed_with = ev.code
            if isinstance(ev, TextMessage):
                self._text.append(ev.data)
                if ev.message_finished:
                    FRAME.validate_json("".join(self._text))
                    message = json.loads("".join(self._text))
                    self.frames.extend(message["data"] if message["type"] == "batch" else [message])
                    self._text.clear()
        return events

    def read_until(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        checked = 0
        while time.monotonic() < deadline:
            for frame in self.frames[checked:]:
                if predicate(frame):
                    return frame
            checked = len(self.frames)
            self._pump()
        raise AssertionError(f"no matching frame within {timeout}s")

    def close(self) -> None:
        self.sock.close()


def test_no_token_a_wrong_one_or_one_in_the_address_is_refused(tmp_path: Path) -> None:
    _, address = start_gateway(tmp_path)
    with pytest.raises(simple_websocket.ConnectionError, match="401"):
        simple_websocket.Client.connect(ws_url(address))
    with pytest.raises(simple_websocket.ConnectionError, match="401"):
        simple_websocket.Client.connect(ws_url(address), headers={"X-Orchestrate-Token": "guess"})
    with pytest.raises(simple_websocket.ConnectionError, match="401"):
        simple_websocket.Client.connect(ws_url(address, token=TOKEN))  # the address leaks to logs
    with pytest.raises(simple_websocket.ConnectionError, match="401"):
        simple_websocket.Client.connect(ws_url(address), headers={"Cookie": f"orchestrate_token={TOKEN}"})


def test_the_token_as_a_subprotocol_is_accepted(tmp_path: Path) -> None:
    # What the page does: a browser cannot set headers on a WebSocket.
    _, address = start_gateway(tmp_path)
    client = WsClient.connect(ws_url(address), subprotocols=["orchestrate", f"token.{TOKEN}"])
    assert client.subprotocol == "orchestrate"  # the token is never echoed back
    assert receive(client)["type"] == "snapshot"
    client.close()
    with pytest.raises(simple_websocket.ConnectionError, match="401"):
        simple_websocket.Client.connect(ws_url(address), subprotocols=["orchestrate", "token.guess"])


def test_a_foreign_origin_is_refused_and_our_own_accepted(tmp_path: Path) -> None:
    _, address = start_gateway(tmp_path)
    token = {"X-Orchestrate-Token": TOKEN}
    for origin in ("http://evil.example", f"http://evil.example:{address.port}", "http://127.0.0.1:1", "null"):
        with pytest.raises(simple_websocket.ConnectionError, match="403"):
            simple_websocket.Client.connect(ws_url(address), headers={**token, "Origin": origin})
    client = simple_websocket.Client.connect(
        ws_url(address), headers={**token, "Origin": f"http://127.0.0.1:{address.port}"}
    )
    assert receive(client)["type"] == "snapshot"
    client.close()


@pytest.mark.parametrize("since", ["abc", "-1", "1e3", "9" * 5000, "\u0661"])
def test_a_bad_since_closes_with_an_error_frame(tmp_path: Path, since: str) -> None:
    ref, address = start_gateway(tmp_path)
    # wsproto, not simple_websocket's client: that one drops what arrives with the handshake.
    client = RawClient(address, target="/ws?" + urllib.parse.urlencode({"since": since}))
    frame = client.read_until(lambda f: True, timeout=5)
    assert frame["type"] == "error" and "since must be" in frame["data"]["error"]
    assert len(frame["data"]["error"]) < 200
    deadline = time.monotonic() + 5
    while client.closed_with is None and time.monotonic() < deadline:
        try:
            client._pump()
        except ConnectionError:
            break  # the close frame came before the end of the stream, if at all
    assert client.closed_with == 1008
    client.close()
    assert not stats(ref).clients  # never registered
    assert connect(address).receive(timeout=5) is not None  # and the gateway is fine


def test_a_browsers_offer_of_compression_is_declined(tmp_path: Path) -> None:
    # zlib on every frame only costs CPU on 127.0.0.1 (docs/benchmarks.md): the socket is
    # accepted with no extension, and the frames arrive whole and plain.
    ref, address = start_gateway(tmp_path)
    client = RawClient(address, rcvbuf=1 << 20, extensions=(PerMessageDeflate(),))
    assert client.accepted is not None and client.accepted.extensions == []
    assert client.read_until(lambda f: f["type"] == "snapshot")["seq"] == 0
    text = "compressible " * 500
    for i in range(1, 201):
        ref.tell(EventsRecorded(events=(event("claude", i, text),)))
    last = client.read_until(lambda f: f["seq"] == 200)  # a compressed frame: a protocol error
    assert last["data"]["payload"]["text"] == text
    assert [f["seq"] for f in client.frames if f["type"] == "event"] == list(range(1, 201))
    client.close()


def test_a_closed_websocket_leaves_no_error_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # simple-websocket's reader thread closed the socket while Werkzeug's request handler still
    # drained it: "Error on request ... Invalid file descriptor: -1" in the session's log at
    # nearly every close. Closes by the browser, and by the gateway (a refused ``since``).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="werkzeug")  # an earlier test may have quieted it
    _, address = start_gateway(tmp_path)
    for _ in range(10):
        client = connect(address)
        assert receive(client)["type"] == "snapshot"
        client.close()
    for _ in range(5):
        refused = RawClient(address, target="/ws?since=x")
        assert refused.read_until(lambda f: True, timeout=5)["type"] == "error"
        with pytest.raises(ConnectionError):  # the close frame, then the end of the stream
            refused.read_until(lambda f: False, timeout=5)
        assert refused.closed_with == 1008
        refused.close()
    request_thread = f"gateway-http-{address.port}-request"  # one per request, gone once it is done
    wait_for(lambda: all(t.name != request_thread for t in threading.enumerate()), message="the requests to end")
    assert caplog.text.count('"GET /ws') == 15  # each request was served and logged
    assert "Invalid file descriptor" not in caplog.text
    assert not [r for r in caplog.records if r.name == "werkzeug" and r.levelno >= logging.ERROR]


def test_snapshot_first_then_numbered_deltas(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("claude")))
    for i in range(1, 4):
        ref.tell(EventsRecorded(events=(event("claude", i, f"before {i}"),)))
    wait_for(lambda: stats(ref).seq == 5)

    client = connect(address)
    first = receive(client)
    assert first["type"] == "snapshot" and first["seq"] == 5
    data = first["data"]
    assert data["session"]["session_id"] == "20250101-100000-a1b2"
    assert [w["agent"] for w in data["workers"]] == ["claude"]
    assert [e["payload"]["text"] for e in data["events"]] == ["before 1", "before 2", "before 3"]

    ref.tell(EventsRecorded(events=(event("codex", 1, "after"),)))
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("codex", "paused")))
    frames = [receive(client), receive(client)]
    assert [(f["type"], f["seq"]) for f in frames] == [("event", 6), ("worker", 7)]
    assert frames[0]["data"]["payload"]["text"] == "after"
    assert frames[1]["data"]["status"] == "paused"
    client.close()


def test_facts_become_frames_of_the_contract_and_unknown_ones_none(tmp_path: Path) -> None:
    from pydantic import BaseModel

    from meta_orchestrator.messages.review import ReviewCompleted, ReviewDecision
    from tests.webui.test_gateway import resources_sampled

    class SomethingNew(BaseModel):  # a fact the dashboard has no frame for
        review_id: str

    ref, address = start_gateway(tmp_path)
    client = connect(address)
    assert receive(client)["type"] == "snapshot"
    ref.tell(SomethingNew(review_id="r0"))
    done = ReviewCompleted(review_id="r1", decision=ReviewDecision(decision="CONTINUE", reasoning="fine"))
    ref.tell(done)
    ref.tell(resources_sampled(cpu=3.0))
    review, sample = receive(client), receive(client)
    assert (review["type"], review["seq"]) == ("review_completed", 1)
    expected = done.record().model_dump(mode="json")
    assert {**review["data"]["record"], "decided_at": None} == {**expected, "decided_at": None}  # decided when built
    assert review["data"]["at"].endswith("Z")
    assert (sample["type"], sample["seq"]) == ("resources", 2)
    client.close()
    again = connect(address)
    recent = receive(again)["data"]["recent"]
    assert [(f["type"], f["seq"]) for f in recent] == [("review_completed", 1), ("resources", 2)]
    again.close()


def test_reconnect_with_since_loses_nothing(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    client = connect(address)
    snapshot = receive(client)
    for i in range(1, 11):
        ref.tell(EventsRecorded(events=(event("gemini", i),)))
    frames = receive_until(client, lambda f: f["seq"] == 10)
    last_seen = frames[-1]["seq"]
    client.close()

    for i in range(11, 61):  # while the browser is away
        ref.tell(EventsRecorded(events=(event("gemini", i),)))
    wait_for(lambda: stats(ref).seq == 60 and not stats(ref).clients)

    again = connect(address, since=last_seen, epoch=snapshot["data"]["epoch"])
    hello = receive(again)
    assert hello["type"] == "hello" and hello["data"]["resumed"] is True and hello["data"]["missed"] == 50
    missed = receive_until(again, lambda f: f["seq"] == 60)
    assert [f["seq"] for f in missed] == list(range(11, 61))
    assert [f["data"]["seq"] for f in missed] == list(range(11, 61))
    again.close()


def test_a_resume_inside_a_batch_gets_the_rest_of_it_and_the_bounds_cut_inside_one(tmp_path: Path) -> None:
    """Events come in batches (one pipe read of an agent) and are kept as such: a resume may
    fall inside a batch, and the bound on frames kept cuts the oldest batch in two."""
    ref, address = start_gateway(tmp_path, frames_kept=30, events_kept=5)
    first = connect(address)
    epoch = receive(first)["data"]["epoch"]
    first.close()
    for first in range(1, 71, 7):  # ten batches of seven: 1-7, ..., 64-70
        ref.tell(EventsRecorded(events=tuple(event("claude", i) for i in range(first, first + 7))))
    wait_for(lambda: stats(ref).seq == 70)
    assert stats(ref).frames_kept == 30 and stats(ref).events_kept == 5

    inside = connect(address, since=45, epoch=epoch)  # in the batch 43-49
    hello = receive(inside)
    assert hello["type"] == "hello" and hello["data"]["missed"] == 25
    assert [f["data"]["seq"] for f in receive_until(inside, lambda f: f["seq"] == 70)] == list(range(46, 71))
    inside.close()

    oldest = connect(address, since=40, epoch=epoch)  # 41 is the first frame kept: batch 36-42, cut
    assert receive(oldest)["data"]["missed"] == 30
    assert [f["seq"] for f in receive_until(oldest, lambda f: f["seq"] == 70)] == list(range(41, 71))
    oldest.close()

    gone = connect(address, since=39, epoch=epoch)
    snapshot = receive(gone)
    assert snapshot["type"] == "snapshot"
    assert [e["seq"] for e in snapshot["data"]["events"]] == list(range(66, 71))
    gone.close()


def test_reconnect_too_late_or_to_another_gateway_gets_a_snapshot(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path, frames_kept=20)
    client = connect(address)
    epoch = receive(client)["data"]["epoch"]
    client.close()
    for i in range(1, 101):
        ref.tell(EventsRecorded(events=(event("claude", i),)))
    wait_for(lambda: stats(ref).seq == 100)
    late = connect(address, since=5, epoch=epoch)  # frames 6.. are gone from the ring
    frame = receive(late)
    assert frame["type"] == "snapshot" and frame["seq"] == 100
    late.close()
    other = connect(address, since=99, epoch="someone-else")
    assert receive(other)["type"] == "snapshot"
    other.close()
    ahead = connect(address, since=500, epoch=epoch)  # a restarted gateway numbering from 0
    assert receive(ahead)["type"] == "snapshot"
    ahead.close()


def test_browser_controls_are_validated_and_reach_the_coordinator(tmp_path: Path, probe: ProbeHandle) -> None:
    ref, address = start_gateway(tmp_path, probe.ref)
    ref.tell(
        SessionStateChanged(
            snapshot=session_snapshot(
                questions=[{"id": "q7", "kind": "clarification", "text": "Which port?", "asked_by": "coordinator"}]
            )
        )
    )
    client = connect(address)
    receive_until(client, lambda f: f["type"] == "session" or (f["type"] == "snapshot" and f["data"]["session"]))

    client.send(json.dumps({"type": "control", "action": "pause", "agent": "codex"}))
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent, told.source) == ("pause", "codex", "dashboard")
    assert receive_until(client, lambda f: f["type"] in ("ack", "error"))[-1]["type"] == "ack"

    client.send(json.dumps({"type": "answer", "question_id": "q7", "answer": "8080"}))
    told = probe.expect(AnswerGiven)
    assert (told.question_id, told.answer) == ("q7", "8080")
    assert receive_until(client, lambda f: f["type"] in ("ack", "error"))[-1]["type"] == "ack"

    for bad, says in [
        ("{nope", "Invalid JSON"),
        ('{"type": "control", "action": "explode"}', "action"),
        ('{"type": "launch"}', "type"),
        ('{"type": "answer", "question_id": "zz", "answer": "x"}', "unknown question id"),
    ]:
        client.send(bad)
        error = receive_until(client, lambda f: f["type"] in ("ack", "error"))[-1]
        assert error["type"] == "error" and says in error["data"]["error"], error
    client.send(json.dumps({"type": "ping"}))  # the socket is still there
    assert receive_until(client, lambda f: f["type"] == "pong")
    client.close()


def test_a_dead_client_is_dropped(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    client = connect(address)
    receive(client)
    wait_for(lambda: len(stats(ref).clients) == 1, message="the client to register")
    client.sock.shutdown(socket.SHUT_RDWR)  # vanishes without a close frame
    client.sock.close()
    for i in range(1, 20):
        ref.tell(EventsRecorded(events=(event("claude", i),)))
    wait_for(lambda: not stats(ref).clients, message="the dead client to be dropped")


def test_a_client_that_never_reads_does_not_slow_the_gateway(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path, client_queue=100)
    stalled = RawClient(address, rcvbuf=4096)
    fast = connect(address)
    assert receive(fast)["type"] == "snapshot"
    wait_for(lambda: len(stats(ref).clients) == 2, message="both clients")

    seen: list[int] = []
    done = threading.Event()

    def read_fast() -> None:
        while not done.is_set():
            frame = _next_frame(fast, 0.2)
            if frame is not None:
                seen.append(frame["seq"] or 0)
                if frame["seq"] == 20_000:
                    done.set()

    reader = threading.Thread(target=read_fast, name="fast-reader", daemon=True)
    reader.start()
    text = "x" * 1000  # 20 MB in all: far more than the stalled socket's buffers hold
    started = time.monotonic()
    for i in range(1, 20_001):
        ref.tell(EventsRecorded(events=(event("claude", i, text),)))
    peak = 0
    while (current := stats(ref)).events_seen < 20_000:
        peak = max([peak] + [c.queued for c in current.clients])
        assert time.monotonic() - started < 60, "the gateway fell behind"
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert done.wait(30), f"the reading client never got the last event (last {seen[-1:]})"
    final = stats(ref)
    by_remote = {c.client: c for c in final.clients}
    assert len(by_remote) == 2
    slow = max(final.clients, key=lambda c: c.resyncs)
    assert slow.resyncs >= 1, "the stalled client was never sent a fresh snapshot"
    assert all(c.queued <= c.capacity == 100 for c in final.clients) and peak <= 100
    assert elapsed < 30, f"20k events took {elapsed:.1f}s"

    # Once it reads again, the stalled client gets a snapshot and then the present.
    snap = stalled.read_until(lambda f: f["type"] == "snapshot" and f["seq"] > 1)
    assert snap["data"]["events"][-1]["seq"] == snap["seq"]
    stalled.read_until(lambda f: f["seq"] == 20_000)
    stalled.close()
    fast.close()
    reader.join(timeout=5)


def test_a_client_stuck_for_too_long_is_dropped(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path, client_queue=20, stall_timeout_s=0.3)
    stalled = RawClient(address, rcvbuf=4096)
    wait_for(lambda: len(stats(ref).clients) == 1)
    text = "y" * 2000
    i = 0
    deadline = time.monotonic() + 30
    while not stats(ref).clients_dropped:
        for _ in range(500):
            i += 1
            ref.tell(EventsRecorded(events=(event("claude", i, text),)))
        assert time.monotonic() < deadline, "the stuck client was never dropped"
        time.sleep(0.1)
    assert not stats(ref).clients
    stalled.close()


def test_stopping_the_gateway_closes_the_sockets(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    client = connect(address)
    receive(client)
    ref.stop(timeout=10)
    deadline = time.monotonic() + 5
    with pytest.raises(simple_websocket.ConnectionClosed):
        while time.monotonic() < deadline:
            client.receive(timeout=0.1)
