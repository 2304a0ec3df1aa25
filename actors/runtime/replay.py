"""A recorded session as one timeline: its history facts and its agents' events, by time.

Replay reads the session's files only: ``history.jsonl`` (every fact the views heard, see
``actors/history.py``) and ``<agent>.jsonl``. A seek to a moment gives every history fact up
to it (the history is small: state changes, reviews, samples) and the last events of each
agent before it, which is what the page held then; from there the timeline is read on in
pages. A cursor is the byte offset reached in each file, so paging never repeats or skips
an item and costs no scan, however long the session.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.runtime.event_log import EventLog, parse_time

HISTORY = "history"
HISTORY_FILE = "history.jsonl"
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@dataclass(frozen=True)
class Item:
    """One thing that happened: a history fact (``source == "history"``) or an agent's event."""

    source: str
    timestamp: datetime
    record: dict[str, Any]


@dataclass(frozen=True)
class Page:
    items: list[Item]
    cursor: str
    more: bool


def _when(record: dict[str, Any]) -> datetime:
    try:
        return parse_time(str(record.get("timestamp", "")))
    except ValueError:
        return _EPOCH


def _merge(reads: dict[str, tuple[list[dict[str, Any]], tuple[int, ...]]]) -> list[tuple[Item, int]]:
    """Items of every source in time order (ties: history first, then by source), each with the
    offset its source reaches once it is taken."""
    order = {name: rank for rank, name in enumerate(sorted(reads, key=lambda n: (n != HISTORY, n)))}
    streams = (
        [((_when(r), order[name], i), Item(name, _when(r), r), end) for i, (r, end) in enumerate(zip(recs, ends))]
        for name, (recs, ends) in reads.items()
    )
    return [(item, end) for _key, item, end in heapq.merge(*streams, key=lambda entry: entry[0])]


class Timeline:
    """One session folder, read as a timeline. The files may still grow (a running session)."""

    def __init__(self, session_dir: Path, agents: Iterable[str]) -> None:
        self._logs: dict[str, EventLog] = {}
        for name, path in [(HISTORY, session_dir / HISTORY_FILE), *((a, session_dir / f"{a}.jsonl") for a in agents)]:
            if path.exists():
                self._logs[name] = EventLog(path)

    def close(self) -> None:
        for log in self._logs.values():
            log.close()

    def __enter__(self) -> Timeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._logs)

    def bounds(self) -> tuple[datetime, datetime] | None:
        """The first and the last moment recorded, or None for an empty session."""
        firsts, lasts = [], []
        for log in self._logs.values():
            head, tail = log.read_from(0, 1).records, log.tail(1).records
            firsts += [_when(r) for r in head]
            lasts += [_when(r) for r in tail]
        return (min(firsts), max(lasts)) if firsts else None

    def seek(self, moment: datetime, events_before: int = 200) -> Page:
        """Everything the page held at ``moment``: the history up to it, the last
        ``events_before`` events of each agent up to it; the cursor goes on from there."""
        reads: dict[str, tuple[list[dict[str, Any]], tuple[int, ...]]] = {}
        offsets: dict[str, int] = {}
        for name, log in self._logs.items():
            after = log.offset_of_time_after(moment)
            offsets[name] = after
            if name == HISTORY:
                window = log.read_from(0, 1 << 30, stop_at=after)
            else:
                window = log.read_before(after, events_before)
            reads[name] = (window.records, window.ends)
        items = [item for item, _end in _merge(reads)]
        return Page(items=items, cursor=format_cursor(offsets), more=self._more(offsets))

    def read(self, cursor: str, limit: int = 500) -> Page:
        """The next ``limit`` items after ``cursor`` (from ``seek`` or an earlier ``read``)."""
        offsets = {name: 0 for name in self._logs} | parse_cursor(cursor, self._logs)
        reads = {}
        for name, log in self._logs.items():
            window = log.read_from(offsets[name], limit)
            reads[name] = (window.records, window.ends)
        taken = _merge(reads)[:limit]
        for item, end in taken:
            offsets[item.source] = end
        return Page(items=[item for item, _ in taken], cursor=format_cursor(offsets), more=self._more(offsets))

    def _more(self, offsets: dict[str, int]) -> bool:
        return any(offsets[name] < log.size() for name, log in self._logs.items())


def format_cursor(offsets: dict[str, int]) -> str:
    return ",".join(f"{name}:{offset}" for name, offset in offsets.items())


def parse_cursor(cursor: str, sources: Iterable[str]) -> dict[str, int]:
    """``history:120,claude:4096`` back into offsets.

    Raises:
        ValueError: a part that is not ``<source>:<offset>`` of a known source.
    """
    known = set(sources)
    offsets: dict[str, int] = {}
    for part in filter(None, cursor.split(",")):
        name, sep, value = part.partition(":")
        if not sep or name not in known or not value.isdigit() or len(value) > 18:
            raise ValueError(f"a replay cursor is source:offset pairs, not {cursor[:80]!r}")
        offsets[name] = int(value)
    return offsets
