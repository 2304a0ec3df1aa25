"""Random access to one ``<agent>.jsonl``: the last records, or a seek by seq or by time.

A session that recorded a million events must open at once and replay must seek without
reading the file from its start. Within one file ``seq`` rises by one per record and the
timestamps never go back, so a bisection over byte offsets finds any record in about
forty reads of one line each, with no index to build or to keep in step with the writer.

Only whole lines count: a last line without its newline is still being written (or was torn
by a crash) and is left for a later read. An unreadable line is skipped and counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.files.session_files import open_in_session

TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Window:
    """Records read from ``start``; ``end`` is where the next read goes on."""

    records: list[dict[str, Any]]
    start: int
    end: int
    bad_lines: int = 0
    ends: tuple[int, ...] = ()  # where each record's line ends (with read_from)


def parse_time(text: str) -> datetime:
    """An event's ISO 8601 timestamp (``...Z`` or with an offset) as an aware datetime.

    Raises:
        ValueError: not such a timestamp.
    """
    return datetime.fromisoformat(text)


class EventLog:
    """One agent's event file, opened for reading; the file may grow while it is open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # As every reader of session files: no symlink, nothing outside the session's folder.
        self._file = open_in_session(path.parent, path)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def size(self) -> int:
        return os.fstat(self._file.fileno()).st_size

    # --- whole lines ---------------------------------------------------------------------------

    def _line_from(self, offset: int) -> tuple[int, bytes] | None:
        """The first whole line that starts at or after ``offset``: (its start, its bytes)."""
        f = self._file
        if offset > 0:
            f.seek(offset - 1)
            f.readline()  # the rest of the line that holds offset - 1
        else:
            f.seek(0)
        start = f.tell()
        line = f.readline()
        if not line.endswith(b"\n"):
            return None
        return start, line

    def read_from(self, offset: int, limit: int, stop_at: int | None = None) -> Window:
        """Up to ``limit`` records from the line that starts at ``offset`` (a line start),
        ending before ``stop_at`` when it is given (a line start too)."""
        f = self._file
        f.seek(offset)
        records: list[dict[str, Any]] = []
        ends: list[int] = []
        bad = 0
        end = offset
        while len(records) < limit and (stop_at is None or end < stop_at):
            line = f.readline()
            if not line.endswith(b"\n"):
                break
            end += len(line)
            record = _decode(line)
            if record is None:
                bad += 1
            else:
                records.append(record)
                ends.append(end)
        return Window(records=records, start=offset, end=end, bad_lines=bad, ends=tuple(ends))

    def tail(self, limit: int) -> Window:
        """The last ``limit`` whole records."""
        return self.read_before(self.size(), limit)

    def read_before(self, offset: int, limit: int) -> Window:
        """The last ``limit`` whole records that end at or before ``offset``, read backwards in
        blocks (a line cut by ``offset`` is not one of them)."""
        f = self._file
        size = min(offset, self.size())
        block = min(size, TAIL_BLOCK)
        while True:
            f.seek(size - block)
            data = f.read(block)
            cut = data.rfind(b"\n") + 1  # a torn last line is not a record yet
            lines = data[:cut].split(b"\n")[:-1]
            if block < size:
                lines = lines[1:]  # the first may have begun before the block
            end = size - block + cut
            picked: list[tuple[int, dict[str, Any]]] = []  # (end of its line, record), newest first
            bad, at = 0, end
            for line in reversed(lines):
                if len(picked) == limit:
                    break
                record = _decode(line)
                if record is None:
                    bad += 1
                else:
                    picked.append((at, record))
                at -= len(line) + 1
            if len(picked) == limit or block == size:
                picked.reverse()
                return Window(
                    records=[r for _, r in picked], start=at, end=end, bad_lines=bad, ends=tuple(e for e, _ in picked)
                )
            block = min(size, block * 4)

    # --- seeking ----------------------------------------------------------------------------------

    def _record_from(self, offset: int) -> tuple[int, int, dict[str, Any]] | None:
        """The first readable record on a whole line at or after ``offset``: (start, end, it)."""
        found = self._line_from(offset)
        while found is not None:
            start, line = found
            record = _decode(line)
            if record is not None:
                return start, start + len(line), record
            found = self._line_from(start + len(line))
        return None

    def _bisect(self, below: Callable[[dict[str, Any]], bool]) -> int:
        """The start of the first record that is not ``below`` the target (the end of the whole
        lines when every record is). Unreadable lines are passed over, as readers skip them."""
        lo, hi = 0, self.size()
        while lo < hi:
            mid = (lo + hi) // 2
            found = self._record_from(mid)
            if found is None:
                hi = mid
            elif below(found[2]):
                lo = found[1]
            else:
                hi = mid
        found = self._record_from(lo)
        return found[0] if found is not None else self.tail(0).end

    def offset_of_seq(self, seq: int) -> int:
        """Where the first record with ``seq`` >= the given one starts."""
        return self._bisect(lambda record: _seq(record) < seq)

    def offset_of_time(self, moment: datetime) -> int:
        """Where the first record stamped at or after ``moment`` starts."""
        return self._bisect(lambda record: record_time(record) < moment)

    def offset_of_time_after(self, moment: datetime) -> int:
        """Where the first record stamped after ``moment`` starts."""
        return self._bisect(lambda record: record_time(record) <= moment)


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _seq(record: dict[str, Any]) -> int:
    value = record.get("seq")
    return value if isinstance(value, int) else 0


def record_time(record: dict[str, Any]) -> datetime:
    """A record's ``timestamp``; an unstamped or unreadable one sorts first."""
    try:
        return parse_time(str(record.get("timestamp", "")))
    except ValueError:
        return _EPOCH  # an unstamped record sorts first


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
