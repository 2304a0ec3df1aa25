"""A remote run's folder travels to its node and back by git (real git, no cluster needed):
the driver's side (``remote_workdir``) and the node's (``remote_checkout.NodeCheckout``) meet
through the bundles a Ray host would carry."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster import remote_workdir
from meta_orchestrator.actors.cluster.node_bases import NodeBases
from meta_orchestrator.actors.cluster.remote_checkout import NodeCheckout, RemoteWork, WorkBack
from meta_orchestrator.actors.sandbox.bwrap import Confinement
from meta_orchestrator.messages.cluster import RemoteRunEnd
from tests.conftest import git_folder_bytes


def git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x"}
    done = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **env}, check=True
    )
    return done.stdout.strip()


@dataclass
class NodeRun:
    """What a remote host does with a run's work, here, in a folder standing for its node."""

    launch: Launch
    work: RemoteWork
    checkout: NodeCheckout
    end: RemoteRunEnd | None = None
    work_back: WorkBack | None = None
    hostname: str = "node-1"
    node_ip: str = "127.0.0.1"
    spawn_error: Any = None


@dataclass
class Cluster:
    """Stands in for a cluster host: checks the bundle out "on the node" as RunHost does."""

    node_dir: Path
    remote = True
    runs: list[NodeRun] = field(default_factory=list)
    bundles: list[bytes] = field(default_factory=list)  # as sent, one per run

    def spawn(self, launch: Launch, confinement: Any, on_change: Any = None, work: Any = None, bundle: Any = None):
        scratch = self.node_dir / f"run-{len(self.runs)}"
        scratch.mkdir(parents=True)
        bases = NodeBases(self.node_dir / "bases.git")  # as RunHost keeps the starts it got
        checkout = NodeCheckout(work, scratch, bases)
        self.bundles.append(bundle(bases.known()) if callable(bundle) else bundle)
        checkout.make(self.bundles[-1])
        rewritten, self.confinement = checkout.rewrite(launch, confinement)
        run = NodeRun(rewritten, work, checkout)
        self.runs.append(run)
        return run


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "driver" / "app"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text("*.log\n")
    (path / "kept.txt").write_text("kept\n")
    (path / "edited.txt").write_text("one\n")
    (path / "gone.txt").write_text("doomed\n")
    (path / "sub").mkdir()
    (path / "sub" / "deep.txt").write_text("deep\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "base")
    # The folder's own state, uncommitted: all of it must travel, and none of it may move.
    (path / "edited.txt").write_text("one, changed here\n")
    (path / "staged.txt").write_text("staged\n")
    git(path, "add", "staged.txt")
    (path / "untracked.txt").write_text("new here\n")
    (path / "build.log").write_text("ignored\n")
    return path


def _state(repo: Path) -> dict[str, str]:
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "HEAD"),
        "cached": git(repo, "diff", "--cached"),
        "refs": git(repo, "for-each-ref"),
        "stash": git(repo, "stash", "list"),
    }


def _launch(folder: Path, scratch: Path) -> Launch:
    argv = (sys.executable, "-C", str(folder), "--add-dir", str(scratch), f"--target={folder}/sub")
    prompt = f"Work in {folder}/sub, not in {folder}2.".encode()  # the prompt, on stdin
    return Launch(argv=argv, env={"RUN_DIR": str(folder), "OTHER": f"{folder}2"}, cwd=folder / "sub", stdin=prompt)


def test_a_writing_run_works_on_its_node_and_its_changes_come_back_into_the_folder(repo, tmp_path):
    before = _state(repo)
    cluster = Cluster(tmp_path / "node")
    scratch = tmp_path / "driver" / "scratch"  # absent on the node's side: an empty stand-in
    confinement = Confinement(bwrap="bwrap", writable=(str(repo), str(scratch)), chdir=str(repo / "sub"))
    proc, sent = remote_workdir.spawn(
        cluster,
        _launch(repo, scratch),
        confinement,
        folder=repo / "sub",
        writing=True,
        subject="implement (claude): the run's changes",
        stand_ins=(str(scratch),),
    )
    tree = proc.checkout.tree
    # The node's checkout holds the folder as it is, uncommitted work and untracked files too.
    assert (tree / "edited.txt").read_text() == "one, changed here\n"
    assert (tree / "staged.txt").read_text() == "staged\n" and (tree / "untracked.txt").exists()
    assert not (tree / "build.log").exists()  # ignored files stay where they are
    assert not (tree / ".git").is_dir() and proc.checkout.git_dir.is_dir()  # its git folder is outside
    # Every driver path in the launch and the sandbox is the node's now; a longer name is not.
    stand_in = str(proc.checkout.git_dir.parent / "folder-0")
    assert proc.launch.argv[2:] == (str(tree), "--add-dir", stand_in, f"--target={tree}/sub")
    assert proc.launch.cwd == tree / "sub" and proc.launch.env == {"RUN_DIR": str(tree), "OTHER": f"{repo}2"}
    assert proc.launch.stdin == f"Work in {tree}/sub, not in {repo}2.".encode()
    assert cluster.confinement.writable == (str(tree), stand_in) and cluster.confinement.chdir == str(tree / "sub")
    assert str(proc.checkout.git_dir) in cluster.confinement.readable
    # Sending moved nothing; the start is kept by a ref of the tool's own for the run's length.
    during = _state(repo)
    kept = [r for r in during.pop("refs").splitlines() if "refs/orchestrate/remote/" in r]
    assert during == {k: v for k, v in before.items() if k != "refs"} and len(kept) == 1
    # The CLI works on the node.
    (tree / "edited.txt").write_text("two, changed on the node\n")
    (tree / "gone.txt").unlink()
    (tree / "sub" / "made.py").write_text("print('hi')\n")
    (tree / "node.log").write_text("ignored on the node too\n")
    proc.work_back = proc.checkout.collect()
    proc.end = RemoteRunEnd(kind="exited", returncode=0)
    assert proc.work_back.bundle is not None and proc.work_back.error is None
    end = remote_workdir.finish(proc, sent)
    assert end.error is None and end.changes and "3 changed file(s) brought back from node-1" in end.changes
    assert (repo / "edited.txt").read_text() == "two, changed on the node\n"
    assert not (repo / "gone.txt").exists() and (repo / "sub" / "made.py").read_text() == "print('hi')\n"
    assert (repo / "untracked.txt").exists() and (repo / "build.log").read_text() == "ignored\n"
    assert not (repo / "node.log").exists()
    assert _state(repo) == before  # HEAD, branch, index, refs and stash as they were: files only
    status = git(repo, "status", "--porcelain")
    assert {"M edited.txt", "D gone.txt", "?? sub/made.py"} <= {line.strip() for line in status.splitlines()}
    commit = git(tree, "--git-dir", str(proc.checkout.git_dir), "log", "-1", "--format=%an <%ae>|%s")
    assert commit == "orchestrate <orchestrate@localhost>|implement (claude): the run's changes"


def test_a_read_only_run_brings_nothing_back_and_a_lost_node_leaves_the_folder_at_its_start(repo, tmp_path):
    before = _state(repo)
    files = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    cluster = Cluster(tmp_path / "node")
    for writing, end in ((False, RemoteRunEnd(kind="exited", returncode=0)), (True, RemoteRunEnd(kind="node_lost"))):
        proc, sent = remote_workdir.spawn(
            cluster, _launch(repo, tmp_path), None, folder=repo, writing=writing, subject="review"
        )
        (proc.checkout.tree / "edited.txt").write_text("written on the node\n")
        proc.end = end
        result = remote_workdir.finish(proc, sent)
        assert result.changes is None
        assert (result.kind, result.error is not None) == (("node_lost", True) if writing else (None, False))
    assert "node lost: the cluster node node-1 (127.0.0.1) running this CLI was lost" in (result.error or "")
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts} == files
    assert _state(repo) == before


def test_a_folder_outside_git_cannot_be_sent(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(remote_workdir.RemoteWorkError, match="not in a git work tree"):
        remote_workdir.spawn(
            Cluster(tmp_path / "node"), _launch(folder, tmp_path), None, folder=folder, writing=True, subject="x"
        )


def test_a_local_host_just_spawns(tmp_path):
    class Local:
        def spawn(self, launch: Launch, confinement: Any) -> str:
            return "spawned"

    assert remote_workdir.spawn(
        Local(), _launch(tmp_path, tmp_path), None, folder=tmp_path, writing=True, subject="x"
    ) == (
        "spawned",
        None,
    )
    assert remote_workdir.finish(object(), None) == remote_workdir.RunEnd()


def test_a_remote_run_in_an_assignment_checkout_is_committed_and_merged_as_a_local_one(repo, tmp_path):
    from meta_orchestrator.actors.files.session_files import private_dir
    from meta_orchestrator.actors.workspaces.workspaces import open_session_repo

    user, user_git = _state(repo), git_folder_bytes(repo)
    session = open_session_repo(repo, private_dir(private_dir(tmp_path / "ws") / "s1"), "s1").repo
    assert session is not None
    checkout = session.checkout("implement")
    cluster = Cluster(tmp_path / "node")
    proc, sent = remote_workdir.spawn(
        cluster,
        _launch(checkout.workdir, tmp_path),
        None,
        folder=checkout.workdir,
        writing=True,
        subject="implement (claude)",
    )
    assert proc.checkout.tree.name == "implement" and (proc.checkout.tree / "kept.txt").exists()
    (proc.checkout.tree / "feature.py").write_text("def feature():\n    return 1\n")
    proc.work_back, proc.end = proc.checkout.collect(), RemoteRunEnd(kind="exited", returncode=0)
    assert remote_workdir.finish(proc, sent).changes
    # From here on it is the Workspace's usual work: commit the checkout, merge into the branch.
    head = session.commit_assignment("implement", "claude", "a feature")
    assert head is not None and session.merge_assignment("implement").ok
    shown = git(session.store, "show", f"{session.branch}:feature.py")  # in the session's store
    assert shown == "def feature():\n    return 1"
    assert _state(repo) == user  # the user's tree, index, HEAD and refs as they were: no branch made there
    assert git_folder_bytes(repo) == user_git  # nor any object: the run's went to the checkout and the store
    assert not (repo / "feature.py").exists()
