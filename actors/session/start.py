"""How the session starts: the coordinator, last: everything it tells is running, and the
stand-ins the others were given (``LateRef``) now point at it."""

from __future__ import annotations

from typing import Any

import pykka
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.actors.supervision.starting import LateRef, start_actor, stop_supervisor_first


def start_coordinator(
    started: list[Any], supervisor: pykka.ActorRef[Any], slot: LateRef, **arguments: Any
) -> pykka.ActorRef[Any]:
    """``arguments``: the Coordinator's own."""
    coordinator = start_actor(started, Coordinator, **arguments)
    slot.target = coordinator
    supervisor.proxy().set_coordinator(coordinator).get(timeout=5)
    stop_supervisor_first(started, supervisor)
    return coordinator
