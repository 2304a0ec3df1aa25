"""``orchestrate show <id> --follow`` tails a running demo session from another process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pathlib import Path

from meta_orchestrator.actors.files.session_files import read_jsonl
from tests.conftest import PROJECT_ROOT, kill_tree, popen_orchestrate, wait_for


def _orchestrate(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return popen_orchestrate(args, env)


def _session_folder(ws: Path) -> Path:
    return wait_for(
        lambda: next((p.parent for p in ws.glob("*/state.json")), None), timeout=30, message="the session's state.json"
    )


@pytest.mark.session
def test_follow_prints_every_milestone_and_ends_with_the_session(tmp_path: Path, demo_env: dict[str, str]):
    ws = tmp_path / "ws"
    session = _orchestrate(
        ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(ws)],
        {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.05"},
    )
    follower = None
    try:
        folder = _session_folder(ws)
        follower = _orchestrate(["show", folder.name, "--follow", "--last", "100000", "--workspace", str(ws)], demo_env)
        out, err = follower.communicate(timeout=90)
        assert follower.returncode == 0, err
        assert session.wait(timeout=30) == 0
    finally:
        for proc in (session, follower):
            if proc is not None and proc.poll() is None:
                kill_tree(proc)
    state = json.loads((folder / "state.json").read_text())
    assert out.rstrip().endswith(f"session {folder.name} completed (exit 0)")
    milestones = [
        r["payload"]["text"]
        for agent in ("gemini", "codex", "claude")
        for r in read_jsonl(folder / f"{agent}.jsonl").records
        if r["type"] == "milestone"
    ]
    assert milestones, "the demo session reported no milestone"
    for text in milestones:
        assert text[:100] in out, text
    for assignment in state["assignments"]:
        assert f"assignment {assignment['id']} completed" in out


@pytest.mark.session
def test_follow_says_how_to_resume_when_the_orchestrator_is_gone(tmp_path: Path, demo_env: dict[str, str]):
    ws = tmp_path / "ws"
    session = _orchestrate(
        ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(ws)],
        {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"},
    )
    follower = None
    try:
        folder = _session_folder(ws)
        follower = _orchestrate(["show", folder.name, "--follow", "--workspace", str(ws)], demo_env)
        wait_for(
            lambda: any(
                a["id"] == "implement" and a["status"] == "running"
                for a in json.loads((folder / "state.json").read_text())["assignments"]
            ),
            timeout=60,
            message="the implementer running",
        )
        kill_tree(session)  # the orchestrator and its agents, as a SIGKILL of the whole tree
        out, _ = follower.communicate(timeout=30)
    finally:
        for proc in (session, follower):
            if proc is not None and proc.poll() is None:
                kill_tree(proc)
    assert follower.returncode == 1
    assert f"orchestrate resume {folder.name}" in out


def test_follow_of_an_unknown_session_is_a_usage_error(tmp_path: Path, demo_env: dict[str, str]):
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), "show", "nope", "--follow", "--workspace", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=demo_env,
        check=False,
    )
    assert done.returncode == 2 and "no session nope" in done.stderr
