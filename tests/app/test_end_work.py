"""A session's end work against apply and discard, with real launcher processes and real git.

``state.json`` turns final a moment before the launcher has stopped its actors and removed its
merged checkouts; apply and discard wait for the session's lock (files.end_lock), which the
launcher releases only once that is done. Issued the instant the status turns final, each
must see the whole branch (apply) or delete all of it (discard); a session whose dashboard
stays up after its end is appliable then; a launcher killed mid-end leaves a session both
handle, with a note saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from meta_orchestrator.actors.app.launcher import answer_command
from meta_orchestrator.actors.app.system import LaunchRequest, PreflightError, run
from meta_orchestrator.actors.files.end_lock import ENDED, LOCK_FILE, RUNNING, read_holder
from meta_orchestrator.actors.workspaces.workspace_commands import apply_command, discard_command
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import TERMINAL_STATUSES
from tests.conftest import branch_files, kill_tree, popen_orchestrate, session_store

TASK = "Add a /health endpoint"
WORK = {"docs/DESIGN.md", "docs/REVIEW.md", "app/health_endpoint.py"}
DEADLINE_S = 120.0
ROUNDS = 3  # each round: one apply and one discard, both the instant the status turns final
BLOCKER = {"ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "blocker"}  # claude escalates: nobody there, exit 3


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# project\n")
    _git(path, "add", ".")
    _git(path, "-c", "user.name=User", "-c", "user.email=user@example.com", "commit", "-q", "-m", "first")
    return path


def _launch(repo: Path, ws: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.Popen, Path]:
    """A demo session through the launcher; the process and its session folder, once it exists."""
    before = set(ws.iterdir()) if ws.is_dir() else set()
    proc = popen_orchestrate([TASK, "--demo", "--target", str(repo), "--workspace", str(ws), *extra], env)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline and proc.poll() is None:
        made = [p for p in (set(ws.iterdir()) if ws.is_dir() else set()) - before if (p / "state.json").is_file()]
        if made:
            return proc, made[0]
        time.sleep(0.01)
    kill_tree(proc)
    raise AssertionError(f"no session folder appeared: {proc.communicate()[1][-3000:]}")


def _until_final(folder: Path, proc: subprocess.Popen) -> dict[str, Any]:
    """Wait for state.json to say the session ended; return it the moment it does."""
    path, deadline = folder / "state.json", time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced
            state = {}
        if state.get("status") in TERMINAL_STATUSES:
            return state
        if proc.poll() is not None:
            break
        time.sleep(0.002)  # a condition wait: state.json is polled until the deadline
    kill_tree(proc)
    raise AssertionError(f"the session never ended: {proc.communicate()[1][-3000:]}")


def _ended(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise AssertionError("the launcher did not end") from None
    return proc.returncode, err


def _assert_discarded(folder: Path, repo: Path) -> None:
    assert not (folder / "git").exists() and not list(folder.glob("checkouts/*")) and not list(folder.glob("views/*"))
    assert _git(repo, "for-each-ref", "refs/heads/orchestrate/") == ""
    assert (folder / "state.json").is_file()  # the session's record stays


@pytest.mark.session
def test_apply_and_discard_the_instant_the_status_turns_final_wait_for_the_end_work(
    tmp_path: Path, demo_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    for round_ in range(ROUNDS):
        for action in ("apply", "discard"):
            repo = _repo(tmp_path / f"repo-{round_}-{action}")
            proc, folder = _launch(repo, ws, demo_env, "--no-dashboard")
            assert _until_final(folder, proc)["status"] == "completed"
            if action == "apply":
                code = apply_command(folder, folder.name, squash=False)
            else:
                code = discard_command(folder, folder.name)
            said = capsys.readouterr()
            assert code == 0, said.err
            assert "ended before its end work" not in said.err  # the launcher finished its end work
            assert read_holder(folder) == {"pid": proc.pid, "phase": ENDED}
            if action == "apply":  # the whole branch came in
                assert set(_git(repo, "ls-files").split()) >= WORK
                assert f"applied orchestrate/{folder.name} to main" in said.out
            else:  # all of it went, nothing half-deleted
                _assert_discarded(folder, repo)
            returncode, err = _ended(proc)
            assert returncode == 0, err
            assert "Traceback" not in err and "FileNotFoundError" not in err


@pytest.mark.session
def test_a_session_whose_dashboard_stays_up_is_appliable_while_it_serves(
    tmp_path: Path, demo_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    repo = _repo(tmp_path / "repo")
    proc, folder = _launch(repo, tmp_path / "ws", demo_env, "--port", "0")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        assert _until_final(folder, proc)["status"] == "completed"
        assert apply_command(folder, folder.name, squash=False) == 0, capsys.readouterr().err
        assert set(_git(repo, "ls-files").split()) >= WORK
        assert proc.poll() is None  # still serving its dashboard on the final state
        url = next(line.split(" ", 1)[1].strip() for line in lines if line.startswith("dashboard: "))
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200
        assert discard_command(folder, folder.name) == 0, capsys.readouterr().err
        _assert_discarded(folder, repo)
        assert proc.poll() is None
        assert any("the dashboard stays up" in line for line in lines)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C closes the dashboard
        assert proc.wait(timeout=DEADLINE_S) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        reader.join(timeout=10)
    assert not any("Traceback" in line for line in lines), "".join(lines)[-3000:]


def _stopped_mid_end(
    repo_dir: Path, ws: Path, env: dict[str, str], exit_code: int
) -> tuple[subprocess.Popen, Path] | None:
    """A launcher frozen (SIGSTOP) the instant its status turned final, before it marked its
    end work done; None if it had already finished it (it is let end then, with ``exit_code``)."""
    proc, folder = _launch(_repo(repo_dir), ws, env, "--no-dashboard")
    _until_final(folder, proc)
    os.killpg(proc.pid, signal.SIGSTOP)
    if read_holder(folder).get("phase") == RUNNING:
        return proc, folder
    os.killpg(proc.pid, signal.SIGCONT)
    assert _ended(proc)[0] == exit_code
    return None


def _caught_mid_end(tmp_path: Path, env: dict[str, str], exit_code: int = 0) -> tuple[subprocess.Popen, Path, Path]:
    """A launcher frozen mid-end, its session folder and its target repository."""
    for attempt in range(5):  # the end work takes a moment: the freeze lands in it nearly always
        repo = tmp_path / f"repo-{attempt}"
        caught = _stopped_mid_end(repo, tmp_path / "ws", env, exit_code)
        if caught is not None:
            return (*caught, repo)
    raise AssertionError("the launcher finished its end work before it could be frozen, every time")


@pytest.mark.session
def test_a_launcher_killed_mid_end_leaves_a_session_apply_and_discard_handle(
    tmp_path: Path, demo_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proc, folder, repo = _caught_mid_end(tmp_path, demo_env)
    try:
        # Frozen mid-end, it holds the lock: both are refused with the reason, nothing touched.
        assert discard_command(folder, folder.name, wait_s=0.3) == 2
        said = capsys.readouterr().err
        assert f"session {folder.name} is busy: its launcher (pid {proc.pid}) is still finishing its end work" in said
        assert "discard did nothing" in said
        assert apply_command(folder, folder.name, squash=False, wait_s=0.3) == 2
        assert "apply did nothing" in capsys.readouterr().err
        assert (
            session_store(folder).is_dir() and branch_files(session_store(folder), f"orchestrate/{folder.name}") >= WORK
        )
        assert "health_endpoint" not in _git(repo, "ls-files")
    finally:
        kill_tree(proc)  # SIGKILL: the kernel releases its lock
    # The branch was whole before the status turned final: apply brings all of it, with a note.
    assert apply_command(folder, folder.name, squash=False, wait_s=5) == 0
    said = capsys.readouterr()
    assert f"launcher (pid {proc.pid}) ended before its end work was done" in said.err
    assert set(_git(repo, "ls-files").split()) >= WORK
    # Discard removes whatever the killed end work left (store, checkouts), all of it.
    assert discard_command(folder, folder.name, wait_s=5) == 0, capsys.readouterr().err
    _assert_discarded(folder, repo)
    assert (folder / LOCK_FILE).is_file()


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a session folder, byte for byte (the lock file's holder too)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _open_question(folder: Path) -> str:
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "waiting", state["status"]
    return next(q["id"] for q in state["questions"] if q["status"] == "open")


@pytest.mark.session
def test_answer_waits_for_the_end_work_of_a_waiting_session_and_refuses_it_busy(
    tmp_path: Path, demo_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**demo_env, **BLOCKER}
    proc, folder, _ = _caught_mid_end(tmp_path, env, exit_code=3)
    try:
        question, before = _open_question(folder), _folder_bytes(folder)
        # Frozen mid-end, it holds the lock: the answer is refused with the reason, nothing written.
        assert answer_command(folder, folder.name, question, "continue", wait_s=0.3) == 2
        said = capsys.readouterr().err
        assert f"session {folder.name} is busy: its launcher (pid {proc.pid}) is still finishing its end work" in said
        assert "answer did nothing" in said
        assert _folder_bytes(folder) == before and read_holder(folder) == {"pid": proc.pid, "phase": RUNNING}
        # The command waits for the end work (up to its 60 s), then records the answer.
        answering = popen_orchestrate(
            ["answer", folder.name, question, "continue", "--workspace", str(folder.parent)], env
        )
        os.killpg(proc.pid, signal.SIGCONT)
        code, err = _ended(answering)
        assert code == 0, err
        assert json.loads((folder / "answers.json").read_text())[question]["answer"] == "continue"
        assert _ended(proc)[0] == 3
        assert read_holder(folder) == {"pid": proc.pid, "phase": ENDED}
    finally:
        if proc.poll() is None:
            kill_tree(proc)


@pytest.mark.session
def test_resume_waits_for_the_end_work_of_a_waiting_session_and_refuses_it_busy(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    env = {**demo_env, **BLOCKER}
    proc, folder, _ = _caught_mid_end(tmp_path, env, exit_code=3)
    ws = folder.parent
    try:
        before = _folder_bytes(folder)
        # Frozen mid-end, it holds the lock: the resume is refused with the reason, nothing touched.
        settings = load_settings(None, {"workspace": str(ws)})
        request = LaunchRequest(
            task="", target=None, resume=folder.name, dashboard=False, console=False, env=env, end_wait_s=0.3
        )
        with pytest.raises(PreflightError) as refused:
            run(settings, request)
        said = str(refused.value)
        assert f"session {folder.name} is busy: its launcher (pid {proc.pid}) is still finishing its end work" in said
        assert "resume did nothing" in said
        assert _folder_bytes(folder) == before and psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
        # `orchestrate resume` waits for the end work (up to its 60 s), then continues the session:
        # the question is still open, so it waits again (exit 3), its own end work done.
        resuming = popen_orchestrate(["resume", folder.name, "--no-dashboard", "--workspace", str(ws)], env)
        os.killpg(proc.pid, signal.SIGCONT)
        assert _ended(proc)[0] == 3
        code, err = _ended(resuming)
        assert code == 3, err
        assert "is busy:" not in err and "still running" not in err
        assert read_holder(folder) == {"pid": resuming.pid, "phase": ENDED}
        assert json.loads((folder / "state.json").read_text())["orchestrator_pid"] == resuming.pid
    finally:
        if proc.poll() is None:
            kill_tree(proc)
