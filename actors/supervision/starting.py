"""Starting and stopping actors in order: what every feature's start function uses.

``started`` is the session's list of running actors, in start order; ``stop_all`` stops them
in reverse. A ``LateRef`` stands in for an actor that starts later (the coordinator, last).
"""

from __future__ import annotations

import logging
from typing import Any

import pykka
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.actors.supervision.supervisor import Supervisor
from meta_orchestrator.config.settings import SessionSettings

log = logging.getLogger(__name__)


class LateRef:
    """Stands in for an actor started later (the gateway is told of the coordinator this way:
    it must start first, to hear the coordinator's first facts)."""

    def __init__(self) -> None:
        self.target: pykka.ActorRef[Any] | None = None

    def tell(self, message: Any) -> None:
        """Forward to the target; before it exists, behave like a stopped actor."""
        if self.target is None:
            raise pykka.ActorDeadError("not started yet")
        self.target.tell(message)


def start_actor(started: list[Any], actor_class: type[pykka.Actor], **kwargs: Any) -> pykka.ActorRef[Any]:
    ref = actor_class.start(**kwargs)
    started.append(ref)
    return ref


def start_supervised(
    started: list[Any], by: pykka.ActorRef[Any], child_name: str, actor_class: type[pykka.Actor], **kwargs: Any
) -> SupervisedRef:
    """Start an actor the supervisor ``by`` restarts (same arguments) when it crashes."""
    child = SupervisedRef(child_name, lambda _ref: actor_class.start(**kwargs), by).start()
    by.proxy().supervise(child).get(timeout=5)
    started.append(child)
    return child


def start_supervisor(started: list[Any], settings: SessionSettings, listeners: tuple[Any, ...]) -> pykka.ActorRef[Any]:
    """The supervisor: it restarts a crashed actor, within the session's restart budget."""
    supervisor = Supervisor.start(
        max_restarts=settings.max_restarts, window_s=settings.restart_window_s, listeners=listeners
    )
    started.append(supervisor)  # stopped again first (see stop_supervisor_first) if the start fails half-way
    return supervisor


def stop_supervisor_first(started: list[Any], supervisor: pykka.ActorRef[Any]) -> None:
    """Once everything runs: the supervisor is stopped first, so nothing restarts during shutdown."""
    started.remove(supervisor)
    started.append(supervisor)


def stop_all(started: list[pykka.ActorRef[Any]], timeout: float = 15.0) -> None:
    """Stop actors in reverse start order; log and move on if one hangs.

    ``started`` is emptied from its end: an actor started while the others stop (a review's
    peer, say, after a forced stop) is stopped too, not left running."""
    while started:
        _stop(started.pop(), timeout)
    survivors = pykka.ActorRegistry.get_all()
    if survivors:
        log.error("actors still running after shutdown: %s", survivors)
        pykka.ActorRegistry.stop_all(block=True, timeout=timeout)


def stop_after(started: list[Any], keep: Any, timeout: float = 15.0) -> bool:
    """Stop the actors started after ``keep``, in reverse (the supervisor, moved last, first):
    what a session ran on, while ``keep`` (a dashboard left up after the end) and the actors
    started before it go on until ``stop_all``. False: ``keep`` is not in ``started``, nothing
    was stopped."""
    if keep not in started:
        return False
    while started[-1] is not keep:
        _stop(started.pop(), timeout)
    return True


def _stop(ref: Any, timeout: float) -> None:
    try:
        ref.stop(block=True, timeout=timeout)
    except pykka.Timeout:
        log.error("%s did not stop within %.0fs", ref, timeout)
    except pykka.ActorDeadError:
        pass
