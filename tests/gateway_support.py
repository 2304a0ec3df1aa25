"""Helpers shared by the gateway tests: a probe actor, a started gateway, HTTP calls."""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pykka

from actors.gateway import Gateway
from config.settings import WebSettings
from messages.events import Event, EventPayload
from messages.gateway import GatewayAddress, GetGatewayAddress
from messages.session import SessionSnapshot
from messages.worker import WorkerSnapshot

TOKEN = "test-token-5f2c"


class Probe(pykka.ThreadingActor):
    """A collaborator that records everything it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: queue.Queue[object] = queue.Queue()

    def on_receive(self, message: object) -> None:
        self.told.put(message)


def start_probe() -> tuple[pykka.ActorRef[Probe], queue.Queue[object]]:
    """A started probe and the queue it fills."""
    told: queue.Queue[object] = queue.Queue()
    ref = Probe.start()
    ref.proxy().told = told  # type: ignore[attr-defined]
    return ref, told


def expect(told: queue.Queue[object], kind: type, timeout: float = 5.0) -> Any:
    """The next message of this kind the probe was told, skipping others; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = told.get(timeout=left)
        except queue.Empty:
            break
        if isinstance(message, kind):
            return message
    raise AssertionError(f"no {kind.__name__} within {timeout}s")


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll until the condition is truthy; its value, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def start_gateway(session_dir: Path, coordinator: pykka.ActorRef[Any] | None = None,
                  client_queue: int = 1000, **kwargs: Any) -> tuple[pykka.ActorRef[Gateway], GatewayAddress]:
    """A gateway on a free loopback port, and its address."""
    ref = Gateway.start(WebSettings(host="127.0.0.1", port=0, client_queue=client_queue),
                        session_dir, TOKEN, coordinator, **kwargs)
    address = ref.ask(GetGatewayAddress(), timeout=5)
    return ref, address


def http(address: GatewayAddress, method: str, path: str, body: bytes | str | dict | None = None,
         token: str | None = TOKEN, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One HTTP call: (status, parsed JSON body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else (
        body.encode() if isinstance(body, str) else body)
    req = urllib.request.Request(address.base_url + path, data=data, method=method)
    if token is not None:
        req.add_header("X-Orchestrate-Token", token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except json.JSONDecodeError:
            return exc.code, raw.decode(errors="replace")


def session_snapshot(**changes: Any) -> SessionSnapshot:
    """A plausible session snapshot."""
    base: dict[str, Any] = dict(
        session_id="s-20250101-abc", task="Add a /health endpoint to the service", target="/tmp/target",
        workspace="/tmp/ws", status="running", created_at="2025-01-01T10:00:00Z",
        updated_at="2025-01-01T10:01:00Z",
        shares=[{"agent": "gemini", "target_min": 0.4, "target_max": 0.5, "planned": 0.45,
                 "actual_by_time": 0.42},
                {"agent": "codex", "target_min": 0.1, "target_max": 0.2, "planned": 0.15,
                 "actual_by_time": 0.18},
                {"agent": "claude", "target_min": 0.4, "target_max": 0.5, "planned": 0.4,
                 "actual_by_time": 0.40}],
    )
    base.update(changes)
    return SessionSnapshot.model_validate(base)


def worker_snapshot(agent: str, status: str = "running", **changes: Any) -> WorkerSnapshot:
    """A plausible worker snapshot."""
    return WorkerSnapshot.model_validate({"agent": agent, "status": status, "pid": 4242,
                                          "assignment_id": "a1", "last_activity": "reading files",
                                          "last_progress": 30, **changes})


def event(agent: str, seq: int, text: str = "working", type_: str = "status",
          timestamp: str | None = None, **payload: Any) -> Event:
    """An event as a worker records it."""
    return Event.model_validate({
        "type": type_, "agent": agent, "seq": seq,
        "timestamp": timestamp or f"2025-01-01T10:00:{seq % 60:02d}.{seq:06d}Z"[:26] + "Z",
        "payload": EventPayload(text=text, **payload), "raw": json.dumps({"text": text}),
    })


def write_jsonl(path: Path, events: list[Event], torn: str | None = None) -> None:
    """Write events as the worker does (one record a line), optionally a torn last line."""
    with path.open("w", encoding="utf-8") as handle:
        for item in events:
            handle.write(json.dumps(item.to_record()) + "\n")
        if torn is not None:
            handle.write(torn)
