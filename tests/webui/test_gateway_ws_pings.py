"""A WebSocket pinged while a large send waits on a slow browser: every message arrives whole.

simple-websocket pings from its reader thread while the request's thread sends frames; a
send that waits for room in the socket's buffer let the ping in between a frame's bytes,
and the browser closed the socket as corrupt (code 1007). The flood below makes sends wait
(a small receive buffer, read in small bites) with a ping due every few milliseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pykka
import pytest
from wsproto.events import CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from meta_orchestrator.messages.frames import FRAME
from meta_orchestrator.messages.worker import EventsRecorded
from meta_orchestrator.webui.gateway import Gateway
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.gateway import GetGatewayAddress
from tests.webui.test_gateway import TOKEN, event
from tests.webui.test_gateway_ws import RawClient

EVENTS = 20_000


@pytest.fixture(autouse=True)
def _stop_actors() -> Any:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


class PongingClient(RawClient):
    """Answers every ping and checks every message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.pings = 0
        self.last_seq = 0
        super().__init__(*args, **kwargs)

    def _pump(self) -> list[Any]:
        self.sock.settimeout(5.0)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed (close code {self.closed_with})")
        self.ws.receive_data(data)
        events = list(self.ws.events())  # a ping inside a frame: RemoteProtocolError here
        for ev in events:
            if isinstance(ev, Ping):
                self.pings += 1
                self.sock.sendall(self.ws.send(ev.response()))
            elif isinstance(ev, CloseConnection):
                self.closed_with = ev.code
            elif isinstance(ev, TextMessage):
                self._text.append(ev.data)
                if ev.message_finished:
                    whole = "".join(self._text)
                    FRAME.validate_json(whole)
                    message = json.loads(whole)
                    for frame in message["data"] if message["type"] == "batch" else [message]:
                        if frame["type"] == "event":
                            self.last_seq = frame["data"]["seq"]
                    self._text.clear()
        return events


def test_pings_never_land_inside_a_frame(tmp_path: Path) -> None:
    settings = WebSettings(host="127.0.0.1", port=0, client_queue=100_000, ping_interval_s=0.1)
    ref = Gateway.start(settings, tmp_path, TOKEN)
    address = ref.ask(GetGatewayAddress(), timeout=5)
    client = PongingClient(address, rcvbuf=4096)
    text = "z" * 2000
    for start in range(1, EVENTS + 1, 100):
        ref.tell(EventsRecorded(events=tuple(event("claude", i, text) for i in range(start, start + 100))))
    try:
        while client.last_seq < EVENTS:
            client._pump()
    except (RemoteProtocolError, LocalProtocolError, ConnectionError, UnicodeDecodeError) as exc:
        pytest.fail(f"the stream broke after event {client.last_seq} ({client.pings} pings answered): {exc!r}")
    assert client.closed_with is None
    assert client.pings > 0, "no ping was sent during the flood: the test proved nothing"
    client.close()
