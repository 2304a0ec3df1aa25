"""The benchmark's script reader of ``GET /api/stream`` (Server-Sent Events), in a process of
its own: counts event frames and snapshots, as ``ws_client.py`` does for a WebSocket.

    python sse_client.py URL TIMEOUT_S EXPECTED   # prints one JSON summary line when stdin closes
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse


def main() -> None:
    parts = urllib.parse.urlsplit(sys.argv[1])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", f"{parts.path}?{parts.query}", headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    state = {"events": 0, "snapshots": 0, "latencies_ms": []}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            line = response.readline()
            if not line:
                return
            if not line.startswith(b"data: "):
                continue
            frame = json.loads(line[6:])
            if frame["type"] == "snapshot":
                state["snapshots"] += 1
            elif frame["type"] == "event":
                state["events"] += 1
                if state["events"] == expected:
                    print("all", flush=True)  # the benchmark ends its CPU window here

    expected = int(sys.argv[3])
    threading.Thread(target=read, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # the benchmark closes stdin when it wants the summary
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline and state["events"] < expected:
        time.sleep(0.05)
    done.set()
    print(json.dumps(state), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
