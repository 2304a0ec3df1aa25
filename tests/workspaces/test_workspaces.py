"""Isolated workspaces with real git: the user's tree, index, HEAD, branch and stash stay
byte-identical; the session branch holds the agents' work; diffs are exact; conflicts are
resolved in the assignment's checkout; apply and discard; resume after a SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError, run_command
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import (
    ApplyRefused,
    ConflictMarkersLeft,
    SessionRepo,
    apply_session,
    discard_session,
    open_session_repo,
)
from tests.conftest import PROJECT_ROOT, git_folder_bytes, popen_orchestrate, wait_for

APP = "def main():\n    return 1\n\n\ndef helper():\n    return 2\n"


def git(repo: Path, *args: str) -> str:
    """git in the user's repository, as the user would run it (but taking no optional lock,
    so that the test's own reads never rewrite their index)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env, timeout=60
    )
    return done.stdout


@pytest.fixture(autouse=True)
def _no_global_git_config(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No identity, no hooks from this machine's config: the tool must not need them."""
    config = tmp_path_factory.mktemp("gitconfig") / "config"
    config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    return config


def _commit(repo: Path, message: str) -> None:
    git(repo, "-c", "user.name=User", "-c", "user.email=user@example.com", "commit", "-q", "-m", message)


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A repository with the user's own uncommitted change of every kind: a tracked
    modification, a staged change, an untracked file, an ignored file, a stash entry."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text(APP)
    (repo / "README.md").write_text("# project\n")
    (repo / "lib").mkdir()
    (repo / "lib" / "util.py").write_text("VALUE = 1\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    _commit(repo, "start")
    (repo / "README.md").write_text("# project\n\nstashed idea\n")
    git(repo, "-c", "user.name=User", "-c", "user.email=user@example.com", "stash", "-q")
    (repo / "README.md").write_text("# project\n\nthe user's own note\n")
    (repo / "lib" / "util.py").write_text("VALUE = 2  # staged by the user\n")
    git(repo, "add", "lib/util.py")
    (repo / "notes.txt").write_text("the user's untracked notes\n")
    (repo / "debug.log").write_text("ignored\n")
    return repo


def user_state(repo: Path) -> dict[str, Any]:
    """Everything of the user's that a session must leave as it was, byte for byte."""
    files = {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    return {
        "files": files,
        "index": (repo / ".git" / "index").read_bytes(),
        "cached": git(repo, "diff", "--cached"),
        "unstaged": git(repo, "diff"),
        "status": git(repo, "status", "--porcelain=v2", "-z", "--untracked-files=all"),
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "stash": (git(repo, "stash", "list"), git(repo, "rev-parse", "refs/stash")),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "config": (repo / ".git" / "config").read_bytes(),
        "git folder": git_folder_bytes(repo),  # refs, packed-refs, objects, logs: nothing gained
    }


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return private_dir(tmp_path / "workspace")


def new_session(workspace: Path, repo: Path, sid: str = "20260101-120000-abc123", **kwargs: Any) -> SessionRepo:
    opened = open_session_repo(repo, private_dir(workspace / sid), sid, **kwargs)
    assert opened.repo is not None, opened.message
    return opened.repo


def old_layout_session(workspace: Path, repo: Path, sid: str = "20260101-120000-old123") -> SessionRepo:
    """A session as made before the store: its branch in the user's repository, and a
    workspace.json without ``store`` (made now, then moved to that layout before any checkout)."""
    made = new_session(workspace, repo, sid)
    git(repo, "fetch", "-q", str(made.store), f"{made.branch}:{made.branch}")
    record = made.record.model_copy(update={"store": None})
    shutil.rmtree(made.store)
    old = SessionRepo(record, workspace / sid)
    old.save()
    assert old.store is None and git(repo, "rev-parse", made.branch).strip() == made.base
    return old


def test_a_session_leaves_the_user_repository_as_it_was(user_repo: Path, workspace: Path) -> None:
    before = user_state(user_repo)
    start_head = before["head"].strip()
    repo = new_session(workspace, user_repo)
    assert repo.base == start_head
    assert repo.record.user_branch == "refs/heads/main"
    assert set(repo.record.uncommitted) == {"README.md", "lib/util.py", "notes.txt"}

    checkout = repo.checkout("implement")
    assert checkout.branch == f"orchestrate/{repo.session_id}/implement"
    # The agent sees the committed tree only: none of the user's uncommitted files.
    assert (checkout.path / "README.md").read_text() == "# project\n"
    assert (checkout.path / "lib" / "util.py").read_text() == "VALUE = 1\n"
    assert not (checkout.path / "notes.txt").exists()
    (checkout.path / "app.py").write_text(APP.replace("return 1", "return 10"))
    (checkout.path / "health.py").write_text("def health():\n    return 'ok'\n")
    (checkout.path / "build.log").write_text("ignored by .gitignore\n")

    head = repo.commit_assignment("implement", "claude", "Add a health check")
    assert head is not None
    result = repo.merge_assignment("implement")
    assert result.status == "fast_forward" and result.commit == head

    assert user_state(user_repo) == before
    branch, store = f"orchestrate/{repo.session_id}", repo.store
    assert store == workspace / repo.session_id / "git" / "session.git"
    assert git(store, "show", f"{branch}:health.py") == "def health():\n    return 'ok'\n"
    assert "return 10" in git(store, "show", f"{branch}:app.py")
    assert "build.log" not in git(store, "ls-tree", "-r", "--name-only", branch)
    message = git(store, "log", "-1", "--format=%an <%ae>%n%cn%n%B", branch)
    assert message.startswith(
        "orchestrate <orchestrate@localhost>\norchestrate\nimplement (claude): Add a health check"
    )
    assert f"Orchestrate-Session: {repo.session_id}" in message
    assert "Orchestrate-Assignment: implement" in message

    diff = repo.assignment_diff("implement")
    assert "+def health():" in diff and "+    return 10" in diff
    for theirs in ("the user's own note", "staged by the user", "untracked notes", "stashed idea"):
        assert theirs not in diff

    changes = repo.session_changes()
    by_path = {f.path: f for f in changes.files}
    assert set(by_path) == {"app.py", "health.py"}
    assert (by_path["app.py"].added, by_path["app.py"].removed, by_path["app.py"].status) == (1, 1, "modified")
    assert (by_path["health.py"].added, by_path["health.py"].status) == (2, "added")
    assert [a.assignment_id for a in changes.assignments] == ["implement"]
    assert {d.path: "+def health():" in d.text for d in changes.diffs} == {"app.py": False, "health.py": True}


def test_the_start_note_counts_the_user_uncommitted_files(user_repo: Path, workspace: Path) -> None:
    opened = open_session_repo(user_repo, private_dir(workspace / "s1"), "s1")
    assert opened.repo is not None
    assert "3 uncommitted files of yours are not part of the session" in opened.message
    assert "--include-uncommitted" in opened.message


def test_include_uncommitted_puts_the_user_change_in_the_base_only(user_repo: Path, workspace: Path) -> None:
    before = user_state(user_repo)
    repo = new_session(workspace, user_repo, include_uncommitted=True)
    assert repo.base != before["head"].strip()
    assert git(repo.store, "rev-parse", f"{repo.base}^").strip() == before["head"].strip()  # made in the store
    checkout = repo.checkout("implement")
    assert (checkout.path / "README.md").read_text() == "# project\n\nthe user's own note\n"
    assert (checkout.path / "lib" / "util.py").read_text() == "VALUE = 2  # staged by the user\n"
    assert (checkout.path / "notes.txt").read_text() == "the user's untracked notes\n"
    assert not (checkout.path / "debug.log").exists()  # ignored
    assert user_state(user_repo) == before
    (checkout.path / "app.py").write_text("print('work')\n")
    repo.commit_assignment("implement", "claude", "work")
    diff = repo.assignment_diff("implement")
    assert "app.py" in diff and "the user's own note" not in diff


def test_a_workspace_inside_the_repository_is_no_change_of_the_user(user_repo: Path) -> None:
    inside = private_dir(user_repo / "workspace")
    (inside / "older-session").mkdir()
    (inside / "older-session" / "state.json").write_text("{}")
    repo = new_session(inside, user_repo, include_uncommitted=True)
    assert repo.record.uncommitted_count == 3
    work = repo.checkout("implement")
    assert not (work.path / "workspace").exists()
    assert "workspace/" not in git(repo.store, "ls-tree", "-r", "--name-only", repo.base)


def _two_editors(workspace: Path, user_repo: Path) -> SessionRepo:
    repo = new_session(workspace, user_repo)
    first = repo.checkout("first")
    second = repo.checkout("second")
    (first.path / "app.py").write_text(APP.replace("return 1", "return 'first'"))
    (second.path / "app.py").write_text(APP.replace("return 1", "return 'second'"))
    assert repo.commit_assignment("first", "claude", "first edit")
    assert repo.commit_assignment("second", "codex", "second edit")
    return repo


def test_two_assignments_on_the_same_line_conflict_and_the_agent_resolves_it(user_repo: Path, workspace: Path) -> None:
    before = user_state(user_repo)
    repo = _two_editors(workspace, user_repo)
    assert repo.merge_assignment("first").status == "fast_forward"
    tip = repo.tip()
    conflict = repo.merge_assignment("second")
    assert (conflict.status, conflict.conflicts, conflict.commit) == ("conflict", ("app.py",), tip)
    assert repo.tip() == tip  # nothing moved

    assert repo.prepare_conflict("second") == ("app.py",)
    assert repo.prepare_conflict("second") == ("app.py",)  # again: nothing changes
    second = repo.checkout("second")
    text = (second.path / "app.py").read_text()
    assert "<<<<<<<" in text and "return 'first'" in text and "return 'second'" in text
    with pytest.raises(ConflictMarkersLeft) as left:
        repo.commit_assignment("second", "codex", "resolve")
    assert left.value.files == ("app.py",)

    (second.path / "app.py").write_text(APP.replace("return 1", "return 'first' + 'second'"))
    resolved = repo.commit_assignment("second", "codex", "resolve")
    merged = repo.merge_assignment("second")
    assert (merged.status, merged.commit) == ("fast_forward", resolved)
    assert "return 'first' + 'second'" in git(repo.store, "show", f"{repo.branch}:app.py")
    # Its own diff now starts from the tip it merged in: the resolution, not the first's work again.
    diff = repo.assignment_diff("second")
    assert "+    return 'first' + 'second'" in diff and "-    return 'first'" in diff
    assert [a.assignment_id for a in repo.session_changes().assignments] == ["first", "second"]
    assert user_state(user_repo) == before


def test_prepare_conflict_refuses_a_checkout_with_uncommitted_work(user_repo: Path, workspace: Path) -> None:
    repo = _two_editors(workspace, user_repo)
    repo.merge_assignment("first")
    (repo.checkout("second").path / "app.py").write_text("not committed\n")
    with pytest.raises(WorkspaceError, match="local changes"):
        repo.prepare_conflict("second")


def test_assignments_on_different_files_merge_with_a_merge_commit(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    docs = repo.checkout("docs")
    code = repo.checkout("code")
    (docs.path / "docs.md").write_text("# docs\n")
    (code.path / "lib" / "util.py").write_text("VALUE = 3\n")
    (code.path / "image.bin").write_bytes(b"\x00\x01\x02binary")
    repo.commit_assignment("docs", "gemini", "docs")
    code_head = repo.commit_assignment("code", "claude", "code")
    assert repo.merge_assignment("docs").status == "fast_forward"
    merged = repo.merge_assignment("code")
    assert merged.status == "merged"
    parents = git(repo.store, "rev-list", "--parents", "-n1", merged.commit).split()
    assert parents[2] == code_head
    assert "Orchestrate-Assignment: code" in git(repo.store, "log", "-1", "--format=%B", merged.commit)
    assert repo.merge_assignment("code").status == "up_to_date"

    changes = repo.session_changes()
    per = {a.assignment_id: sorted(f.path for f in a.files) for a in changes.assignments}
    assert per == {"docs": ["docs.md"], "code": ["image.bin", "lib/util.py"]}
    binary = next(f for f in changes.files if f.path == "image.bin")
    assert binary.binary and binary.added is None
    # The diff of code is its own only, though docs merged first.
    assert "docs.md" not in repo.assignment_diff("code")


def test_a_commit_made_on_the_session_branch_by_someone_else_is_merged_and_shown_apart(
    user_repo: Path, workspace: Path
) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "health.py").write_text("ok = True\n")
    repo.commit_assignment("implement", "claude", "health")
    look = user_repo.parent / "look"
    git(repo.store, "worktree", "add", "-q", str(look), repo.branch)
    (look / "by-hand.txt").write_text("committed on the branch by hand\n")
    git(look, "add", "by-hand.txt")
    _commit(look, "by hand")
    git(repo.store, "worktree", "remove", str(look))
    merged = repo.merge_assignment("implement")
    assert merged.status == "merged"
    steps = [(a.assignment_id, [f.path for f in a.files]) for a in repo.session_changes().assignments]
    assert steps == [(None, ["by-hand.txt"]), ("implement", ["health.py"])]


def test_an_assignment_whose_history_was_rewritten_is_not_merged(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    # What an agent with a writable git folder could do: a branch with no common history.
    git(work.path, "checkout", "-q", "--orphan", "elsewhere")
    (work.path / "x.txt").write_text("x\n")
    git(work.path, "add", "-A")
    _commit(work.path, "unrelated root")
    git(work.path, "branch", "-q", "-M", work.branch or "")
    repo.commit_assignment("implement", "claude", "x")
    with pytest.raises(WorkspaceError, match="shares no history"):
        repo.merge_assignment("implement")
    assert repo.tip() == repo.base


def test_session_changes_cut_the_diff_text_at_the_cap(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("big")
    (work.path / "a.txt").write_text("".join(f"line {i}\n" for i in range(5000)))
    (work.path / "b.txt").write_text("small\n")
    repo.commit_assignment("big", "claude", "big")
    repo.merge_assignment("big")
    changes = repo.session_changes(max_file_bytes=1000, max_total_bytes=200_000)
    texts = {d.path: d for d in changes.diffs}
    assert texts["a.txt"].truncated and len(texts["a.txt"].text) <= 1000
    assert not texts["b.txt"].truncated and "+small" in texts["b.txt"].text
    assert changes.truncated and changes.added == 5001
    tiny = repo.session_changes(max_file_bytes=1000, max_total_bytes=500)
    assert [d.truncated for d in tiny.diffs] == [True, True] and tiny.diffs[1].text == ""


def test_apply_brings_the_work_and_keeps_the_user_change(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "app.py").write_text(APP.replace("return 1", "return 10"))
    repo.commit_assignment("implement", "claude", "work")
    repo.merge_assignment("implement")
    before = user_state(user_repo)

    result = apply_session(user_repo, repo.session_id, store=repo.store)
    assert (result.status, result.branch, result.files) == ("fast_forward", "main", ("app.py",))
    after = user_state(user_repo)
    assert "return 10" in (user_repo / "app.py").read_text()
    assert git(user_repo, "rev-parse", "HEAD").strip() == repo.tip()
    for kept in ("README.md", "notes.txt", "debug.log", "lib/util.py"):
        assert after["files"][kept] == before["files"][kept]
    assert after["cached"] == before["cached"]  # the staged change is still staged
    assert after["stash"] == before["stash"]
    assert apply_session(user_repo, repo.session_id, store=repo.store).status == "up_to_date"


def test_apply_after_the_user_committed_makes_a_merge_commit(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "health.py").write_text("ok = True\n")
    repo.commit_assignment("implement", "claude", "work")
    repo.merge_assignment("implement")
    _commit(user_repo, "the user's staged change")  # lib/util.py, meanwhile
    mine = git(user_repo, "rev-parse", "HEAD").strip()
    result = apply_session(user_repo, repo.session_id, store=repo.store)
    assert result.status == "merged"
    assert git(user_repo, "rev-list", "--parents", "-n1", "HEAD").split()[1:] == [mine, repo.tip()]
    assert (user_repo / "health.py").read_text() == "ok = True\n"
    assert (user_repo / "README.md").read_text() == "# project\n\nthe user's own note\n"


def test_apply_refuses_when_the_user_change_touches_the_same_file(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("docs")
    (work.path / "README.md").write_text("# project\n\nby the agents\n")
    repo.commit_assignment("docs", "gemini", "docs")
    repo.merge_assignment("docs")
    before = user_state(user_repo)
    with pytest.raises(ApplyRefused) as refused:
        apply_session(user_repo, repo.session_id, store=repo.store)
    assert refused.value.files == ("README.md",)
    assert "uncommitted changes touch" in str(refused.value)
    assert user_state(user_repo) == before


def test_apply_refuses_a_conflicting_merge_and_leaves_nothing_half_done(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "app.py").write_text(APP.replace("return 1", "return 'agents'"))
    repo.commit_assignment("implement", "claude", "work")
    repo.merge_assignment("implement")
    (user_repo / "app.py").write_text(APP.replace("return 1", "return 'user'"))
    git(user_repo, "add", "app.py")
    _commit(user_repo, "the user's own edit of app.py")
    before = user_state(user_repo)
    with pytest.raises(ApplyRefused) as refused:
        apply_session(user_repo, repo.session_id, store=repo.store)
    assert refused.value.files == ("app.py",) and "would conflict" in str(refused.value)
    assert user_state(user_repo) == before
    assert not (user_repo / ".git" / "MERGE_HEAD").exists()


def test_apply_squash_makes_one_commit_on_the_user_branch(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    for name in ("one", "two"):
        work = repo.checkout(name)
        (work.path / f"{name}.txt").write_text(name + "\n")
        repo.commit_assignment(name, "claude", f"add {name}")
        repo.merge_assignment(name)
    head = git(user_repo, "rev-parse", "HEAD").strip()
    result = apply_session(user_repo, repo.session_id, squash=True, title="Add one and two", store=repo.store)
    assert result.status == "squashed"
    assert git(user_repo, "rev-list", "--parents", "-n1", "HEAD").split()[1:] == [head]
    message = git(user_repo, "log", "-1", "--format=%an%n%B")
    assert message.startswith("orchestrate\nAdd one and two\n")
    assert "* one (claude): add one" in message and "* two (claude): add two" in message
    assert f"Orchestrate-Session: {repo.session_id}" in message
    assert git(user_repo, "diff", "--cached", "--name-only") == "lib/util.py\n"  # theirs, still staged
    assert (user_repo / "one.txt").exists() and (user_repo / "two.txt").exists()


def test_discard_leaves_no_branch_worktree_or_checkout(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    repo.checkout("implement")
    repo.readonly_checkout("review", repo.base)
    before = user_state(user_repo)
    result = discard_session(user_repo, workspace / repo.session_id, repo.session_id)
    assert result.branches == (repo.branch,) and not result.problems
    assert set(result.checkouts) == {"implement", "view:review"}
    assert git(user_repo, "for-each-ref", "refs/heads/orchestrate/") == ""
    assert sorted(p.name for p in (workspace / repo.session_id).iterdir()) == ["workspace.json"]
    after = user_state(user_repo)
    assert after == before
    with pytest.raises(WorkspaceError, match="discarded"):
        open_session_repo(user_repo, workspace / repo.session_id, repo.session_id)


def test_discard_refuses_a_checked_out_branch_and_says_so(user_repo: Path, workspace: Path) -> None:
    repo = old_layout_session(workspace, user_repo)
    other = user_repo.parent / "look"
    git(user_repo, "worktree", "add", "-q", str(other), repo.branch)
    result = discard_session(user_repo, workspace / repo.session_id, repo.session_id)
    assert result.branches == () and "not deleted" in result.problems[0] and str(other) in result.problems[0]
    git(user_repo, "worktree", "remove", str(other))


def test_a_folder_that_is_no_repository_has_no_branch_of_a_repository(tmp_path: Path, workspace: Path) -> None:
    """open_session_repo says why (the launcher then imports the folder: test_folder_sessions)."""
    plain = tmp_path / "plain"
    plain.mkdir()
    opened = open_session_repo(plain, private_dir(workspace / "s1"), "s1")
    assert opened.repo is None and "not a git repository" in opened.message
    git(plain, "init", "-q")
    opened = open_session_repo(plain, private_dir(workspace / "s2"), "s2")
    assert opened.repo is None and "without a commit" in opened.message
    assert not (workspace / "s1" / "git").exists() and not (workspace / "s2" / "git").exists()


def test_a_target_below_the_top_works_in_that_folder_of_the_checkout(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo / "lib")
    checkout = repo.checkout("implement")
    assert checkout.workdir == checkout.path / "lib" and (checkout.workdir / "util.py").exists()
    writable, readable = checkout.sandbox_paths()
    assert writable == (str(checkout.path),)
    store_objects = workspace / repo.session_id / "git" / "session.git" / "objects"
    assert readable == (str(checkout.git_dir), str(store_objects), str(user_repo / ".git" / "objects"))


def test_readonly_checkout_is_exactly_the_commit(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "new.txt").write_text("new\n")
    head = repo.commit_assignment("implement", "claude", "new")
    assert head is not None
    view = repo.readonly_checkout("review", head)  # not merged yet: read from the assignment's objects
    assert (view.path / "new.txt").read_text() == "new\n" and view.base == head and not view.writable
    (view.path / "stray.txt").write_text("written where nothing should be\n")
    again = repo.readonly_checkout("review", repo.base)
    assert again.path == view.path and again.base == repo.base
    assert not (view.path / "new.txt").exists() and not (view.path / "stray.txt").exists()


def test_remove_checkout_keeps_unmerged_work_unless_forced(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "wip.txt").write_text("wip\n")
    with pytest.raises(WorkspaceError, match="uncommitted"):
        repo.remove_checkout("implement")
    repo.commit_assignment("implement", "claude", "wip")
    with pytest.raises(WorkspaceError, match="not merged"):
        repo.remove_checkout("implement")
    assert repo.cleanup() == ["implement"]  # unmerged: kept
    repo.merge_assignment("implement")
    repo.readonly_checkout("review", repo.tip())
    assert repo.cleanup() == []
    assert not (workspace / repo.session_id / "checkouts" / "implement").exists()
    assert repo.assignment_diff("implement").count("+wip") == 1  # from the user's repository now
    assert git(repo.store, "rev-parse", repo.branch).strip() == repo.tip()


def test_the_tool_commits_without_the_user_config_and_runs_none_of_their_hooks(
    user_repo: Path, workspace: Path, _no_global_git_config: Path, tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    ran = tmp_path / "hook-ran"
    for name in ("pre-commit", "commit-msg", "prepare-commit-msg", "post-commit"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {ran}\nexit 1\n")
        (hooks / name).chmod(0o755)
    _no_global_git_config.write_text(
        f"[core]\n\thooksPath = {hooks}\n[commit]\n\tgpgSign = true\n[user]\n\tuseConfigOnly = true\n"
    )
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "x.txt").write_text("x\n")
    assert repo.commit_assignment("implement", "claude", "x") is not None
    assert repo.merge_assignment("implement").ok
    assert not ran.exists()


def test_nothing_is_run_in_a_checkout_whose_git_config_was_changed(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    marker = work.path.parent / "fsmonitor-ran"
    with (work.git_dir / "config").open("a") as config:
        config.write(f"[core]\n\tfsmonitor = touch {marker}\n")
    (work.path / "x.txt").write_text("x\n")
    with pytest.raises(WorkspaceError, match="was changed"):
        repo.commit_assignment("implement", "claude", "x")
    assert not marker.exists()


def test_nothing_to_commit_gives_none(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    repo.checkout("idle")
    assert repo.commit_assignment("idle", "codex", "nothing") is None
    assert repo.merge_assignment("idle").status == "up_to_date"
    assert repo.assignment_diff("idle") == ""


def test_a_git_call_past_its_timeout_is_ended_with_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(WorkspaceError, match="took longer than"):
        run_command([sys.executable, "-c", script], timeout_s=1.5)
    grandchild = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), message="the grandchild's pid"))
    wait_for(lambda: not _alive(grandchild), timeout=5, message="the grandchild to be gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_resume_after_a_sigkill_reuses_branch_base_and_checkouts(user_repo: Path, workspace: Path) -> None:
    sid = "20260101-120000-kill01"
    session_dir = private_dir(workspace / sid)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from meta_orchestrator.actors.workspaces.workspaces import open_session_repo
        repo = open_session_repo(Path({str(user_repo)!r}), Path({str(session_dir)!r}), {sid!r}).repo
        work = repo.checkout("implement")
        (work.path / "wip.txt").write_text("written before the kill\\n")
        (work.git_dir / "index.lock").write_text("")  # as a kill in the middle of git add leaves it
        print(repo.base, flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=PROJECT_ROOT,
    )
    try:
        base = proc.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and base

    opened = open_session_repo(user_repo, session_dir, sid)
    assert opened.repo is not None and "resumed" in opened.message
    repo = opened.repo
    assert repo.base == base and repo.tip() == base
    work = repo.checkout("implement")
    assert (work.path / "wip.txt").read_text() == "written before the kill\n"
    assert repo.commit_assignment("implement", "claude", "wip") is not None
    assert repo.merge_assignment("implement").status == "fast_forward"


def test_resume_makes_a_deleted_session_branch_again_at_its_last_tip(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "x.txt").write_text("x\n")
    repo.commit_assignment("implement", "claude", "x")
    tip = repo.merge_assignment("implement").commit
    git(repo.store, "branch", "-D", repo.branch)
    again = new_session(workspace, user_repo, sid=repo.session_id)
    assert again.tip() == tip


def _write_session(workspace: Path, sid: str, target: Path, status: str = "completed") -> None:
    state = {
        "session_id": sid,
        "status": status,
        "task": "Add a health check",
        "target": str(target),
        "created_at": "2026-01-01T12:00:00.000Z",
        "assignments": [],
    }
    (workspace / sid / "state.json").write_text(json.dumps(state))


def _orchestrate(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = popen_orchestrate([*args, "--workspace", str(workspace)], dict(os.environ))
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.session
def test_the_apply_discard_and_sessions_commands_end_to_end(user_repo: Path, workspace: Path) -> None:
    applied = new_session(workspace, user_repo, sid="20260101-120000-aaaaaa")
    work = applied.checkout("implement")
    (work.path / "health.py").write_text("ok = True\n")
    applied.commit_assignment("implement", "claude", "health")
    applied.merge_assignment("implement")
    _write_session(workspace, applied.session_id, user_repo)
    other = new_session(workspace, user_repo, sid="20260101-130000-bbbbbb")
    other.checkout("docs")
    _write_session(workspace, other.session_id, user_repo)

    listed = _orchestrate(workspace, "sessions")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    store_note = "(in its store until apply), 1 checkout left"
    assert lines[applied.session_id].endswith(f"orchestrate/{applied.session_id} {store_note}")
    assert lines[other.session_id].endswith(f"orchestrate/{other.session_id} {store_note}")

    done = _orchestrate(workspace, "apply", applied.session_id)
    assert done.returncode == 0, done.stderr
    assert f"applied orchestrate/{applied.session_id} to main (fast-forward" in done.stdout
    assert (user_repo / "health.py").read_text() == "ok = True\n"
    assert (user_repo / "README.md").read_text() == "# project\n\nthe user's own note\n"
    again = _orchestrate(workspace, "apply", applied.session_id)
    assert again.returncode == 0 and "already in main" in again.stdout

    gone = _orchestrate(workspace, "discard", other.session_id)
    assert gone.returncode == 0, gone.stderr
    assert f"deleted branch orchestrate/{other.session_id}" in gone.stdout and "removed checkout docs" in gone.stdout
    # The applied session's commits are in main; no session branch was ever made in the repository.
    assert git(user_repo, "for-each-ref", "refs/heads/orchestrate/") == ""
    assert "(discarded)" in _orchestrate(workspace, "sessions").stdout

    refused = _orchestrate(workspace, "apply", other.session_id)
    assert refused.returncode == 1 and "no branch" in refused.stderr
    missing = _orchestrate(workspace, "apply", "20260101-000000-nosuch")
    assert missing.returncode == 2 and "no session" in missing.stderr


@pytest.mark.session
def test_apply_refuses_a_running_session(user_repo: Path, workspace: Path) -> None:
    repo = new_session(workspace, user_repo)
    _write_session(workspace, repo.session_id, user_repo, status="running")
    state = json.loads((workspace / repo.session_id / "state.json").read_text())
    state["orchestrator_pid"] = os.getpid()  # alive, and not the launcher's own
    (workspace / repo.session_id / "state.json").write_text(json.dumps(state))
    refused = _orchestrate(workspace, "discard", repo.session_id)
    assert refused.returncode == 2 and "is running" in refused.stderr
    assert git(repo.store, "rev-parse", "--verify", repo.branch)


# -- repository shapes and settings apply must survive (issue 22) ----------------------------


def _worked_session(workspace: Path, repo: Path, sid: str = "20260101-120000-abc123", *names: str) -> SessionRepo:
    """A session whose assignments ``names`` (made side by side, then merged) each wrote a file."""
    made = new_session(workspace, repo, sid)
    for name in names or ("one",):
        made.checkout(name)
    for name in names or ("one",):
        (workspace / sid / "checkouts" / name / f"{name}.txt").write_text(name + "\n")
        made.commit_assignment(name, "claude", f"add {name}")
        assert made.merge_assignment(name).status in ("fast_forward", "merged")
    return made


@pytest.mark.session
def test_apply_twice_or_after_a_squash_does_nothing_and_says_so(user_repo: Path, workspace: Path) -> None:
    made = _worked_session(workspace, user_repo, "20260101-120000-abc123", "one", "two")
    _write_session(workspace, made.session_id, user_repo)
    first = apply_session(user_repo, made.session_id, squash=True, store=made.store)
    assert first.status == "squashed"
    head = git(user_repo, "rev-parse", "HEAD")
    again = apply_session(user_repo, made.session_id, squash=True, store=made.store)
    assert again.status == "up_to_date" and git(user_repo, "rev-parse", "HEAD") == head
    plain = _orchestrate(workspace, "apply", made.session_id)
    assert plain.returncode == 0 and "already in main; nothing to do" in plain.stdout, plain.stderr
    assert git(user_repo, "rev-parse", "HEAD") == head  # no empty merge commit either


def test_protocol_allow_never_in_the_user_config_still_merges_and_applies(
    user_repo: Path, workspace: Path, _no_global_git_config: Path
) -> None:
    _no_global_git_config.write_text("[protocol]\n\tallow = never\n")
    made = _worked_session(workspace, user_repo, "20260101-120000-abc123", "one", "two")  # a fetch, then a merge
    assert [m.fast_forward for m in made.record.merges] == [True, False]
    (user_repo / "mine.txt").write_text("committed meanwhile\n")
    git(user_repo, "add", "mine.txt")
    _commit(user_repo, "mine")
    result = apply_session(user_repo, made.session_id, store=made.store)  # a fetch from the store
    assert result.status == "merged"
    assert (user_repo / "one.txt").exists() and (user_repo / "two.txt").exists()
    assert git(user_repo, "config", "protocol.allow") == "never\n"  # allowed for those calls only


def _signing_config(config: Path, key: Path) -> None:
    config.write_text(f"[commit]\n\tgpgsign = true\n[gpg]\n\tformat = ssh\n[user]\n\tsigningkey = {key}\n")


def test_apply_signs_as_commit_gpgsign_asks_or_stops_unless_no_sign(
    user_repo: Path, workspace: Path, _no_global_git_config: Path, tmp_path: Path
) -> None:
    key = tmp_path / "signing"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    _signing_config(_no_global_git_config, tmp_path / "no-such-key")
    made = _worked_session(workspace, user_repo)
    head = git(user_repo, "rev-parse", "HEAD")
    with pytest.raises(ApplyRefused, match=r"commit.gpgSign.*signing failed.*--no-sign"):
        apply_session(user_repo, made.session_id, squash=True, store=made.store)
    assert git(user_repo, "rev-parse", "HEAD") == head
    _signing_config(_no_global_git_config, key)
    assert apply_session(user_repo, made.session_id, squash=True, store=made.store).status == "squashed"
    assert "gpgsig -----BEGIN SSH SIGNATURE-----" in git(user_repo, "cat-file", "commit", "HEAD")
    other = _worked_session(workspace, user_repo, "20260101-130000-def456", "two")
    _signing_config(_no_global_git_config, tmp_path / "no-such-key")
    unsigned = apply_session(user_repo, other.session_id, squash=True, store=other.store, sign=False)
    assert unsigned.status == "squashed" and "gpgsig" not in git(user_repo, "cat-file", "commit", "HEAD")


@pytest.mark.session
def test_apply_onto_another_branch_than_the_session_started_from_needs_onto(user_repo: Path, workspace: Path) -> None:
    made = _worked_session(workspace, user_repo)
    _write_session(workspace, made.session_id, user_repo)
    git(user_repo, "checkout", "-q", "-b", "feature")
    main = git(user_repo, "rev-parse", "main")
    refused = _orchestrate(workspace, "apply", made.session_id)
    assert refused.returncode == 1
    assert "started from branch main, but the current branch" in refused.stderr and "--onto feature" in refused.stderr
    wrong = _orchestrate(workspace, "apply", made.session_id, "--onto", "main")
    assert wrong.returncode == 1 and "current branch in" in wrong.stderr and "is feature" in wrong.stderr
    assert git(user_repo, "rev-parse", "HEAD") == main  # nothing moved
    done = _orchestrate(workspace, "apply", made.session_id, "--onto", "feature")
    assert done.returncode == 0 and "to feature (fast-forward" in done.stdout, done.stderr
    assert git(user_repo, "rev-parse", "main") == main and (user_repo / "one.txt").exists()


@pytest.mark.session
def test_apply_after_its_worktree_was_removed_names_the_main_worktree(user_repo: Path, workspace: Path) -> None:
    linked = user_repo.parent / "linked"
    git(user_repo, "worktree", "add", "-q", "-b", "side", str(linked))
    made = _worked_session(workspace, linked)
    _write_session(workspace, made.session_id, linked)
    git(user_repo, "worktree", "remove", str(linked))
    refused = _orchestrate(workspace, "apply", made.session_id)
    main = user_repo.resolve()
    assert refused.returncode == 1 and "the worktree the session started in, is gone" in refused.stderr
    assert f"its main worktree is {main}" in refused.stderr and f"--target {main}" in refused.stderr
    elsewhere = _orchestrate(workspace, "apply", made.session_id, "--target", str(workspace))
    assert elsewhere.returncode == 1 and "is no folder of a git repository" in elsewhere.stderr
    other = user_repo.parent / "other"
    git(other.parent, "init", "-q", str(other))
    another = _orchestrate(workspace, "apply", made.session_id, "--target", str(other))
    assert another.returncode == 1 and "is not a worktree of" in another.stderr
    done = _orchestrate(workspace, "apply", made.session_id, "--target", str(main), "--onto", "main")
    assert done.returncode == 0 and "to main (fast-forward" in done.stdout, done.stderr
    assert (user_repo / "one.txt").read_text() == "one\n"


def test_uncommitted_files_with_non_utf8_names_go_into_the_base_and_the_record(
    user_repo: Path, workspace: Path
) -> None:
    name = b"caf\xe9.txt"
    (user_repo / os.fsdecode(name)).write_bytes(b"latin-1 named\n")
    made = new_session(workspace, user_repo, include_uncommitted=True)
    assert name.decode("utf-8", "surrogateescape") in made.record.uncommitted
    again = new_session(workspace, user_repo, sid=made.session_id)  # workspace.json reads back
    assert again.record.uncommitted == made.record.uncommitted
    listed = subprocess.run(
        ["git", "--git-dir", str(made.store), "ls-tree", "-z", "--name-only", made.base],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.split(b"\0")
    assert name in listed


def test_a_workspace_that_fails_to_start_leaves_no_half_made_folder(user_repo: Path, workspace: Path) -> None:
    sid = "20260101-120000-abc123"
    session_dir = private_dir(workspace / sid)
    (session_dir / "git" / "session.git").mkdir(parents=True)
    (session_dir / "git" / "session.git" / "HEAD").write_text("garbage\n")  # a store git cannot use
    with pytest.raises(WorkspaceError):
        open_session_repo(user_repo, session_dir, sid)
    assert sorted(p.name for p in session_dir.iterdir()) == []


@pytest.mark.session
def test_a_demo_session_starts_and_ends_with_a_non_utf8_file_name_and_no_traceback(
    user_repo: Path, workspace: Path, demo_env: dict[str, str]
) -> None:
    name = b"caf\xe9.txt"
    (user_repo / os.fsdecode(name)).write_bytes(b"latin-1 named\n")
    args = ["Add a /health endpoint", "--demo", "--target", str(user_repo), "--no-dashboard", "--include-uncommitted"]
    proc = popen_orchestrate([*args, "--workspace", str(workspace)], demo_env)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "Traceback" not in err + out, err[-3000:]
    (folder,) = [p for p in workspace.iterdir() if p.is_dir()]
    record = json.loads((folder / "workspace.json").read_text())
    assert record["uncommitted"] and os.fsdecode(name) in record["uncommitted"]
    tip = f"refs/heads/orchestrate/{folder.name}"
    listed = subprocess.run(
        ["git", "--git-dir", str(folder / "git" / "session.git"), "ls-tree", "-z", "--name-only", tip],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.split(b"\0")
    assert name in listed and b"docs" in listed
