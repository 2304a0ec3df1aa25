"""A recorded session as one timeline: its history facts and its agents' events, by time.

Replay reads the session's files only: ``history.jsonl`` (every fact the views heard, see
``actors/history/history.py``) and ``<agent>.jsonl``. A seek to a moment gives every history fact up
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

import importlib
import json

from meta_orchestrator.actors.history.event_log import EventLog, record_time
from meta_orchestrator.actors.files.session_files import event_files
from meta_orchestrator.messages.base import Message, worker_name
from meta_orchestrator.messages.frames import EventData, SnapshotData, encode_frame, frame_for
from meta_orchestrator.messages.session import SessionStateChanged
from meta_orchestrator.messages.session_delta import SessionStateDelta, apply_session_delta
from meta_orchestrator.messages.worker import WorkerStateChanged

HISTORY = "history"
HISTORY_FILE = "history.jsonl"


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


def _merge(reads: dict[str, tuple[list[dict[str, Any]], tuple[int, ...]]]) -> list[tuple[Item, int]]:
    """Items of every source in time order (ties: history first, then by source), each with the
    offset its source reaches once it is taken."""
    order = {name: rank for rank, name in enumerate(sorted(reads, key=lambda n: (n != HISTORY, n)))}
    streams = (
        [
            ((record_time(r), order[name], i), Item(name, record_time(r), r), end)
            for i, (r, end) in enumerate(zip(recs, ends, strict=True))
        ]
        for name, (recs, ends) in reads.items()
    )
    return [(item, end) for _key, item, end in heapq.merge(*streams, key=lambda entry: entry[0])]


class Timeline:
    """One session folder, read as a timeline. The files may still grow (a running session)."""

    def __init__(self, session_dir: Path, agents: Iterable[str]) -> None:
        self._logs: dict[str, EventLog] = {}
        agents = tuple(agents)
        # Each agent's events, and its parallel runs' (claude#2.jsonl) beside them.
        runs = [(path.stem, path) for a in agents for path in event_files(session_dir, a)]
        sources = [(HISTORY, session_dir / HISTORY_FILE), *runs]
        # Peer reviews run in workers of their own, recorded under reviews/<id>/<agent>.jsonl;
        # the dashboard was told their events too.
        for folder in sorted((session_dir / "reviews").glob("*/")):
            if not folder.is_symlink():
                sources += [(f"{folder.name}/{a}", folder / f"{a}.jsonl") for a in agents]
        for name, path in sources:
            if path.is_file() and not path.is_symlink():
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
            firsts += [record_time(r) for r in head]
            lasts += [record_time(r) for r in tail]
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


# --- frames: what the dashboard was sent, rebuilt from the timeline ----------------------------


def _fact_classes() -> dict[str, type[Message]]:
    """Every message class by name (the history names each fact's class)."""

    for module in (
        "events",
        "gateway",
        "recovery",
        "resources",
        "review",
        "sandbox",
        "session",
        "session_delta",
        "supervision",
        "worker",
        "workspace",
    ):
        importlib.import_module(f"meta_orchestrator.messages.{module}")
    found: dict[str, type[Message]] = {}
    todo = [Message]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.setdefault(sub.__name__, sub)
            todo.append(sub)
    return found


_FACTS: dict[str, type[Message]] | None = None


def fact_of(record: dict[str, Any]) -> Any | None:
    """The fact a history line recorded, as its message, or None if this version cannot read it."""
    global _FACTS
    if _FACTS is None:
        _FACTS = _fact_classes()
    cls = _FACTS.get(str(record.get("fact")))
    if cls is None:
        return None
    try:
        return cls.model_validate(record.get("data"))
    except ValueError:
        return None


def frame_data(item: Item) -> tuple[str, str] | None:
    """(frame type, data as JSON) for an item, exactly as the gateway builds it live."""

    if item.source != HISTORY:
        try:
            return "event", EventData.model_validate(item.record).model_dump_json(exclude_none=True)
        except ValueError:
            return None
    fact = fact_of(item.record)
    if isinstance(fact, SessionStateChanged):
        return "session", fact.snapshot.model_dump_json()
    if isinstance(fact, SessionStateDelta):
        return "session_delta", fact.delta.model_dump_json()
    if isinstance(fact, WorkerStateChanged):
        return "worker", fact.snapshot.model_dump_json()
    found = frame_for(fact) if fact is not None else None
    if found is None:
        return None
    return found[0], found[1].model_dump_json()


def snapshot_at(
    timeline: Timeline, moment: datetime, started_at: datetime, events_kept: int = 500, facts_kept: int = 600
) -> tuple[str, Page, int]:
    """The ``snapshot`` frame a browser would have been sent at ``moment``, and the page it
    came from (its cursor goes on from there). It keeps what the gateway keeps live (its
    ``events_kept`` latest events, ``facts_kept`` frames of each other kind); its seq counts
    the facts and events up to ``moment``, returned third."""

    page = timeline.seek(moment, events_kept)
    state: dict[str, Any] = {"session": None, "ended": None}
    changes = "null"  # the latest changes frame's data, spliced in as built
    workers: dict[str, Any] = {}
    events: list[str] = []
    recent: dict[str, list[tuple[int, str]]] = {}
    events_seen = 0
    seq = 0
    for item in page.items:
        built = frame_data(item)
        if item.source == HISTORY:
            seq += 1
        if built is None:
            continue
        kind, data = built
        if kind == "event":
            events.append(data)
            continue
        if kind == "session":
            state["session"] = json.loads(data)
        elif kind == "session_delta":
            if state["session"] is not None:  # a history starts whole: a delta always follows one
                state["session"] = apply_session_delta(state["session"], json.loads(data))
        elif kind == "worker":
            worker = json.loads(data)  # one per run: claude, claude#2 (its slot)
            workers[worker_name(worker["agent"], worker.get("slot") or 1)] = worker
        elif kind == "session_ended":
            state["ended"] = json.loads(data)
        elif kind == "changes":
            changes = data
        else:
            kept = recent.setdefault(kind, [])
            kept.append((seq, encode_frame(kind, seq, data)))
            del kept[:-facts_kept]
    last_seqs = {i.source: i.record.get("seq", 0) for i in page.items if i.source != HISTORY}
    events_seen = sum(int(v) for v in last_seqs.values() if isinstance(v, int))
    seq += events_seen
    head = SnapshotData(
        epoch="replay",
        seq=seq,
        server_time=moment,
        started_at=started_at,
        session=state["session"],
        workers=tuple(workers[a] for a in sorted(workers)),
        ended=state["ended"],
        events_seen=events_seen,
    ).model_dump_json()
    tail = ',"changes":null,"events":[],"recent":[]}'
    assert head.endswith(tail), "changes, events and recent are the last fields of SnapshotData"
    facts = ",".join(frame for _, frame in sorted(f for kept in recent.values() for f in kept))
    kept_events = ",".join(events[-events_kept:])
    data = f'{head[: -len(tail)]},"changes":{changes},"events":[{kept_events}],"recent":[{facts}]}}'
    return encode_frame("snapshot", seq, data), page, seq
