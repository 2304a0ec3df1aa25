"""How the history starts: first of all, so it hears every fact and a replay sees what any view saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.history.history import HistoryRecorder
from meta_orchestrator.actors.supervision.starting import start_actor


def start_history(started: list[Any], session_dir: Path) -> pykka.ActorRef[Any]:
    return start_actor(started, HistoryRecorder, session_dir=session_dir)
