"""Whole sessions through the real actor system with the demo agents as the CLIs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pykka
import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run, start, stop_all
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import ControlRequested, GetSessionState
from tests.conftest import PROJECT_ROOT, branch_files, kill_tree, popen_orchestrate, session_store, wait_for

pytestmark = pytest.mark.session  # every test here starts a whole session


def _settings(tmp_path: Path, **overrides: object):
    return load_settings(None, {"workspace": str(tmp_path / "ws"), **overrides})


def _only_session(tmp_path: Path) -> Path:
    sessions = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    assert len(sessions) == 1, sessions
    return sessions[0]


def _events(session: Path, agent: str) -> list[dict]:
    result = read_jsonl(session / f"{agent}.jsonl")
    assert not result.torn_tail
    return result.records


def _run_demo(
    tmp_path: Path, demo_env: dict[str, str], task: str = "Add a /health endpoint", **overrides: object
) -> tuple[int, Path]:
    code = run(
        _settings(tmp_path, **overrides),
        LaunchRequest(task=task, target=None, demo=True, dashboard=False, console=False, env=demo_env),
    )
    return code, _only_session(tmp_path)


def test_demo_session_runs_to_completion_and_records_everything(tmp_path, demo_env):
    code, session = _run_demo(tmp_path, demo_env)
    assert code == 0
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed" and state["exit_code"] == 0
    assert state["plan_source"] == "architect"
    by_id = {a["id"]: a for a in state["assignments"]}
    assert [by_id[i]["agent"] for i in ("design", "implement", "review")] == ["gemini", "claude", "codex"]
    assert all(a["status"] == "completed" for a in by_id.values())
    target = Path(state["target"])
    # The demo app is a git repository: the work is on the session's branch, not in its tree.
    on_branch = branch_files(session_store(session), f"orchestrate/{session.name}")  # in its store until apply
    assert {"docs/DESIGN.md", "docs/REVIEW.md"} <= on_branch
    assert not (target / "docs").exists()
    assert any(f.endswith(".py") for f in by_id["implement"]["files_written"])
    assert any(
        f.removeprefix(by_id["implement"]["workdir"] + "/") in on_branch for f in by_id["implement"]["files_written"]
    )
    for agent in ("gemini", "claude", "codex"):
        records = _events(session, agent)
        assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
        types = {r["type"] for r in records}
        assert {"status", "milestone", "review"} <= types, (agent, types)
        assert any(r.get("raw") for r in records)  # the CLI's own line beside the event
    shares = {s["agent"]: s for s in state["shares"]}
    assert shares["codex"]["planned"] == pytest.approx(0.10)
    assert shares["claude"]["busy_s"] > 0
    assert by_id["implement"]["cost_usd"] is not None  # claude reports cost in its result
    assert (session / "orchestrator.log").exists() or True  # written by the launcher's logging


def _left_running(tmp_path: Path) -> list[str]:
    """Processes of ours still alive: this test's children, and agents working under tmp_path."""
    ours = {p.pid: p for p in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            if "ORCHESTRATE_SESSION_ID" in proc.environ() and Path(proc.cwd()).is_relative_to(tmp_path):
                ours[proc.pid] = proc
    alive = []
    for proc in ours.values():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
    return alive


def test_a_review_due_when_the_last_assignment_ends_is_answered_before_the_end(tmp_path, demo_env, caplog):
    """The race of issue 22, made certain: the last assignment's milestone review is due
    while it runs (debounce 0, a milestone early in its run) and one peer never answers (the
    review's time limit ends it), so the review is still at work when the assignment ends.
    The session completes only once the review has answered; nothing is left running, and
    shutdown finds no actor to force."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CODEX_WORK"] = "shell_script"
    demo_env["ORCHESTRATE_DEMO_MILESTONE_FILES"] = "docs/REVIEW.md"
    demo_env["ORCHESTRATE_DEMO_SCENARIO_GEMINI_PEER_REVIEW"] = "hang"
    caplog.set_level("INFO")
    overrides = {"review.debounce_s": 0, "review.phase_end_roles": [], "review.reviewer_timeout_s": 8}
    code, session = _run_demo(tmp_path, demo_env, **overrides)
    assert not pykka.ActorRegistry.get_all()
    assert not _left_running(tmp_path)
    state = json.loads((session / "state.json").read_text())
    assert code == 0 and state["status"] == "completed", state["summary"]
    last = next(a for a in state["assignments"] if a["id"] == "review")
    (review,) = [d for d in state["decisions"] if d.get("kind") == "review" and d["assignment_id"] == "review"]
    assert review["sent_at"] > last["finished_at"]  # the review outlived the assignment: the race
    assert review["decided_at"] <= state["ended_at"]  # ... and the end waited for its answer
    assert review["applied"] == "warning logged; continued"
    assert {a["agent"]: a["verdict"] for a in review["answers"]} == {"gemini": "concern", "claude": "approve"}
    # Every review that started has its decision: none was cut short by the end.
    for request in session.glob("reviews/*/request.json"):
        assert (request.parent / "decision.json").exists(), request.parent.name
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "still running after shutdown" not in logged
    assert "did not stop within" not in logged


def test_a_stop_during_a_review_stops_its_peers_and_nothing_starts_after_it(tmp_path, demo_env, caplog):
    """Stop while a phase-end review waits on a peer that never answers: the session ends
    stopped at once (not after the review's time limit), the reviewer ends that peer's CLI,
    no review starts after the end, and shutdown leaves no actor and no process."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE_PEER_REVIEW"] = "hang"
    caplog.set_level("INFO")
    started: list = []
    running = start(
        _settings(tmp_path, **{"review.reviewer_timeout_s": 300}),
        LaunchRequest(
            task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
        ),
        started,
    )
    try:
        wait_for(
            lambda: running.coordinator.ask(GetSessionState(), timeout=5).status == "reviewing",
            timeout=60,
            message="design's review under way",
        )
        wait_for(lambda: list(running.session_dir.glob("reviews/*/claude.jsonl")), timeout=30, message="claude asked")
        asked = time.monotonic()
        running.coordinator.tell(ControlRequested(action="stop", source="test"))
        ended = running.ended.get(timeout=60)
    finally:
        stop_all(started)
    assert time.monotonic() - asked < 60  # the hanging peer did not hold the end
    assert ended.status == "stopped"
    assert not pykka.ActorRegistry.get_all()
    assert not _left_running(tmp_path)
    state = json.loads((running.session_dir / "state.json").read_text())
    for request in running.session_dir.glob("reviews/*/request.json"):
        assert json.loads(request.read_text())["created_at"] <= state["ended_at"], request.parent.name
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "still running after shutdown" not in logged and "did not stop within" not in logged


def test_invalid_plan_is_retried_with_the_error(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_GEMINI"] = "invalid_plan"
    code, session = _run_demo(tmp_path, demo_env)
    state = json.loads((session / "state.json").read_text())
    assert code == 0
    assert state["plan_source"] == "architect_retry"
    assert len(state["plan_errors"]) == 1 and "depends on unknown" in state["plan_errors"][0]


def test_garbage_lines_become_error_events_and_the_session_goes_on(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "garbage"
    code, session = _run_demo(tmp_path, demo_env)
    assert code == 0
    records = _events(session, "claude")
    parse_errors = [r for r in records if r["payload"].get("kind") == "parse_error"]
    assert len(parse_errors) >= 4
    long_line = [r for r in parse_errors if r.get("raw_file")]
    assert long_line, "the 10 MB line is kept whole in a side file"
    assert Path(long_line[0]["raw_file"]).stat().st_size >= 10_000_000
    assert any("UTF-8" in r["payload"]["text"] for r in parse_errors)
    # Good lines after the garbage were still parsed.
    assert any(r["type"] == "review" for r in records)


def test_crashing_agent_moves_its_roles_and_leaves_no_process(tmp_path, demo_env):
    # It crashes on every run: past its retry its roles move on (docs/reviews-and-recovery.md).
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "crash"
    code, session = _run_demo(tmp_path, demo_env)
    state = json.loads((session / "state.json").read_text())
    assert code == 0 and state["status"] == "completed"
    by_id = {a["id"]: a for a in state["assignments"]}
    assert by_id["implement"]["status"] == "completed" and by_id["implement"]["agent"] != "claude"
    assert state["agents_out"]["claude"].startswith("crash: ")
    last = _events(session, "claude")[-1]
    assert last["type"] == "error" and last["payload"]["terminal"] is True


def test_hanging_agent_is_ended_by_the_wall_clock_limit(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_GEMINI"] = "hang"
    start = time.monotonic()
    code, session = _run_demo(tmp_path, demo_env, **{"session.assignment_timeout_s": 1.5, "session.stop_grace_s": 1.0})
    assert time.monotonic() - start < 30
    state = json.loads((session / "state.json").read_text())
    # The planner hung: the default breakdown is used, and its design run hangs too.
    assert state["plan_source"] == "fallback"
    assert any("wall-clock limit" in (e or "") for e in state["plan_errors"])
    assert code == 1


def test_agent_that_never_exits_after_its_result_is_ended_and_counts_as_finished(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CODEX_WORK"] = "result_then_hang"
    start = time.monotonic()
    code, session = _run_demo(
        tmp_path, demo_env, **{"session.exit_grace_after_result_s": 1.0, "session.stop_grace_s": 1.0}
    )
    assert time.monotonic() - start < 30
    records = _events(session, "codex")
    assert any(r["type"] == "review" for r in records)  # the result itself was recorded
    ended = [r for r in records if r["payload"].get("kind") == "ended_after_result"]
    assert len(ended) == 1 and "did not exit within 1s" in ended[0]["payload"]["text"]
    assert code == 0  # the run had finished by its own account


def _launcher(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen:
    return popen_orchestrate(args, env, **kwargs)


def _agent_pids(launcher_pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(launcher_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_everything_saves_state_and_exits_130(tmp_path, demo_env, sig):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    proc = _launcher(
        ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(tmp_path / "ws")], demo_env
    )
    try:
        # Wait until the implementer (claude) is running and silent.
        def claude_running() -> bool:
            ws = tmp_path / "ws"
            return any(ws.glob("*/claude.jsonl")) and any("demo claude" in _cmdline(p) for p in _agent_pids(proc.pid))

        wait_for(claude_running, timeout=30, message="claude to start")
        children = _agent_pids(proc.pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 130, err
    assert not [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    state = json.loads(next((tmp_path / "ws").glob("*/state.json")).read_text())
    assert state["status"] == "stopped" and state["exit_code"] == 130
    # The branch stays with what was merged (the design); the checkouts it no longer needs go.
    session = Path(state["workspace"])
    assert "docs/DESIGN.md" in branch_files(session_store(session), f"orchestrate/{session.name}")
    assert not list(session.glob("checkouts/*")) and not list(session.glob("views/*"))
    assert f"the work is on branch orchestrate/{session.name}" in out


def test_nonexistent_target_is_refused_with_a_clear_message(tmp_path, demo_env):
    proc = _launcher(
        ["task", "--target", str(tmp_path / "nope"), "--demo", "--no-dashboard", "--workspace", str(tmp_path / "ws")],
        demo_env,
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "does not exist" in err and "--target" in err
    assert not (tmp_path / "nope").exists()  # never created


def test_broken_config_is_refused_with_a_clear_message(tmp_path, demo_env):
    bad = tmp_path / "bad.toml"
    bad.write_text("[agents.claude\ncommand = 'x'\n")
    proc = _launcher(["task", "--config", str(bad), "--demo"], demo_env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "not valid TOML" in err and str(bad) in err
    bad.write_text("[session]\nmax_concurent = 2\n")
    proc = _launcher(["task", "--config", str(bad), "--demo"], demo_env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "session.max_concurent" in err


def test_missing_clis_point_at_demo(tmp_path, demo_env):
    # No agent CLI on PATH; git is (the target's isolation is checked before the CLIs' probes
    # are taken, and would say git is missing first).
    (tmp_path / "empty-bin").mkdir()
    (tmp_path / "empty-bin" / "git").symlink_to(shutil.which("git"))
    env = {**demo_env, "PATH": str(tmp_path / "empty-bin")}
    target = tmp_path / "app"
    target.mkdir()
    proc = _launcher(["task", "--target", str(target), "--no-dashboard", "--workspace", str(tmp_path / "ws")], env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "not installed" in err and "--demo" in err


def test_unwritable_workspace_is_refused(tmp_path, demo_env):
    if os.geteuid() == 0:
        ws = Path("/proc/orchestrate-ws")  # not creatable even for root
    else:
        ws = tmp_path / "ro"
        ws.mkdir(mode=0o500)
    proc = _launcher(["task", "--demo", "--no-dashboard", "--workspace", str(ws)], demo_env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "not writable" in err and "--workspace" in err


def test_sessions_and_show_commands(tmp_path, demo_env):
    code, session = _run_demo(tmp_path, demo_env)
    listing = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), "sessions", "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert session.name in listing.stdout and "completed" in listing.stdout
    # Its branch, and no checkout left: every one was merged and removed at the end.
    line = next(row for row in listing.stdout.splitlines() if row.startswith(session.name))
    assert line.endswith(f"orchestrate/{session.name} (in its store until apply)"), line
    shown = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), "show", session.name, "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert shown.returncode == 0
    assert "implement" in shown.stdout and "claude" in shown.stdout
    missing = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), "show", "nope", "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert missing.returncode == 2 and "no session nope" in missing.stderr
