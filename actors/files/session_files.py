"""The files of a session: append-only event logs, the atomically replaced state.json.

workspace/<session_id>/
  state.json          session, assignments, decisions (atomic replace)
  <agent>.jsonl       one line per event, appended and flushed before it is published
  <agent>.stderr.log  the CLI's stderr, as it came
  overflow/           whole over-long stdout lines
  reviews/<id>/       request and each reviewer's answer
  orchestrator.log

Private: folders 0700, files 0600, created with ``O_EXCL``/``O_NOFOLLOW`` (``mkstemp`` and
rename for the replaced ones); a folder not owned by this user, or writable by others, is
refused; readers never follow a symlink out of the session folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


class SessionFileError(Exception):
    """A session file could not be written (disk full, read-only workspace...)."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def check_owned_dir(path: Path, what: str = "folder") -> os.stat_result:
    """A real directory (not a symlink) owned by this user and not writable by group or others.

    Raises:
        SessionFileError: it is none of these; the message says which and what to do.
    """
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise SessionFileError(f"{what} {path} cannot be used: {exc.strerror or exc}") from exc
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SessionFileError(f"{what} {path} is not a folder (a symlink or a file); refusing to use it")
    if info.st_uid != os.geteuid():
        raise SessionFileError(
            f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); another user could "
            "change what is in it, so it is refused: use a folder of your own"
        )
    if info.st_mode & 0o022:
        raise SessionFileError(
            f"{what} {path} is writable by {'group and others' if info.st_mode & 0o002 else 'its group'} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it: chmod go-w {path}, or use another folder"
        )
    return info


def private_dir(path: Path) -> Path:
    """Create a session folder 0700, or check an existing one (ours, not writable by others)
    and close it to group and others.

    Raises:
        SessionFileError: it cannot be created, or it is not ours to use.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SessionFileError(f"cannot create {path}: {exc.strerror or exc}") from exc
    info = check_owned_dir(path, "session folder")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)  # e.g. made 0755 by an older version
    return path


def open_private(path: Path, binary: bool = False, exclusive: bool = False) -> IO[Any]:
    """Open a session file for appending (``exclusive``: create it, it must not exist),
    0600, never through a symlink, and only a regular file of ours.

    Raises:
        OSError: ``ELOOP`` for a symlink, ``EEXIST`` for an exclusive one that exists,
            ``EPERM`` for a file that is not a regular file of ours.
    """
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | _CLOEXEC | (os.O_EXCL if exclusive else os.O_APPEND)
    fd = os.open(path, flags, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise PermissionError(1, "not a regular file of this user", str(path))
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab") if binary else os.fdopen(fd, "a", encoding="utf-8")


def open_in_session(session_dir: Path, path: Path) -> IO[bytes]:
    """Open a session file for reading; a path (or symlink) leading out of the folder is refused.

    Raises:
        OSError: the file is missing, a symlink, or outside ``session_dir``.
    """
    root = os.path.realpath(session_dir)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        raise PermissionError(1, f"outside the session folder {root}", str(path))
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    return os.fdopen(fd, "rb")


def new_session_id() -> str:
    """A sortable, readable id: date, time and a short random part."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@contextlib.contextmanager
def locked(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (made 0600 if absent: it sits among private files)."""
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so a reader sees the old or the new file, never half.

    Raises:
        SessionFileError: the file could not be written.
    """
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a file name git gave as bytes (surrogateescape): as \udcXX escapes
        text = json.dumps(data, indent=2).encode("ascii")
    try:
        write_bytes_atomic(path, text)
    except OSError as exc:
        raise SessionFileError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` through a temporary file (made 0600) and a rename, with
    ``mode``: a reader, or a concurrent run, sees the old or the new file, never half.

    Raises:
        OSError: the file could not be written.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode != 0o600:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """Load a JSON file of the session (never through a symlink)."""
    with open_in_session(path.parent, path) as f:
        return json.loads(f.read().decode("utf-8"))


def last_seq(path: Path) -> int:
    """The ``seq`` of the last whole record in a .jsonl file (0 when none), read from its tail."""
    try:
        with open_in_session(path.parent, path) as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block = min(size, 1 << 20)
            while True:
                f.seek(size - block)
                tail = f.read(block)
                lines = tail.split(b"\n")
                # Whole lines only: a torn last line (no newline) is skipped.
                complete = lines[:-1] if block == size else lines[1:-1]
                for raw in reversed(complete):
                    try:
                        return int(json.loads(raw)["seq"])
                    except (ValueError, KeyError, TypeError):
                        continue
                if block == size:
                    return 0
                block = min(size, block * 4)
    except FileNotFoundError:
        return 0


class JsonlWriter:
    """Appends one JSON object per line and flushes it, continuing the ``seq`` of an old file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._heal_torn_tail()
        self.seq = last_seq(path)
        try:
            self._file = open_private(path)
        except OSError as exc:
            raise SessionFileError(f"cannot open {path}: {exc.strerror or exc}") from exc

    def _heal_torn_tail(self) -> None:
        # A crash can leave half a line; end it so the next record starts on a line of its own.
        try:
            with os.fdopen(os.open(self.path, os.O_RDWR | _NOFOLLOW | _CLOEXEC), "rb+") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                    f.write(b"\n")
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SessionFileError(f"cannot repair {self.path}: {exc.strerror or exc}") from exc

    def write_batch(self, lines: list[str], last_seq: int | None) -> None:
        """Write serialised records in one call and flush them.

        Raises:
            SessionFileError: the write or the flush failed; ``seq`` is left unchanged.
        """
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except OSError as exc:
            raise SessionFileError(f"cannot append to {self.path}: {exc.strerror or exc}") from exc
        self.seq = last_seq if last_seq is not None else self.seq + len(lines)

    def close(self) -> None:
        """Close the file (errors are logged: the data was flushed already)."""
        try:
            self._file.close()
        except OSError as exc:
            log.warning("closing %s: %s", self.path, exc)


class RotatingJsonl:
    """A bounded window of JSON lines: after ``max_lines`` the file becomes ``<name>.1.jsonl``
    (replacing the older one) and a new one starts. Errors are logged: a sample less on disk
    must not stop whoever writes it."""

    def __init__(self, session_dir: Path, name: str, max_lines: int) -> None:
        self.path = session_dir / f"{name}.jsonl"
        self._older = session_dir / f"{name}.1.jsonl"
        self._max_lines = max_lines
        try:
            with open_in_session(session_dir, self.path) as existing:
                self._lines = sum(1 for _ in existing)
        except FileNotFoundError:
            self._lines = 0
        self._file: IO[str] | None = open_private(self.path)

    def append(self, record: Any) -> None:
        if self._file is None:
            return
        try:
            if self._lines >= self._max_lines:
                self._file.close()
                os.replace(self.path, self._older)
                self._file = open_private(self.path)
                self._lines = 0
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
            self._lines += 1
        except OSError as exc:
            log.error("cannot write %s: %s", self.path.name, exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class JsonlReadResult:
    """Records read from a .jsonl file, and whether a torn last line was skipped."""

    records: list[dict[str, Any]]
    torn_tail: bool = False
    bad_lines: int = 0


def read_jsonl(path: Path, since_seq: int = 0, limit: int | None = None) -> JsonlReadResult:
    """Read records with ``seq > since_seq``; a torn last line is skipped and reported."""
    result = JsonlReadResult(records=[])
    try:
        f = open_in_session(path.parent, path)
    except FileNotFoundError:
        return result
    with f:
        for raw in f:
            if not raw.endswith(b"\n"):
                result.torn_tail = True
                break
            try:
                rec = json.loads(raw)
            except ValueError:
                result.bad_lines += 1
                continue
            if rec.get("seq", 0) <= since_seq:
                continue
            result.records.append(rec)
            if limit is not None and len(result.records) >= limit:
                break
    return result


def event_files(session_dir: Path, agent: str) -> list[Path]:
    """``agent``'s event files: ``<agent>.jsonl`` (its first run slot, and every run before
    ``max_parallel``), then ``<agent>#2.jsonl`` and on, one per parallel run slot, in slot order."""
    slots = [p for p in session_dir.glob(f"{agent}#*.jsonl") if p.stem.partition("#")[2].isdigit()]
    return [session_dir / f"{agent}.jsonl", *sorted(slots, key=lambda p: int(p.stem.partition("#")[2]))]


def iter_sessions(workspace: Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """Each session folder in the workspace (newest first) with its state, or None if unreadable."""
    if not workspace.is_dir():
        return
    for folder in sorted((p for p in workspace.iterdir() if p.is_dir()), reverse=True):
        state_path = folder / "state.json"
        if not state_path.exists():
            continue
        try:
            yield folder, read_json(state_path)
        except (OSError, ValueError):
            yield folder, None
