"""Reading a session's files for the dashboard: events page by page, and the reviews.

``read_events_page`` pages ``<agent>.jsonl`` (and ``<agent>#<slot>.jsonl``, an agent's parallel
runs: see ``session_files``) with a per-file cursor, so nothing is lost however long the
session runs; a last line still being written is left for the next page. ``read_reviews`` /
``read_review`` read ``reviews/<id>/*.json``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.files.session_files import event_files
from meta_orchestrator.messages.events import EVENT_TYPES
from meta_orchestrator.messages.frames import format_utc

logger = logging.getLogger(__name__)

MAX_SEQ_DIGITS = 15  # a seq is a line number of one file; more digits is not a cursor


_SEQ = re.compile(rb'"seq":\s*(\d+)')


def parse_cursor(since: str | None, runs: tuple[str, ...] | None = None) -> dict[str, int]:
    """``since`` is ``<n>`` (every file after seq n) or ``gemini:3,codex:0,claude:12,claude#2:4``;
    ``runs``: the event files' names (default: one per agent).

    Raises:
        ValueError: with a message saying what is wrong.
    """
    runs = runs or agent_names()
    cursor = dict.fromkeys(runs, 0)
    if since is None or since.strip() == "":
        return cursor
    text = since.strip()
    if len(text) > 2000:
        raise ValueError(f"since is too long ({len(text)} characters); pass the cursor of the last page")
    if text.isdigit():
        return {run: _seq(text) for run in runs}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        if not sep or name.strip() not in cursor or not value.strip().isdigit():
            example = ",".join(f"{agent}:{n}" for n, agent in enumerate(agent_names()[:2], start=3))
            raise ValueError(f"since must be a number or agent:seq pairs like '{example}', not {since!r}")
        cursor[name.strip()] = _seq(value.strip())
    return cursor


def _seq(digits: str) -> int:
    if len(digits) > MAX_SEQ_DIGITS or not digits.isascii():
        raise ValueError(f"since must be a sequence number of at most {MAX_SEQ_DIGITS} digits")
    return int(digits)


def format_cursor(cursor: dict[str, int]) -> str:
    """The inverse of ``parse_cursor``."""
    return ",".join(f"{run}:{seq}" for run, seq in cursor.items())


def _event_runs(session_dir: Path, agents: tuple[str, ...]) -> tuple[str, ...]:
    """The event files of ``agents`` by name: each agent's, then its parallel runs' (claude#2)."""
    return tuple(path.stem for agent in agents for path in event_files(session_dir, agent))


def _scan_agent(path: Path, since: int, event_type: str | None, limit: int) -> tuple[list[dict[str, Any]], int, bool]:
    """Complete records of one file with seq > since: (matching ones up to limit, last seq
    scanned, whether the file's complete lines were all scanned). A last line without its
    newline is being written: it is left for the next page."""
    found: list[dict[str, Any]] = []
    last = since
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return found, last, True
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn: the writer has not finished it
            match = _SEQ.search(line)
            if match is not None and int(match.group(1)) <= since:
                continue  # cheap skip without parsing the whole line
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("skipping an unreadable line in %s", path)
                continue
            seq = record.get("seq") if isinstance(record, dict) else None
            if not isinstance(seq, int) or seq <= since:
                continue
            if event_type is None or record.get("type") == event_type:
                if len(found) == limit:
                    return found, last, False
                found.append(record)
            last = seq
    return found, last, True


def read_events_page(
    session_dir: Path, since: str | None, agent: str | None = None, event_type: str | None = None, limit: int = 200
) -> dict[str, Any]:
    """One page of recorded events, read from ``<session_dir>/<agent>.jsonl``.

    The cursor is per event file, because each numbers its own records (``seq`` from 1):
    ``since`` is ``gemini:3,codex:0,claude:12`` (an agent's parallel runs too: ``claude#2:5``;
    or one number for every file; 0 or absent: from the start). The page merges the files'
    next records by timestamp and returns
    ``{"events": [...], "cursor": "<pass as since for the next page>", "more": bool}``.
    Each file's records come out in seq order exactly once across pages, so paging never
    loses or repeats an event; with ``agent`` only that agent's files are read.

    Raises:
        ValueError: bad ``since``, ``agent``, ``type`` or ``limit``, saying which.
    """
    if agent is not None and agent not in agent_names():
        raise ValueError(f"unknown agent {agent!r}; expected one of {', '.join(agent_names())}")
    if event_type is not None and event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {', '.join(EVENT_TYPES)}")
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    runs = _event_runs(session_dir, (agent,) if agent else agent_names())
    cursor = parse_cursor(since, _event_runs(session_dir, agent_names()))
    scans = {a: _scan_agent(session_dir / f"{a}.jsonl", cursor[a], event_type, limit) for a in runs}
    merged = sorted(
        ((str(r.get("timestamp", "")), a, r["seq"], r) for a, (found, _, _) in scans.items() for r in found),
        key=lambda item: item[:3],
    )
    page = merged[:limit]
    taken: dict[str, int] = {}
    for _, a, _seq, _ in page:
        taken[a] = taken.get(a, 0) + 1
    more = False
    for a, (found, last, complete) in scans.items():
        if taken.get(a, 0) == len(found):
            cursor[a] = last  # everything scanned went out (or was filtered away)
            more = more or not complete
        else:
            cursor[a] = found[taken.get(a, 0) - 1]["seq"] if taken.get(a) else cursor[a]
            more = True
    return {"events": [r for *_, r in page], "cursor": format_cursor(cursor), "more": more}


def read_reviews(session_dir: Path) -> list[dict[str, Any]]:
    """Every review under ``<session_dir>/reviews/<id>/``: its JSON files by name, oldest first."""
    root = session_dir / "reviews"
    reviews: list[dict[str, Any]] = []
    if not root.is_dir():
        return reviews
    for folder in root.iterdir():
        if folder.is_dir():
            review = read_review(session_dir, folder.name)
            if review is not None:
                reviews.append(review)
    reviews.sort(key=lambda r: (r["updated_at"], r["id"]))
    return reviews


def read_review(session_dir: Path, review_id: str) -> dict[str, Any] | None:
    """One review folder as ``{"id", "updated_at", "files": {stem: content}}``, or None."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", review_id) or review_id.startswith("."):
        return None
    folder = session_dir / "reviews" / review_id
    if not folder.is_dir():
        return None
    files: dict[str, Any] = {}
    newest = 0.0
    for path in sorted(folder.glob("*.json")):
        try:
            files[path.stem] = json.loads(path.read_text(encoding="utf-8"))
            newest = max(newest, path.stat().st_mtime)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            files[path.stem] = {"unreadable": True}  # being written, or damaged
    updated = datetime.fromtimestamp(newest or folder.stat().st_mtime, UTC)
    return {"id": review_id, "updated_at": format_utc(updated), "files": files}
