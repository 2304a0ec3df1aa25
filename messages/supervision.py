"""Supervised actors -> Supervisor: a crash report. Supervisor -> Coordinator: give up."""

from __future__ import annotations

from datetime import datetime

from typing import Literal

from meta_orchestrator.messages.base import Frozen, Message, Timestamp, utc_now


class ActorCrashed(Message):
    """A supervised actor's ``on_failure`` -> Supervisor: a handler raised; the actor is dead."""

    name: str
    error: str


class ActorRestarted(Message):
    """Supervisor -> listeners: the named actor was started anew after a crash."""

    name: str
    error: str
    restarts_in_window: int

    def record(self, at: datetime | None = None) -> ActorRestartedRecord:
        """The entry kept in state.json ``decisions``."""
        return ActorRestartedRecord(at=at or utc_now(), name=self.name, error=self.error)


class ActorRestartedRecord(Frozen):
    """A restart after a crash, in state.json ``decisions``."""

    kind: Literal["actor_restarted"] = "actor_restarted"
    source: Literal["supervisor"] = "supervisor"
    at: Timestamp
    name: str
    error: str


class SupervisionFailed(Message):
    """Supervisor -> Coordinator: an actor crashed more often than the budget allows."""

    name: str
    error: str
    restarts_in_window: int
