"""``orchestrate apply`` of a folder's session (workspaces.folder_workspace): the files the session
changed (its branch against the imported base) are written into the folder.

Every path the session changed is checked first against the folder as it is now: it must
still hold what the base holds there (same kind, content and executable bit, or absent), or
already what the session's branch holds (a path applied before). Any other state is the
user's own change: apply is refused, naming those files, and writes nothing. Then each file
is written through a temporary file and a rename (a reader sees the old or the new file, never
half of one), symbolic links as links (their target text, as git stores them), deletions
last-to-first with the folders they leave empty. A folder holding exactly the branch's
state already is "already applied": nothing is written.

Nothing is followed through a symbolic link: a path whose folder in the user's tree is now a
link (or a file) is a conflict, unless the session itself deletes that link or file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from meta_orchestrator.actors.workspaces.folder_workspace import shown
from meta_orchestrator.actors.workspaces.git_command import DEFAULT_TIMEOUT_S, Git
from meta_orchestrator.actors.files.session_files import read_json, write_bytes_atomic, write_json_atomic
from meta_orchestrator.actors.workspaces.workspaces import RECORD_FILE, ApplyRefused, store_git
from meta_orchestrator.messages.workspace import FolderApplyResult, WorkspaceRecord

_ABSENT = "0" * 40
_CHUNK = 1 << 20
_NAMED = 20


class _Entry(NamedTuple):
    """A path's state as git stores it: mode ("100644", "100755", "120000") and blob id."""

    mode: str
    oid: str


class _Change(NamedTuple):
    path: str
    base: _Entry | None
    tip: _Entry | None


def _changes(git: Git, base: str, tip: str) -> list[_Change]:
    """Every path that differs between ``base`` and ``tip`` (no renames: a delete and an add)."""
    fields = git.run("diff-tree", "-r", "-z", "--no-renames", "--raw", "--no-abbrev", base, tip).fields
    found = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        old_mode, new_mode, old_oid, new_oid, _ = meta.lstrip(":").split(" ")
        found.append(
            _Change(
                path,
                None if old_oid == _ABSENT else _Entry(old_mode, old_oid),
                None if new_oid == _ABSENT else _Entry(new_mode, new_oid),
            )
        )
    return found


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _file_blob_id(path: str, size: int) -> str:
    digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with open(path, "rb") as read:  # noqa: PTH123 - a str path keeps undecodable bytes as they are
        for chunk in iter(lambda: read.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _current(folder: str, path: str) -> _Entry | str | None:
    """What ``path`` holds in the folder now: an entry, None (absent), or what else it is."""
    full = os.path.join(folder, path)
    try:
        info = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(info.st_mode):
        return _Entry("120000", _blob_id(os.fsencode(os.readlink(full))))
    if stat.S_ISREG(info.st_mode):
        mode = "100755" if info.st_mode & stat.S_IXUSR else "100644"
        return _Entry(mode, _file_blob_id(full, info.st_size))
    return "a folder" if stat.S_ISDIR(info.st_mode) else "a special file"


def _parents_blocked(folder: str, path: str, deleted: set[str]) -> str | None:
    """The folder above ``path`` that is now a link or a file (not one the session deletes)."""
    parts = path.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        above = "/".join(parts[:depth])
        try:
            info = os.lstat(os.path.join(folder, above))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISDIR(info.st_mode) and above not in deleted:
            return above
    return None


def _only_deleted_below(folder: str, path: str, deleted: set[str]) -> bool:
    """The folder at ``path`` holds nothing but files the session deletes (it goes with them)."""
    for root, dirs, files in os.walk(os.path.join(folder, path)):  # links are not followed
        rel = os.path.relpath(root, folder).replace(os.sep, "/")
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        if any(f"{rel}/{name}" not in deleted for name in (*files, *links)):
            return False
    return True


def _emptied(folder: str, change: _Change, now: _Entry | str | None, deleted: set[str]) -> bool:
    """A folder stands where the branch has a file, and the session deletes all it holds."""
    return now == "a folder" and change.tip is not None and _only_deleted_below(folder, change.path, deleted)


def _why(change: _Change, now: _Entry | str | None) -> str:
    if isinstance(now, str):
        return f"now {now}"
    if change.base is None:
        return "you made it too" if now is not None else "gone"
    if now is None:
        return "you deleted it"
    if now.oid == change.base.oid:
        return "you changed its mode"
    return "you changed it"


def _sort(folder: str, changes: list[_Change]) -> tuple[list[_Change], list[str], int]:
    """``(to write or delete, conflicts, already done)``."""
    deleted = {c.path for c in changes if c.tip is None}
    todo, conflicts, done = [], [], 0
    for change in changes:
        blocked = _parents_blocked(folder, change.path, deleted)
        now = _current(folder, change.path)
        if blocked is not None:
            conflicts.append(f"{shown(change.path)} ({shown(blocked)} is no folder now)")
        elif now == change.tip:
            done += 1
        elif now == change.base or _emptied(folder, change, now, deleted):
            todo.append(change)
        else:
            conflicts.append(f"{shown(change.path)} ({_why(change, now)})")
    return todo, conflicts, done


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _delete(folder: str, path: str) -> None:
    """Remove ``path`` and the folders it leaves empty (up to the folder itself)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, path))
    parts = path.split("/")[:-1]
    while parts:
        try:
            os.rmdir(os.path.join(folder, *parts))
        except OSError:  # not empty (or gone): the folders above stay too
            return
        parts.pop()


def _write(git: Git, folder: str, change: _Change, mask: int) -> None:
    """One file (or link) as the branch holds it, through a temporary one and a rename."""
    assert change.tip is not None
    full = os.path.join(folder, change.path)
    parent = os.path.dirname(full)
    os.makedirs(parent, exist_ok=True)
    data = git.run("cat-file", "blob", change.tip.oid).stdout
    if change.tip.mode == "120000":
        temporary = os.path.join(parent, f".{os.path.basename(full)}.orchestrate-{secrets.token_hex(4)}")
        os.symlink(os.fsdecode(data), temporary)
        os.replace(temporary, full)
        return
    executable = change.tip.mode == "100755"
    mode = (0o777 if executable else 0o666) & ~mask
    with contextlib.suppress(OSError):
        kept = os.lstat(full)  # a file that stays a file of the same kind keeps its permissions
        if stat.S_ISREG(kept.st_mode) and bool(kept.st_mode & stat.S_IXUSR) == executable:
            mode = stat.S_IMODE(kept.st_mode)
    if os.path.isdir(full) and not os.path.islink(full):
        os.rmdir(full)  # emptied by the deletions before
    write_bytes_atomic(Path(full), data, mode)


def _named(items: list[str]) -> str:
    return ", ".join(items[:_NAMED]) + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")


def apply_folder_session(
    session_dir: Path, session_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> FolderApplyResult:
    """Write the session's changed files into its folder (see the module's docstring).

    Raises:
        ApplyRefused: the user changed some of those files meanwhile, or the store or the
            folder is gone; nothing was written.
        WorkspaceError: git failed.
    """
    record = WorkspaceRecord.model_validate(read_json(session_dir / RECORD_FILE))
    folder, store = record.repository, Path(record.store or "")
    if record.discarded or not (store / "HEAD").is_file():
        raise ApplyRefused(f"session {session_id} was discarded: its store {store} is gone; nothing to apply")
    if not os.path.isdir(folder):
        raise ApplyRefused(
            f"{folder}, the folder the session was made from, is gone; nothing was written. Put it back "
            f"(or see the work with `git --git-dir {store} log -p {record.branch}`)"
        )
    git = store_git(store, timeout_s)
    found = git.run("rev-parse", "-q", "--verify", f"refs/heads/{record.branch}^{{commit}}", ok=(0, 1))
    if found.returncode == 1:
        raise ApplyRefused(f"there is no branch {record.branch} in {store}; nothing to apply")
    tip = found.text
    changes = _changes(git, record.base, tip)
    todo, conflicts, done = _sort(folder, changes)
    if conflicts:
        raise ApplyRefused(
            f"you changed, since the session started, files it changed too: {_named(conflicts)}; nothing was "
            f"written into {folder}. See the session's change with `git --git-dir {store} diff {record.base[:10]} "
            f"{record.branch} -- <file>`; move your version aside (or restore it), then apply again; or "
            f"`orchestrate discard {session_id}` to drop the session's work",
            tuple(c.split(" (")[0] for c in conflicts),
        )
    mask = _umask()
    for change in sorted((c for c in todo if c.tip is None), key=lambda c: c.path, reverse=True):
        _delete(folder, change.path)
    for change in sorted((c for c in todo if c.tip is not None), key=lambda c: c.path):
        _write(git, folder, change, mask)
    write_json_atomic(session_dir / RECORD_FILE, record.model_copy(update={"applied": tip}).model_dump(mode="json"))
    return FolderApplyResult(
        session_id=session_id,
        folder=folder,
        already=bool(changes) and not todo and done == len(changes),
        written=tuple(c.path for c in todo if c.tip is not None),
        deleted=tuple(c.path for c in todo if c.tip is None),
    )


__all__ = ["apply_folder_session"]
