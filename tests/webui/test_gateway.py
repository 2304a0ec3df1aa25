"""The gateway's HTTP API against a real server on 127.0.0.1, with a probe coordinator.

The helpers at the top are shared by ``test_gateway_ws.py`` and ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.webui.gateway import Gateway, GatewayError
from meta_orchestrator.actors.history.event_pages import read_events_page
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.events import Event, EventPayload
from meta_orchestrator.messages.gateway import GatewayAddress, GetGatewayAddress, GetGatewayStats
from meta_orchestrator.messages.session import (
    AnswerGiven,
    ControlRequested,
    SessionSnapshot,
    SessionStateChanged,
)
from meta_orchestrator.messages.worker import EventsRecorded, WorkerSnapshot, WorkerStateChanged
from tests.conftest import ProbeHandle, wait_for

TOKEN = "test-token-5f2c"
T0 = datetime(2025, 1, 1, 10, 0, 0, tzinfo=UTC)


# --- shared helpers --------------------------------------------------------------------------


def start_gateway(
    session_dir: Path, coordinator: pykka.ActorRef[Any] | None = None, client_queue: int = 1000, **kwargs: Any
) -> tuple[pykka.ActorRef[Gateway], GatewayAddress]:
    """A gateway on a free loopback port, and its address."""
    ref = Gateway.start(
        WebSettings(host="127.0.0.1", port=0, client_queue=client_queue), session_dir, TOKEN, coordinator, **kwargs
    )
    return ref, ref.ask(GetGatewayAddress(), timeout=5)


def http(
    address: GatewayAddress,
    method: str,
    path: str,
    body: bytes | str | dict | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One HTTP call: (status, parsed JSON body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else (body.encode() if isinstance(body, str) else body)
    req = urllib.request.Request(address.base_url + path, data=data, method=method)
    if token is not None:
        req.add_header("X-Orchestrate-Token", token)
    if data is not None or method == "POST":
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
    """A plausible running session."""
    base: dict[str, Any] = {
        "session_id": "20250101-100000-a1b2",
        "task": "Add a /health endpoint to the billing service and cover it with tests",
        "target": "/home/dev/billing",
        "workspace": "/home/dev/workspace",
        "status": "running",
        "created_at": "2025-01-01T10:00:00Z",
        "updated_at": "2025-01-01T10:01:00Z",
        "plan_source": "architect",
        "plan_summary": "Design the endpoint, implement it, review it.",
        "assignments": [
            {
                "id": "design",
                "role": "architect",
                "agent": "gemini",
                "title": "Design the endpoint",
                "instructions": "...",
                "status": "completed",
                "weight": 4,
            },
            {
                "id": "implement",
                "role": "implementer",
                "agent": "claude",
                "title": "Implement /health",
                "instructions": "...",
                "status": "running",
                "depends_on": ["design"],
                "weight": 4,
            },
            {
                "id": "review",
                "role": "reviewer",
                "agent": "codex",
                "title": "Review the change",
                "instructions": "...",
                "status": "pending",
                "depends_on": ["implement"],
                "weight": 2,
            },
        ],
        "shares": [
            {"agent": "gemini", "target_min": 0.4, "target_max": 0.5, "planned": 0.4, "actual_by_time": 0.46},
            {"agent": "codex", "target_min": 0.1, "target_max": 0.2, "planned": 0.2, "actual_by_time": 0.12},
            {"agent": "claude", "target_min": 0.4, "target_max": 0.5, "planned": 0.4, "actual_by_time": 0.42},
        ],
    }
    base.update(changes)
    return SessionSnapshot.model_validate(base)


def worker_snapshot(agent: str, status: str = "running", **changes: Any) -> WorkerSnapshot:
    """A plausible worker."""
    return WorkerSnapshot.model_validate(
        {
            "agent": agent,
            "status": status,
            "pid": 4242,
            "assignment_id": "implement",
            "events_recorded": 12,
            "last_activity": "Edit src/app.py",
            "last_progress": 30,
            **changes,
        }
    )


def event(
    agent: str, seq: int, text: str = "working", type_: str = "status", at: float | None = None, **payload: Any
) -> Event:
    """An event as a worker records it; ``at`` is seconds after T0 (default: seq)."""
    return Event.model_validate(
        {
            "type": type_,
            "agent": agent,
            "seq": seq,
            "timestamp": T0 + timedelta(seconds=seq if at is None else at),
            "payload": EventPayload(text=text, **payload),
            "raw": json.dumps({"text": text}),
        }
    )


def write_jsonl(path: Path, events: list[Event], torn: str | None = None) -> None:
    """Write events as the worker does (one record a line), optionally a torn last line."""
    with path.open("w", encoding="utf-8") as handle:
        for item in events:
            handle.write(json.dumps(item.to_record()) + "\n")
        if torn is not None:
            handle.write(torn)


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


# --- tests -----------------------------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path, probe: ProbeHandle) -> GatewayAddress:
    ref, address = start_gateway(tmp_path, probe.ref)
    ref.tell(
        SessionStateChanged(
            snapshot=session_snapshot(
                questions=[
                    {
                        "id": "q1",
                        "kind": "confirmation",
                        "text": "Run `rm -rf build/`?",
                        "agent": "claude",
                        "asked_by": "sandbox",
                    },
                    {
                        "id": "q2",
                        "kind": "clarification",
                        "text": "Which port?",
                        "status": "answered",
                        "asked_by": "coordinator",
                    },
                ]
            )
        )
    )
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("claude")))
    wait_for(lambda: http(address, "GET", "/api/workers")[1]["workers"], message="workers")
    return address


def test_health_needs_no_token_and_says_nothing_private(gateway: GatewayAddress) -> None:
    status, body = http(gateway, "GET", "/api/health", token=None)
    assert status == 200 and body["ok"] is True
    assert TOKEN not in json.dumps(body) and "session" not in body


@pytest.mark.parametrize(
    "path", ["/api/session", "/api/workers", "/api/events", "/api/reviews", "/api/decisions", "/api/resources"]
)
def test_api_refuses_missing_and_wrong_token(gateway: GatewayAddress, path: str) -> None:
    status, body = http(gateway, "GET", path, token=None)
    assert status == 401 and "token" in body["error"]
    status, body = http(gateway, "GET", path, token="nope")
    assert status == 401 and "wrong token" in body["error"]
    assert http(gateway, "GET", path)[0] == 200


def test_only_the_header_carries_the_token_not_the_query_or_a_cookie(gateway: GatewayAddress) -> None:
    status, body = http(gateway, "GET", f"/api/session?token={TOKEN}", token=None)
    assert status == 401 and "missing token" in body["error"]
    with urllib.request.urlopen(gateway.url, timeout=5) as page:
        assert page.headers.get("Set-Cookie") is None  # the page keeps the token in sessionStorage
        assert b"<html" in page.read().lower()
    status, _ = http(gateway, "GET", "/api/workers", token=None, headers={"Cookie": f"orchestrate_token={TOKEN}"})
    assert status == 401


def test_foreign_host_header_is_refused(gateway: GatewayAddress) -> None:
    status, body = http(gateway, "GET", "/api/session", headers={"Host": f"evil.example:{gateway.port}"})
    assert status == 403 and "Host" in body["error"]


def test_session_workers_and_decisions_come_from_the_latest_snapshots(tmp_path: Path, probe: ProbeHandle) -> None:
    ref, address = start_gateway(tmp_path, probe.ref)
    assert http(address, "GET", "/api/session")[1]["session"] is None
    decision = {
        "kind": "actor_restarted",
        "source": "supervisor",
        "at": "2025-01-01T10:00:30.000Z",
        "name": "reviewer",
        "error": "RuntimeError('x')",
    }
    ref.tell(SessionStateChanged(snapshot=session_snapshot(decisions=[decision])))
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("gemini", "paused")))
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("gemini", "running")))
    body = wait_for(lambda: http(address, "GET", "/api/workers")[1]["workers"], message="workers")
    wait_for(lambda: http(address, "GET", "/api/workers")[1]["workers"][0]["status"] == "running")
    assert [w["agent"] for w in body] == ["gemini"]
    assert http(address, "GET", "/api/session")[1]["session"]["status"] == "running"
    assert http(address, "GET", "/api/decisions")[1]["decisions"] == [decision]


def test_controls_reach_the_coordinator(gateway: GatewayAddress, probe: ProbeHandle) -> None:
    status, body = http(gateway, "POST", "/api/control/pause", body={"agent": "claude"})
    assert status == 202, body
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent, told.source) == ("pause", "claude", "dashboard")
    assert http(gateway, "POST", "/api/control/review")[0] == 202  # no body: the whole session
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent) == ("review", None)


def test_answer_reaches_the_coordinator(gateway: GatewayAddress, probe: ProbeHandle) -> None:
    status, body = http(
        gateway, "POST", "/api/answer", body={"question_id": "q1", "answer": "yes, go on", "approve": True}
    )
    assert status == 202, body
    told = probe.expect(AnswerGiven)
    assert (told.question_id, told.answer, told.approve, told.source) == ("q1", "yes, go on", True, "dashboard")


@pytest.mark.parametrize(
    "method, path, body, status, says",
    [
        ("POST", "/api/control/pause", "{not json", 400, "not valid JSON"),
        ("POST", "/api/answer", "[1, 2", 400, "not valid JSON"),
        ("POST", "/api/control/explode", {}, 404, "unknown action 'explode'"),
        ("POST", "/api/control/pause", {"agent": "gpt"}, 400, "agent"),
        ("POST", "/api/control/pause", {"agnet": "claude"}, 400, "agnet"),
        ("POST", "/api/answer", {"question_id": "nope", "answer": "x"}, 404, "unknown question id 'nope'"),
        ("POST", "/api/answer", {"question_id": "q2", "answer": "8080"}, 409, "already"),
        ("POST", "/api/answer", {"question_id": "q1", "answer": "ok"}, 400, "approve"),
        ("POST", "/api/answer", {"answer": "x"}, 400, "question_id"),
        ("GET", "/api/reviews/r-unknown", None, 404, "unknown review id"),
        ("GET", "/api/events?since=abc", None, 400, "since"),
        ("GET", "/api/events?agent=gpt", None, 400, "unknown agent"),
        ("GET", "/api/events?type=bogus", None, 400, "unknown event type"),
        ("GET", "/api/events?limit=0", None, 400, "limit"),
        ("GET", "/api/nothing-here", None, 404, "no such API endpoint"),
    ],
)
def test_bad_input_gets_4xx_with_a_reason(
    gateway: GatewayAddress, probe: ProbeHandle, method: str, path: str, body: Any, status: int, says: str
) -> None:
    got_status, got = http(gateway, method, path, body=body)
    assert got_status == status, got
    assert says in got["error"]
    probe.barrier()  # a message wrongly told while the request was handled has arrived by now
    assert not [m for m in probe.drain() if isinstance(m, (ControlRequested, AnswerGiven))]


def test_controls_without_coordinator_say_so(tmp_path: Path) -> None:
    _, address = start_gateway(tmp_path, None)
    status, body = http(address, "POST", "/api/control/stop")
    assert status == 503 and "coordinator" in body["error"]


def test_events_are_paged_from_the_session_files_with_a_torn_last_line(tmp_path: Path, probe: ProbeHandle) -> None:
    # Interleaved timestamps across three files; claude's last line is still being written.
    write_jsonl(tmp_path / "gemini.jsonl", [event("gemini", i, f"g{i}", at=i * 3) for i in range(1, 11)])
    write_jsonl(
        tmp_path / "codex.jsonl",
        [event("codex", i, f"x{i}", at=i * 3 + 1, type_="error" if i % 2 else "status") for i in range(1, 6)],
    )
    write_jsonl(
        tmp_path / "claude.jsonl",
        [event("claude", i, f"c{i}", at=i * 3 + 2) for i in range(1, 8)],
        torn='{"type": "status", "agent": "claude", "seq": 8, "payl',
    )
    _, address = start_gateway(tmp_path, probe.ref)

    seen: list[tuple[str, int]] = []
    since = "0"
    for _ in range(20):
        status, page = http(address, "GET", f"/api/events?since={since}&limit=4")
        assert status == 200, page
        assert len(page["events"]) <= 4
        stamps = [e["timestamp"] for e in page["events"]]
        assert stamps == sorted(stamps)
        seen += [(e["agent"], e["seq"]) for e in page["events"]]
        since = page["cursor"]
        if not page["more"]:
            break
    assert sorted(seen) == sorted(
        [("gemini", i) for i in range(1, 11)]
        + [("codex", i) for i in range(1, 6)]
        + [("claude", i) for i in range(1, 8)]
    )
    assert len(seen) == len(set(seen))  # nothing twice
    # Every registered CLI has a place in the cursor; those without a file stay at 0.
    assert {a: n for a, n in (p.split(":") for p in since.split(",")) if n != "0"} == {
        "gemini": "10",
        "codex": "5",
        "claude": "7",
    }  # torn line waits

    # The writer finishes the torn line: the same cursor now yields exactly it.
    with (tmp_path / "claude.jsonl").open("a") as handle:
        handle.write('oad": {"text": "c8"}, "timestamp": "2025-01-01T10:01:00Z"}\n')
    page = http(address, "GET", f"/api/events?since={since}")[1]
    assert [(e["agent"], e["seq"]) for e in page["events"]] == [("claude", 8)]

    # Filters: one agent (its own seq as cursor), one type.
    page = http(address, "GET", "/api/events?agent=codex&type=error&since=1")[1]
    assert [(e["agent"], e["seq"]) for e in page["events"]] == [("codex", 3), ("codex", 5)]
    assert page["more"] is False


def test_events_paging_with_a_type_filter_is_lossless(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "gemini.jsonl", [event("gemini", i, type_="error" if i % 3 == 0 else "status") for i in range(1, 31)]
    )
    write_jsonl(
        tmp_path / "claude.jsonl",
        [event("claude", i, type_="error" if i % 4 == 0 else "status", at=i + 0.5) for i in range(1, 21)],
    )
    seen, since = [], None
    while True:
        page = read_events_page(tmp_path, since, event_type="error", limit=2)
        seen += [(e["agent"], e["seq"]) for e in page["events"]]
        since = page["cursor"]
        if not page["more"]:
            break
    assert sorted(seen) == sorted([("gemini", i) for i in range(3, 31, 3)] + [("claude", i) for i in range(4, 21, 4)])


def test_events_paging_reads_each_parallel_run_of_an_agent(tmp_path: Path) -> None:
    """claude's second run at once writes claude#2.jsonl, numbered on its own: the pages hold
    both files' events exactly once, the cursor says where each file is, ``agent`` takes both."""
    write_jsonl(tmp_path / "claude.jsonl", [event("claude", i) for i in range(1, 6)])
    second = [event("claude", i, at=i + 0.5).model_copy(update={"slot": 2}) for i in range(1, 5)]
    write_jsonl(tmp_path / "claude#2.jsonl", second)
    for agent in (None, "claude"):
        seen, since, cursors = [], None, []
        while True:
            page = read_events_page(tmp_path, since, agent=agent, limit=3)
            seen += [(e["agent"], e.get("slot", 1), e["seq"]) for e in page["events"]]
            since = page["cursor"]
            cursors.append(since)
            if not page["more"]:
                break
        assert sorted(seen) == sorted([("claude", 1, i) for i in range(1, 6)] + [("claude", 2, i) for i in range(1, 5)])
        assert "claude#2:4" in cursors[-1] and "claude:5" in cursors[-1]


def test_reviews_are_read_from_the_session_folder(gateway: GatewayAddress, tmp_path: Path) -> None:
    folder = tmp_path / "reviews" / "r1"
    folder.mkdir(parents=True)
    (folder / "request.json").write_text(json.dumps({"trigger": "milestone"}))
    (folder / "codex.json").write_text(json.dumps({"verdict": "concern", "findings": ["no tests"]}))
    (folder / "gemini.json").write_text('{"verdict": "appr')  # being written
    body = http(gateway, "GET", "/api/reviews")[1]["reviews"]
    assert [r["id"] for r in body] == ["r1"]
    assert body[0]["files"]["codex"]["verdict"] == "concern"
    assert body[0]["files"]["gemini"] == {"unreadable": True}
    assert http(gateway, "GET", "/api/reviews/r1")[1]["files"]["request"] == {"trigger": "milestone"}
    assert http(gateway, "GET", "/api/reviews/..")[0] == 404


def test_resources_keep_the_latest_samples_and_limits(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    assert http(address, "GET", "/api/resources")[1] == {"resources": []}
    ref.tell(resources_sampled(cpu=12.5, rss=123456, taken_at=1_735_725_600.25))
    body = wait_for(lambda: http(address, "GET", "/api/resources")[1]["resources"])
    assert [item["type"] for item in body] == ["resources"]
    data = body[0]["data"]
    assert data["taken_at"] == "2025-01-01T10:00:00.250Z"  # one time representation on the wire
    assert (data["agents"][0]["agent"], data["agents"][0]["cpu_percent"], data["agents"][0]["rss_bytes"]) == (
        "claude",
        12.5,
        123456,
    )
    assert ref.ask(GetGatewayStats(), timeout=2).seq == 1


def resources_sampled(cpu: float = 10.0, rss: int = 2**20, taken_at: float = 1e9, agent: str = "claude") -> Any:
    """One resource sample of one agent."""
    from meta_orchestrator.messages.resources import MachineSample, ResourcesSampled, TreeSample

    return ResourcesSampled(
        taken_at=taken_at,
        agents=(TreeSample(agent=agent, pid=4242, status="running", processes=2, cpu_percent=cpu, rss_bytes=rss),),
        machine=MachineSample(cpu_percent=5, cpu_count=2, memory_available_bytes=2**30, memory_total_bytes=2**31),
    )


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        with pytest.raises(GatewayError, match=f"port {port} on 127.0.0.1 is already in use"):
            Gateway.start(WebSettings(port=port), tmp_path, TOKEN, None)
        ref = Gateway.start(WebSettings(port=port), tmp_path, TOKEN, None, next_free_port=True)
        assert ref.ask(GetGatewayAddress(), timeout=2).port > port
    finally:
        busy.close()


def test_stop_frees_the_port(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    assert http(address, "GET", "/api/health")[0] == 200
    ref.stop(timeout=10)
    again = Gateway.start(WebSettings(port=address.port), tmp_path, TOKEN, None)
    assert again.ask(GetGatewayAddress(), timeout=2).port == address.port


def test_events_told_to_the_gateway_are_counted(tmp_path: Path) -> None:
    ref, _ = start_gateway(tmp_path, events_kept=5)
    for i in range(1, 21):
        ref.tell(EventsRecorded(events=(event("claude", i),)))
    stats = wait_for(lambda: (s := ref.ask(GetGatewayStats(), timeout=2)).events_seen == 20 and s)
    assert stats.events_kept == 5 and stats.seq == 20
