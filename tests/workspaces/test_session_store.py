"""A session's git objects and branch live in a store of its own, with real git: the user's
``.git`` gains nothing until ``orchestrate apply``, which brings exactly the session's
commits; ``orchestrate discard`` leaves ``.git`` byte-identical to before the session; a
session of the older layout (its branch in the user's repository) still applies and discards."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from meta_orchestrator.actors.workspaces.workspaces import ApplyRefused, SessionRepo, apply_session, discard_session
from tests.conftest import git_folder_bytes, session_store
from tests.workspaces.test_workspaces import (  # noqa: F401 - fixtures
    _no_global_git_config,
    git,
    new_session,
    old_layout_session,
    user_repo,
    user_state,
    workspace,
)

BIG = 20 * 1024 * 1024


def _objects(repo: Path) -> tuple[int, int]:
    """``git count-objects``: (objects, KiB), loose and packed together."""
    counted = dict(line.split(": ") for line in git(repo, "count-objects", "-v").splitlines())
    return int(counted["count"]) + int(counted["in-pack"]), int(counted["size"]) + int(counted["size-pack"])


def _has_object(repo: Path, oid: str) -> bool:
    """The object is in ``repo``'s own object folder (alternates left out)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    loose = repo / "objects" / oid[:2] / oid[2:]
    if loose.is_file():
        return True
    packs = sorted((repo / "objects" / "pack").glob("*.idx"))
    for idx in packs:
        listed = subprocess.run(["git", "show-index"], stdin=idx.open("rb"), capture_output=True, env=env, check=True)
        if oid.encode() in listed.stdout:
            return True
    return False


def _agent_writes_a_big_blob(repo: SessionRepo) -> str:
    """An assignment that writes 20 MB of incompressible bytes, merged: the blob's id."""
    work = repo.checkout("implement")
    (work.path / "model.bin").write_bytes(os.urandom(BIG))
    (work.path / "health.py").write_text("ok = True\n")
    repo.commit_assignment("implement", "claude", "a big file")
    assert repo.merge_assignment("implement").status == "fast_forward"
    return git(repo.store, "rev-parse", f"{repo.branch}:model.bin").strip()


def test_the_store_is_private_reads_the_user_objects_and_copies_none(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    before = _objects(user_repo / ".git")
    repo = new_session(workspace, user_repo)
    store = session_store(workspace / repo.session_id)
    assert repo.store == store and repo.record.store == str(store)
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert (store / "objects" / "info" / "alternates").read_text() == f"{user_repo / '.git' / 'objects'}\n"
    assert (store / "HEAD").read_text() == f"ref: refs/heads/{repo.branch}\n"  # git --git-dir <store> log shows it
    assert _objects(store) == (0, 0)  # nothing of the user's copied
    assert git(store, "log", "--format=%H", "-1").strip() == repo.base
    assert git(user_repo, "for-each-ref", "refs/heads/orchestrate/") == ""
    assert _objects(user_repo / ".git") == before


def test_an_agent_big_blob_is_in_the_store_and_not_in_the_user_objects(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    before = user_state(user_repo)
    objects_before = _objects(user_repo / ".git")
    repo = new_session(workspace, user_repo)
    blob = _agent_writes_a_big_blob(repo)
    assert _has_object(repo.store, blob)
    assert not _has_object(user_repo / ".git", blob)
    assert _objects(user_repo / ".git") == objects_before
    assert _objects(repo.store)[1] >= BIG // 1024  # the 20 MB are the store's
    assert user_state(user_repo) == before  # refs, packed-refs, objects, index, HEAD, config, stash

    # A new checkout from the session tip reads the store: the big file is there.
    view = repo.readonly_checkout("review", repo.tip())
    assert (view.path / "model.bin").stat().st_size == BIG

    result = discard_session(user_repo, workspace / repo.session_id, repo.session_id)
    assert result.branches == (repo.branch,) and not result.problems
    assert not repo.store.exists()
    assert git_folder_bytes(user_repo) == before["git folder"]
    assert user_state(user_repo) == before


def test_apply_brings_exactly_the_session_commits(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    repo = new_session(workspace, user_repo)
    docs = repo.checkout("docs")  # from the base: its merge is a merge commit
    blob = _agent_writes_a_big_blob(repo)
    (docs.path / "docs.md").write_text("# docs\n")
    repo.commit_assignment("docs", "gemini", "docs")
    assert repo.merge_assignment("docs").status == "merged"
    session_commits = git(repo.store, "rev-list", f"{repo.base}..{repo.branch}").split()
    assert len(session_commits) == 3  # implement, docs, and the merge

    result = apply_session(user_repo, repo.session_id, store=repo.store)
    assert result.status == "fast_forward" and result.commit == repo.tip()
    assert git(user_repo, "rev-list", f"{repo.base}..HEAD").split() == session_commits
    assert _has_object(user_repo / ".git", blob)  # now, and only now, the user's
    assert (user_repo / "model.bin").stat().st_size == BIG
    assert git(user_repo, "for-each-ref", "refs/heads/orchestrate/") == ""  # no ref left behind
    assert not (user_repo / ".git" / "FETCH_HEAD").exists()
    assert apply_session(user_repo, repo.session_id, store=repo.store).status == "up_to_date"


def test_a_refused_apply_gains_the_user_repository_nothing(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "app.py").write_text("the agents' app\n")
    (work.path / "big.bin").write_bytes(os.urandom(1024 * 1024))
    repo.commit_assignment("implement", "claude", "work")
    repo.merge_assignment("implement")
    (user_repo / "app.py").write_text("the user's app\n")
    git(user_repo, "add", "app.py")
    git(user_repo, "-c", "user.name=U", "-c", "user.email=u@example.com", "commit", "-q", "-m", "mine")
    before = git_folder_bytes(user_repo)
    with pytest.raises(ApplyRefused, match=r"would conflict.*git fetch .*session\.git .* && git merge FETCH_HEAD"):
        apply_session(user_repo, repo.session_id, store=repo.store)
    assert git_folder_bytes(user_repo) == before


def test_a_session_of_the_older_layout_still_applies_and_discards(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    repo = old_layout_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "health.py").write_text("ok = True\n")
    repo.commit_assignment("implement", "claude", "health")
    merged = repo.merge_assignment("implement")
    assert merged.status == "fast_forward"
    # Its branch moves in the user's repository, as it always did; no store is made.
    assert git(user_repo, "rev-parse", repo.branch).strip() == merged.commit
    assert not session_store(workspace / repo.session_id).exists()
    resumed = new_session(workspace, user_repo, sid=repo.session_id)
    assert resumed.store is None and resumed.tip() == merged.commit

    result = apply_session(user_repo, repo.session_id)
    assert result.status == "fast_forward" and (user_repo / "health.py").read_text() == "ok = True\n"
    gone = discard_session(user_repo, workspace / repo.session_id, repo.session_id)
    assert gone.branches == (repo.branch,) and not gone.problems
    assert git(user_repo, "for-each-ref", "refs/heads/orchestrate/") == ""


def test_resume_finds_its_store_and_makes_a_lost_one_again(user_repo: Path, workspace: Path) -> None:  # noqa: F811
    repo = new_session(workspace, user_repo)
    work = repo.checkout("implement")
    (work.path / "x.txt").write_text("x\n")
    repo.commit_assignment("implement", "claude", "x")
    tip = repo.merge_assignment("implement").commit
    again = new_session(workspace, user_repo, sid=repo.session_id)
    assert again.store == repo.store and again.tip() == tip
    # The store's ref lost (deleted by hand): made again at workspace.json's tip.
    git(repo.store, "update-ref", "-d", f"refs/heads/{repo.branch}")
    assert new_session(workspace, user_repo, sid=repo.session_id).tip() == tip
