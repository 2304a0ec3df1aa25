"""The session core's state: the snapshot (what state.json holds) and what only the rules need."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.base import iso_utc
from meta_orchestrator.messages.recovery import PreflightRecord, RecoveryPlanned
from meta_orchestrator.messages.session import AgentShare, SessionSnapshot
from meta_orchestrator.messages.worker import AssignmentFinished

PLAN_ID = "@plan"  # outside the plan-id alphabet, so no planned assignment can clash

PlanPhase = Literal["running", "recovering", "backing_off", "idle"]


@dataclass(frozen=True)
class CoreConfig:
    """What the session was started with; the rules read it and never change it."""

    settings: Settings
    agents: tuple[str, ...]  # the agents that have a worker
    session_dir: str
    has_reviewer: bool = True
    has_recovery: bool = True
    resume_from: SessionSnapshot | None = None
    resume_ids: Mapping[str, str] = field(default_factory=dict)  # assignment id -> the CLI's session id
    recorded_answers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The session's git workspace: each writing assignment works in a checkout of its own and
    # its commit is merged into ``branch``; False: everyone works in the target (not a repo).
    workspace: bool = False
    branch: str | None = None
    branch_store: str | None = None  # the session's store holding ``branch`` (None: the user's repository)
    branch_folder: str | None = None  # a folder without git imported into the store: apply writes into it
    plan_workdir: str | None = None  # a read-only checkout of the base for planning
    plan_read_only: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanRun:
    """The architect's run while the session plans (gone once a plan is adopted)."""

    agent: str
    prompt: str
    attempts: int = 1  # plan requests sent so far
    rejections: int = 0  # plans that failed validation
    phase: PlanPhase = "running"
    finish: AssignmentFinished | None = None  # recovering: the end Recovery is judging
    recovery_id: str | None = None  # the recovery this run tries

    @property
    def active(self) -> bool:
        return self.phase != "idle"

    @property
    def run_id(self) -> str:
        return PLAN_ID if self.attempts == 1 else f"{PLAN_ID}-{self.attempts}"


@dataclass(frozen=True)
class Ending:
    """Why the session winds down; it ends once nothing runs. abort > stop > wait."""

    stop: str | None = None  # a person (or an abort) asked to stop
    abort: str | None = None  # it cannot go on: it ends failed
    wait: str | None = None  # nobody can answer the open questions: it saves itself, exit 3


@dataclass(frozen=True)
class CoreState:
    config: CoreConfig
    snapshot: SessionSnapshot
    plan: PlanRun | None = None
    ending: Ending = Ending()
    channels: frozenset[str] | None = None  # who can answer now (None: someone always can)
    finishes: Mapping[str, AssignmentFinished] = field(default_factory=dict)  # recovering runs' ends
    grants: Mapping[str, RecoveryPlanned] = field(default_factory=dict)  # question id -> plan on hold
    granted: frozenset[str] = frozenset()  # recovery ids the user allowed
    resumed: frozenset[str] = frozenset()  # questions asked again after a resume (not reviews')
    held_for_answers: bool = False  # a resumed session waits for its re-asked questions first
    # Reviews asked for that no gate holds (assignment id, "" for the whole session): a session
    # completes only once they answered; stopping drops them (the reviewer stops them at the end).
    reviews: frozenset[str] = frozenset()


def initial_state(
    config: CoreConfig,
    *,
    session_id: str,
    task: str,
    target: str,
    now: datetime,
    demo: bool = False,
    orchestrator_pid: int | None = None,
    preflight_fixes: Sequence[PreflightRecord] = (),
    agents_out: Mapping[str, str] | None = None,
    answer_channels: Sequence[str] | None = None,
) -> CoreState:
    stamp = iso_utc(now)
    shares = tuple(
        AgentShare(agent=name, target_min=a.share_min, target_max=a.share_max)
        for name, a in config.settings.agents.items()
    )
    snapshot = SessionSnapshot(
        session_id=session_id,
        task=task,
        target=target,
        workspace=config.session_dir,
        demo=demo,
        status="planning",
        created_at=stamp,
        updated_at=stamp,
        orchestrator_pid=orchestrator_pid,
        shares=shares,
        recoveries=tuple(preflight_fixes),
        agents_out=dict(agents_out or {}),
    )
    channels = frozenset(answer_channels) if answer_channels is not None else None
    return CoreState(config=config, snapshot=snapshot, channels=channels)
