"""Whole demo sessions with isolated workspaces, through the launcher and real git: the user's
repository stays as it was, the session branch holds the work, reviews quote only the
agents' change, apply and discard; parallel writers of one file end in a resolved merge or a
question; a sandboxed run works in its checkout; --in-place runs in the target, and says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.agents.demo.common import SHARED_FILE_ENV
from meta_orchestrator.actors.files.session_files import private_dir, read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings, load_settings
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.conftest import branch_file, branch_files, popen_orchestrate, session_store
from tests.workspaces.test_workspaces import _no_global_git_config, git, new_session, user_repo, user_state  # noqa: F401

TASK = "Add a /health endpoint"
# What the user_repo fixture's own uncommitted change says: no review may quote any of it.
USER_CHANGE = ("the user's own note", "staged by the user", "the user's untracked notes")


def _orchestrate(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = popen_orchestrate(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"orchestrate {args[0]} did not end: {err[-3000:]}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _session_dirs(ws: Path) -> set[Path]:
    return {p for p in ws.iterdir() if p.is_dir()} if ws.is_dir() else set()


def _demo(repo: Path, ws: Path, env: dict[str, str], *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """A demo session on ``repo`` through the launcher; its result and its folder."""
    before = _session_dirs(ws)
    done = _orchestrate([TASK, "--demo", "--target", str(repo), "--no-dashboard", "--workspace", str(ws), *extra], env)
    (folder,) = _session_dirs(ws) - before
    return done, folder


def _state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "state.json").read_text())


def _branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/orchestrate/").split()


def _assert_no_review_quotes_the_user_change(folder: Path) -> None:
    requests = list(folder.glob("reviews/*/request.json"))
    assert requests, "no review was made"
    read_by_codex = 0
    for request in requests:
        text = request.read_text()
        change = json.loads(text)["change"]
        assert "commits of" in change["how"] or "working tree of" in change["how"], change["how"]
        assert not [said for said in USER_CHANGE if said in text], request
        assert len(change["commit"]) == 40
        if not (request.parent / "codex.jsonl").exists():
            continue  # codex wrote this work: it is no peer here
        # Its peers read a checkout of exactly that commit (codex names its folder with exec's -C,
        # or its app-server bridge's --cwd).
        launches = [r["payload"]["text"] for r in read_jsonl(request.parent / "codex.jsonl").records]
        view = f"{folder}/views/{request.parent.name} "
        assert any(f"-C {view}" in text or f"--cwd {view}" in text for text in launches)
        read_by_codex += 1
    assert read_by_codex


def _assert_conflict_waits_for_the_user(repo: Path, folder: Path, done: subprocess.CompletedProcess) -> str:
    """Two writers of docs/NOTES.md, no rounds for the agent: the second waits for the user,
    with the conflict in its checkout; the branch has the first writer's line only."""
    assert done.returncode == 3, done.stderr
    state = _state(folder)
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert question["asked_by"] == "workspace" and "docs/NOTES.md" in question["text"]
    second = next(a for a in state["assignments"] if a["phase"] == "conflicted")
    subject = {"type": "merge_conflict", "assignment_id": second["id"], "files": ["docs/NOTES.md"]}
    assert question["subject"] == subject
    in_checkout = (Path(second["workdir"]) / "docs" / "NOTES.md").read_text()
    assert "<<<<<<<" in in_checkout and ">>>>>>>" in in_checkout  # kept for whoever resolves it
    on_branch = branch_file(session_store(folder), f"orchestrate/{folder.name}", "docs/NOTES.md")
    assert len(on_branch.splitlines()) == 1 and second["role"] not in on_branch  # nothing overwritten
    return second["id"]


@pytest.mark.session
def test_a_session_in_the_user_repository_leaves_it_as_it_was_then_apply_and_discard(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    ws = tmp_path / "ws"
    before = user_state(user_repo)
    done, folder = _demo(user_repo, ws, demo_env)
    assert done.returncode == 0, done.stderr
    assert "3 uncommitted files of yours are not part of the session" in done.stderr
    assert user_state(user_repo) == before  # tree, index, HEAD, branch, stash, config: as they were
    branch = f"orchestrate/{folder.name}"
    store = session_store(folder)  # the branch and its objects: in the session's own store
    work = branch_files(store, branch)
    assert {"docs/DESIGN.md", "docs/REVIEW.md", "app/health_endpoint.py"} <= work and "notes.txt" not in work
    assert branch_file(store, branch, "README.md") == "# project\n"  # HEAD's, not the user's
    assert f"\nOrchestrate-Session: {folder.name}\n" in git(store, "log", "-1", "--format=%B", branch)
    assert f"the work is on branch {branch} in the session's store {store}" in done.stdout
    assert f"orchestrate apply {folder.name}" in done.stdout and f"git --git-dir {store} diff --stat" in done.stdout
    assert f"git --git-dir {store} log {branch}" in _state(folder)["summary"]
    _assert_no_review_quotes_the_user_change(folder)

    # Another session whose parallel writers conflict, with no round for the agents: it waits.
    env = {**demo_env, SHARED_FILE_ENV: "docs/NOTES.md"}
    config = tmp_path / "no-rounds.toml"
    config.write_text("[session]\nconflict_rounds = 0\n")
    other, other_folder = _demo(user_repo, ws, env, "--config", str(config))
    kept = _assert_conflict_waits_for_the_user(user_repo, other_folder, other)
    assert f"kept checkout {kept}" in other.stdout
    listed = _orchestrate(["sessions", "--workspace", str(ws)], demo_env)
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines[folder.name].endswith(f"{branch} (in its store until apply)")  # merged: no checkout left
    assert lines[other_folder.name].endswith(
        f"orchestrate/{other_folder.name} (in its store until apply), 1 checkout left"
    )

    gone = _orchestrate(["discard", other_folder.name, "--workspace", str(ws)], demo_env)
    assert gone.returncode == 0, gone.stderr
    assert _branches(user_repo) == []  # no session ever made a branch there
    assert not [p for p in other_folder.glob("checkouts/*")] and not (other_folder / "git").exists()
    assert git(user_repo, "worktree", "list", "--porcelain") == before["worktrees"]
    assert user_state(user_repo) == before

    applied = _orchestrate(["apply", folder.name, "--workspace", str(ws)], demo_env)
    assert applied.returncode == 0, applied.stderr
    assert (user_repo / "app" / "health_endpoint.py").is_file() and (user_repo / "docs" / "REVIEW.md").is_file()
    after = user_state(user_repo)
    for mine in ("README.md", "notes.txt", "debug.log", "lib/util.py"):
        assert after["files"][mine] == before["files"][mine]
    assert after["cached"] == before["cached"] and after["stash"] == before["stash"]
    assert git(user_repo, "symbolic-ref", "HEAD") == before["branch"]


def _run_demo(tmp_path: Path, env: dict[str, str], **overrides: Any) -> tuple[int, Path, dict[str, Any]]:
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), **overrides})
    options = LaunchRequest(task=TASK, target=None, demo=True, dashboard=False, console=False, env=env)
    code = run(settings, options)
    (folder,) = _session_dirs(tmp_path / "ws")
    return code, folder, _state(folder)


@pytest.mark.session
def test_parallel_writers_of_one_file_end_in_a_merge_that_keeps_both(tmp_path: Path, demo_env: dict[str, str]) -> None:
    code, folder, state = _run_demo(tmp_path, {**demo_env, SHARED_FILE_ENV: "docs/NOTES.md"})
    assert code == 0, state["summary"]
    by_id = {a["id"]: a for a in state["assignments"]}
    assert by_id["review"]["depends_on"] == ["design"]  # implement and review ran side by side
    [second] = [a for a in by_id.values() if a["conflict_rounds"]]
    assert second["conflict_rounds"] == 1 and second["status"] == "completed"
    repo, branch = session_store(folder), f"orchestrate/{folder.name}"
    notes = branch_file(repo, branch, "docs/NOTES.md")
    assert "- implementer (claude)" in notes and "- reviewer (codex)" in notes and "<<<<<<<" not in notes
    # Its agent resolved the markers in its checkout; the merge keeps both sides' histories.
    assert "Kept both sides of the merge in: docs/NOTES.md" in second["final_text"]
    assert second["attempts"] == 2  # its run, then the round that resolved the conflict
    assert len(git(repo, "log", "-1", "--format=%P", branch).split()) == 2
    assert {"app/health_endpoint.py", "docs/REVIEW.md", "docs/DESIGN.md"} <= branch_files(repo, branch)
    assert not list(folder.glob("checkouts/*"))  # all merged: none left


@pytest.mark.session
def test_in_place_runs_in_the_target_and_says_so_at_start_in_the_log_and_at_the_end(
    tmp_path: Path, demo_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "plain"
    target.mkdir()
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), "review.enabled": False})
    options = LaunchRequest(
        task=TASK, target=target, demo=True, dashboard=False, console=True, env=demo_env, in_place=True
    )
    assert run(settings, options) == 0
    said = capsys.readouterr()
    loud = f"IN PLACE: the agents write straight into {target}"
    assert f"warning: {loud}" in said.err and "nothing to undo" in said.err  # at start
    assert loud in said.out.splitlines()[-1] or any(loud in line for line in said.out.splitlines()[-3:])  # the end
    assert (target / "docs" / "DESIGN.md").is_file() and (target / "docs" / "REVIEW.md").is_file()
    (folder,) = _session_dirs(tmp_path / "ws")
    assert not (folder / "workspace.json").exists() and not (folder / "checkouts").exists()
    assert not (folder / "git").exists() and not (target / ".git").exists()
    # The dashboard (and a replay) hears why there is no branch: the Changes panel says it.
    history = (folder / "history.jsonl").read_text()
    assert "WorkspaceNotOpened" in history or '"in_place"' in history
    assert "IN PLACE" in history


@pytest.fixture
def repo_outside_tmp() -> Iterator[Path]:
    """A user repository outside /tmp: inside the sandbox /tmp is private, so a repository
    there would be out of reach anyway and prove nothing about read-only binds."""
    folder = Path(tempfile.mkdtemp(prefix="orch-repo-", dir="/var/tmp"))
    repo = folder / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("VALUE = 1\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=User", "-c", "user.email=user@example.com", "commit", "-q", "-m", "start")
    yield repo
    shutil.rmtree(folder, ignore_errors=True)


SANDBOXED_CLI = """
    import json, os, pathlib, subprocess, sys
    results = {}
    def attempt(name, action):
        try:
            action()
            results[name] = "ok"
        except OSError as exc:
            results[name] = exc.strerror
    user, git_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    attempt("write_checkout", lambda: pathlib.Path("made.txt").write_text("made in the checkout\\n"))
    attempt("write_user_repo", lambda: (user / "app.py").write_text("gone\\n"))
    attempt("write_user_git", lambda: (user / ".git" / "HEAD").write_text("gone\\n"))
    attempt("write_git_dir", lambda: (git_dir / "config").write_text("[core]\\n"))
    shown = subprocess.run(["git", "show", "HEAD:app.py"], capture_output=True, text=True)
    results["git_reads"] = shown.stdout.strip() or shown.stderr.strip()
    results["workdir"] = os.environ.get("ORCHESTRATE_WORKDIR")
    pathlib.Path("result.json").write_text(json.dumps(results))
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s"}))
"""


def test_a_sandboxed_run_works_in_its_checkout_and_cannot_write_the_user_repository(
    tmp_path: Path,
    probe: Any,
    bwrap: str,
    repo_outside_tmp: Path,
) -> None:
    workspace = private_dir(tmp_path / "workspace")
    repo = new_session(workspace, repo_outside_tmp, sid="20260101-120000-sbx001")
    checkout = repo.checkout("implement")
    _, read_only = checkout.sandbox_paths()
    script = tmp_path / "bin" / "fake_cli.py"  # outside the checkout: not part of the work
    script.parent.mkdir()
    script.write_text(textwrap.dedent(SANDBOXED_CLI))
    command = f"{sys.executable} {script} {repo_outside_tmp} {checkout.git_dir}"
    worker = Worker.start(
        agent="claude",
        adapter=get_adapter("claude"),
        agent_settings=AgentSettings(command=command, share_min=0.4, share_max=0.5),
        session_settings=SessionSettings(stop_grace_s=1.0),
        session_id=repo.session_id,
        session_dir=workspace / repo.session_id,
        target=repo_outside_tmp,
        listeners=(probe.ref,),
        base_env={**os.environ, "HOME": str(tmp_path / "home")},
        sandbox=OsSandbox(bwrap=bwrap, hidden=(str(workspace),)),
    )
    config_before = (checkout.git_dir / "config").read_bytes()
    worker.tell(
        StartAssignment(
            assignment_id="implement",
            prompt="go",
            workdir=str(checkout.workdir),
            read_only_dirs=read_only,
            reply_to=probe.ref,
        )
    )
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert finished.returncode == 0, finished
    results = json.loads((checkout.path / "result.json").read_text())
    assert results == {
        "write_checkout": "ok",
        "write_user_repo": "Read-only file system",
        "write_user_git": "Read-only file system",
        "write_git_dir": "Read-only file system",
        "git_reads": "VALUE = 1",  # git works in the checkout: its objects are read through
        "workdir": str(checkout.workdir),
    }
    assert (repo_outside_tmp / "app.py").read_text() == "VALUE = 1\n"
    assert (checkout.git_dir / "config").read_bytes() == config_before
    (checkout.path / "result.json").unlink()
    assert repo.commit_assignment("implement", "claude", "made") is not None
    assert repo.merge_assignment("implement").ok
    assert branch_file(repo.store, repo.branch, "made.txt") == "made in the checkout\n"


@pytest.mark.session
def test_include_uncommitted_starts_from_the_user_change_and_leaves_their_tree(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = user_state(user_repo)
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), "review.enabled": False})
    options = LaunchRequest(
        task=TASK, target=user_repo, demo=True, dashboard=False, console=True, env=demo_env, include_uncommitted=True
    )
    assert run(settings, options) == 0
    assert "3 uncommitted files of yours are in the session's base" in capsys.readouterr().err
    assert user_state(user_repo) == before
    (folder,) = _session_dirs(tmp_path / "ws")
    branch = f"orchestrate/{folder.name}"
    store = session_store(folder)
    assert branch_file(store, branch, "README.md") == "# project\n\nthe user's own note\n"
    assert branch_file(store, branch, "lib/util.py") == "VALUE = 2  # staged by the user\n"
    assert {"notes.txt", "docs/DESIGN.md", "app/health_endpoint.py"} <= branch_files(store, branch)
    assert "debug.log" not in branch_files(store, branch)  # ignored stays out
