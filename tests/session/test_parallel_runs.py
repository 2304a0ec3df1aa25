"""``[agents.<name>] max_parallel``: whole demo sessions in which one agent (claude, the
implementer) runs several independent assignments at once, each in a worker and a checkout of
its own, all merged into the session branch; controls reach each run; a resume continues them."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pykka
import pytest

from meta_orchestrator.actors.agents.demo.common import PLAN_PARTS_ENV, SHARED_FILE_ENV
from meta_orchestrator.actors.app.system import LaunchRequest, start, stop_all
from meta_orchestrator.actors.files.session_files import event_files, read_jsonl
from meta_orchestrator.actors.workspaces.workspace_wiring import finish_workspace
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import ControlRequested, GetSessionState
from meta_orchestrator.messages.worker import GetWorkerState
from tests.conftest import branch_file, branch_files, kill_tree, popen_orchestrate, session_store, wait_for
from tests.history.test_resume import _demo_pids

pytestmark = pytest.mark.session  # every test here starts a whole session

TASK = "Add a /health endpoint"
PARALLEL = {"agents.claude.max_parallel": 3, "session.max_concurrent": 4, "review.enabled": False}


def _settings(tmp_path: Path, **overrides: Any):
    return load_settings(None, {"workspace": str(tmp_path / "ws"), **PARALLEL, **overrides})


def _start(tmp_path: Path, env: dict[str, str], started: list, **overrides: Any):
    request = LaunchRequest(task=TASK, target=None, demo=True, dashboard=False, console=False, env=env)
    return start(_settings(tmp_path, **overrides), request, started)


def _state(running: Any):
    return running.coordinator.ask(GetSessionState(), timeout=5)


def _first_runs(session_dir: Path) -> dict[str, tuple[str, datetime, datetime]]:
    """Assignment id -> (its event file, its first run's first and last event time): up to the
    run's result, from the recorded events."""
    runs: dict[str, tuple[str, datetime, datetime]] = {}
    ended: set[str] = set()
    records = sorted(
        (
            (datetime.fromisoformat(r["timestamp"]), path.name, r)
            for path in event_files(session_dir, "claude")
            for r in read_jsonl(path).records
        ),
        key=lambda item: item[0],
    )
    for at, name, record in records:
        assignment = record.get("assignment_id")
        if not assignment or assignment in ended:
            continue
        first = runs.get(assignment, (name, at, at))[1]
        runs[assignment] = (name, first, at)
        if record["type"] == "result" or record["payload"].get("kind") == "result":
            ended.add(assignment)
    return runs


def _overlapping(runs: dict[str, tuple[str, datetime, datetime]]) -> list[tuple[str, str]]:
    """Pairs of runs in different event files (different workers) that were under way at once."""
    items = sorted(runs.items())
    return [
        (a, b)
        for i, (a, (file_a, start_a, end_a)) in enumerate(items)
        for b, (file_b, start_b, end_b) in items[i + 1 :]
        if file_a != file_b and start_a < end_b and start_b < end_a
    ]


def test_parallel_runs_overlap_each_in_its_checkout_merge_resolve_a_conflict_and_pause_together(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    # Three parts, each also adding its line to docs/NOTES.md: their merges conflict, and the
    # existing recovery (the agent resolves the markers in its checkout) settles it.
    env = {**demo_env, PLAN_PARTS_ENV: "3", SHARED_FILE_ENV: "docs/NOTES.md", "ORCHESTRATE_DEMO_PACE": "0.3"}
    started: list = []
    running = _start(tmp_path, env, started)
    try:

        def two_running() -> bool:
            state = _state(running)
            return sum(a.phase == "running" for a in state.assignments) >= 2  # CLIs, not merges

        wait_for(two_running, timeout=60, message="two of claude's runs at once")
        running.coordinator.tell(ControlRequested(action="pause", agent="claude", source="test"))

        def paused() -> list:
            held = [a for a in _state(running).assignments if a.phase in ("running", "paused")]
            return held if held and all(a.phase == "paused" for a in held) else []

        held = wait_for(paused, timeout=30, message="each of claude's runs paused")
        workers = {f"claude#{a.slot}" if a.slot > 1 else "claude" for a in held}
        assert len(workers) >= 2, held  # two workers, not one
        for name in workers:
            wait_for(
                lambda name=name: running.workers[name].ask(GetWorkerState(), timeout=5).status == "paused",
                timeout=30,
                message=f"{name}'s CLI stopped",
            )
            pid = running.workers[name].ask(GetWorkerState(), timeout=5).pid
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            wait_for(  # the signal reaches each process of its group
                lambda tree=tree: all(p.status() == psutil.STATUS_STOPPED for p in tree),
                message=f"each process of {name}'s run stopped",
            )
        running.coordinator.tell(ControlRequested(action="resume", agent="claude", source="test"))
        ended = running.ended.get(timeout=180)
    finally:
        stop_all(started)
    finish_workspace(running.workspace, running.session_dir, None)  # as `run` does: merged checkouts go
    assert ended.status == "completed", ended.summary
    assert not pykka.ActorRegistry.get_all()
    folder = running.session_dir
    state = json.loads((folder / "state.json").read_text())
    parts = {a["id"]: a for a in state["assignments"] if a["id"].startswith("part")}
    assert sorted(parts) == ["part1", "part2", "part3"] and all(a["agent"] == "claude" for a in parts.values())
    assert len({a["workdir"] for a in parts.values()}) == 3  # each in a checkout of its own
    # Under way at once, by their own recorded events (two workers, two event files).
    assert _overlapping(_first_runs(folder)), _first_runs(folder)
    store, branch = session_store(folder), f"orchestrate/{folder.name}"
    assert {f"app/health_endpoint_part{k}.py" for k in (1, 2, 3)} <= branch_files(store, branch)
    notes = branch_file(store, branch, "docs/NOTES.md")
    assert sorted(line.split(" in ")[1].split(":")[0] for line in notes.splitlines()) == ["part1", "part2", "part3"]
    assert "<<<<<<<" not in notes and any(a["conflict_rounds"] for a in parts.values())
    assert not list(folder.glob("checkouts/*"))  # all merged: none left


def test_stopping_the_agent_stops_each_of_its_runs(tmp_path: Path, demo_env: dict[str, str]) -> None:
    env = {**demo_env, PLAN_PARTS_ENV: "2", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"}
    started: list = []
    running = _start(tmp_path, env, started, **{"recovery.enabled": False})
    try:

        def both_running() -> list:
            runs = [a for a in _state(running).assignments if a.status == "running"]
            pids = [running.workers[n].ask(GetWorkerState(), timeout=5).pid for n in ("claude", "claude#2")]
            return pids if len(runs) == 2 and all(pids) else []

        pids = wait_for(both_running, timeout=60, message="both of claude's runs")
        running.coordinator.tell(ControlRequested(action="stop", agent="claude", source="test"))
        ended = running.ended.get(timeout=60)
    finally:
        stop_all(started)
    assert ended.status == "failed"
    state = json.loads((running.session_dir / "state.json").read_text())
    assert {a["id"]: a["status"] for a in state["assignments"]} == {"part1": "failed", "part2": "failed"}
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_a_killed_session_with_two_runs_of_one_agent_in_flight_is_resumed_to_completion(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    ws = tmp_path / "ws"
    config = tmp_path / "parallel.toml"
    # Without the OS sandbox the agents outlive their orchestrator (tests/history/test_resume.py).
    config.write_text(
        '[sandbox]\nos = "off"\n[session]\nmax_concurrent = 4\n[review]\nenabled = false\n'
        "[agents.claude]\nmax_parallel = 2\n"
    )
    env = {**demo_env, PLAN_PARTS_ENV: "3"}
    first = popen_orchestrate(
        [TASK, "--demo", "--no-dashboard", "--workspace", str(ws), "--config", str(config)],
        {**env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"},
    )
    orphans: list[int] = []
    try:

        def two_inits() -> Path | None:
            states = list(ws.glob("*/state.json"))
            if not states:
                return None
            folder = states[0].parent
            inits = [
                r
                for path in event_files(folder, "claude")
                for r in read_jsonl(path).records
                if r["payload"].get("kind") == "init"
            ]
            return folder if len(inits) == 2 and len(_demo_pids("claude", folder.name)) == 2 else None

        folder = wait_for(two_inits, timeout=60, message="two of claude's runs under way")
        orphans = _demo_pids("claude", folder.name)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        saved = json.loads((folder / "state.json").read_text())
        in_flight = {a["id"]: a["slot"] for a in saved["assignments"] if a["status"] == "running"}
        assert sorted(in_flight.values()) == [1, 2], saved["assignments"]
        resumed = popen_orchestrate(["resume", folder.name, "--no-dashboard", "--workspace", str(ws)], env)
        try:
            out, err = resumed.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            kill_tree(resumed)
            out, err = resumed.communicate()
            raise AssertionError(f"resume did not finish: {err[-3000:]}") from None
    finally:
        if first.poll() is None:
            kill_tree(first)
        for pid in orphans:  # started by this test's launcher: ours to clean up on failure
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    assert resumed.returncode == 0, err
    assert "ending 2 process(es) the previous orchestrator left" in err
    state = json.loads((folder / "state.json").read_text())
    by_id = {a["id"]: a for a in state["assignments"]}
    assert all(a["status"] == "completed" for a in by_id.values()), state["summary"]
    for assignment in in_flight:
        assert by_id[assignment]["attempts"] == 2  # interrupted, then run again
    # Each interrupted run went on in its CLI's own session (--resume with the id it announced).
    launches = [
        r["payload"]["text"]
        for path in event_files(folder, "claude")
        for r in read_jsonl(path).records
        if r["payload"].get("kind") == "launch"
    ]
    assert sum("--resume" in text for text in launches) == 2
    for path in event_files(folder, "claude"):
        records = read_jsonl(path).records
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), path.name
    store, branch = session_store(folder), f"orchestrate/{folder.name}"
    assert {f"app/health_endpoint_part{k}.py" for k in (1, 2, 3)} <= branch_files(store, branch)
