"""History recorder actor: every fact the dashboard shows, appended to ``history.jsonl``.

The agents' events are on disk already (``<agent>.jsonl``, written before anyone hears of
them); everything else a listener hears (the session's snapshots, worker states, reviews,
recoveries, resource samples, limits) is otherwise only in memory or replaced in place
(``state.json``). The session is written whole now and then, and as what changed between
(``SessionStateDelta``, ``messages/session_delta.py``). Recording those facts in the order
they arrived lets a finished session be replayed into the dashboard through the same
fact-to-frame table as live, so the page shows at each moment what it showed then. Each
line: ``{"seq", "timestamp", "fact", "data"}``.

It only listens: nothing waits on it, and a failed write is logged once and never stops
the session (the history is a view; the session's own files stay whole).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pykka
from pydantic import BaseModel

from meta_orchestrator.actors.files.session_files import JsonlWriter, SessionFileError
from meta_orchestrator.messages.base import utc_now
from meta_orchestrator.messages.session import SessionStateChanged
from meta_orchestrator.messages.session_delta import WHOLE_EVERY, SessionStateDelta, session_delta
from meta_orchestrator.messages.worker import EventsRecorded

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"


def history_record(seq: int, message: BaseModel) -> str:
    """One line of ``history.jsonl`` for a fact."""
    return json.dumps(
        {
            "seq": seq,
            "timestamp": utc_now().isoformat().replace("+00:00", "Z"),
            "fact": type(message).__name__,
            "data": message.model_dump(mode="json"),
        },
        ensure_ascii=False,
    )


class HistoryRecorder(pykka.ThreadingActor):
    """Appends each fact it hears, except agent events, to the session's history file."""

    def __init__(self, session_dir: Path) -> None:
        super().__init__()
        self._path = session_dir / HISTORY_FILE
        self._writer: JsonlWriter | None = None
        self._failed = False
        self._session: dict[str, Any] | None = None  # the last snapshot, as JSON: deltas are from it
        self._session_changes = 0

    def on_start(self) -> None:
        try:
            self._writer = JsonlWriter(self._path)  # a resumed session continues the same file
        except SessionFileError as exc:
            self._fail(exc)

    def on_stop(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def on_receive(self, message: Any) -> Any:
        match message:
            case EventsRecorded():
                return None  # on disk in <agent>.jsonl already
            case SessionStateChanged() if self._writer is not None:
                self._write(self._session_fact(message))
            case BaseModel() if self._writer is not None:
                self._write(message)
        return None

    def _write(self, fact: BaseModel) -> None:
        assert self._writer is not None
        seq = self._writer.seq + 1
        try:
            self._writer.write_batch([history_record(seq, fact)], seq)
        except SessionFileError as exc:
            self._fail(exc)

    def _session_fact(self, message: SessionStateChanged) -> BaseModel:
        """What changed, as a ``SessionStateDelta``; the whole snapshot first, every
        ``WHOLE_EVERY`` changes (a replay seeks from there) and when a delta cannot say it."""
        before, whole_due = self._session, self._session_changes % WHOLE_EVERY == 0
        self._session_changes += 1
        self._session = message.snapshot.model_dump(mode="json")
        delta = None if before is None or whole_due else session_delta(before, self._session)
        if delta is None:
            return message
        return SessionStateDelta(message_id=message.message_id, sent_at=message.sent_at, delta=delta)

    def _fail(self, exc: SessionFileError) -> None:
        if not self._failed:
            log.error("the session's history is no longer recorded: %s", exc)
        self._failed = True
        self._writer = None
