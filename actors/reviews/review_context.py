"""What a peer review is shown: the task, the assignment, the author's recent events, the change.

With a git workspace the change is the assignment's own (``workspace_change``): its commits
against its own base, or, while it still runs, its checkout's working tree against that base;
nothing of the user's uncommitted files or of other assignments. Without one (the agents work
in the target itself) it is the files the author touched, read only when they are regular
files inside the target, never through a link; no git runs in a folder the agents write
(a repository or a ``.git/config`` of theirs would run its commands). Either is cut at
``diff_chars``.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.review import ReviewTrigger
from meta_orchestrator.messages.session import AssignmentRecord

FILE_CHARS = 6000
FILE_BYTES = 4 * FILE_CHARS  # read of a file an agent named, at most (UTF-8: up to 4 bytes a character)
FINAL_TEXT_CHARS = 6000
EVENT_CHARS = 300


class Evidence:
    """What the authors did, per assignment: their latest events that say something (not
    status lines) and the files their milestones name."""

    def __init__(self, keep: int) -> None:
        self._keep = max(keep, 1)
        self._recent: dict[tuple[str, str], collections.deque[Event]] = {}
        self._touched: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, event: Event) -> None:
        """Keep an event of an assignment (``event.assignment_id`` is set)."""
        assert event.assignment_id is not None
        if event.type != "status":
            key = (event.agent, event.assignment_id)
            self._recent.setdefault(key, collections.deque(maxlen=self._keep)).append(event)
        if event.payload.file and event.type == "milestone":
            self._touched[event.assignment_id].append(event.payload.file)

    def recent(self, author: str | None, assignment_id: str | None, count: int) -> list[Event]:
        if author is None or assignment_id is None:
            return []
        return list(self._recent.get((author, assignment_id), ()))[-count:]

    def touched(self, assignment_id: str | None) -> list[str]:
        return list(self._touched.get(assignment_id or "", ()))


def review_context(
    task: str,
    triggers: Sequence[ReviewTrigger],
    record: AssignmentRecord | None,
    recent: Iterable[Event],
    touched: Sequence[str],
    target: Path,
    diff_chars: int,
    change: dict[str, Any] | None = None,
    private: Sequence[Path] = (),
) -> dict[str, Any]:
    """The context saved in ``request.json`` and rendered into the reviewers' prompt;
    ``change`` given (``workspace_change``), else read from the target (never a file in
    ``private``: the workspace, which may lie inside the target)."""
    files = [*(record.files_written if record else ()), *touched]
    return {
        "task": task,
        "triggers": [t.model_dump(mode="json") for t in triggers],
        "assignment": _assignment(record) if record is not None else None,
        "recent_events": _events(recent),
        "change": change if change is not None else change_in(target, files, diff_chars, private),
    }


def workspace_change(repo: SessionRepo, record: AssignmentRecord | None, limit: int) -> dict[str, Any]:
    """The change a review quotes, with ``commit``: what its peers read (None: it cannot be read).

    An assignment not finished (still running, or its work not merged) is shown as its
    checkout's working tree now, committed aside; a finished one as its commits against its
    own base; a review of no assignment as the session branch against the session's base.
    """
    try:
        if record is None:
            changes = repo.session_changes(max_total_bytes=limit + 1)
            text = "\n".join(d.text for d in changes.diffs)
            how = f"the session branch {repo.branch} against its base {repo.base[:10]}"
            return _change(how, text, limit, changes.tip)
        checkout = repo.record.checkouts.get(record.id)
        if checkout is None or checkout.kind != "assignment":
            return _change(f"{record.id} has no checkout: it changed nothing yet", "", limit, repo.tip())
        if record.phase not in ("gated", "done") and checkout.present:
            commit, text = repo.working_tree_commit(record.id)
            how = f"the working tree of {record.id}'s checkout against its base {checkout.base[:10]} (not merged yet)"
            return _change(how, text, limit, commit)
        how = f"the commits of {record.id} against its own base {checkout.base[:10]}"
        return _change(how, repo.assignment_diff(record.id), limit, checkout.head or checkout.base)
    except WorkspaceError as exc:
        return _change(f"the change could not be read: {exc}", "", limit, None)


def _change(how: str, text: str, limit: int, commit: str | None) -> dict[str, Any]:
    return {"how": how, "text": _cut(text or "(no change)", limit), "commit": commit}


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + (
        f"\n[... cut at {limit} of {len(text)} characters (review.diff_chars); read the files for the rest]"
    )


def _assignment(record: AssignmentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "role": record.role,
        "agent": record.agent,
        "title": record.title,
        "instructions": record.instructions,
        "status": record.status,
        "final_text": record.final_text[-FINAL_TEXT_CHARS:],
        "files_written": list(record.files_written),
    }


def _events(recent: Iterable[Event]) -> list[dict[str, Any]]:
    shown = []
    for event in recent:
        text = (event.payload.text or "").strip().replace("\n", " ")
        if text:
            shown.append({"seq": event.seq, "type": event.type, "text": text[:EVENT_CHARS]})
    return shown


def change_in(target: Path, files: Sequence[str], limit: int, private: Sequence[Path] = ()) -> dict[str, Any]:
    """The change in the target worked in place: the files the author touched, each read only
    as ``read_own_file`` allows. No git runs here: the agents write this folder, its ``.git``
    included (a repository one of them made, or a config it changed, would run its commands
    as the user)."""
    parts = [file_excerpt(f, target, private) for f in dict.fromkeys(files)]
    how = "the files the author touched (the agents work in the target itself: no git is run there)"
    return {"how": how, "text": _cut("\n\n".join(p for p in parts if p), limit)}


class NotRead(Exception):
    """A file an agent named that the review does not read; ``str()`` says why."""


def read_own_file(root: Path, name: str, limit: int, private: Sequence[Path] = ()) -> tuple[bytes, int]:
    """The first ``limit`` bytes of the file an agent named (absolute, or relative to ``root``,
    the run's own folder) and its size, read only when it is a regular file inside ``root``:
    each component opened without following a link, the file without blocking (a FIFO must
    not hang the review) and checked by ``fstat`` before a byte is read. Nothing in a
    ``private`` folder (the workspace) is read, even inside ``root``.

    Raises:
        NotRead: outside ``root`` or in ``private``, through a link, no regular file, or unreadable.
    """
    parts = _parts_inside(root, name)
    real = Path(os.path.realpath(root), *parts)  # where it is: no link below root is followed
    if any(real.is_relative_to(os.path.realpath(folder)) for folder in private):
        raise NotRead("in the session's own files: not read")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(os.path.realpath(root), flags | os.O_DIRECTORY)
    except OSError as exc:
        raise NotRead(f"its folder cannot be opened ({exc.strerror})") from None
    for part in parts[:-1]:
        fd = _open_below(fd, part, flags | os.O_DIRECTORY)
    fd = _open_below(fd, parts[-1], flags | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRead("not a regular file (a folder, FIFO, socket or device): not read")
        return _read_up_to(fd, limit), info.st_size
    finally:
        os.close(fd)


def _parts_inside(root: Path, name: str) -> list[str]:
    """``name``'s components below ``root``; NotRead when it points anywhere else."""
    path = Path(os.path.normpath(name if os.path.isabs(name) else os.path.join(root, name)))
    for base in dict.fromkeys((Path(os.path.normpath(root)), Path(os.path.realpath(root)))):
        if path.is_relative_to(base) and path != base:
            return list(path.relative_to(base).parts)
    raise NotRead("outside the run's own folder: not read")


def _open_below(folder: int, part: str, flags: int) -> int:
    """``part`` opened in the folder ``folder``, which is closed whatever happens."""
    try:
        return os.open(part, flags, dir_fd=folder)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotRead("a symbolic link (or through one): not followed") from None
        raise NotRead(f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(folder)


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(1 << 16, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def file_excerpt(name: str, target: Path, private: Sequence[Path] = ()) -> str:
    """A file an agent named, as the reviewers see it: its name, then its text (cut), or why it
    is not shown (``read_own_file``: only regular files inside ``target``)."""
    shown = name
    with contextlib.suppress(ValueError):
        shown = str(Path(name).relative_to(target)) if os.path.isabs(name) else name
    try:
        data, size = read_own_file(target, name, FILE_BYTES, private)
    except NotRead as exc:
        return f"--- {shown}: {exc}"
    if b"\0" in data[:8192]:
        return f"--- {shown}: binary file ({size} bytes), not shown"
    text = data.decode("utf-8", errors="replace")
    if len(text) > FILE_CHARS or size > len(data):
        text = text[:FILE_CHARS] + f"\n[... cut: the file has {size} bytes]"
    return f"--- {shown}\n{text}"


__all__ = ["Evidence", "NotRead", "change_in", "file_excerpt", "read_own_file", "review_context", "workspace_change"]
