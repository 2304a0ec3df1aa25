"""What ``orchestrate resume`` needs from a dead orchestrator's session folder.

``launch.json`` (written when the session started) says how it was started; the event
files say which CLI session each interrupted assignment was in, so the CLI's own resume
option can pick it up.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from meta_orchestrator.actors.files.end_lock import END_WAIT_S, SessionBusy
from meta_orchestrator.actors.files.end_lock import take as take_end_lock
from meta_orchestrator.actors.files.session_files import event_files, read_json, read_jsonl, write_json_atomic
from meta_orchestrator.actors.adapters.registry import agent_names

LAUNCH_FILE = "launch.json"


class ResumeError(Exception):
    """The session cannot be resumed; the message says why."""


class LaunchRecord(BaseModel):
    """``launch.json``: how the session was first started, what ``orchestrate resume`` starts from."""

    model_config = ConfigDict(frozen=True)

    task: str
    target: Path
    demo: bool
    settings: dict[str, Any]  # the settings as they were, demo commands included


class SavedLaunch(NamedTuple):
    """A session as ``orchestrate resume`` finds it: its first start and its last saved state."""

    launch: LaunchRecord
    state: dict[str, Any]


def save_launch(session_dir: Path, launch: LaunchRecord) -> None:
    """Record how the session was started (once, at its first start)."""
    write_json_atomic(session_dir / LAUNCH_FILE, launch.model_dump(mode="json"))


def load_launch(session_dir: Path) -> SavedLaunch:
    """How the session was first started, and its last saved state.

    Raises:
        ResumeError: no such session, or its files are unreadable or not what they should be.
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
    try:
        record = LaunchRecord.model_validate(launch)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors())
        raise ResumeError(f"{session_dir / LAUNCH_FILE} is not a launch record ({problems})") from None
    if not isinstance(state, dict):
        raise ResumeError(f"{session_dir / 'state.json'} is not a JSON object")
    return SavedLaunch(record, state)


def interrupted_cli_sessions(session_dir: Path, assignment_ids: set[str]) -> dict[str, str]:
    """Assignment id -> the CLI session id its last run announced (init event), if any."""
    found: dict[str, str] = {}
    files = [path for agent in agent_names() for path in event_files(session_dir, agent)]  # every run slot's
    for path in files:
        for record in read_jsonl(path).records:
            assignment = record.get("assignment_id")
            payload = record.get("payload") or {}
            if assignment in assignment_ids and payload.get("kind") == "init" and payload.get("session_id"):
                found[assignment] = payload["session_id"]
    return found


# -- answers given while no orchestrator runs (``orchestrate answer``) -------------------------

ANSWERS_FILE = "answers.json"
APPROVE_WORDS = ("y", "yes", "approve", "ok", "allow")
DENY_WORDS = ("n", "no", "deny", "reject", "refuse")


class AnswerError(Exception):
    """The answer cannot be recorded; the message says why."""


def recorded_answers(session_dir: Path) -> dict[str, dict[str, Any]]:
    """Question id -> ``{"answer", "approve", "answered_at"}`` recorded by ``orchestrate answer``."""
    try:
        data = read_json(session_dir / ANSWERS_FILE)
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ResumeError(f"cannot read {session_dir / ANSWERS_FILE}: {exc}") from None
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def record_answer(session_dir: Path, question_id: str, text: str, wait_s: float = END_WAIT_S) -> dict[str, Any]:
    """Record a person's answer to an open question of a session that is not running, once
    its launcher's end work is done (its lock, files.end_lock, waited for up to ``wait_s``):
    the questions are read as that work left them, and nothing is written beside it.

    Raises:
        AnswerError: no such session or question, already answered, not a yes/no for a
            confirmation, or the session still busy at the deadline (nothing written).
    """
    if not (session_dir / "state.json").is_file():
        raise AnswerError(f"no session in {session_dir} (state.json is missing)")
    try:
        end_lock = take_end_lock(session_dir, wait_s, "answer")
    except SessionBusy as exc:
        raise AnswerError(str(exc)) from None
    except OSError as exc:
        raise AnswerError(f"{session_dir} cannot be locked: {exc}") from None
    with end_lock:  # also one answer at a time: two at once, one wins and one is refused
        return _record_answer(session_dir, question_id, text)


def _record_answer(session_dir: Path, question_id: str, text: str) -> dict[str, Any]:
    try:
        state = read_json(session_dir / "state.json")
    except FileNotFoundError:
        raise AnswerError(f"no session in {session_dir} (state.json is missing)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise AnswerError(f"cannot read {session_dir / 'state.json'}: {exc}") from None
    try:
        answers = recorded_answers(session_dir)
    except ResumeError as exc:
        raise AnswerError(str(exc)) from None
    questions = {q.get("id"): q for q in state.get("questions", []) if isinstance(q, dict)}
    waiting = [qid for qid, q in questions.items() if q.get("status") == "open" and qid not in answers]
    question = questions.get(question_id)
    if question is None:
        listed = ", ".join(str(q) for q in waiting) or "none"
        raise AnswerError(f"session {state.get('session_id')} has no question {question_id!r} (open: {listed})")
    if question.get("status") != "open" or question_id in answers:
        given = answers.get(question_id, {}).get("answer", question.get("answer"))
        raise AnswerError(f"question {question_id} was already answered ({given!r}); an answer cannot be changed")
    answer = text.strip()
    if not answer:
        raise AnswerError(f"empty answer to {question_id}")
    approve = None
    if question.get("kind") == "confirmation":
        word = answer.lower()
        if word not in APPROVE_WORDS + DENY_WORDS:
            raise AnswerError(f"{question_id} is a confirmation: answer yes or no")
        approve = word in APPROVE_WORDS
    entry = {"answer": answer, "approve": approve, "answered_at": _now()}
    write_json_atomic(session_dir / ANSWERS_FILE, {**answers, question_id: entry})
    return {**entry, "question": question, "still_open": [q for q in waiting if q != question_id]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
