"""The orchestrator SIGKILLed mid-session, then resumed to completion."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import pytest
from pathlib import Path

import psutil
from meta_orchestrator.actors.files.session_files import read_jsonl

from tests.conftest import branch_file, branch_files, kill_tree, popen_orchestrate, session_store, wait_for

pytestmark = pytest.mark.session  # every test here starts a whole session


def _orchestrate(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return popen_orchestrate(args, env)


def _demo_pids(agent: str, session_id: str) -> list[int]:
    """This session's live demo agents (other sessions may run on the machine)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if (
                f"meta_orchestrator.actors.agents.demo {agent}" in " ".join(proc.cmdline())
                and proc.environ().get("ORCHESTRATE_SESSION_ID") == session_id
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_killed_orchestrator_is_resumed_to_completion(tmp_path: Path, demo_env: dict[str, str]):
    ws = tmp_path / "ws"
    # Without the OS sandbox an agent outlives its orchestrator (under bwrap it dies with it:
    # tests/sandbox/test_os_sandbox.py); the saved settings keep it off for the resumed run.
    config = tmp_path / "no-os-sandbox.toml"
    config.write_text('[sandbox]\nos = "off"\n')
    first = _orchestrate(
        ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(ws), "--config", str(config)],
        {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"},
    )
    orphan_pids: list[int] = []
    try:

        def implementer_running() -> bool:
            state_files = list(ws.glob("*/state.json"))
            if not state_files:
                return False
            state = json.loads(state_files[0].read_text())
            running = any(a["id"] == "implement" and a["status"] == "running" for a in state.get("assignments", []))
            return running and bool(_demo_pids("claude", state_files[0].parent.name))

        wait_for(implementer_running, timeout=60, message="the implementer to run")
        session_dir = next(ws.glob("*/state.json")).parent
        wait_for(
            lambda: any(r["payload"].get("kind") == "init" for r in read_jsonl(session_dir / "claude.jsonl").records),
            message="claude's init event",
        )
        orphan_pids = _demo_pids("claude", session_dir.name)
        checkout = _leave_partial_work(session_dir)
        first.send_signal(signal.SIGKILL)  # the orchestrator dies; its agent lives on
        first.wait(timeout=10)
        assert all(psutil.pid_exists(p) for p in orphan_pids)
        before = {a: read_jsonl(session_dir / f"{a}.jsonl").records for a in ("gemini", "claude")}

        resumed = _orchestrate(["resume", session_dir.name, "--no-dashboard", "--workspace", str(ws)], demo_env)
        try:
            out, err = resumed.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            kill_tree(resumed)
            out, err = resumed.communicate()
            raise AssertionError(f"resume did not finish: {err[-3000:]}") from None
    finally:
        for proc in (first,):
            if proc.poll() is None:
                kill_tree(proc)
        for pid in orphan_pids:  # started by this test's launcher: ours to clean up on failure
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    assert resumed.returncode == 0, err
    assert "ending 1 process(es) the previous orchestrator left" in err
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in orphan_pids)
    state = json.loads((session_dir / "state.json").read_text())
    assert state["status"] == "completed"
    by_id = {a["id"]: a for a in state["assignments"]}
    # Finished work stays finished; the interrupted one ran once more.
    assert (by_id["design"]["attempts"], by_id["implement"]["attempts"]) == (1, 2)
    for agent in ("gemini", "codex", "claude"):
        records = read_jsonl(session_dir / f"{agent}.jsonl").records
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1)), agent
    gemini_after = read_jsonl(session_dir / "gemini.jsonl").records
    assert len(gemini_after) == len(before["gemini"])  # the architect did not run again
    claude_after = read_jsonl(session_dir / "claude.jsonl").records
    assert claude_after[: len(before["claude"])] == before["claude"]
    launches = [r for r in claude_after if r["payload"].get("kind") == "launch"]
    init_id = next(r["payload"]["session_id"] for r in before["claude"] if r["payload"].get("kind") == "init")
    assert "--resume" in launches[-1]["payload"]["text"] and init_id in launches[-1]["payload"]["text"]
    _assert_the_checkout_was_reused(state, session_dir, checkout, err)


def _assert_the_checkout_was_reused(state: dict, session_dir: Path, checkout: Path, err: str) -> None:
    """The resumed run worked in the same checkout, on the same branch: what was there before
    the kill is in the session branch with the rest of its work; the checkout is gone now."""
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert implement["workdir"] == str(checkout)
    target = Path(state["target"])
    files = branch_files(session_store(session_dir), f"orchestrate/{session_dir.name}")
    assert {"partial.txt", "docs/DESIGN.md", "docs/REVIEW.md"} <= files
    assert (
        branch_file(session_store(session_dir), f"orchestrate/{session_dir.name}", "partial.txt")
        == "work done before the kill\n"
    )
    assert not checkout.exists() and not (target / "partial.txt").exists()
    assert "resumed on branch" in err


def _leave_partial_work(session_dir: Path) -> Path:
    """A file in the implementer's checkout, as its agent would leave one before the kill."""
    state = json.loads((session_dir / "state.json").read_text())
    checkout = Path(next(a for a in state["assignments"] if a["id"] == "implement")["workdir"])
    (checkout / "partial.txt").write_text("work done before the kill\n")
    return checkout
