"""What ``orchestrate resume`` needs from a dead orchestrator's session folder.

``launch.json`` (written when the session started) says how it was started; the event
files say which CLI session each interrupted assignment was in, so the CLI's own resume
option can pick it up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.runtime.session_files import read_json, read_jsonl, write_json_atomic
from meta_orchestrator.actors.adapters.registry import agent_names

LAUNCH_FILE = "launch.json"


class ResumeError(Exception):
    """The session cannot be resumed; the message says why."""


def save_launch(session_dir: Path, task: str, target: Path, demo: bool, settings: dict[str, Any]) -> None:
    """Record how the session was started (the settings as they were, demo commands included)."""
    write_json_atomic(
        session_dir / LAUNCH_FILE, {"task": task, "target": str(target), "demo": demo, "settings": settings}
    )


def load_launch(session_dir: Path) -> dict[str, Any]:
    """How the session was started.

    Raises:
        ResumeError: no such session, or its files are unreadable.
    """
    if not (session_dir / "state.json").exists():
        raise ResumeError(f"no session in {session_dir} (state.json is missing)")
    try:
        launch = read_json(session_dir / LAUNCH_FILE)
        state = read_json(session_dir / "state.json")
    except FileNotFoundError:
        raise ResumeError(
            f"{session_dir / LAUNCH_FILE} is missing; this session was started by "
            "an older orchestrator and cannot be resumed"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ResumeError(f"cannot read {session_dir}: {exc}") from None
    return {**launch, "state": state}


def interrupted_cli_sessions(session_dir: Path, assignment_ids: set[str]) -> dict[str, str]:
    """Assignment id -> the CLI session id its last run announced (init event), if any."""
    found: dict[str, str] = {}
    for agent in agent_names():
        for record in read_jsonl(session_dir / f"{agent}.jsonl").records:
            assignment = record.get("assignment_id")
            payload = record.get("payload") or {}
            if assignment in assignment_ids and payload.get("kind") == "init" and payload.get("session_id"):
                found[assignment] = payload["session_id"]
    return found
