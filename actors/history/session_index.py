"""Every session of a workspace, summed up from its files: what `orchestrate serve` lists.

A summary reads only ``state.json`` and the last lines of ``history.jsonl``, so listing a
workspace of long sessions costs the same as listing short ones.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from meta_orchestrator.actors.history.event_log import EventLog, parse_time
from meta_orchestrator.actors.files.session_files import iter_sessions
from meta_orchestrator.actors.workspaces.workspaces import workspace_summary
from meta_orchestrator.messages.session import TERMINAL_STATUSES

ENDED_STATUSES = (*TERMINAL_STATUSES, "waiting")
HISTORY_TAIL = 200


def orchestrator_alive(pid: Any) -> bool:
    """Whether the orchestrator that wrote a state.json still runs."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).is_running()
    except psutil.Error:
        return False


def is_live(state: dict[str, Any]) -> bool:
    """Whether the session still runs: not ended, and its orchestrator still there."""
    return state.get("status") not in ENDED_STATUSES and orchestrator_alive(state.get("orchestrator_pid"))


def _seconds_between(start: str | None, end: str | None) -> float | None:
    try:
        return max(0.0, (parse_time(end or "") - parse_time(start or "")).total_seconds())
    except ValueError:
        return None


def _last_sample(folder: Path) -> dict[str, Any] | None:
    """The newest resource sample in the history: the session's cost and tokens so far."""
    path = folder / "history.jsonl"
    try:
        log = EventLog(path)
    except OSError:
        return None  # none yet (an older session), or not a plain file of the session
    with log:
        for record in reversed(log.tail(HISTORY_TAIL).records):
            if record.get("fact") == "ResourcesSampled" and isinstance(record.get("data"), dict):
                return record["data"]
    return None


def summarize(folder: Path, state: dict[str, Any] | None, now: datetime | None = None) -> dict[str, Any]:
    """One row of the session list (``state`` None: its state.json could not be read)."""
    if state is None:
        return {"session_id": folder.name, "status": "unreadable", "live": False, "task": ""}
    status = str(state.get("status", "?"))
    live = is_live(state)
    end = state.get("ended_at") or (now.isoformat() if (live and now) else state.get("updated_at"))
    sample = _last_sample(folder) or {}
    share_tokens = sum(int(s.get("tokens") or 0) for s in state.get("shares", []) if isinstance(s, dict))
    questions = [q for q in state.get("questions", []) if isinstance(q, dict) and q.get("status") == "open"]
    return {
        "session_id": str(state.get("session_id", folder.name)),
        "task": str(state.get("task", "")),
        "status": status,
        "live": live,
        "demo": bool(state.get("demo")),
        "created_at": state.get("created_at"),
        "ended_at": state.get("ended_at"),
        "duration_s": _seconds_between(state.get("created_at"), end),
        "exit_code": state.get("exit_code"),
        "cost_usd": sample.get("cost_usd") or None,
        "tokens": (sample.get("tokens") or share_tokens) or None,
        "open_questions": len(questions),
        "assignments": len(state.get("assignments", [])),
        "branch": state.get("branch") or _recorded_branch(folder),
    }


def _recorded_branch(folder: Path) -> str | None:
    """The session's branch from its workspace.json (None without one)."""
    summary = workspace_summary(folder)
    return str(summary["branch"]) if summary else None


def list_sessions(workspace: Path, text: str = "", status: str = "", now: datetime | None = None) -> list[dict]:
    """The workspace's sessions, newest first; ``text`` filters on id and task, ``status`` on
    the status (``live`` for the running ones)."""
    rows = []
    needle = text.strip().lower()
    for folder, state in iter_sessions(workspace):
        row = summarize(folder, state, now)
        if needle and needle not in row["session_id"].lower() and needle not in row["task"].lower():
            continue
        if status and not (row["status"] == status or (status == "live" and row["live"])):
            continue
        rows.append(row)
    return rows
