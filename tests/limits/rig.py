"""A demo worker watched by a real ResourceMonitor: the rig shared by the limit tests, the OS
sandbox's sampling test and the stall bench (a plain module, so the bench imports it too)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pykka

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.actors.processes.process_host import ProcessHost
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.config.settings import AgentSettings, LimitsSettings, SessionSettings
from meta_orchestrator.messages.resources import WatchWorkers

PROMPT = "Session: t\nAssignment: implement\nRole: implementer\nTask: Add a /health endpoint\n"


def demo_worker(
    listeners: Sequence[pykka.ActorRef[Any]],
    session_dir: Path,
    target: Path,
    env: dict[str, str],
    agent: str = "claude",
    slot: int = 1,
    session_id: str = "t",
    sandbox: OsSandbox | None = None,
    host: ProcessHost | None = None,
) -> pykka.ActorRef[Any]:
    """A real worker whose CLI is the demo agent ``agent`` (its scenario comes from ``env``),
    run on this machine or through ``host`` (a cluster's)."""
    return Worker.start(
        agent=agent,
        slot=slot,
        adapter=get_adapter(agent),
        agent_settings=AgentSettings(
            command=f"{shlex.quote(sys.executable)} -m meta_orchestrator.actors.agents.demo {agent}",
            share_min=0.4,
            share_max=0.5,
        ),
        session_settings=SessionSettings(stop_grace_s=1.0),
        session_id=session_id,
        session_dir=session_dir,
        target=target,
        listeners=listeners,
        base_env=env,
        sandbox=sandbox,
        host=host,
    )


def watched_demo(
    listener: pykka.ActorRef[Any],
    session_dir: Path,
    target: Path,
    env: dict[str, str],
    settings: LimitsSettings | None = None,
    monitor: Any = None,
    agent: str = "claude",
    session_id: str = "t",
    sandbox: OsSandbox | None = None,
    host: ProcessHost | None = None,
) -> tuple[Any, pykka.ActorRef[Any]]:
    """A demo worker and the monitor watching it, both telling ``listener``: ``monitor`` is one
    already started (a supervised one), else a plain one is started with ``settings``."""
    if monitor is None:
        monitor = ResourceMonitor.start(
            settings=settings or LimitsSettings(), session_dir=session_dir, listeners=(listener,)
        )
    worker = demo_worker(
        (listener, monitor), session_dir, target, env, agent, session_id=session_id, sandbox=sandbox, host=host
    )
    monitor.tell(WatchWorkers(workers=((agent, worker),)))
    return monitor, worker
