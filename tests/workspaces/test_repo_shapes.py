"""Repository shapes a user really has, built with real git: a partial clone with a sparse
checkout (its missing blobs come from its promisor remote into the session's store, never the
user's repository; the branch deletes nothing), ignore rules (the user's info/exclude applies
in checkouts; files an ignore rule hides are named, with the rule, and their checkout kept),
planning without its checkout (never in the user's tree), and a SHA-256 repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meta_orchestrator.actors.workspaces.workspace_wiring import end_report, plan_checkout
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import open_session_repo
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.messages.session import StartSession
from tests.conftest import branch_file, branch_files, git_folder_bytes, session_store
from tests.playbook import Playbook
from tests.workspaces.test_workspace_sessions import TASK, _demo, _orchestrate
from tests.workspaces.test_workspaces import _commit, _no_global_git_config, git, new_session, old_layout_session  # noqa: F401

SID = "20260101-120000-shape1"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return private_dir(tmp_path / "workspace")


def _origin(tmp_path: Path) -> Path:
    """A repository serving partial clones (file://): two folders, a file in each."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    git(origin, "config", "uploadpack.allowFilter", "true")
    for folder, text in (("kept", "in the sparse cone\n"), ("elsewhere", "never fetched by the user\n")):
        (origin / folder).mkdir()
        (origin / folder / "file.txt").write_text(text)
    git(origin, "add", "-A")
    _commit(origin, "start")
    return origin


def _partial_sparse_clone(tmp_path: Path, origin: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "clone", "-q", "--filter=blob:none", "--sparse"]
        + [origin.as_uri(), str(clone)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    git(clone, "sparse-checkout", "set", "kept")
    return clone


def _blob_in(repo: Path, path: str) -> bool:
    """Whether ``repo`` holds the blob of HEAD:path (without fetching it: a plain rev-list)."""
    listed = git(
        repo, "-c", "fetch.negotiationAlgorithm=noop", "rev-list", "--objects", "--missing=print", "--no-walk", "HEAD"
    )
    blob = git(repo, "rev-parse", f"HEAD:{path}").strip()
    return f"?{blob}" not in listed.split()


def test_a_partial_sparse_clone_gets_its_missing_files_from_its_promisor_into_the_store(
    tmp_path: Path, workspace: Path
) -> None:
    clone = _partial_sparse_clone(tmp_path, _origin(tmp_path))
    assert not _blob_in(clone, "elsewhere/file.txt")  # the shape: a blob the user never fetched
    before = git_folder_bytes(clone)
    repo = new_session(workspace, clone, SID)
    checkout = repo.checkout("implement")
    assert (checkout.path / "elsewhere" / "file.txt").read_text() == "never fetched by the user\n"
    (checkout.path / "kept" / "new.txt").write_text("the agent's\n")
    repo.commit_assignment("implement", "demo", "write")
    assert repo.merge_assignment("implement").status == "fast_forward"
    store = repo.store
    assert store is not None
    assert branch_files(store, repo.branch) == {"kept/file.txt", "kept/new.txt", "elsewhere/file.txt"}
    assert branch_file(store, repo.branch, "elsewhere/file.txt") == "never fetched by the user\n"
    assert git_folder_bytes(clone) == before  # the objects went into the store, not theirs
    assert not _blob_in(clone, "elsewhere/file.txt")


def test_a_partial_clone_whose_promisor_is_gone_is_refused_with_the_reason(tmp_path: Path, workspace: Path) -> None:
    origin = _origin(tmp_path)
    clone = _partial_sparse_clone(tmp_path, origin)
    origin.rename(tmp_path / "moved")
    with pytest.raises(WorkspaceError, match=r"1 file\(s\) of commit \w+ have no content in your repository") as caught:
        new_session(workspace, clone, SID)
    assert "fetching them from file://" in str(caught.value) and "sparse-checkout disable" in str(caught.value)


def test_a_checkout_that_misses_a_file_is_refused_not_made(tmp_path: Path, workspace: Path) -> None:
    """Without the fetch (an object gone after the session opened), git's checkout prints an
    error and exits 0: the check after it refuses the checkout instead of a branch deleting it."""
    origin = _origin(tmp_path)
    clone = _partial_sparse_clone(tmp_path, origin)
    repo = new_session(workspace, clone, SID)
    store = repo.store
    assert store is not None
    for folder in (store / "objects").iterdir():  # what the session fetched: gone again
        if folder.name != "info":
            shutil.rmtree(folder)
    origin.rename(tmp_path / "moved")
    with pytest.raises(WorkspaceError, match="fetching them from"):
        repo.checkout("implement")
    assert "implement" not in repo.record.checkouts


def test_a_checkout_git_left_incomplete_is_found_by_the_check_after_it(tmp_path: Path, workspace: Path) -> None:
    """An older session (its branch in the user's repository, no store to fetch into): git's
    checkout cannot read a blob, prints an error and exits 0; the tree is checked against the
    commit and the checkout refused."""
    clone = _partial_sparse_clone(tmp_path, _origin(tmp_path))
    old = old_layout_session(workspace, clone)
    with pytest.raises(WorkspaceError, match=r"does not hold commit \w+: 1 file\(s\) differ: elsewhere/file.txt"):
        old.checkout("implement")
    assert "implement" not in old.record.checkouts


def test_the_user_info_exclude_applies_in_checkouts(tmp_path: Path, workspace: Path) -> None:
    user = tmp_path / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    (user / "app.py").write_text("X = 1\n")
    git(user, "add", "-A")
    _commit(user, "start")
    (user / ".git" / "info").mkdir(exist_ok=True)
    (user / ".git" / "info" / "exclude").write_text("*.pyc\n")
    repo = new_session(workspace, user, SID)
    checkout = repo.checkout("implement")
    (checkout.path / "app.cpython-311.pyc").write_bytes(b"\0compiled")
    (checkout.path / "app.py").write_text("X = 2\n")
    repo.commit_assignment("implement", "demo", "edit")
    repo.merge_assignment("implement")
    assert repo.store is not None
    assert branch_files(repo.store, repo.branch) == {"app.py"}


def _sha256_repo(tmp_path: Path) -> Path:
    user = tmp_path / "project256"
    user.mkdir()
    git(user, "init", "-q", "-b", "main", "--object-format=sha256")
    (user / "README.md").write_text("# project\n")
    git(user, "add", "-A")
    _commit(user, "start")
    return user


def test_a_sha256_repository_gets_a_store_and_checkouts_of_its_format(tmp_path: Path, workspace: Path) -> None:
    user = _sha256_repo(tmp_path)
    before = git_folder_bytes(user)
    repo = new_session(workspace, user, SID)
    assert len(repo.base) == 64
    checkout = repo.checkout("implement")
    (checkout.path / "notes.txt").write_text("the agent's\n")
    head = repo.commit_assignment("implement", "demo", "write")
    assert head is not None and len(head) == 64
    assert repo.merge_assignment("implement").status == "fast_forward"
    view = repo.readonly_checkout("plan", repo.tip())
    assert (view.path / "notes.txt").read_text() == "the agent's\n"
    assert repo.store is not None and branch_files(repo.store, repo.branch) == {"README.md", "notes.txt"}
    assert git_folder_bytes(user) == before


def test_a_demo_session_in_a_sha256_repository_works_end_to_end_then_applies(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    user = _sha256_repo(tmp_path)
    before = git_folder_bytes(user)
    ws = tmp_path / "ws"
    done, folder = _demo(user, ws, demo_env)
    assert done.returncode == 0, done.stderr
    assert "is not a commit" not in done.stderr and "warning" not in done.stderr
    assert git_folder_bytes(user) == before
    branch = f"orchestrate/{folder.name}"
    work = branch_files(session_store(folder), branch)
    assert {"docs/DESIGN.md", "app/health_endpoint.py", "README.md"} <= work
    assert f"the work is on branch {branch}" in done.stdout
    applied = _orchestrate(["apply", folder.name, "--workspace", str(ws)], demo_env)
    assert applied.returncode == 0, applied.stderr
    assert (user / "app" / "health_endpoint.py").is_file()
    assert len(git(user, "rev-parse", "HEAD").strip()) == 64


def test_without_its_checkout_planning_takes_the_default_breakdown_never_the_user_tree(
    tmp_path: Path, workspace: Path
) -> None:
    user = _sha256_repo(tmp_path)
    repo = new_session(workspace, user, SID)
    (workspace / SID / "views").write_text("in the way")  # no view can be made there
    assert plan_checkout(repo) is None
    book = Playbook(workspace=True, plan_view=False)
    book.send(StartSession())
    assert "@plan" not in [assignment for _, assignment in book.started()]  # no architect run
    assert book.snapshot.plan_source == "fallback"
    assert [r.role for r in book.snapshot.assignments] == ["architect", "implementer", "reviewer"]


def _plain_repo(tmp_path: Path, gitignore: str) -> Path:
    user = tmp_path / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    (user / "app.py").write_text("X = 1\n")
    (user / ".gitignore").write_text(gitignore)
    git(user, "add", "-A")
    _commit(user, "start")
    return user


def test_files_an_ignore_rule_hides_are_named_with_the_rule_and_their_checkout_kept(
    tmp_path: Path,
    workspace: Path,
    _no_global_git_config: Path,  # noqa: F811
) -> None:
    excludes = tmp_path / "global-excludes"
    excludes.write_text("*.tmp\n")
    _no_global_git_config.write_text(f"[core]\n\texcludesFile = {excludes}\n")
    user = _plain_repo(tmp_path, "*.log\nbuild/\n")
    repo = new_session(workspace, user, SID)
    checkout = repo.checkout("implement")
    (checkout.path / "run.log").write_text("the agent's log\n")
    (checkout.path / "build").mkdir()
    (checkout.path / "build" / "out.bin").write_bytes(b"\0")
    (checkout.path / "draft.tmp").write_text("the agent's draft\n")
    (checkout.path / "__pycache__").mkdir()  # a test run's cache, not reported as written: only logged
    (checkout.path / "__pycache__" / "app.pyc").write_bytes(b"\0")
    (checkout.path / ".gitignore").write_text("*.log\nbuild/\n__pycache__/\n")
    written = ("run.log", str(checkout.path / "build" / "out.bin"), str(checkout.path / "draft.tmp"))
    assert repo.commit_assignment("implement", "demo", "write", written) is not None  # .gitignore only
    ignored = repo.record.checkouts["implement"].ignored
    assert set(ignored) == {
        "run.log (.gitignore:1: *.log)",
        "build/ (.gitignore:2: build/)",
        f"draft.tmp ({excludes}:1: *.tmp)",
    }
    repo.merge_assignment("implement")
    assert repo.cleanup() == ["implement"]  # kept: never silently dropped
    assert (checkout.path / "draft.tmp").read_text() == "the agent's draft\n"
    [line] = [line for line in end_report(repo, workspace / SID, ["implement"]) if "kept checkout" in line]
    assert "an ignore rule keeps off" in line and "run.log (.gitignore:1: *.log)" in line
    assert str(checkout.path) in line


def test_a_demo_session_whose_writes_are_ignored_says_so_and_keeps_them(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    user = _plain_repo(tmp_path, "app/\n")
    done, folder = _demo(user, tmp_path / "ws", demo_env)
    assert done.returncode == 0, done.stderr
    kept = [line for line in done.stdout.splitlines() if "an ignore rule keeps off" in line]
    assert kept and "app/ (.gitignore:1: app/)" in kept[0]
    assert list(folder.glob("checkouts/*/app/health_endpoint.py"))  # the agent's file is still there


def test_a_demo_session_in_a_partial_sparse_clone_deletes_nothing_and_applies(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    clone = _partial_sparse_clone(tmp_path, _origin(tmp_path))
    ws = tmp_path / "ws"
    done, folder = _demo(clone, ws, demo_env)
    assert done.returncode == 0, done.stderr
    branch = f"orchestrate/{folder.name}"
    store = session_store(folder)
    assert {"kept/file.txt", "elsewhere/file.txt", "app/health_endpoint.py"} <= branch_files(store, branch)
    base = json.loads((folder / "workspace.json").read_text())["base"]
    assert git(store, "diff", "--name-only", "--diff-filter=D", base, branch) == ""  # nothing deleted
    applied = _orchestrate(["apply", folder.name, "--workspace", str(ws)], demo_env)
    assert applied.returncode == 0, applied.stderr
    assert git(clone, "ls-files", "elsewhere") == "elsewhere/file.txt\n"  # still on their branch
    assert "app/health_endpoint.py" in git(clone, "ls-tree", "-r", "--name-only", "HEAD")  # outside their cone


def test_a_demo_session_in_a_partial_clone_without_its_promisor_is_refused_with_the_reason(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    origin = _origin(tmp_path)
    clone = _partial_sparse_clone(tmp_path, origin)
    origin.rename(tmp_path / "moved")
    done = _orchestrate(
        [TASK, "--demo", "--target", str(clone), "--no-dashboard", "--workspace", str(tmp_path / "ws")], demo_env
    )
    assert done.returncode != 0
    assert "have no content in your repository" in done.stderr and "Traceback" not in done.stderr
    assert not (clone / "app").exists()  # nothing ran in place
    assert not list((tmp_path / "ws").glob("*/git"))  # its store is gone with it


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder outside /tmp (private inside the sandbox): the user's repository must be reachable there."""
    folder = Path(tempfile.mkdtemp(prefix="orch-shapes-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_partial_clone_in_the_os_sandbox_gets_its_missing_files_too(
    tmp_path: Path, outside_tmp: Path, bwrap: str
) -> None:
    clone = _partial_sparse_clone(outside_tmp, _origin(outside_tmp))
    workspace = private_dir(tmp_path / "workspace")
    sandbox = OsSandbox(bwrap=bwrap, hidden=(str(workspace),))
    opened = open_session_repo(clone, private_dir(workspace / SID), SID, sandbox=sandbox)
    assert opened.repo is not None, opened.message
    checkout = opened.repo.checkout("implement")
    assert (checkout.path / "elsewhere" / "file.txt").read_text() == "never fetched by the user\n"
    (checkout.path / "kept" / "new.txt").write_text("the agent's\n")
    opened.repo.commit_assignment("implement", "demo", "write")
    assert opened.repo.merge_assignment("implement").status == "fast_forward"
    assert opened.repo.store is not None
    assert "elsewhere/file.txt" in branch_files(opened.repo.store, opened.repo.branch)


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("shape", ["bare", "another_users"])
def test_a_repository_git_refuses_is_refused_before_anything_starts_with_the_fix(
    tmp_path: Path, workspace: Path, demo_env: dict[str, str], shape: str
) -> None:
    """Never in place by surprise: a bare repository, or one git refuses as another user's
    (safe.directory), gets a refusal naming the fix; nothing lands in it."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "README.md").write_text("# app\n")
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    _commit(source, "start")
    if shape == "bare":
        target = tmp_path / "repo.git"
        git(tmp_path, "clone", "-q", "--bare", str(source), str(target))
        fix = "worktree add"
    else:
        target = source
        subprocess.run(["chown", "-R", "nobody", str(target)], check=True)  # git refuses another user's
        fix = "safe.directory"
    before = _tree_bytes(target)
    done = _orchestrate(
        [TASK, "--demo", "--target", str(target), "--no-dashboard", "--workspace", str(workspace)], demo_env
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert fix in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert _tree_bytes(target) == before  # no file of an agent, nothing of git's
