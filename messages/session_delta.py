"""What changed in the session between two of its snapshots: the dashboard's ``session_delta``
frame and the ``SessionStateDelta`` line of ``history.jsonl``, instead of the whole session at
every step (a long plan's snapshot is tens of kilobytes; a step changes one assignment).

Both sides work on the JSON form of ``SessionSnapshot`` (``model_dump(mode="json")``), so the
page applies a delta exactly as ``apply_session_delta`` does here (``webui/static/store.js``).
A change a delta cannot say (an assignment or a field removed, assignments reordered) is sent
as the whole session instead: ``session_delta`` returns None.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from meta_orchestrator.messages.base import Frozen, Message

# Every this many changes the whole session goes again (the dashboard's ``session`` frame, a
# ``SessionStateChanged`` line in the history): a replay seeks from the last one, and nothing
# a reader missed outlives it.
WHOLE_EVERY = 50


class SessionDelta(Frozen):
    """The session's changes since the snapshot before, in its JSON form: ``fields`` replace
    the session's fields of those names, ``appended`` extends lists that only grew, and each
    of ``assignments`` replaces the assignment with its ``id`` (or is added at the end)."""

    fields: dict[str, Any] = Field(default_factory=dict, description="fields replaced whole, by name")
    appended: dict[str, list[Any]] = Field(
        default_factory=dict, description="lists that only grew (decisions, questions...): their new items"
    )
    assignments: tuple[dict[str, Any], ...] = Field(
        default=(), description="assignments changed or added (as in SessionSnapshot), matched by id"
    )


class SessionStateDelta(Message):
    """What ``history.jsonl`` records of a ``SessionStateChanged`` whose change fits a delta."""

    delta: SessionDelta


def session_delta(before: dict[str, Any], after: dict[str, Any]) -> SessionDelta | None:
    """The delta from ``before`` to ``after`` (JSON forms of ``SessionSnapshot``), or None when
    only the whole session says it (see the module)."""
    if before.keys() - after.keys():
        return None
    fields: dict[str, Any] = {}
    appended: dict[str, list[Any]] = {}
    assignments: list[dict[str, Any]] = []
    for name, value in after.items():
        old = before.get(name)
        if old == value:
            continue
        if name == "assignments" and isinstance(old, list) and isinstance(value, list):
            changed = _changed_assignments(old, value)
            if changed is None:
                return None
            assignments = changed
        elif isinstance(old, list) and isinstance(value, list) and len(value) > len(old) and value[: len(old)] == old:
            appended[name] = value[len(old) :]
        else:
            fields[name] = value
    return SessionDelta(fields=fields, appended=appended, assignments=tuple(assignments))


def _changed_assignments(old: list[Any], new: list[Any]) -> list[dict[str, Any]] | None:
    """The assignments of ``new`` that differ from ``old`` or are new; None when one was removed
    or the order changed."""
    old_ids = [a.get("id") if isinstance(a, dict) else None for a in old]
    new_ids = [a.get("id") if isinstance(a, dict) else None for a in new]
    if None in new_ids or new_ids[: len(old_ids)] != old_ids:
        return None
    return [a for i, a in enumerate(new) if i >= len(old) or old[i] != a]


def apply_session_delta(session: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """``session`` (a JSON form) with ``delta`` (a ``SessionDelta``'s JSON form) applied; a new dict."""
    result = {**session, **delta.get("fields", {})}
    for name, items in delta.get("appended", {}).items():
        result[name] = [*(result.get(name) or []), *items]
    changed = delta.get("assignments") or []
    if changed:
        merged = list(result.get("assignments") or [])
        where = {a.get("id"): i for i, a in enumerate(merged)}
        for assignment in changed:
            i = where.get(assignment.get("id"))
            if i is None:
                merged.append(assignment)
            else:
                merged[i] = assignment
        result["assignments"] = merged
    return result


__all__ = ["WHOLE_EVERY", "SessionDelta", "SessionStateDelta", "apply_session_delta", "session_delta"]
