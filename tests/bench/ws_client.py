"""The benchmark's browser stand-in, in a process of its own: counts event frames, measures
print-to-receive latency from the timestamp the fake agent puts in each line.

    python ws_client.py URL [SECONDS [EVENTS]] [--deflate]   # one JSON summary line when stdin closes

It prints ``all`` once it has EVENTS event frames (the benchmark's CPU window ends there).

``--deflate`` offers permessage-deflate, as every browser does; the summary names the
extensions the server accepted.

A ``token`` in the URL's query goes as the WebSocket subprotocol ``token.<token>``, as the
dashboard's page sends it (the gateway refuses a token in the address).
"""

import json
import sys
import threading
import time
import urllib.parse

import simple_websocket
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.extensions import PerMessageDeflate


class DeflateClient(simple_websocket.Client):
    """simple-websocket's client offering permessage-deflate (its own offers no extension)."""

    def handshake(self) -> None:
        request = Request(
            host=self.host,
            target=self.path,
            subprotocols=self.subprotocols,
            extensions=[PerMessageDeflate()],
            extra_headers=self.extra_headeers,
        )
        self.sock.send(self.ws.send(request))
        event = None
        while event is None:
            self.ws.receive_data(self.sock.recv(self.receive_bytes))
            event = next(self.ws.events(), None)
        if isinstance(event, RejectConnection) or not isinstance(event, AcceptConnection):
            raise simple_websocket.ConnectionError(getattr(event, "status_code", 400))
        self.subprotocol = event.subprotocol
        self.extensions = [ext.name for ext in event.extensions]
        self.connected = self._handle_events()  # a frame read with the 101 answer


def main() -> None:
    deflate = "--deflate" in sys.argv
    argv = [a for a in sys.argv if a != "--deflate"]
    parts = urllib.parse.urlsplit(argv[1])
    query = urllib.parse.parse_qs(parts.query)
    token = query.pop("token", [""])[0]
    url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, doseq=True)))
    kind = DeflateClient if deflate else simple_websocket.Client
    client = kind.connect(url, subprotocols=["orchestrate", f"token.{token}"])
    state = {"events": 0, "snapshots": 0, "latencies_ms": [], "extensions": getattr(client, "extensions", [])}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                raw = client.receive(timeout=0.2)
            except simple_websocket.ConnectionClosed:
                return
            if raw is None:
                continue
            now = time.time_ns()
            message = json.loads(raw)
            for frame in message["data"] if message["type"] == "batch" else [message]:
                if frame["type"] == "snapshot":
                    state["snapshots"] += 1
                elif frame["type"] == "event":
                    state["events"] += 1
                    if state["events"] == expected:
                        print("all", flush=True)  # the benchmark ends its CPU window here
                    text = (frame["data"].get("payload") or {}).get("text") or ""
                    head = text.split(" ", 1)[0]
                    if head.isdigit() and len(head) > 15:
                        state["latencies_ms"].append((now - int(head)) / 1e6)

    expected = int(argv[3]) if len(argv) > 3 else 0
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    print("ready", flush=True)
    sys.stdin.read()  # the benchmark closes stdin when it wants the summary
    deadline = time.monotonic() + float(argv[2]) if len(argv) > 2 else 0
    while time.monotonic() < deadline and state["events"] < expected:
        time.sleep(0.05)
    done.set()
    reader.join(timeout=5)
    client.close()
    print(json.dumps(state), flush=True)


if __name__ == "__main__":
    main()
