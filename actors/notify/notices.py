"""What is worth telling the user, and how it reads: from the session's facts to notices.

No I/O here. A notice's ``body`` is what each webhook receives as JSON: ``event``,
``session_id``, ``text`` (which alone makes it a valid Slack incoming-webhook body),
``dashboard_url`` and the event's own fields; ``title`` and ``text`` are the desktop's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meta_orchestrator.messages.base import utc_now
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.session import Question, SessionEnded, SessionSnapshot

# A limit "acted" when it paused or stopped work; a warning or a resume changes nothing to wait on.
LIMIT_ACTIONS_TOLD = frozenset({"pause", "stop", "pause_session"})
QUESTION_TEXT_CHARS = 500  # a notice points at the question; the dashboard shows it whole


@dataclass(frozen=True)
class Notice:
    event: str
    title: str
    body: dict[str, Any]


class NoticeRules:
    """Which facts become notices, once each; ``events``: the kinds the user chose."""

    def __init__(self, session_id: str, events: tuple[str, ...]) -> None:
        self.session_id = session_id
        self.events = frozenset(events)
        self.dashboard_url: str | None = None
        self._questions_told: set[str] = set()
        self._ended = False

    def on_snapshot(self, snapshot: SessionSnapshot) -> list[Notice]:
        """A notice per question newly open."""
        fresh = [q for q in snapshot.questions if q.status == "open" and q.id not in self._questions_told]
        self._questions_told.update(q.id for q in fresh)
        return [self._question(q) for q in fresh] if "question_opened" in self.events else []

    def on_ended(self, ended: SessionEnded) -> list[Notice]:
        if self._ended or "session_ended" not in self.events:
            return []
        self._ended = True
        text = f"session {ended.session_id} {ended.status} (exit {ended.exit_code}): {ended.summary[:300]}"
        return [
            self._notice(
                "session_ended",
                f"orchestrate: session {ended.status}",
                text,
                status=ended.status,
                exit_code=ended.exit_code,
                summary=ended.summary,
            )
        ]

    def on_limit(self, limit: LimitExceeded) -> list[Notice]:
        if "limit" not in self.events or limit.action not in LIMIT_ACTIONS_TOLD:
            return []
        who = f"{limit.agent}: " if limit.agent else ""
        return [
            self._notice(
                "limit",
                f"orchestrate: {limit.limit} limit, {limit.action.replace('_', ' ')}",
                f"{who}{limit.reason}",
                limit=limit.limit,
                action=limit.action,
                agent=limit.agent,
                observed=limit.observed,
                threshold=limit.threshold,
                unit=limit.unit,
            )
        ]

    def _question(self, question: Question) -> Notice:
        asked = (
            question.text if len(question.text) <= QUESTION_TEXT_CHARS else question.text[:QUESTION_TEXT_CHARS] + "…"
        )
        return self._notice(
            "question_opened",
            f"orchestrate: a {question.kind} waits on you",
            f"{question.kind} from {question.asked_by}: {asked}",
            question={"id": question.id, "kind": question.kind, "asked_by": question.asked_by, "text": question.text},
        )

    def _notice(self, event: str, title: str, text: str, **fields: Any) -> Notice:
        where = f" - {self.dashboard_url}" if self.dashboard_url else ""
        body = {
            "event": event,
            "session_id": self.session_id,
            "text": f"[orchestrate {self.session_id}] {text}{where}",
            "dashboard_url": self.dashboard_url,
            "at": utc_now().isoformat().replace("+00:00", "Z"),
            **fields,
        }
        return Notice(event=event, title=title, body=body)
