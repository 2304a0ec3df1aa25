"""A demo session's history: every fact recorded in order, and the timeline read back whole."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from meta_orchestrator.actors.runtime.replay import Timeline, parse_cursor
from meta_orchestrator.actors.runtime.session_files import read_jsonl
from tests.conftest import PROJECT_ROOT

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
    snapshots = [r["data"]["snapshot"] for r in records if r["fact"] == "SessionStateChanged"]
    statuses = [s["status"] for s in snapshots]
    assert statuses[0] == "planning" and "running" in statuses and statuses[-1] == "completed"
    assert snapshots[-1] == json.loads((finished_session / "state.json").read_text())


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
