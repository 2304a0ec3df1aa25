"""The files of a session: append-only event logs, the atomically replaced state.json.

workspace/<session_id>/
  state.json          session, assignments, decisions (atomic replace)
  <agent>.jsonl       one line per event, appended and flushed before it is published
  <agent>.stderr.log  the CLI's stderr, as it came
  overflow/           whole over-long stdout lines
  reviews/<id>/       request and each reviewer's answer
  orchestrator.log
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SessionFileError(Exception):
    """A session file could not be written (disk full, read-only workspace...)."""


def new_session_id() -> str:
    """A sortable, readable id: date, time and a short random part."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON so a reader sees the old or the new file, never half.

    Raises:
        SessionFileError: the file could not be written.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise SessionFileError(f"cannot write {path}: {exc.strerror or exc}") from exc


def read_json(path: Path) -> Any:
    """Load a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def last_seq(path: Path) -> int:
    """The ``seq`` of the last whole record in a .jsonl file (0 when none), read from its tail."""
    try:
        with open(path, "rb") as f:
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
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for appends; close() ends it
        except OSError as exc:
            raise SessionFileError(f"cannot open {path}: {exc.strerror or exc}") from exc

    def _heal_torn_tail(self) -> None:
        # A crash can leave half a line; end it so the next record starts on a line of its own.
        try:
            with open(self.path, "rb+") as f:
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
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below; only the open may be missing
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
