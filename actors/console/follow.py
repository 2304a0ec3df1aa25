"""``orchestrate show <id> --follow``: a running session's events, as the console shows them.

It reads only the session's files, so it works from another terminal (or after the session
ended): the last few events first, then every new one as its worker appends it, and the
session's state changes from ``state.json``. It ends when the session ends, or when the
orchestrator that owned it is gone without ending it (then it says how to resume).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.console.console import ConsoleView
from meta_orchestrator.actors.history.event_log import EventLog
from meta_orchestrator.actors.files.session_files import event_files, read_json
from meta_orchestrator.actors.history.session_index import ENDED_STATUSES, orchestrator_alive
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.session import SessionSnapshot, SessionStateChanged
from meta_orchestrator.messages.worker import EventsRecorded

READ_BATCH = 500
ASK_TIMEOUT_S = 10.0


class _Tail:
    """One agent's file: opened once it exists, read on from where the last read ended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log: EventLog | None = None
        self.offset = 0

    def open(self) -> bool:
        if self.log is None and self.path.exists():
            try:
                self.log = EventLog(self.path)
            except OSError:
                return False  # a symlink or a path out of the session: not one of its files
        return self.log is not None

    def last(self, count: int) -> list[dict[str, Any]]:
        if not self.open() or self.log is None:
            return []
        window = self.log.tail(count)
        self.offset = window.end
        return window.records

    def new(self) -> list[dict[str, Any]]:
        if not self.open() or self.log is None:
            return []
        window = self.log.read_from(self.offset, READ_BATCH)
        self.offset = window.end
        return window.records

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


def _events(records: list[dict[str, Any]]) -> list[Event]:
    events = []
    for record in records:
        try:
            events.append(Event.model_validate(record))
        except ValidationError:
            continue  # a record this version cannot read: the file keeps it, the view skips it
    events.sort(key=lambda e: (e.timestamp, e.agent, e.seq or 0))
    return events


def follow(session_dir: Path, out: TextIO, backlog: int = 20, poll_s: float = 0.2) -> int:
    """Print the session's events until it ends; 0 when it ended, 1 when its owner vanished."""
    tails = [_Tail(path) for agent in agent_names() for path in event_files(session_dir, agent)]
    view = ConsoleView.start(stream=out, activity_every_s=0.0)
    state_mtime = -1.0
    state: dict[str, Any] = {}
    try:
        earlier = _events([r for tail in tails for r in tail.last(backlog)])[-backlog:]
        if earlier:
            view.ask(EventsRecorded(events=tuple(earlier)), timeout=ASK_TIMEOUT_S)
        while True:
            try:
                mtime = (session_dir / "state.json").stat().st_mtime
                if mtime != state_mtime:
                    state_mtime, state = mtime, read_json(session_dir / "state.json")
                    view.ask(SessionStateChanged(snapshot=SessionSnapshot.model_validate(state)), timeout=ASK_TIMEOUT_S)
            except (OSError, ValueError, ValidationError):
                pass  # being replaced, or not written yet: the next round reads it
            fresh = _events([r for tail in tails for r in tail.new()])
            if fresh:
                view.ask(EventsRecorded(events=tuple(fresh)), timeout=ASK_TIMEOUT_S)
                continue  # drain everything written before deciding that the session ended
            status = state.get("status")
            if status in ENDED_STATUSES:
                out.write(f"session {state.get('session_id')} {status} (exit {state.get('exit_code')})\n")
                return 0
            if state and not orchestrator_alive(state.get("orchestrator_pid")):
                out.write(
                    f"session {state.get('session_id')} is {status}, but its orchestrator "
                    f"(pid {state.get('orchestrator_pid')}) is gone: "
                    f"orchestrate resume {state.get('session_id')}\n"
                )
                return 1
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return 130
    finally:
        view.stop()
        for tail in tails:
            tail.close()
