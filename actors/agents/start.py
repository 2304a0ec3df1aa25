"""How the agents start: one supervised worker per run slot of each enabled agent, and the
peers' workers a review starts later on demand, all from what the session's runs share (``AgentRuns``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka
from meta_orchestrator.actors.adapters.registry import driven
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.supervision.starting import start_actor, start_supervised
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.config.settings import AgentSettings, Settings
from meta_orchestrator.messages.base import worker_name

if TYPE_CHECKING:
    from meta_orchestrator.actors.cluster.cluster_wiring import HostSet


@dataclass(frozen=True)
class AgentRuns:
    """What every run of the session shares: where it works, its environment, the host that
    starts it (here or a node's) and, per enabled agent, its settings and its OS sandbox."""

    settings: Settings
    session_id: str
    session_dir: Path
    target: Path
    env: dict[str, str]
    extra_dirs: tuple[Path, ...]
    hosts: HostSet
    agents: dict[str, AgentSettings]  # the enabled agents, each with its tool hook's flags
    sandboxes: dict[str, OsSandbox]

    def worker_arguments(self, agent: str, slot: int = 1) -> dict[str, Any]:
        return {
            "agent": agent,
            "slot": slot,
            "adapter": driven(agent, self.agents[agent].protocol),
            "agent_settings": self.agents[agent],
            "session_settings": self.settings.session,
            "session_id": self.session_id,
            "session_dir": self.session_dir,
            "target": self.target,
            "base_env": self.env,
            "extra_dirs": self.extra_dirs,
            "host": self.hosts.for_agent(agent),
            "sandbox": self.sandboxes.get(agent),
        }


def start_workers(
    started: list[Any], supervisor: pykka.ActorRef[Any], runs: AgentRuns, listeners: tuple[Any, ...]
) -> dict[str, SupervisedRef]:
    """One supervised worker per run slot of each enabled agent (``[agents.<name>]
    max_parallel``), by worker name (``claude``, ``claude#2``), heard by ``listeners``."""
    return {
        worker_name(name, slot): start_supervised(
            started,
            supervisor,
            f"worker:{worker_name(name, slot)}",
            Worker,
            **runs.worker_arguments(name, slot),
            listeners=listeners,
        )
        for name, agent in runs.agents.items()
        for slot in range(1, agent.max_parallel + 1)
    }


def review_worker_starter(
    started: list[Any], runs: AgentRuns, listeners: tuple[Any, ...]
) -> Callable[[str, Path], pykka.ActorRef[Any]]:
    """What the reviewer calls to ask a peer: a read-only review run in a worker of its own,
    recorded under reviews/<id>/, limited by the review timeout, heard by ``listeners`` (the
    resource monitor among them: a review run is watched like any run)."""
    session = runs.settings.session
    timeout_s = min(runs.settings.review.reviewer_timeout_s, session.assignment_timeout_s)
    session_settings = session.model_copy(update={"assignment_timeout_s": timeout_s})

    def start_review_worker(agent: str, events_path: Path) -> pykka.ActorRef[Any]:
        # The review's folder (reviews/<review_id>/<agent>.jsonl) names the review.
        arguments = {
            **runs.worker_arguments(agent),
            "session_settings": session_settings,
            "review_id": events_path.parent.name,
        }
        return start_actor(started, Worker, **arguments, listeners=listeners, events_path=events_path)

    return start_review_worker
