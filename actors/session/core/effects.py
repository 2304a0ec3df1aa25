"""What the session core asks its actor to do: plain data, carried out in order after a step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meta_orchestrator.messages.base import Message, worker_name
from meta_orchestrator.messages.session import SessionSnapshot


@dataclass(frozen=True)
class Persist:
    """Write this snapshot to state.json (before anything of the step is told to anyone)."""

    snapshot: SessionSnapshot


@dataclass(frozen=True)
class Publish:
    """Tell the listeners the session moved (``SessionStateChanged``)."""

    snapshot: SessionSnapshot


@dataclass(frozen=True)
class ToWorker:
    """Tell the worker of the agent's run ``slot``; its ``reply_to`` becomes the coordinator."""

    agent: str
    message: Message
    slot: int = 1

    @property
    def worker(self) -> str:
        return worker_name(self.agent, self.slot)


@dataclass(frozen=True)
class ToReviewer:
    message: Message


@dataclass(frozen=True)
class ToRecovery:
    message: Message


@dataclass(frozen=True)
class ToWorkspace:
    """Tell the Workspace actor (checkouts, commits, merges)."""

    message: Message


@dataclass(frozen=True)
class Announce:
    """A fact for the listeners; ``SessionEnded`` also goes to whoever started the session."""

    fact: Message


@dataclass(frozen=True)
class AnswerAsker:
    """Tell whoever asked the question (if it asked with a ``reply_to``) the answer."""

    question_id: str
    message: Message


@dataclass(frozen=True)
class StartTimer:
    """Feed ``message`` back to the core after ``delay_s`` seconds."""

    delay_s: float
    message: Message


@dataclass(frozen=True)
class Log:
    level: str  # "info", "warning" or "error"
    text: str


@dataclass(frozen=True)
class Reply:
    """The answer to an ``ask`` of the message (a control's or an answer's acceptance)."""

    value: Any


Effect = (
    Persist
    | Publish
    | ToWorker
    | ToReviewer
    | ToRecovery
    | ToWorkspace
    | Announce
    | AnswerAsker
    | StartTimer
    | Log
    | Reply
)
