"""The two tables of legal moves: an assignment's phase and the session's status.

A move not in its table is a bug in the rules, so the core raises rather than persist an
impossible state. Staying in the same place is always allowed.
"""

from __future__ import annotations

from meta_orchestrator.messages.session import TERMINAL_STATUSES

# Phases in which an agent is taken by the assignment (its process runs, or Recovery, a
# back-off or the user's grant decides how it runs again).
ACTIVE_PHASES = frozenset({"preparing", "running", "paused", "recovering", "backing_off", "awaiting_grant"})
# Phases in which the session still waits for the assignment though no agent is taken by it.
WAITING_PHASES = frozenset({"pending", "merging", "conflicted"})
# pending -> failed: a resumed session hears that the user said no to what it asked.
# preparing/running/paused/recovering -> pending: its agent cannot serve and another takes it
# over (or the session saves itself for answers while its checkout is made).
# merging -> pending: the merge conflicted and its agent resolves it in a new run.
ASSIGNMENT_MOVES: dict[str, frozenset[str]] = {
    "pending": frozenset({"preparing", "running", "skipped", "failed"}),
    "preparing": frozenset({"running", "pending", "failed"}),
    "running": frozenset({"paused", "recovering", "interrupted", "pending", "merging", "gated", "done", "failed"}),
    "paused": frozenset({"running", "recovering", "interrupted", "pending", "merging", "gated", "done", "failed"}),
    "recovering": frozenset({"pending", "backing_off", "awaiting_grant", "merging", "gated", "done", "failed"}),
    "awaiting_grant": frozenset({"pending", "backing_off", "merging", "gated", "done", "failed"}),
    "backing_off": frozenset({"pending", "failed"}),
    "merging": frozenset({"pending", "conflicted", "gated", "done", "failed"}),
    "conflicted": frozenset({"pending", "failed"}),
    "gated": frozenset({"done"}),
    "interrupted": frozenset(),
    "done": frozenset(),
    "failed": frozenset(),
    "skipped": frozenset(),
}
_ENDS = frozenset({"failed", "stopped", "waiting"})
SESSION_MOVES: dict[str, frozenset[str]] = {
    "planning": frozenset({"running", *_ENDS}),
    "running": frozenset({"reviewing", "paused", "completed", *_ENDS}),
    "reviewing": frozenset({"running", "paused", "completed", *_ENDS}),
    "paused": frozenset({"running", "reviewing", *_ENDS}),
    **{status: frozenset() for status in TERMINAL_STATUSES},
}


class IllegalTransition(RuntimeError):
    """The rules tried a move their table does not have."""


def check_assignment_move(assignment_id: str, old: str, new: str) -> None:
    if new != old and new not in ASSIGNMENT_MOVES[old]:
        raise IllegalTransition(f"assignment {assignment_id}: {old} -> {new} is not a legal move")


def check_session_move(old: str, new: str) -> None:
    if new != old and new not in SESSION_MOVES[old]:
        raise IllegalTransition(f"session: {old} -> {new} is not a legal move")
