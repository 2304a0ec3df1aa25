"""A worker's files: its events, numbered, written a batch at a time, then told; the CLI's stderr.

Every event is on disk before anyone hears of it: ``flush`` writes the pending batch with one
write and only then tells the listeners, as one fact per batch (a flood costs each listener
one message per read, not one per line). When the file cannot be written the pending events
are dropped, never told, and the recorder takes no more: the run must end.
"""

from __future__ import annotations

import collections
import logging
from datetime import datetime
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import pykka
from meta_orchestrator.actors.adapters.base import Draft
from meta_orchestrator.actors.history.event_line import event_lines
from meta_orchestrator.actors.files.session_files import JsonlWriter, SessionFileError, open_private
from meta_orchestrator.actors.supervision.supervision import tell_all
from meta_orchestrator.messages.base import AgentName, trusted_maker, utc_now
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.worker import EventsRecorded

log = logging.getLogger(__name__)
# Events of the hot loop are built without validation (see ``add_lines``).
_make_event = trusted_maker(Event)

ACTIVITY_CHARS = 160
STDERR_TAIL = 40
STDERR_LINE_CHARS = 2000


class EventRecorder:
    """Numbers, writes and publishes one agent's events; keeps what its snapshot shows."""

    def __init__(self, agent: AgentName, path: Path, listeners: Sequence[pykka.ActorRef[Any]], slot: int = 1) -> None:
        self.path = path
        self._slot = slot if slot > 1 else None  # the first run's events say none (as before slots)
        self.fatal: str | None = None  # the file cannot be written: nothing more is recorded
        self.recorded = 0  # events on disk, earlier runs' included
        self._last_text: str | None = None
        self.last_progress: int | None = None
        self._agent = Event(type="status", agent=agent).agent  # validated once: events are built without
        self._listeners = tuple(listeners)
        self._writer: JsonlWriter | None = None
        self._unpublished: list[Event] = []  # not yet written

    def open(self) -> None:
        self._writer = JsonlWriter(self.path)
        self.recorded = self._writer.seq

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def add(
        self,
        drafts: Sequence[Draft],
        assignment_id: str | None,
        raw: str | None,
        raw_file: str | None,
        moment: datetime | None = None,
    ) -> None:
        """Number one line's events; ``flush`` serialises and writes them, then publishes them.
        ``moment``: when the line arrived; now if None."""
        self.add_lines(((drafts, raw, raw_file),), assignment_id, moment)

    def add_lines(
        self,
        lines: Iterable[tuple[Sequence[Draft], str | None, str | None]],
        assignment_id: str | None,
        moment: datetime | None = None,
    ) -> None:
        """Number the events of several lines (their drafts, raw line and side file), as
        ``add`` does each: one call for a pipe read's lines, which share ``moment``."""
        assert self._writer is not None
        if self.fatal:
            return
        moment = moment or utc_now()
        agent, slot, unpublished = self._agent, self._slot, self._unpublished
        last_text, last_progress = self._last_text, self.last_progress
        seq = self._writer.seq + len(unpublished)
        make_event, add = _make_event, unpublished.append
        for drafts, raw, raw_file in lines:
            for item in drafts:
                seq += 1
                # Built without validation: a draft is validated where it is made, the agent's
                # name once in __init__, and the rest is the recorder's own (one event per line).
                payload = item.payload
                add(
                    make_event(
                        {
                            "type": item.type,
                            "agent": agent,
                            "timestamp": moment,
                            "payload": payload,
                            "seq": seq,
                            "slot": slot,
                            "assignment_id": assignment_id,
                            "raw": raw,
                            "raw_file": raw_file,
                        },
                    )
                )
                if payload.text and item.type != "status":
                    last_text = payload.text
                if payload.progress is not None:
                    last_progress = payload.progress
        self._last_text, self.last_progress = last_text, last_progress

    @property
    def last_activity(self) -> str | None:
        """The start of the last thing the agent said or did (status lines aside)."""
        return self._last_text[:ACTIVITY_CHARS] if self._last_text is not None else None

    def flush(self) -> SessionFileError | None:
        """Write the pending events (one write per batch), then tell the listeners.

        Returns the error when the file cannot be written: ``fatal`` then says why.
        """
        assert self._writer is not None
        if not self._unpublished:
            return None
        lines = event_lines(self._unpublished)  # model_dump_json(exclude_none=True), in one call
        try:
            self._writer.write_batch(lines, self._unpublished[-1].seq)
        except SessionFileError as exc:
            log.error("%s: %s; ending the run", self._agent, exc)
            self.fatal = f"session files cannot be written: {exc}"
            self._unpublished = []  # never published: they are not on disk
            return exc
        self.recorded += len(self._unpublished)
        batch, self._unpublished = self._unpublished, []
        tell_all(self._listeners, EventsRecorded(events=tuple(batch), lines=tuple(lines)))
        return None


class StderrLog:
    """The CLI's stderr as it came, in ``<agent>.stderr.log``, and the current run's last lines
    (told with its finish). A write that fails is logged: stderr is evidence, not the record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        self._file = open_private(self.path, binary=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def write(self, lines: Sequence[bytes]) -> list[str]:
        """Append the lines; the text of each, which the tail keeps too."""
        if self._file is not None:
            try:
                self._file.write(b"".join(data + b"\n" for data in lines))
                self._file.flush()
            except OSError as exc:
                log.error("cannot write %s: %s", self.path, exc)
        texts = [data.decode("utf-8", errors="replace") for data in lines]
        self.tail.extend(text[:STDERR_LINE_CHARS] for text in texts)
        return texts


__all__ = ["EventRecorder", "StderrLog"]
