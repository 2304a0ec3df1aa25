"""What the three stream parsers share: tolerant field access, the cause table, the end of a run.

Wrong types degrade, never raise: one odd line must not stop a run's parsing.
"""

from __future__ import annotations

import logging
import signal
from abc import abstractmethod
from typing import Any

from meta_orchestrator.actors.adapters.base import Draft, StreamParser, draft
from meta_orchestrator.messages.base import AgentName

logger = logging.getLogger(__name__)

TEXT_LIMIT = 4_000  # a payload carries a readable excerpt; the raw line keeps the rest


class ShapeError(ValueError):
    """A known event whose structure is not what the CLI prints (e.g. ``message`` a str)."""


def as_str(value: Any) -> str | None:
    """``value`` if it is a string, else None (wrong types degrade, never raise)."""
    return value if isinstance(value, str) else None


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else an empty dict."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def as_int(value: Any) -> int | None:
    """``value`` if it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_float(value: Any) -> float | None:
    """``value`` as a float if it is a number (not a bool), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def require_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """``obj[key]`` when it is a dict; a missing key gives ``{}``, a wrong type a ShapeError."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShapeError(f"field {key!r} is a {type(value).__name__}, expected an object")
    return value


def clip(text: str | None, limit: int = TEXT_LIMIT) -> str | None:
    """``text`` cut to ``limit`` characters with a marker, None stays None."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters]"


# Matched on the normalised text (reference §4 "Error classification table"); the first
# hit wins, so the more specific causes come first.
_CAUSES: tuple[tuple[str, bool, tuple[str, ...]], ...] = (
    ("session_not_found", False, ("no conversation found", "no rollout found", "invalid session identifier")),
    (
        "turn_cap",
        False,
        (
            "error_max_turns",
            "maximum number of turns",
            "max session turns",
            "fatalturnlimitederror",
            "maximum session turns",
        ),
    ),
    ("budget", False, ("error_max_budget_usd",)),
    ("context", False, ("prompt_too_long", "prompt is too long", "ran out of room", "context_length_exceeded")),
    (
        "auth",
        False,
        (
            "authentication_failed",
            "not logged in",
            "failed to authenticate",
            "401 unauthorized",
            "403 forbidden",
            "missing environment variable",
            "please set an auth method",
            "invalid auth method",
            "unauthenticated",
            "permission_denied",
            '"code":401',
            '"code":403',
        ),
    ),
    (
        "rate_limit",
        True,
        (
            "rate_limit",
            "(429)",
            "429 too many",
            "quota exceeded",
            "exhausted your daily quota",
            "resource_exhausted",
            '"code":429',
            # gemini's 429 result: "[API Error: <msg>]\nPlease wait and try…"
            "please wait and try again later",
            "request a quota increase",
        ),
    ),
    (
        "network",
        True,
        (
            "unable to connect to api",
            "reconnecting...",
            "stream disconnected",
            "fetch failed",
            "connection refused",
            "waiting for network",
        ),
    ),
    (
        "server",
        True,
        (
            "server_error",
            "high demand",
            "overloaded",
            "api error: 5",
            "internal server error",
            '"code":500',
            '"code":503',
            "status: 5",
        ),
    ),
)


def classify(text: str | None) -> tuple[str | None, bool | None]:
    """(cause, retryable) for an error text, per the reference's classification table."""
    low = (text or "").lower()
    for cause, retryable, needles in _CAUSES:
        if any(needle in low for needle in needles):
            return cause, retryable
    return None, None


def signal_meaning(returncode: int) -> str:
    """'killed by signal N (NAME)' for a negative Python returncode."""
    number = -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    return f"killed by signal {number} ({name})"


class GuardedParser(StreamParser):
    """A StreamParser that never lets a line crash the worker and ends every run once.

    Subclasses implement ``_dispatch`` (one object with a string ``type``), ``_exit_meaning``
    and optionally ``_flush`` (buffered text) and ``_stderr_drafts``.
    """

    agent: AgentName

    def __init__(self) -> None:
        super().__init__()
        self._ok = False  # a terminal *success* event was seen

    def feed_object(self, obj: dict[str, Any]) -> list[Draft]:
        """Dispatch on ``type``; any surprise becomes a ``parse_error`` draft, never a raise."""
        type_ = obj.get("type")
        if not isinstance(type_, str):
            shown = clip(repr(type_), 200)
            return [draft("status", kind="unknown", text=f"{self.agent} line without a string type: {shown}")]
        try:
            drafts = self._dispatch(type_, obj)
        except ShapeError as exc:
            return [
                draft(
                    "error",
                    kind="parse_error",
                    terminal=False,
                    text=f"{self.agent} {type_} line has an unexpected shape: {exc}",
                )
            ]
        except Exception as exc:  # noqa: BLE001 - one odd line must not stop the run's parsing
            logger.exception("%s parser failed on a %s line", self.agent, type_)
            return [
                draft(
                    "error",
                    kind="parse_error",
                    terminal=False,
                    text=f"{self.agent} parser failed on a {type_} line: {exc!r}",
                )
            ]
        # The worker records one event per line; an empty answer would lose the line.
        return drafts or [draft("status", kind="unknown", text=type_)]

    @abstractmethod
    def _dispatch(self, type_: str, obj: dict[str, Any]) -> list[Draft]:
        """Drafts for one object whose ``type`` is ``type_``."""

    @abstractmethod
    def _exit_meaning(self, returncode: int) -> tuple[str, bool | None]:
        """(what a non-zero exit code means for this CLI, whether a retry may help)."""

    def _flush(self) -> list[Draft]:
        """Drafts still buffered at the end of the run (gemini's marker buffer)."""
        return []

    def _stderr_drafts(self, stderr_tail: tuple[str, ...]) -> list[Draft]:
        """Drafts that only stderr can reveal (codex's silent sandbox refusals)."""
        return []

    def _mark_terminal(self, ok: bool, error: str | None = None) -> None:
        """Remember that the CLI printed its own end of run."""
        self.terminal_seen = True
        self._ok = ok
        if not ok:
            self.error = error or f"{self.agent} reported a failed run"

    def finish(self, returncode: int | None, stderr_tail: tuple[str, ...]) -> list[Draft]:
        """Flush, then synthesise the end of the run when the exit tells more than the stream."""
        drafts: list[Draft] = []
        for step in (self._flush, lambda: self._stderr_drafts(stderr_tail)):
            try:
                drafts.extend(step())
            except Exception as exc:  # noqa: BLE001 - finish must always produce the end
                logger.exception("%s parser failed while finishing", self.agent)
                drafts.append(
                    draft(
                        "error",
                        kind="parse_error",
                        terminal=False,
                        text=f"{self.agent} parser failed while finishing: {exc!r}",
                    )
                )
        tail = [line.strip() for line in stderr_tail if line and line.strip()][-5:]
        if returncode is None:
            meaning, retryable = "exit status unknown", None
        elif returncode < 0:
            meaning, retryable = signal_meaning(returncode), True
        elif returncode == 0:
            meaning, retryable = "exit code 0", None
        else:
            described, retryable = self._exit_meaning(returncode)
            meaning = f"exit code {returncode}: {described}"
        stderr_note = f"; stderr: {' | '.join(tail)}" if tail else ""
        if not self.terminal_seen:
            text = f"{self.agent} ended without a final result ({meaning}){stderr_note}"
            drafts.append(
                draft(
                    "error",
                    kind="exit",
                    terminal=True,
                    retryable=retryable,
                    exit_code=returncode,
                    text=clip(text),
                    details={"stderr_tail": tail} if tail else None,
                )
            )
            self.error = text
        elif self._ok and returncode != 0:
            text = f"{self.agent} reported success but {meaning}{stderr_note}"
            drafts.append(
                draft(
                    "error",
                    kind="exit",
                    terminal=True,
                    retryable=retryable,
                    exit_code=returncode,
                    text=clip(text),
                    details={"stderr_tail": tail} if tail else None,
                )
            )
            self.error = text
        self.succeeded = self._ok and returncode == 0
        if not self.succeeded and self.error is None:
            self.error = f"{self.agent} run failed ({meaning})"
        return drafts
