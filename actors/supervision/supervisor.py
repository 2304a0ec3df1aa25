"""Supervisor actor: restarts crashed actors within a budget. Pykka has no supervision.

Every supervised actor is reached through a ``SupervisedRef``: a stable handle whose target
is swapped on restart, so the refs other actors hold stay valid. A supervised actor reports
its own crash from ``on_failure`` (``report_crash_of``); the supervisor starts a new one from
the factory it was registered with. More than ``max_restarts`` crashes of one actor within
``window_s`` seconds and the supervisor stops restarting it and tells the coordinator,
which fails the session with the reason.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from typing import Any

import pykka
from meta_orchestrator.actors.supervision.supervision import SupervisedRef, tell_all
from meta_orchestrator.messages.supervision import ActorCrashed, ActorRestarted, SupervisionFailed

log = logging.getLogger(__name__)


class Supervisor(pykka.ThreadingActor):
    """Restarts crashed actors from their factories, within a restart budget."""

    def __init__(self, max_restarts: int = 3, window_s: float = 60.0, listeners: Sequence[Any] = ()) -> None:
        super().__init__()
        self._max = max_restarts
        self._window = window_s
        self._listeners = tuple(listeners)
        self._children: dict[str, SupervisedRef] = {}
        self._crashes: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._given_up: set[str] = set()
        self._coordinator: Any = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case ActorCrashed():
                return self._on_crash(message)
        return None

    def supervise(self, child: SupervisedRef) -> None:
        """Register an actor to restart when it crashes (called via the proxy or ask)."""
        self._children[child.name] = child

    def set_coordinator(self, coordinator: Any) -> None:
        """Who hears that supervision gave up."""
        self._coordinator = coordinator

    def _on_crash(self, message: ActorCrashed) -> None:
        child = self._children.get(message.name)
        if child is None or message.name in self._given_up:
            log.error("%s crashed (%s) and is not restarted", message.name, message.error)
            return
        now = time.monotonic()
        crashes = self._crashes[message.name]
        crashes.append(now)
        while crashes and now - crashes[0] > self._window:
            crashes.popleft()
        if len(crashes) > self._max:
            self._given_up.add(message.name)
            log.error("%s crashed %d times in %.0fs; not restarting it", message.name, len(crashes), self._window)
            fact = SupervisionFailed(name=message.name, error=message.error, restarts_in_window=len(crashes) - 1)
            self._tell_everyone(fact)
            return
        log.warning(
            "%s crashed (%s); restarting it (%d of %d in %.0fs)",
            message.name,
            message.error,
            len(crashes),
            self._max,
            self._window,
        )
        try:
            child.start()
        except Exception as exc:  # noqa: BLE001 - a factory that fails is a crash too
            log.error("restarting %s failed: %r", message.name, exc)
            self._given_up.add(message.name)
            self._tell_everyone(
                SupervisionFailed(name=message.name, error=f"restart failed: {exc!r}", restarts_in_window=len(crashes))
            )
            return
        restarted = ActorRestarted(name=message.name, error=message.error, restarts_in_window=len(crashes))
        self._tell_everyone(restarted)

    def _tell_everyone(self, fact: Any) -> None:
        tell_all([t for t in (self._coordinator, *self._listeners) if t is not None], fact)
