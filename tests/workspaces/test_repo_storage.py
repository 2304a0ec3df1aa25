"""Content is stored in a session's checkouts as in the user's repository (issue 22): the
filters of their repository config (a git-crypt-like one that base64s), line endings
(``core.autocrlf``, ``core.eol``), their ``info/attributes``, and Git LFS with git-lfs
installed (objects shared with their LFS store, never downloaded, never copied) or not
(pointer files as content). Real git, real git-lfs, real bwrap; the user's ``.git`` is byte
for byte as it was until ``orchestrate apply``."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo, apply_session, open_session_repo
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from tests.conftest import git_folder_bytes, session_store
from tests.workspaces.test_workspace_sessions import _demo, _orchestrate
from tests.workspaces.test_workspaces import _commit, _no_global_git_config, git  # noqa: F401

SID = "20260101-120000-store1"
SECRET = "the launch code is 1234\n"


@pytest.fixture
def git_lfs() -> str:
    """git-lfs's path; without it the test is skipped, or fails in CI (.ci/run installs it)."""
    path = shutil.which("git-lfs")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("git-lfs is not installed (.ci/run installs it)")
        pytest.skip("git-lfs is not installed")
    return path


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder outside /tmp (private inside the sandbox), for the user's repository."""
    folder = Path(tempfile.mkdtemp(prefix="orch-storage-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _session(workspace: Path, repo: Path, sandbox: OsSandbox | None) -> SessionRepo:
    opened = open_session_repo(repo, private_dir(workspace / SID), SID, sandbox=sandbox)
    assert opened.repo is not None, opened.message
    return opened.repo


def _sandbox(request: pytest.FixtureRequest, workspace: Path) -> OsSandbox | None:
    """The OS sandbox for the ``sandboxed`` parameter (bwrap required then)."""
    if not request.node.callspec.params.get("sandboxed"):
        return None
    bwrap = request.getfixturevalue("bwrap")
    return OsSandbox(bwrap=bwrap, hidden=(str(workspace),))


def _blob(repo: Path, rev: str) -> bytes:
    done = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", rev], capture_output=True, check=True, timeout=30
    )
    return done.stdout


# -- a filter of the user's repository config (git-crypt style) ----------------------------


def _crypt_repo(folder: Path, *, in_info: bool = False) -> Path:
    """A repository whose own config defines a required filter that stores ``*.secret``
    files base64-encoded (the tree shows them plain), selected by .gitattributes or by
    the user's ``info/attributes``."""
    user = folder / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    # As git-crypt does, the filter reads its key from the git folder git runs it for.
    keys = user / ".git" / "git-crypt" / "keys"
    keys.mkdir(parents=True)
    (keys / "default").write_text("the user's key\n")
    with_key = 'test -f "$(git rev-parse --git-dir)/git-crypt/keys/default" && '
    git(user, "config", "filter.crypt.clean", f"sh -c '{with_key}base64'")
    git(user, "config", "filter.crypt.smudge", f"sh -c '{with_key}base64 -d'")
    git(user, "config", "filter.crypt.required", "true")
    if in_info:
        (user / ".git" / "info").mkdir(exist_ok=True)
        (user / ".git" / "info" / "attributes").write_text("*.secret filter=crypt\n")
    else:
        (user / ".gitattributes").write_text("*.secret filter=crypt\n")
    (user / "key.secret").write_text(SECRET)
    (user / "README.md").write_text("# project\n")
    git(user, "add", "-A")
    _commit(user, "start")
    assert _blob(user, "HEAD:key.secret") == base64.b64encode(SECRET.encode()) + b"\n"  # the shape
    return user


@pytest.mark.parametrize("sandboxed", [False, True])
@pytest.mark.parametrize("in_info", [False, True])
def test_the_user_repository_filter_stores_an_agent_file_as_in_their_tree_and_apply_shows_it_plain(
    tmp_path: Path, outside_tmp: Path, request: pytest.FixtureRequest, sandboxed: bool, in_info: bool
) -> None:
    user = _crypt_repo(outside_tmp, in_info=in_info)
    workspace = private_dir(tmp_path / "workspace")
    before = git_folder_bytes(user)
    repo = _session(workspace, user, _sandbox(request, workspace))
    checkout = repo.checkout("implement")
    assert (checkout.path / "key.secret").read_text() == SECRET  # smudged, as in their tree
    (checkout.path / "new.secret").write_text("a new secret\n")
    (checkout.path / "key.secret").write_text(SECRET + "rotated\n")
    assert repo.commit_assignment("implement", "demo", "write") is not None
    assert repo.merge_assignment("implement").status == "fast_forward"
    store = session_store(workspace / SID)
    assert _blob(store, f"{repo.branch}:new.secret") == base64.b64encode(b"a new secret\n") + b"\n"  # cleaned
    assert _blob(store, f"{repo.branch}:key.secret") == base64.b64encode((SECRET + "rotated\n").encode()) + b"\n"
    view = repo.readonly_checkout("review", repo.tip())
    assert (view.path / "new.secret").read_text() == "a new secret\n"
    assert git_folder_bytes(user) == before  # nothing of theirs touched during the session
    applied = apply_session(user, SID, store=store, started_on="refs/heads/main")
    assert applied.status == "fast_forward"
    assert (user / "new.secret").read_text() == "a new secret\n"  # plain, not garbled
    assert (user / "key.secret").read_text() == SECRET + "rotated\n"
    assert git(user, "status", "--porcelain") == ""


def test_an_agent_cannot_define_a_filter_only_select_one_the_user_defined(tmp_path: Path) -> None:
    user = _crypt_repo(tmp_path)
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    ran = tmp_path / "evil-ran"
    # A git folder of its own in the tree (its config defining a filter), a .lfsconfig, and
    # attributes selecting both the planted filter and the user's.
    (checkout.path / ".git").unlink()
    (checkout.path / ".git").mkdir()
    (checkout.path / ".git" / "config").write_text(f'[filter "evil"]\n\tclean = touch {ran}\n\trequired = true\n')
    (checkout.path / ".gitattributes").write_text("*.secret filter=crypt\n*.x filter=evil\n")
    (checkout.path / "a.x").write_text("plain\n")
    (checkout.path / "b.secret").write_text("hidden\n")
    repo.commit_assignment("implement", "demo", "write")
    repo.merge_assignment("implement")
    store = session_store(workspace / SID)
    assert not ran.exists()
    assert _blob(store, f"{repo.branch}:a.x") == b"plain\n"  # no filter of the agent's ran
    assert _blob(store, f"{repo.branch}:b.secret") == base64.b64encode(b"hidden\n") + b"\n"  # the user's did


def test_a_required_filter_whose_program_is_missing_is_refused_with_the_fix(tmp_path: Path) -> None:
    user = _crypt_repo(tmp_path)
    git(user, "config", "filter.crypt.smudge", "orchestrate-test-no-such-crypt -d")
    git(user, "config", "filter.crypt.clean", "orchestrate-test-no-such-crypt")
    workspace = private_dir(tmp_path / "workspace")
    with pytest.raises(WorkspaceError, match="orchestrate-test-no-such-crypt is not installed") as refused:
        open_session_repo(user, private_dir(workspace / SID), SID)
    assert "filter.crypt.required" in str(refused.value)
    assert not (workspace / SID / "git").exists()  # nothing made


# -- line endings -------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["autocrlf", "eol"])
def test_line_endings_are_stored_and_shown_as_the_user_repository_says(tmp_path: Path, setting: str) -> None:
    user = tmp_path / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    if setting == "autocrlf":
        git(user, "config", "core.autocrlf", "true")
    else:
        git(user, "config", "core.eol", "crlf")
        (user / ".gitattributes").write_text("*.txt text\n")
    (user / "old.txt").write_bytes(b"one\r\ntwo\r\n")
    git(user, "add", "-A")
    _commit(user, "start")
    assert _blob(user, "HEAD:old.txt") == b"one\ntwo\n"  # the shape: LF stored, CRLF shown
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    assert (checkout.path / "old.txt").read_bytes() == b"one\r\ntwo\r\n"
    (checkout.path / "new.txt").write_bytes(b"alpha\r\nbeta\r\n")
    repo.commit_assignment("implement", "demo", "write")
    repo.merge_assignment("implement")
    store = session_store(workspace / SID)
    assert _blob(store, f"{repo.branch}:new.txt") == b"alpha\nbeta\n"
    assert git(store, "diff", "--name-only", repo.base, repo.branch) == "new.txt\n"  # old.txt unchanged
    apply_session(user, SID, store=store, started_on="refs/heads/main")
    assert (user / "new.txt").read_bytes() == b"alpha\r\nbeta\r\n"
    assert git(user, "status", "--porcelain") == ""


# -- Git LFS ------------------------------------------------------------------------------


BIG = bytes(range(256)) * 40  # 10 KiB


def _lfs_repo(folder: Path, scope: str = "--local") -> Path:
    """An LFS repository (``git lfs install --local``, or in the global config as most users
    have it: ``git lfs install``;
    ``*.bin`` tracked) whose remote and LFS server are unreachable: nothing can be downloaded."""
    user = folder / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    git(user, "lfs", "install", *([scope] if scope != "--global" else []))
    git(user, "lfs", "track", "*.bin")
    git(user, "remote", "add", "origin", (folder / "gone.git").as_uri())
    (user / ".lfsconfig").write_text("[lfs]\n\turl = http://127.0.0.1:9/lfs\n")
    (user / "data.bin").write_bytes(BIG)
    git(user, "add", "-A")
    _commit(user, "start")
    assert _blob(user, "HEAD:data.bin").startswith(b"version https://git-lfs.github.com/spec/v1")  # the shape
    return user


def _lfs_object(user: Path, content: bytes) -> Path:
    oid = hashlib.sha256(content).hexdigest()
    return user / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


@pytest.mark.parametrize("sandboxed", [False, True])
@pytest.mark.parametrize("scope", ["--local", "--global"])
@pytest.mark.usefixtures("git_lfs")
def test_an_lfs_repository_shares_the_user_objects_never_downloads_and_apply_brings_the_new_ones(
    tmp_path: Path, outside_tmp: Path, request: pytest.FixtureRequest, sandboxed: bool, scope: str
) -> None:
    user = _lfs_repo(outside_tmp, scope)
    assert ("filter.lfs.process" in git(user, "config", "--local", "--list")) == (scope == "--local")
    workspace = private_dir(tmp_path / "workspace")
    before = git_folder_bytes(user)
    repo = _session(workspace, user, _sandbox(request, workspace))
    checkout = repo.checkout("implement")
    assert (checkout.path / "data.bin").read_bytes() == BIG  # smudged from their store, not downloaded
    store = session_store(workspace / SID)
    shared = store / "lfs" / "objects" / _lfs_object(user, BIG).relative_to(user / ".git" / "lfs" / "objects")
    assert shared.stat().st_ino == _lfs_object(user, BIG).stat().st_ino  # a hard link: never copied
    new = b"the agent's model weights\n" * 500
    (checkout.path / "weights.bin").write_bytes(new)
    (checkout.path / "data.bin").write_bytes(BIG + b"more")
    assert repo.commit_assignment("implement", "demo", "write") is not None  # its config still as written
    assert repo.merge_assignment("implement").status == "fast_forward"
    pointer = _blob(store, f"{repo.branch}:weights.bin").decode()
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    assert hashlib.sha256(new).hexdigest() in pointer
    assert (store / "lfs" / "objects" / _lfs_object(user, new).relative_to(user / ".git" / "lfs" / "objects")).is_file()
    view = repo.readonly_checkout("review", repo.tip())  # a second checkout: its objects from the store
    assert (view.path / "weights.bin").read_bytes() == new
    assert git_folder_bytes(user) == before  # their .git, LFS store included, as it was
    applied = apply_session(user, SID, store=store, started_on="refs/heads/main")
    assert applied.status == "fast_forward"
    assert _lfs_object(user, new).read_bytes() == new  # their LFS store has the session's objects
    assert (user / "weights.bin").read_bytes() == new  # their tree shows the content, no pointer
    assert (user / "data.bin").read_bytes() == BIG + b"more"
    assert git(user, "status", "--porcelain") == ""


@pytest.mark.usefixtures("git_lfs")
def test_an_lfs_object_the_user_lacks_stays_a_pointer_and_is_committed_back_unchanged(tmp_path: Path) -> None:
    user = _lfs_repo(tmp_path)
    # Not racy (or the session's `git status` in their tree would clean it into their store again).
    os.utime(user / "data.bin", (1_000_000_000, 1_000_000_000))
    git(user, "update-index", "--refresh")
    _lfs_object(user, BIG).unlink()  # as after a clone with GIT_LFS_SKIP_SMUDGE: never fetched
    pointer = _blob(user, "HEAD:data.bin")
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    assert (checkout.path / "data.bin").read_bytes() == pointer  # no download tried to fill it
    (checkout.path / "notes.txt").write_text("the agent's\n")
    repo.commit_assignment("implement", "demo", "write")
    repo.merge_assignment("implement")
    store = session_store(workspace / SID)
    assert git(store, "diff", "--name-only", repo.base, repo.branch) == "notes.txt\n"


def _without_git_lfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH with git but no git-lfs."""
    bin_dir = tmp_path / "bin-without-lfs"
    bin_dir.mkdir()
    for tool in ("git", "base64"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))


def _pointer(content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def test_without_git_lfs_an_lfs_repository_works_with_pointer_files_as_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "project"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    (user / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (user / "data.bin").write_bytes(_pointer(BIG))  # as a clone without git-lfs has it
    git(user, "add", "-A")
    _commit(user, "start")
    _without_git_lfs(tmp_path, monkeypatch)
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    assert (checkout.path / "data.bin").read_bytes() == _pointer(BIG)
    (checkout.path / "other.bin").write_bytes(b"raw\n")
    repo.commit_assignment("implement", "demo", "write")
    repo.merge_assignment("implement")
    store = session_store(workspace / SID)
    assert _blob(store, f"{repo.branch}:other.bin") == b"raw\n"  # no filter: stored as written
    assert _blob(store, f"{repo.branch}:data.bin") == _pointer(BIG)


@pytest.mark.usefixtures("git_lfs")
def test_an_lfs_repository_requiring_git_lfs_without_it_is_refused_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = _lfs_repo(tmp_path)
    _without_git_lfs(tmp_path, monkeypatch)
    workspace = private_dir(tmp_path / "workspace")
    with pytest.raises(WorkspaceError, match="git-lfs is not installed") as refused:
        open_session_repo(user, private_dir(workspace / SID), SID)
    assert "apt install git-lfs" in str(refused.value)


# -- demo sessions through the launcher ---------------------------------------------------


def _config(tmp_path: Path, sandbox: str) -> Path:
    config = tmp_path / f"sandbox-{sandbox}.toml"
    config.write_text(f'[sandbox]\nos = "{sandbox}"\n')
    return config


@pytest.mark.parametrize("sandbox", ["bwrap", "off"])
def test_a_demo_session_in_a_filtered_repository_stores_the_agents_files_filtered_and_applies(
    tmp_path: Path, outside_tmp: Path, demo_env: dict[str, str], sandbox: str, request: pytest.FixtureRequest
) -> None:
    if sandbox == "bwrap":
        request.getfixturevalue("bwrap")
    user = _crypt_repo(outside_tmp)
    (user / ".gitattributes").write_text("*.secret filter=crypt\n*.py filter=crypt\n")
    git(user, "add", "-A")
    _commit(user, "python is secret too")
    before = git_folder_bytes(user)
    ws = tmp_path / "ws"
    done, folder = _demo(user, ws, demo_env, "--config", str(_config(tmp_path, sandbox)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert git_folder_bytes(user) == before
    branch = f"orchestrate/{folder.name}"
    stored = _blob(session_store(folder), f"{branch}:app/health_endpoint.py")
    plain = base64.b64decode(stored)
    assert b"def " in plain and b"def " not in stored  # base64 on the branch
    applied = _orchestrate(["apply", folder.name, "--workspace", str(ws)], demo_env)
    assert applied.returncode == 0, applied.stderr
    assert (user / "app" / "health_endpoint.py").read_bytes() == plain  # their tree: plain text
    assert git(user, "status", "--porcelain") == ""


@pytest.mark.parametrize("sandbox", ["bwrap", "off"])
@pytest.mark.usefixtures("git_lfs")
def test_a_demo_session_in_an_lfs_repository_works_offline_and_applies_its_objects(
    tmp_path: Path,
    outside_tmp: Path,
    demo_env: dict[str, str],
    sandbox: str,
    request: pytest.FixtureRequest,
) -> None:
    if sandbox == "bwrap":
        request.getfixturevalue("bwrap")
    user = _lfs_repo(outside_tmp)
    git(user, "lfs", "track", "*.md")
    git(user, "add", "-A")
    _commit(user, "documents in LFS")
    before = git_folder_bytes(user)
    ws = tmp_path / "ws"
    done, folder = _demo(user, ws, demo_env, "--config", str(_config(tmp_path, sandbox)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "was changed after the orchestrator wrote it" not in done.stdout + done.stderr
    assert git_folder_bytes(user) == before
    branch = f"orchestrate/{folder.name}"
    pointer = _blob(session_store(folder), f"{branch}:docs/DESIGN.md").decode()
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    applied = _orchestrate(["apply", folder.name, "--workspace", str(ws)], demo_env)
    assert applied.returncode == 0, applied.stderr
    design = (user / "docs" / "DESIGN.md").read_bytes()
    assert not design.startswith(b"version https://git-lfs")  # the content, from their own store
    assert _lfs_object(user, design).is_file()
    assert git(user, "status", "--porcelain") == ""


# -- the config check: a tool's own writes, never an agent's -------------------------------


@pytest.mark.parametrize(
    ("added", "runs"),
    [
        ("[lfs]\n\trepositoryformatversion = 0\n", True),
        ('[lfs "http://127.0.0.1:9/lfs"]\n\taccess = basic\n', True),
        ('[filter "crypt"]\n\tclean = touch {marker}\n', False),
        ("[include]\n\tpath = {marker}.cfg\n", False),
        ("[core]\n\tfsmonitor = touch {marker}\n", False),
        ("[lfs]\n\trepositoryformatversion = 0\n[core]\n\tfsmonitor = touch {marker}\n", False),
    ],
)
def test_the_config_check_tolerates_what_git_lfs_writes_and_nothing_that_runs(
    tmp_path: Path, added: str, runs: bool
) -> None:
    user = _crypt_repo(tmp_path)
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    marker = tmp_path / "planted-ran"
    with (checkout.git_dir / "config").open("a") as config:
        config.write(added.format(marker=marker))
    (checkout.path / "x.secret").write_text("x\n")
    if runs:
        assert repo.commit_assignment("implement", "demo", "write") is not None
    else:
        with pytest.raises(WorkspaceError, match="was changed after the orchestrator wrote it"):
            repo.commit_assignment("implement", "demo", "write")
    assert not marker.exists()


@pytest.mark.usefixtures("git_lfs")
def test_an_lfs_store_the_user_keeps_elsewhere_is_shared_and_gets_the_new_objects(tmp_path: Path) -> None:
    user = _lfs_repo(tmp_path)
    elsewhere = tmp_path / "lfs-elsewhere"
    shutil.move(user / ".git" / "lfs", elsewhere)
    git(user, "config", "lfs.storage", str(elsewhere))
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    assert (checkout.path / "data.bin").read_bytes() == BIG
    (checkout.path / "more.bin").write_bytes(b"more\n" * 100)
    repo.commit_assignment("implement", "demo", "write")
    repo.merge_assignment("implement")
    apply_session(user, SID, store=session_store(workspace / SID), started_on="refs/heads/main")
    oid = hashlib.sha256(b"more\n" * 100).hexdigest()
    assert (elsewhere / "objects" / oid[:2] / oid[2:4] / oid).is_file()
    assert (user / "more.bin").read_bytes() == b"more\n" * 100
    assert not (user / ".git" / "lfs" / "objects").exists()


class _LfsServer(http.server.BaseHTTPRequestHandler):
    """An LFS server that only counts what reaches it."""

    requests: ClassVar[list[str]] = []

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST  # noqa: N815

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def lfs_server() -> Iterator[tuple[str, list[str]]]:
    """A reachable LFS endpoint on 127.0.0.1 and the requests it received."""
    _LfsServer.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LfsServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/lfs", _LfsServer.requests
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.usefixtures("git_lfs")
def test_a_checkout_never_asks_a_reachable_lfs_server_for_an_object_the_user_lacks(
    tmp_path: Path, lfs_server: tuple[str, list[str]]
) -> None:
    url, requests = lfs_server
    user = _lfs_repo(tmp_path)
    (user / ".lfsconfig").write_text(f"[lfs]\n\turl = {url}\n")
    git(user, "add", "-A")
    _commit(user, "a server that answers")
    os.utime(user / "data.bin", (1_000_000_000, 1_000_000_000))
    git(user, "update-index", "--refresh")
    _lfs_object(user, BIG).unlink()
    done = subprocess.run(  # the shape: git-lfs in the user's own tree asks that server
        ["git", "-C", str(user), "lfs", "fetch"], capture_output=True, timeout=60, check=False
    )
    assert requests, done.stderr
    requests.clear()
    workspace = private_dir(tmp_path / "workspace")
    repo = _session(workspace, user, None)
    checkout = repo.checkout("implement")
    (checkout.path / ".lfsconfig").write_text(f"[lfs]\n\turl = {url}\n")  # an agent's, naming it too
    (checkout.path / "data.bin").touch()
    repo.commit_assignment("implement", "demo", "write")
    repo.readonly_checkout("review", repo.tip())
    assert (checkout.path / "data.bin").read_bytes() == _blob(user, "HEAD:data.bin")  # the pointer file
    assert requests == []


def test_the_snapshot_of_uncommitted_files_is_stored_through_the_user_filter(tmp_path: Path) -> None:
    user = _crypt_repo(tmp_path)
    (user / "draft.secret").write_text("not committed yet\n")
    workspace = private_dir(tmp_path / "workspace")
    opened = open_session_repo(user, private_dir(workspace / SID), SID, include_uncommitted=True)
    assert opened.repo is not None, opened.message
    store = session_store(workspace / SID)
    assert _blob(store, f"{opened.repo.base}:draft.secret") == base64.b64encode(b"not committed yet\n") + b"\n"
    checkout = opened.repo.checkout("implement")
    assert (checkout.path / "draft.secret").read_text() == "not committed yet\n"
