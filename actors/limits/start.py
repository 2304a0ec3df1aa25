"""How the resource monitor starts: supervised (a crashed monitor is restarted and enforces the
limits again), before the workers it watches; it gets their refs once they exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.actors.supervision.starting import start_supervised
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.config.settings import Settings


def start_monitor(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    settings: Settings,
    session_dir: Path,
    listeners: tuple[Any, ...],
    workers: dict[str, SupervisedRef],
) -> SupervisedRef | None:
    """The monitor when ``[limits] enabled``; ``workers`` is filled once they start."""
    if not settings.limits.enabled:
        return None
    return start_supervised(
        started,
        supervisor,
        "monitor",
        ResourceMonitor,
        workers=workers,
        settings=settings.limits,
        session_dir=session_dir,
        listeners=listeners,
    )
