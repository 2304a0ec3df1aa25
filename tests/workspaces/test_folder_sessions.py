"""Sessions on a folder without git, and on a git repository without a commit: the folder is
imported into the session's own repository and the demo agents work in checkouts of it, in
the OS sandbox, through the launcher. The folder stays byte for byte as it was (every file,
link, mode and folder time) until ``orchestrate apply`` writes exactly the agents' changes
(adds, changes, deletions, a mode change, a link retargeted, non-UTF-8 names); apply is
refused, writing nothing, when the user changed one of those files meanwhile; a second apply
writes nothing; discard leaves the folder as it is. A FIFO is named and left out, links out
of the folder are stored as links (never followed), ignored files stay out; a folder too big
to import, or a bare repository, is refused before a session folder is made."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.workspaces.folder_apply import apply_folder_session
from meta_orchestrator.actors.workspaces.folder_workspace import (
    BYTE_FOR_BYTE,
    ImportRefused,
    check_folder,
    import_folder,
)
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import ApplyRefused, open_session_repo
from tests.conftest import bwrap, git_folder_bytes, session_store  # noqa: F401 - bwrap: the fixture
from tests.workspaces.test_workspace_sessions import TASK, _orchestrate, _session_dirs
from tests.workspaces.test_workspaces import _no_global_git_config, git  # noqa: F401 - the autouse fixture

CAFE = b"caf\xe9.txt"  # a name that is not UTF-8
FRESH = b"new\xff.txt"
SECRET = "top secret host data"
# What the demo's claude does in its checkout besides its usual files: one of each change.
AGENT_SCRIPT = (
    "set -e; printf 'VALUE = 2\\n' > app.py; rm sub/s.txt; chmod +x plain.txt; ln -sfn run.sh link-in; "
    "printf 'changed\\n' >> \"$(printf 'caf\\351.txt')\"; printf 'fresh\\n' > \"$(printf 'new\\377.txt')\"; "
    "mkdir -p deep/er; printf 'd\\n' > deep/er/f.txt"
)
CONFIG = (
    '[sandbox]\nenabled = false\nos = "bwrap"\n'  # the OS sandbox on; no tool hook asking the user
    '[agents.claude]\nextra_args = ["--dangerously-skip-permissions"]\nallow_bypass = true\n'
    "[review]\nenabled = false\n"
)


def fingerprint(folder: Path) -> dict[bytes, tuple[int, int, bytes, int]]:
    """Every entry below ``folder`` and the folder itself, links not followed: its kind, mode,
    content hash (a file) or target (a link), and modification time. A folder's time moves when
    anything is made or removed in it, even for a moment: nothing written during a session
    goes unseen."""
    top = os.fsencode(folder)
    found: dict[bytes, tuple[int, int, bytes, int]] = {}
    for root, dirs, files in os.walk(top):
        for name in (b".", *dirs, *files) if root == top else (*dirs, *files):
            path = os.path.normpath(os.path.join(root, name))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                what = hashlib.sha256(Path(os.fsdecode(path)).read_bytes()).digest()
            else:
                what = b""
            found[os.path.relpath(path, top)] = (
                stat.S_IFMT(info.st_mode),
                stat.S_IMODE(info.st_mode),
                what,
                info.st_mtime_ns,
            )
    return found


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    """A folder without git holding one of everything: files (one executable), a file only in
    its folder, a non-UTF-8 name, links in and out (to a file and to a folder above), a FIFO,
    ignored files and an ignored folder."""
    folder = tmp_path / "plain"
    for sub in ("sub", "keep", "build"):
        (folder / sub).mkdir(parents=True)
    (folder / "app.py").write_text("VALUE = 1\n")
    (folder / "run.sh").write_text("#!/bin/sh\necho run\n")
    (folder / "run.sh").chmod(0o755)
    (folder / "plain.txt").write_text("will be executable\n")
    (folder / "sub" / "s.txt").write_text("deleted by the agent\n")
    (folder / "keep" / "k.txt").write_text("untouched\n")
    Path(os.fsdecode(os.fsencode(folder) + b"/" + CAFE)).write_bytes(b"accent\n")
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    (folder / "link-in").symlink_to("app.py")
    (folder / "link-out").symlink_to(tmp_path / "secret.txt")
    (folder / "up").symlink_to("../..")
    os.mkfifo(folder / "pipe")
    (folder / ".gitignore").write_text("*.log\nbuild/\n")
    (folder / "debug.log").write_text("ignored\n")
    (folder / "build" / "out.bin").write_bytes(b"\0ignored")
    return folder


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "orchestrate.toml"
    config.write_text(CONFIG)
    return config


def _session(target: Path, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path]:
    ws = tmp_path / "ws"
    before = _session_dirs(ws)
    args = [TASK, "--demo", "--target", str(target), "--no-dashboard", "--workspace", str(ws)]
    done = _orchestrate([*args, "--config", str(_config(tmp_path))], env, timeout=240)
    (folder,) = _session_dirs(ws) - before
    return done, folder


def _command(name: str, folder: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return _orchestrate([name, folder.name, "--workspace", str(folder.parent), *extra], env)


def _tree(store: Path, commit: str) -> dict[bytes, tuple[str, bytes]]:
    """``path -> (mode, content)`` of every file of ``commit`` in ``store``."""
    listed = subprocess.run(
        ["git", "--git-dir", str(store), "ls-tree", "-r", "-z", commit], capture_output=True, check=True
    ).stdout
    found = {}
    for entry in filter(None, listed.split(b"\0")):
        meta, path = entry.split(b"\t", 1)
        mode, _, oid = meta.decode().split(" ")
        blob = subprocess.run(
            ["git", "--git-dir", str(store), "cat-file", "blob", oid], capture_output=True, check=True
        )
        found[path] = (mode, blob.stdout)
    return found


def _on_disk(folder: Path, path: bytes) -> tuple[str, bytes] | None:
    full = os.path.join(os.fsencode(folder), path)
    if not os.path.lexists(full):
        return None
    info = os.lstat(full)
    if stat.S_ISLNK(info.st_mode):
        return "120000", os.readlink(full)
    return ("100755" if info.st_mode & stat.S_IXUSR else "100644"), Path(os.fsdecode(full)).read_bytes()


def _record(session_dir: Path) -> dict[str, Any]:
    return json.loads((session_dir / "workspace.json").read_text())


def _assert_imported(plain: Path, tmp_path: Path, session_dir: Path) -> tuple[Path, dict[bytes, tuple[str, bytes]]]:
    """What the import took: files with their modes, links as links (never followed), no
    FIFO, nothing ignored, the non-UTF-8 name as its bytes. Returns the store and the base."""
    record = _record(session_dir)
    assert record["kind"] == "folder" and record["repository"] == str(plain)
    store = session_store(session_dir)
    assert not (store / "objects" / "info" / "alternates").exists()
    base = _tree(store, record["base"])
    assert base[b"run.sh"][0] == "100755" and base[b"app.py"] == ("100644", b"VALUE = 1\n")
    assert base[b"link-out"] == ("120000", os.fsencode(tmp_path / "secret.txt")) and base[b"up"] == ("120000", b"../..")
    assert base[CAFE] == ("100644", b"accent\n")
    assert not {b"pipe", b"debug.log", b"build/out.bin"} & set(base)
    every_object = subprocess.run(
        ["git", "--git-dir", str(store), "cat-file", "--batch-all-objects", "--batch"], capture_output=True, check=True
    ).stdout
    assert SECRET.encode() not in every_object  # the link out was never followed
    return store, base


@pytest.fixture
def script_env(demo_env: dict[str, str]) -> dict[str, str]:
    return {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "shell_script", "ORCHESTRATE_DEMO_SHELL": AGENT_SCRIPT}


def test_a_folder_without_git_is_untouched_until_apply_writes_exactly_the_agents_changes(
    plain: Path,
    tmp_path: Path,
    script_env: dict[str, str],
    bwrap: str,  # noqa: F811
) -> None:
    before = fingerprint(plain)
    done, session_dir = _session(plain, tmp_path, script_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert fingerprint(plain) == before  # byte for byte, modes and times: nothing written, even for a moment
    assert not (plain / ".git").exists()
    assert (
        f"{plain} has no git" in done.stderr
        and "left out, special files (FIFOs, sockets, devices): pipe" in done.stderr
    )
    assert "left out: 2 entries an ignore rule hides" in done.stderr
    assert f"orchestrate apply {session_dir.name}  (writes the changed files into {plain}" in done.stdout
    store, base = _assert_imported(plain, tmp_path, session_dir)

    # The user changes a file the session changed, and one it did not: apply writes nothing.
    (plain / "app.py").write_text("VALUE = 3  # the user's\n")
    (plain / "keep" / "k.txt").write_text("the user's own change\n")
    users = fingerprint(plain)
    refused = _command("apply", session_dir, script_env)
    assert refused.returncode == 1, refused.stderr
    assert "app.py (you changed it)" in refused.stderr and "nothing was written" in refused.stderr
    assert "k.txt" not in refused.stderr and "orchestrate discard" in refused.stderr
    assert fingerprint(plain) == users

    (plain / "app.py").write_text("VALUE = 1\n")  # their way out: put it back (or move it aside)
    users = fingerprint(plain)
    applied = _command("apply", session_dir, script_env)
    assert applied.returncode == 0, applied.stderr
    assert f"applied session {session_dir.name} to {plain}" in applied.stdout
    tip = _tree(store, f"orchestrate/{session_dir.name}")
    changed = {p for p in set(base) | set(tip) if base.get(p) != tip.get(p)}
    assert {b"app.py", b"sub/s.txt", b"plain.txt", b"link-in", CAFE, FRESH, b"deep/er/f.txt"} <= changed
    assert b"docs/DESIGN.md" in changed and b"app/health_endpoint.py" in changed  # the other agents' work
    for path in changed:  # each as the branch holds it, or gone
        assert _on_disk(plain, path) == tip.get(path), path
    assert not (plain / "sub").exists()  # its only file was deleted: the folder goes as in git
    assert _on_disk(plain, b"plain.txt")[0] == "100755" and os.readlink(plain / "link-in") == "run.sh"
    assert Path(os.fsdecode(os.fsencode(plain) + b"/" + CAFE)).read_bytes() == b"accent\nchanged\n"
    after = fingerprint(plain)
    untouched = {p for p in users if not any(p == c or c.startswith(p + b"/") for c in changed)} - {b"."}
    assert {p: after[p] for p in untouched} == {p: users[p] for p in untouched}  # pipe, links out, ignored, k.txt
    assert (plain / "keep" / "k.txt").read_text() == "the user's own change\n"
    folders_made = {c.rsplit(b"/", depth)[0] for c in changed for depth in range(1, c.count(b"/") + 1)}
    assert set(after) - set(users) <= changed | folders_made

    again = _command("apply", session_dir, script_env)
    assert again.returncode == 0 and "already applied" in again.stdout
    assert fingerprint(plain) == after

    discarded = _command("discard", session_dir, script_env)
    assert discarded.returncode == 0, discarded.stderr
    assert "the folder is left as it is" in discarded.stdout
    assert not store.exists() and not (session_dir / "checkouts").exists()
    assert fingerprint(plain) == after
    sessions = _orchestrate(["sessions", "--workspace", str(session_dir.parent)], script_env)
    assert "(discarded)" in sessions.stdout


def test_a_repository_without_a_commit_is_imported_and_its_git_folder_never_written(
    tmp_path: Path,
    demo_env: dict[str, str],
    bwrap: str,  # noqa: F811
) -> None:
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("first\n")
    (repo / "secret.env").write_text("TOKEN=x\n")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("secret.env\n")
    git(repo, "add", "a.txt")  # an index, and still no commit
    before, git_before = fingerprint(repo), git_folder_bytes(repo)
    done, session_dir = _session(repo, tmp_path, demo_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{repo} is a git repository without a commit" in done.stderr
    assert fingerprint(repo) == before and git_folder_bytes(repo) == git_before
    base = _tree(session_store(session_dir), _record(session_dir)["base"])
    assert set(base) == {b"a.txt"}  # its info/exclude honoured; nothing of .git

    applied = _command("apply", session_dir, demo_env)
    assert applied.returncode == 0, applied.stderr
    assert (repo / "docs" / "DESIGN.md").is_file() and (repo / "app" / "health_endpoint.py").is_file()
    assert git_folder_bytes(repo) == git_before  # apply writes files, never the user's .git
    no_commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", "HEAD"], capture_output=True)
    assert no_commit.returncode == 1


def test_in_place_through_the_launcher_writes_into_the_target_and_says_so(
    tmp_path: Path,
    demo_env: dict[str, str],
    bwrap: str,  # noqa: F811 - the fixture
) -> None:
    target = tmp_path / "plain"
    target.mkdir()
    ws = tmp_path / "ws"
    # No reviews: in the sandbox /tmp is private, and an in-place reviewer has no checkout to
    # run in (test_hostile_trees covers in place under the sandbox with a target elsewhere).
    args = [TASK, "--demo", "--target", str(target), "--no-dashboard", "--workspace", str(ws), "--in-place"]
    done = _orchestrate([*args, "--config", str(_config(tmp_path))], demo_env)
    assert done.returncode == 0, done.stderr[-3000:]
    loud = f"IN PLACE: the agents write straight into {target}"
    assert f"warning: {loud}" in done.stderr and loud in done.stdout
    assert (target / "docs" / "DESIGN.md").is_file() and not (target / ".git").exists()
    (session_dir,) = _session_dirs(ws)
    assert not (session_dir / "workspace.json").exists()
    assert loud in (session_dir / "orchestrator.log").read_text()  # the log says it too


def test_a_folder_too_big_to_import_or_a_bare_repository_is_refused_before_a_session_folder_is_made(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    big = tmp_path / "big"
    big.mkdir()
    with (big / "data.bin").open("wb") as sparse:
        sparse.truncate(3 * 2**30)  # 3 GiB on paper, no disk used
    ws = tmp_path / "ws"
    done = _orchestrate([TASK, "--demo", "--target", str(big), "--no-dashboard", "--workspace", str(ws)], demo_env)
    assert done.returncode == 2, done.stderr
    assert "too much to import" in done.stderr and ".gitignore" in done.stderr and "--in-place" in done.stderr
    assert "Traceback" not in done.stderr and not _session_dirs(ws)

    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    done = _orchestrate([TASK, "--demo", "--target", str(bare), "--no-dashboard", "--workspace", str(ws)], demo_env)
    assert done.returncode == 2 and "bare repository" in done.stderr and "worktree add" in done.stderr
    assert not _session_dirs(ws)


def test_the_import_leaves_out_the_workspace_inside_and_keeps_bytes_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / ".gitattributes").write_text("* text eol=crlf\n*.txt filter=nothing-runs\n")
    (folder / "crlf.txt").write_bytes(b"one\r\ntwo\n")
    os.mkfifo(os.fsencode(folder) + b"/p\xff")  # a FIFO whose name is not UTF-8: named, printable
    (folder / "nested").mkdir()
    git(folder / "nested", "init", "-q")  # a repository of its own inside: named and left out
    (folder / "nested" / "n.txt").write_text("theirs\n")
    workspace = folder / "ws"
    session_dir = private_dir(private_dir(workspace) / "s1")
    assert check_folder(folder, workspace).workspace == "ws"
    opened = import_folder(folder, session_dir, "s1")
    assert opened.repo is not None and "left out: the session workspace ws" in opened.message
    assert "special files (FIFOs, sockets, devices): p\\xff" in opened.message
    assert "left out, nested git repositories (run a session on each): nested" in opened.message
    opened.message.encode("utf-8")  # no lone surrogate: it can be printed and logged
    store = session_store(session_dir)
    base = _tree(store, opened.repo.base)
    assert set(base) == {b".gitattributes", b"crlf.txt"} and base[b"crlf.txt"][1] == b"one\r\ntwo\n"  # byte for byte
    checkout = opened.repo.checkout("a1")
    assert (checkout.path / "crlf.txt").read_bytes() == b"one\r\ntwo\n"
    assert (checkout.git_dir / "info" / "attributes").read_bytes() == BYTE_FOR_BYTE
    resumed = open_session_repo(folder, session_dir, "s1")  # a resume: the same base, no alternates
    assert resumed.repo is not None and resumed.repo.base == opened.repo.base and resumed.repo.record.kind == "folder"
    assert not (store / "objects" / "info" / "alternates").exists()
    with pytest.raises(ImportRefused, match="more than 1 files or 0 MiB"):
        check_folder(folder, workspace, limits=(1, 10))


def test_apply_follows_no_link_a_folder_became(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "s.txt").write_text("base\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    session_dir = private_dir(private_dir(tmp_path / "ws") / "s1")
    repo = import_folder(folder, session_dir, "s1").repo
    assert repo is not None
    checkout = repo.checkout("a1")
    (checkout.path / "sub" / "s.txt").write_text("the agent's\n")
    (checkout.path / "sub" / "new.txt").write_text("new\n")
    assert repo.commit_assignment("a1", "claude", "edit") is not None
    assert repo.merge_assignment("a1").ok
    (folder / "sub" / "s.txt").rename(outside / "s.txt")
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to(outside)  # the user made the folder a link out
    with pytest.raises(ApplyRefused) as refused:
        apply_folder_session(session_dir, "s1")
    assert "sub/s.txt (sub is no folder now)" in str(refused.value) and "sub/new.txt" in str(refused.value)
    assert sorted(p.name for p in outside.iterdir()) == ["s.txt"] and (outside / "s.txt").read_text() == "base\n"
    (folder / "sub").unlink()
    (folder / "sub").mkdir()
    (outside / "s.txt").rename(folder / "sub" / "s.txt")
    result = apply_folder_session(session_dir, "s1")
    assert sorted(result.written) == ["sub/new.txt", "sub/s.txt"] and not result.already
    assert (folder / "sub" / "s.txt").read_text() == "the agent's\n"
    assert apply_folder_session(session_dir, "s1").already
