"""Supervised actors -> Supervisor: a crash report. Supervisor -> Coordinator: give up."""

from __future__ import annotations

from meta_orchestrator.messages.base import Message


class ActorCrashed(Message):
    """A supervised actor's ``on_failure`` -> Supervisor: a handler raised; the actor is dead."""

    name: str
    error: str


class ActorRestarted(Message):
    """Supervisor -> listeners: the named actor was started anew after a crash."""

    name: str
    error: str
    restarts_in_window: int


class SupervisionFailed(Message):
    """Supervisor -> Coordinator: an actor crashed more often than the budget allows."""

    name: str
    error: str
    restarts_in_window: int
