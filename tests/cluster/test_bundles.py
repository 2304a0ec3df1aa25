"""Git bundles carry an assignment's start to a node and its commits back, with real git."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from meta_orchestrator.actors.cluster.bundles import (
    BundleError,
    apply_bundle,
    bundle_of_commits,
    checkout_from_bundle,
    checkout_from_repo,
    make_bundle,
)
from meta_orchestrator.actors.cluster.node_bases import NodeBases

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
IDENTITY |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, env={**os.environ, **IDENTITY}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"{name}: {text}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "user"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    commit(path, "a.txt", "one")
    commit(path, "b.txt", "two")
    git(path, "branch", "orchestrate/s1")  # the session branch, at the start
    return path


def test_a_node_checks_out_the_start_and_its_commits_come_back_into_a_ref(repo, tmp_path):
    start = git(repo, "rev-parse", "orchestrate/s1")
    node = tmp_path / "node" / "checkout"
    assert checkout_from_bundle(make_bundle(repo, "orchestrate/s1"), node, "orchestrate/s1") == start
    assert (node / "b.txt").read_text() == "two" and git(node, "status", "--porcelain") == ""
    assert git(node, "remote") == ""  # nothing points at the temporary bundle file
    git(node, "checkout", "-q", "-b", "work/a1")
    commit(node, "c.txt", "three")
    tip = commit(node, "a.txt", "one, edited")
    back = bundle_of_commits(node, "work/a1", since=start)
    assert back is not None
    user_head = git(repo, "rev-parse", "HEAD")
    assert apply_bundle(repo, back, "work/a1") == tip
    assert git(repo, "log", "--format=%s", "orchestrate/s1..work/a1").splitlines() == [
        "a.txt: one, edited",
        "c.txt: three",
    ]
    assert git(repo, "rev-parse", "HEAD") == user_head and git(repo, "status", "--porcelain") == ""
    assert (repo / "a.txt").read_text() == "one"  # the user's tree is not touched


def test_a_bundle_of_the_commits_alone_needs_the_start_and_carries_only_what_is_new(repo, tmp_path):
    start = git(repo, "rev-parse", "HEAD")
    (repo / "big.bin").write_bytes(os.urandom(200_000))
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "big")
    git(repo, "checkout", "-q", "-b", "work")
    commit(repo, "small.txt", "x")
    since_big = git(repo, "rev-parse", "main")
    small = bundle_of_commits(repo, "work", since=since_big)
    assert small is not None and len(small) < 10_000 < len(make_bundle(repo, "work"))
    stranger = tmp_path / "stranger"
    checkout_from_bundle(make_bundle(repo, "main", base=None), stranger, "main")
    git(stranger, "update-ref", "refs/heads/main", start)  # it has the start, not "big"
    git(stranger, "reflog", "expire", "--expire=now", "--all")
    git(stranger, "gc", "-q", "--prune=now")
    with pytest.raises(BundleError, match="(?i)lacks|prerequisite|missing"):
        apply_bundle(stranger, small, "work")


def test_no_commits_no_bundle(repo):
    assert bundle_of_commits(repo, "main", since=git(repo, "rev-parse", "main")) is None


def test_a_ref_is_only_moved_forward(repo, tmp_path):
    node = tmp_path / "node"
    checkout_from_bundle(make_bundle(repo, "main"), node, "main")
    git(node, "reset", "-q", "--hard", "HEAD~1")
    commit(node, "other.txt", "diverged")
    diverged = make_bundle(node, "main", base=git(node, "rev-parse", "HEAD~1"))
    git(repo, "checkout", "-q", "--detach")  # main not checked out: only the history refuses
    with pytest.raises(BundleError, match="(?i)rejected|non-fast-forward"):
        apply_bundle(repo, diverged, "main")


def test_a_checked_out_branch_of_the_user_is_never_fetched_into(repo, tmp_path):
    node = tmp_path / "node"
    checkout_from_bundle(make_bundle(repo, "main"), node, "main")
    ahead = commit(node, "c.txt", "three")
    bundle = make_bundle(node, "main", base=git(node, "rev-parse", "HEAD~1"))
    with pytest.raises(BundleError, match="(?i)checked out|refusing"):
        apply_bundle(repo, bundle, "main")  # main is the user's current branch
    assert git(repo, "rev-parse", "main") != ahead


def test_errors_name_what_is_wrong(repo, tmp_path):
    with pytest.raises(BundleError, match="no-such-branch|unknown revision|bad revision"):
        make_bundle(repo, "no-such-branch")
    bundle = make_bundle(repo, "main")
    with pytest.raises(BundleError, match="no branch 'feature'"):
        checkout_from_bundle(bundle, tmp_path / "x", "feature")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        checkout_from_bundle(bundle, tmp_path / "full", "main")


def test_a_node_that_kept_a_start_gets_a_thin_bundle_and_the_same_checkout(repo, tmp_path):
    """The second start's bundle leaves out what the first one holds; the node's checkout of it
    is the same as one from a whole bundle."""
    bases = NodeBases(tmp_path / "node" / "bases.git")
    (repo / "big.bin").write_bytes(os.urandom(200_000))
    git(repo, "add", "big.bin")
    git(repo, "commit", "-q", "-m", "history")
    first = git(repo, "rev-parse", "HEAD")
    assert bases.known() == ()
    whole = make_bundle(repo, "main", has=bases.known())
    kept = bases.receive(whole, first)
    assert bases.known() == (first,) and kept == f"refs/bases/{first}"
    second = commit(repo, "c.txt", "three")
    thin = make_bundle(repo, "main", has=(*bases.known(), "f" * 40))  # a commit the driver lacks is ignored
    assert len(thin) * 20 < len(make_bundle(repo, "main"))
    ref = bases.receive(thin, second)
    from_thin = checkout_from_repo(bases.repo, ref, tmp_path / "a" / "tree", tmp_path / "a" / "git", "work")
    from_whole = checkout_from_bundle(make_bundle(repo, "main"), tmp_path / "b" / "tree", "main")
    assert from_thin == from_whole == second
    tree = git(tmp_path / "a" / "tree", "ls-tree", "-r", "HEAD")
    assert tree == git(tmp_path / "b" / "tree", "ls-tree", "-r", "HEAD") and "big.bin" in tree
    assert bases.receive(b"", second) == ref  # the same start again: nothing to send
    assert set(bases.known()) == {first, second}


def test_a_thin_bundle_a_node_cannot_apply_says_what_it_lacks(repo, tmp_path):
    start = git(repo, "rev-parse", "HEAD")
    newer = commit(repo, "c.txt", "three")
    stranger = NodeBases(tmp_path / "stranger" / "bases.git")
    with pytest.raises(BundleError, match="prerequisite|lacks"):
        stranger.receive(make_bundle(repo, "main", has=(start,)), newer)
    with pytest.raises(BundleError, match="does not keep the start"):
        stranger.receive(b"", newer)
    with pytest.raises(BundleError, match="not the run's start"):
        stranger.receive(make_bundle(repo, "main"), start)  # its head is another commit
