"""How recovery starts: supervised, hearing the workers' errors and exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.recovery.recovery import Recovery
from meta_orchestrator.actors.supervision.starting import start_supervised
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.config.settings import Settings


def start_recovery(
    started: list[Any], supervisor: pykka.ActorRef[Any], settings: Settings, target: Path, listeners: tuple[Any, ...]
) -> SupervisedRef:
    return start_supervised(
        started,
        supervisor,
        "recovery",
        Recovery,
        settings=settings.recovery,
        target=target,
        workspace=settings.workspace,
        listeners=listeners,
    )
