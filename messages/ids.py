"""The ids a person or another program hands in: a session id, a question id.

Each names a file or folder (``<workspace>/<session_id>/``, a key of ``answers.json``), so
each must be exactly one path component in its own format before anything is read or
written with it: ``../x`` or ``a/b`` is refused, never resolved.
"""

from __future__ import annotations

import re

# Session ids are made as ``20260101-120000-a1b2c3``; a name of the user's choosing that fits
# a branch (``orchestrate/<id>``) and a folder name is accepted too.
_SESSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# Question ids: ``q-rev-001``, ``grant-rec-001``, ``conflict-a1-2``, ``sbx-finding-1a2b3c4d``.
_QUESTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_SHOWN = 60


class InvalidId(ValueError):
    """An id that is not one path component in its format; ``str()`` says why."""


def _check(value: str, pattern: re.Pattern[str], what: str, rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidId(f"{what} must be text, not {type(value).__name__}")
    if not pattern.fullmatch(value) or ".." in value or value.endswith((".", ".lock")):
        shown = value[:_SHOWN] + ("..." if len(value) > _SHOWN else "")
        raise InvalidId(f"{what} {shown!r} is not valid: {rule}")
    return value


def check_session_id(value: str, what: str = "session id") -> str:
    """``value`` when it is a session id (one folder name, one branch name), else ``InvalidId``."""
    return _check(
        value,
        _SESSION,
        what,
        "letters, digits, '_', '-' and '.', at most 100, not starting with '.' or '-', "
        "no '..', not ending in '.' or '.lock'",
    )


def check_question_id(value: str) -> str:
    """``value`` when it is a question id, else ``InvalidId``."""
    return _check(
        value,
        _QUESTION,
        "question id",
        "letters, digits, '_', '-', '.' and ':', at most 128, not starting with '.' or '-', no '..'",
    )


def is_session_id(value: str) -> bool:
    """Whether ``value`` is a session id (``check_session_id`` without the reason)."""
    try:
        check_session_id(value)
    except InvalidId:
        return False
    return True


__all__ = ["InvalidId", "check_question_id", "check_session_id", "is_session_id"]
