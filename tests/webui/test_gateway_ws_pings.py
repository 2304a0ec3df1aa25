"""A WebSocket pinged both ways while a large send waits on a slow browser: every message arrives whole.

simple-websocket's reader thread answers the browser's pings (and pinged, before the frames'
thread did) while the request's thread sends frames; a send that waits for room in the
socket's buffer let the pong in between a frame's bytes, and the browser closed the socket
as corrupt (code 1007). The flood below makes sends wait (a small receive buffer) while the
client pings whenever its last ping was answered and the server pings every 0.1 s."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pykka
import pytest
from wsproto.events import CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from meta_orchestrator.messages.frames import FRAME
from meta_orchestrator.messages.worker import EventsRecorded
from meta_orchestrator.webui.gateway import Gateway
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.gateway import GetGatewayAddress
from tests.webui.test_gateway import TOKEN, event
from tests.webui.test_gateway_ws import RawClient

EVENTS = 4_000  # 8 MB: about 2,000 reads of the small buffer


@pytest.fixture(autouse=True)
def _stop_actors() -> Any:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


class PongingClient(RawClient):
    """Answers every ping, pings after every read, and checks every message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pings = 0
        self.pongs = 0
        self.pings_sent = 0
        self.snapshots = 0
        self.last_seq = 0
        super().__init__(*args, **kwargs)

    def _pump(self) -> list[Any]:
        self.sock.settimeout(5.0)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed (close code {self.closed_with})")
        self.ws.receive_data(data)
        events = list(self.ws.events())  # a pong inside a frame: RemoteProtocolError here
        for ev in events:
            if isinstance(ev, Ping):
                self.pings += 1
                self.sock.sendall(self.ws.send(ev.response()))
            elif isinstance(ev, Pong):
                self.pongs += 1
            elif isinstance(ev, CloseConnection):
                self.closed_with = ev.code
            elif isinstance(ev, TextMessage):
                self._text.append(ev.data)
                if ev.message_finished:
                    whole = "".join(self._text)
                    FRAME.validate_json(whole)
                    message = json.loads(whole)
                    for frame in message["data"] if message["type"] == "batch" else [message]:
                        self.snapshots += frame["type"] == "snapshot"
                        if frame["type"] == "event":
                            self.last_seq = frame["data"]["seq"]
                    self._text.clear()
        return events


def test_pings_never_land_inside_a_frame(tmp_path: Path) -> None:
    settings = WebSettings(host="127.0.0.1", port=0, client_queue=100_000, ping_interval_s=0.1)
    ref = Gateway.start(settings, tmp_path, TOKEN)
    address = ref.ask(GetGatewayAddress(), timeout=5)
    client = PongingClient(address, rcvbuf=4096)
    deadline = time.monotonic() + 30
    while not client.snapshots:  # subscribed: every event below comes as an event frame
        assert time.monotonic() < deadline, "no snapshot"
        client._pump()
    text = "z" * 2000
    for start in range(1, EVENTS + 1, 100):
        ref.tell(EventsRecorded(events=tuple(event("claude", i, text) for i in range(start, start + 100))))
    try:
        while client.last_seq < EVENTS:
            assert time.monotonic() < deadline + 60, f"event {client.last_seq} of {EVENTS} after 90 s"
            client._pump()
            if client.pongs == client.pings_sent:  # one at a time, as a browser: never a full buffer both ways
                client.pings_sent += 1
                client.sock.sendall(client.ws.send(Ping(b"p")))
    except (RemoteProtocolError, LocalProtocolError, ConnectionError, UnicodeDecodeError) as exc:
        pytest.fail(f"the stream broke after event {client.last_seq} ({client.pongs} pongs read): {exc!r}")
    assert client.closed_with is None
    # A pong waits for the frame being sent (a batch of up to hundreds of events), so there are few.
    assert client.pongs > 0, "no pong during the flood: the test proved nothing"
    assert client.pings > 0, "the server sent no ping during the flood"
    client.close()
