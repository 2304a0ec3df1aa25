"""Stable handles on supervised actors, and how a supervised actor reports its own crash.

No actors here: actor modules import this, never ``actors.supervision.supervisor`` itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

import pykka
from meta_orchestrator.messages.supervision import ActorCrashed

log = logging.getLogger(__name__)


_SUPERVISED: dict[str, tuple[Any, str]] = {}  # actor urn -> (supervisor, name)
_SUPERVISED_LOCK = threading.Lock()


def report_crash_of(actor: pykka.Actor, exception: BaseException | None) -> None:
    """The one crash-report path: call from ``on_failure``; tells the actor's supervisor (the
    one its ``SupervisedRef`` was started with), or only logs for an unsupervised actor."""
    with _SUPERVISED_LOCK:
        entry = _SUPERVISED.pop(actor.actor_urn, None)
    if entry is None:
        log.error("%s crashed and has no supervisor: %r", actor, exception)
        return
    supervisor, name = entry
    try:
        supervisor.tell(ActorCrashed(name=name, error=repr(exception)[:2000]))
    except pykka.ActorDeadError:
        log.error("%s crashed after the supervisor stopped: %r", name, exception)


class SupervisedRef:
    """Stands for whichever incarnation of an actor is current. Thread-safe."""

    def __init__(
        self, name: str, factory: Callable[[SupervisedRef], pykka.ActorRef[Any]] | None = None, supervisor: Any = None
    ) -> None:
        self.name = name
        self._factory = factory
        self._supervisor = supervisor
        self._lock = threading.Lock()
        self._ref: pykka.ActorRef[Any] | None = None

    def start(self) -> SupervisedRef:
        """Start (or start anew) the actor from its factory."""
        assert self._factory is not None
        ref = self._factory(self)
        if self._supervisor is not None:
            with _SUPERVISED_LOCK:
                _SUPERVISED[ref.actor_urn] = (self._supervisor, self.name)
        with self._lock:
            self._ref = ref
        return self

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

    def __repr__(self) -> str:
        return f"<SupervisedRef {self.name} -> {self.ref}>"


class ActorHandle(Protocol):
    """What the wiring does with an actor it started: a plain ``pykka.ActorRef`` or a ``SupervisedRef``."""

    def tell(self, message: Any) -> None: ...

    def ask(self, message: Any, *, timeout: float | None = None) -> Any: ...

    def stop(self, *, block: bool = True, timeout: float | None = None) -> Any: ...


def tell_all(listeners: Any, fact: Any) -> None:
    """Tell every listener; one that has stopped (a crashed dashboard...) never stops the teller."""
    for listener in listeners:
        try:
            listener.tell(fact)
        except pykka.ActorDeadError:
            log.debug("a listener has stopped; %s not delivered to it", type(fact).__name__)


class ReplyInbox:
    """Anything with ``tell`` can be a ``reply_to``: this one lets a plain thread wait for the
    answer (the launcher for ``SessionEnded``, the sandbox channel for a decision)."""

    def __init__(self, into: queue.Queue[Any] | None = None) -> None:
        self.queue: queue.Queue[Any] = into if into is not None else queue.Queue()

    def tell(self, message: Any) -> None:
        """Called from an actor's thread; never blocks it."""
        self.queue.put_nowait(message)
