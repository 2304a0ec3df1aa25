"""A demo session's history: every fact recorded in order, and the timeline read back whole."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from meta_orchestrator.actors.history.replay import Timeline, parse_cursor, snapshot_at
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.messages.gateway import GatewayAddress
from meta_orchestrator.messages.session_delta import apply_session_delta
from meta_orchestrator.webui.serve import SessionsServer, marks_of
from tests.conftest import PROJECT_ROOT
from tests.webui.test_gateway import TOKEN, http

AGENTS = ("gemini", "codex", "claude")


@pytest.fixture(scope="module")
def finished_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("history")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ORCHESTRATE_DEMO")}
    env["ORCHESTRATE_DEMO_PACE"] = "0"
    done = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "orchestrate"),
            "Add a /health endpoint",
            "--demo",
            "--no-dashboard",
            "--workspace",
            str(ws),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (folder,) = (p for p in ws.iterdir() if p.is_dir())
    return folder


def test_the_history_holds_every_state_change_and_ends_with_state_json(finished_session: Path):
    records = read_jsonl(finished_session / "history.jsonl").records
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    facts = [r["fact"] for r in records]
    assert "SessionEnded" in facts and "ReviewCompleted" in facts and "WorkerStateChanged" in facts
    # The session is written whole first, then as what changed (each delta far smaller than the
    # whole); applied in order they give every state the session went through, and state.json.
    snapshots: list[dict[str, Any]] = []
    delta_bytes = whole_bytes = 0
    for record in records:
        if record["fact"] == "SessionStateChanged":
            snapshots.append(record["data"]["snapshot"])
        elif record["fact"] == "SessionStateDelta":
            snapshots.append(apply_session_delta(snapshots[-1], record["data"]["delta"]))
            delta_bytes += len(json.dumps(record["data"]["delta"]))
            whole_bytes += len(json.dumps(snapshots[-1]))
    assert facts.index("SessionStateChanged") < facts.index("SessionStateDelta")
    assert delta_bytes < whole_bytes / 2
    statuses = [s["status"] for s in snapshots]
    assert statuses[0] == "planning" and "running" in statuses and statuses[-1] == "completed"
    assert snapshots[-1] == json.loads((finished_session / "state.json").read_text())


def test_a_history_of_whole_snapshots_replays_as_one_with_deltas(finished_session: Path, tmp_path: Path):
    # A history written before deltas holds every change whole: the same session, so written,
    # gives the same snapshot at every moment, with the same marks.
    old = tmp_path / finished_session.name
    shutil.copytree(finished_session, old)
    session: dict[str, Any] = {}
    lines = []
    for record in read_jsonl(finished_session / "history.jsonl").records:
        if record["fact"] == "SessionStateChanged":
            session = record["data"]["snapshot"]
        elif record["fact"] == "SessionStateDelta":
            session = apply_session_delta(session, record["data"]["delta"])
            data = {k: v for k, v in record["data"].items() if k != "delta"} | {"snapshot": session}
            record = {**record, "fact": "SessionStateChanged", "data": data}
        lines.append(json.dumps(record) + "\n")
    (old / "history.jsonl").write_text("".join(lines))
    assert "SessionStateDelta" not in (old / "history.jsonl").read_text()
    with Timeline(finished_session, AGENTS) as new_timeline, Timeline(old, AGENTS) as old_timeline:
        first, last = new_timeline.bounds()
        for moment in (first, first + (last - first) / 3, first + (last - first) / 2, last):
            built = [json.loads(snapshot_at(t, moment, first)[0])["data"] for t in (new_timeline, old_timeline)]
            assert built[0]["session"] == built[1]["session"] and built[0]["seq"] == built[1]["seq"]
    assert marks_of(old, AGENTS) == marks_of(finished_session, AGENTS)


def test_the_timeline_pages_through_everything_once_in_time_order(finished_session: Path):
    files = [finished_session / f"{n}.jsonl" for n in (*AGENTS, "history")]
    files += sorted(finished_session.glob("reviews/*/*.jsonl"))  # the peers' review runs
    assert len(files) > 4
    expected = sum(len(read_jsonl(path).records) for path in files)
    with Timeline(finished_session, AGENTS) as timeline:
        first, last = timeline.bounds()
        page = timeline.seek(first - timedelta(seconds=1))
        assert page.items == [] and page.more
        items, cursor = [], page.cursor
        while True:
            page = timeline.read(cursor, 5)
            items += page.items
            cursor = page.cursor
            if not page.more:
                break
        assert len(items) == expected
        assert [i.timestamp for i in items] == sorted(i.timestamp for i in items)
        keys = [(i.source, i.record["seq"]) for i in items]
        assert len(set(keys)) == len(keys)
        assert timeline.read(cursor, 5).items == []

        # A seek to the middle holds the history so far and each agent's latest events.
        middle = items[len(items) // 2].timestamp
        at = timeline.seek(middle, events_before=3)
        assert all(i.timestamp <= middle for i in at.items)
        history_so_far = [i for i in items if i.source == "history" and i.timestamp <= middle]
        assert [i for i in at.items if i.source == "history"] == history_so_far
        for agent in AGENTS:
            before = [i for i in items if i.source == agent and i.timestamp <= middle][-3:]
            assert [i for i in at.items if i.source == agent] == before
        # ...and reading on from it continues with the first item after the moment.
        after = timeline.read(at.cursor, 1).items
        assert after == [next(i for i in items if i.timestamp > middle)]


def test_a_forged_cursor_is_refused():
    with pytest.raises(ValueError, match="source:offset"):
        parse_cursor("history:12,/etc/passwd:0", ("history", "claude"))
    with pytest.raises(ValueError):
        parse_cursor("claude:" + "9" * 5000, ("claude",))


@pytest.fixture
def served(finished_session: Path) -> Iterator[GatewayAddress]:
    server = SessionsServer(finished_session.parent, port=0, token=TOKEN).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        yield GatewayAddress(host="127.0.0.1", port=server.port, base_url=base, url=server.url)
    finally:
        server.stop()


def test_serve_replays_a_session_from_its_snapshot_through_its_frames(finished_session: Path, served):
    sid = finished_session.name
    status, start = http(served, "GET", f"/api/sessions/{sid}/snapshot?at=start")
    assert status == 200 and start["frame"]["type"] == "snapshot" and start["live"] is False
    assert start["at"] == start["start"] < start["end"]
    seq, cursor, frames = start["seq"], start["cursor"], []
    while True:
        status, page = http(served, "GET", f"/api/sessions/{sid}/frames?seq={seq}&limit=50&cursor={quote(cursor)}")
        assert status == 200 and page["live"] is False
        frames += page["frames"]
        seq, cursor = page["seq"], page["cursor"]
        if not page["more"]:
            break
    assert [f["frame"]["seq"] for f in frames] == list(range(start["seq"] + 1, seq + 1))  # numbered on, none lost
    assert [f["at"] for f in frames] == sorted(f["at"] for f in frames)
    types = [f["frame"]["type"] for f in frames]
    # The end is there; only the monitor's last sample and the last merge's changes may follow it.
    assert "session_ended" in types and set(types[types.index("session_ended") + 1 :]) <= {"resources", "changes"}, (
        types[-5:]
    )
    status, end = http(served, "GET", f"/api/sessions/{sid}/snapshot")
    assert status == 200 and end["at"] == end["end"]
    assert end["frame"]["data"]["session"]["status"] == "completed"


def test_serve_refuses_what_it_cannot_replay(finished_session: Path, served):
    sid = finished_session.name
    assert http(served, "GET", "/api/sessions/nosuch/snapshot")[0] == 404
    assert http(served, "GET", "/api/sessions/nosuch/frames")[0] == 404
    status, body = http(served, "GET", f"/api/sessions/{sid}/snapshot?at=2025-01-01T00:00:00")
    assert status == 400 and "time zone" in body["error"]
    assert http(served, "GET", f"/api/sessions/{sid}/frames?seq=-1")[0] == 400
    status, body = http(served, "GET", f"/api/sessions/{sid}/frames?cursor=history:1,/etc/passwd:0")
    assert status == 400 and "source:offset" in body["error"]
