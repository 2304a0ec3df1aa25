"""How the reviewer starts: supervised; each peer it asks runs in a worker the caller's
``start_review_worker`` starts (this feature imports no other actor)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.reviews.reviewer import Reviewer
from meta_orchestrator.actors.supervision.starting import start_supervised
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.config.settings import Settings


def start_reviewer(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    settings: Settings,
    session: tuple[str, Path, Path],
    start_review_worker: Callable[[str, Path], pykka.ActorRef[Any]],
    decisions_to: Any,
    listeners: tuple[Any, ...],
    task: str,
    workspace: SessionRepo | None,
) -> SupervisedRef:
    """``session``: its id, folder and target; ``decisions_to``: the coordinator (its stand-in)."""
    session_id, session_dir, target = session
    return start_supervised(
        started,
        supervisor,
        "reviewer",
        Reviewer,
        settings=settings.review,
        session_id=session_id,
        session_dir=session_dir,
        target=target,
        agents=tuple(n for n, agent in settings.agents.items() if agent.enabled),
        start_review_worker=start_review_worker,
        decisions_to=decisions_to,
        listeners=listeners,
        task=task,
        workspace=workspace,
    )
