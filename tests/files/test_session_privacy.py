"""Session files are private: 0700 folders, 0600 files, unreadable to another user; folders
that another user owns or may write are refused; readers do not follow symlinks out.

Tests run as root, so "another user" is a real uid: ``nobody`` (65534) through ``os.chown``,
and a reader subprocess that runs as ``nobody``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from collections.abc import Iterator

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.recovery.preflight import PreflightError, check_workspace
from meta_orchestrator.actors.files.session_files import (
    JsonlWriter,
    SessionFileError,
    open_in_session,
    open_private,
    private_dir,
    read_jsonl,
)
from meta_orchestrator.config.settings import load_settings

NOBODY = 65534


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A 0755 folder outside /tmp's 0700 pytest tree, so that only our own modes stop a reader."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    folder = Path(tempfile.mkdtemp(prefix="orch-privacy-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        list(argv), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True, timeout=10, cwd="/"
    )


@pytest.mark.session
def test_a_finished_session_is_unreadable_to_another_user(open_parent, demo_env):
    workspace = open_parent / "ws"
    code = run(
        load_settings(None, {"workspace": str(workspace)}),
        LaunchRequest(
            task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
        ),
    )
    assert code == 0
    [session] = [p for p in workspace.iterdir() if p.is_dir()]
    assert stat.S_IMODE(workspace.stat().st_mode) == 0o700
    checked = 0
    for folder, dirs, files in os.walk(session):
        if Path(folder).name == "demo-app":  # the target: the agents' own work, not session files
            dirs.clear()
            continue
        assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700, folder
        for name in files:
            # 0600, or 0400 for what git makes read-only (the objects of the session's store)
            mode = stat.S_IMODE(os.lstat(Path(folder) / name).st_mode)
            assert mode in (0o600, 0o400), (folder, name, oct(mode))
            checked += 1
    assert checked >= 6  # state.json, launch, three .jsonl, their stderr, sandbox files, log...
    # the harness can read as nobody where modes allow it...
    control = open_parent / "control.txt"
    control.write_text("readable\n")
    assert _as_nobody("cat", str(control)).stdout == b"readable\n"
    # ...and cannot read or list the session
    for path in (session / "state.json", session / "claude.jsonl", session / "sandbox" / "policy.json"):
        assert path.is_file()
        denied = _as_nobody("cat", str(path))
        assert denied.returncode != 0 and b"Permission denied" in denied.stderr, path
    assert _as_nobody("ls", str(session)).returncode != 0
    os.chmod(workspace, 0o755)  # even with the workspace open, the session folder holds
    assert b"Permission denied" in _as_nobody("cat", str(session / "state.json")).stderr


def test_a_workspace_owned_by_another_user_is_refused(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir(mode=0o700)
    os.chown(workspace, NOBODY, NOBODY)
    with pytest.raises(PreflightError, match=f"belongs to uid {NOBODY}, not to you"):
        check_workspace(workspace)


@pytest.mark.session
def test_a_session_run_in_a_foreign_workspace_never_starts(tmp_path, demo_env):
    workspace = tmp_path / "ws"
    workspace.mkdir(mode=0o700)
    os.chown(workspace, NOBODY, NOBODY)
    with pytest.raises(PreflightError, match="use a folder of your own"):
        run(
            load_settings(None, {"workspace": str(workspace)}),
            LaunchRequest(task="t", target=None, demo=True, dashboard=False, console=False, env=demo_env),
        )
    assert list(workspace.iterdir()) == []


@pytest.mark.parametrize("mode", [0o775, 0o777, 0o1777])
def test_a_workspace_others_may_write_is_refused(tmp_path, mode):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    workspace.chmod(mode)
    with pytest.raises(PreflightError, match="writable by .*refusing to use it"):
        check_workspace(workspace)


def test_a_new_workspace_is_private_and_an_existing_readable_one_is_accepted(tmp_path):
    assert stat.S_IMODE(check_workspace(tmp_path / "new").stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert check_workspace(shared) == shared  # readable by others is the user's choice; sessions are 0700


def test_a_session_folder_of_another_user_or_a_symlink_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, NOBODY, NOBODY)
    with pytest.raises(SessionFileError, match="not to you"):
        private_dir(foreign)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere-dir")
    (tmp_path / "elsewhere-dir").mkdir()
    with pytest.raises(SessionFileError, match="not a folder"):
        private_dir(link)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(SessionFileError, match="writable by group and others"):
        private_dir(shared)
    old = tmp_path / "old"
    old.mkdir()
    old.chmod(0o755)
    assert stat.S_IMODE(private_dir(old).stat().st_mode) == 0o700  # ours: closed to others


def test_session_files_are_not_written_or_read_through_symlinks(tmp_path):
    session = private_dir(tmp_path / "session")
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"seq": 1}\n')
    (session / "claude.jsonl").symlink_to(outside)
    with pytest.raises(SessionFileError):
        JsonlWriter(session / "claude.jsonl")
    with pytest.raises(OSError, match="outside the session folder"):
        read_jsonl(session / "claude.jsonl")
    (session / "inside.jsonl").write_text('{"seq": 1}\n')
    (session / "link.jsonl").symlink_to(session / "inside.jsonl")
    with pytest.raises(OSError) as loop:
        read_jsonl(session / "link.jsonl")  # a symlink, even to a file inside
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        open_private(session / "claude.jsonl")
    assert outside.read_text() == '{"seq": 1}\n'
    # a folder inside the session that leads out (reviews/<id> -> elsewhere) is refused too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "answer.json").write_text("{}")
    (session / "reviews").symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="outside the session folder"):
        open_in_session(session, session / "reviews" / "answer.json")
    with pytest.raises(OSError):
        open_private(session / "overflow.txt", exclusive=True).close()
        open_private(session / "overflow.txt", exclusive=True)  # O_EXCL: never reused


def test_an_old_world_readable_log_is_closed_when_appended_to(tmp_path):
    session = private_dir(tmp_path / "session")
    log = session / "claude.jsonl"
    log.write_text('{"seq": 1}\n')
    log.chmod(0o644)
    writer = JsonlWriter(log)
    writer.write_batch(['{"seq": 2}'], 2)
    writer.close()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert [r["seq"] for r in read_jsonl(log).records] == [1, 2]
