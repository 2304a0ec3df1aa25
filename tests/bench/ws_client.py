"""The benchmark's browser stand-in, in a process of its own: counts event frames, measures
print-to-receive latency from the timestamp the fake agent puts in each line.

    python ws_client.py URL   # prints one JSON summary line when stdin closes

A ``token`` in the URL's query goes as the WebSocket subprotocol ``token.<token>``, as the
dashboard's page sends it (the gateway refuses a token in the address).
"""

import json
import sys
import threading
import time
import urllib.parse

import simple_websocket


def main() -> None:
    parts = urllib.parse.urlsplit(sys.argv[1])
    query = urllib.parse.parse_qs(parts.query)
    token = query.pop("token", [""])[0]
    url = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, doseq=True)))
    client = simple_websocket.Client.connect(url, subprotocols=["orchestrate", f"token.{token}"])
    state = {"events": 0, "snapshots": 0, "latencies_ms": []}
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
                    text = (frame["data"].get("payload") or {}).get("text") or ""
                    head = text.split(" ", 1)[0]
                    if head.isdigit() and len(head) > 15:
                        state["latencies_ms"].append((now - int(head)) / 1e6)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    print("ready", flush=True)
    sys.stdin.read()  # the benchmark closes stdin when it wants the summary
    deadline = time.monotonic() + float(sys.argv[2]) if len(sys.argv) > 2 else 0
    expected = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    while time.monotonic() < deadline and state["events"] < expected:
        time.sleep(0.05)
    done.set()
    reader.join(timeout=5)
    client.close()
    print(json.dumps(state), flush=True)


if __name__ == "__main__":
    main()
