"""Supervisor actor: restarts crashed actors within a budget. Pykka has no supervision.

Every supervised actor is reached through a ``SupervisedRef``: a stable handle whose target
is swapped on restart, so the refs other actors hold stay valid. A supervised actor reports
its own crash from ``on_failure`` (``report_crash``); the supervisor starts a new one from
the factory it was registered with. More than ``max_restarts`` crashes of one actor within
``window_s`` seconds and the supervisor stops restarting it and tells the coordinator,
which fails the session with the reason.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Sequence

import pykka

from messages.supervision import ActorCrashed, ActorRestarted, SupervisionFailed

log = logging.getLogger(__name__)


class SupervisedRef:
    """Stands for whichever incarnation of an actor is current. Thread-safe."""

    def __init__(self, name: str, factory: Callable[["SupervisedRef"], pykka.ActorRef[Any]] | None = None
                 ) -> None:
        self.name = name
        self._factory = factory
        self._lock = threading.Lock()
        self._ref: pykka.ActorRef[Any] | None = None

    def start(self) -> "SupervisedRef":
        """Start (or start anew) the actor from its factory."""
        assert self._factory is not None
        ref = self._factory(self)
        with self._lock:
            self._ref = ref
        return self

    def set(self, ref: pykka.ActorRef[Any]) -> None:
        """Point at an actor started elsewhere (the coordinator is told of it this way)."""
        with self._lock:
            self._ref = ref

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        """The current incarnation (may be dead between a crash and its restart)."""
        with self._lock:
            return self._ref

    def tell(self, message: Any) -> None:
        """Forward; a message for a crashed actor is dropped with a log line, never raised."""
        ref = self.ref
        if ref is None:
            raise pykka.ActorDeadError(f"{self.name} is not started")
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            log.debug("%s is down; %s dropped", self.name, type(message).__name__)

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Ask the current incarnation (at the edges only, with a timeout)."""
        ref = self.ref
        if ref is None:
            raise pykka.ActorDeadError(f"{self.name} is not started")
        return ref.ask(message, timeout=timeout)

    def is_alive(self) -> bool:
        """True while the current incarnation runs."""
        ref = self.ref
        return ref is not None and ref.is_alive()

    def stop(self, block: bool = True, timeout: float | None = None) -> Any:
        """Stop the current incarnation."""
        ref = self.ref
        if ref is not None:
            return ref.stop(block=block, timeout=timeout)
        return None

    @property
    def factory(self) -> Callable[["SupervisedRef"], pykka.ActorRef[Any]] | None:
        """How to start the actor anew."""
        return self._factory

    def __repr__(self) -> str:
        return f"<SupervisedRef {self.name} -> {self.ref}>"


def report_crash(supervisor: Any, name: str, exception: BaseException | None) -> None:
    """Call from a supervised actor's ``on_failure``: tell the supervisor, never raise."""
    if supervisor is None:
        return
    try:
        supervisor.tell(ActorCrashed(name=name, error=repr(exception)[:2000]))
    except pykka.ActorDeadError:
        log.error("%s crashed after the supervisor stopped: %r", name, exception)


class Supervisor(pykka.ThreadingActor):
    """Restarts crashed actors from their factories, within a restart budget."""

    def __init__(self, max_restarts: int = 3, window_s: float = 60.0,
                 listeners: Sequence[Any] = ()) -> None:
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
            log.error("%s crashed %d times in %.0fs; not restarting it", message.name,
                      len(crashes), self._window)
            fact = SupervisionFailed(name=message.name, error=message.error,
                                     restarts_in_window=len(crashes) - 1)
            for target in (self._coordinator, *self._listeners):
                if target is not None:
                    try:
                        target.tell(fact)
                    except pykka.ActorDeadError:
                        pass
            return
        log.warning("%s crashed (%s); restarting it (%d of %d in %.0fs)", message.name,
                    message.error, len(crashes), self._max, self._window)
        try:
            child.start()
        except Exception as exc:  # noqa: BLE001 - a factory that fails is a crash too
            log.error("restarting %s failed: %r", message.name, exc)
            self._given_up.add(message.name)
            if self._coordinator is not None:
                self._coordinator.tell(SupervisionFailed(
                    name=message.name, error=f"restart failed: {exc!r}", restarts_in_window=len(crashes)))
            return
        fact = ActorRestarted(name=message.name, error=message.error,
                              restarts_in_window=len(crashes))
        for target in (self._coordinator, *self._listeners):
            if target is not None:
                try:
                    target.tell(fact)
                except pykka.ActorDeadError:
                    pass
