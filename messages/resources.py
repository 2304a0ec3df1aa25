"""ResourceMonitor -> Coordinator, Gateway: resource samples and the limits they crossed."""

from __future__ import annotations

from datetime import datetime

from typing import Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, RunSlot, Timestamp, WorkerName, utc_now
from pydantic import ConfigDict, Field

LimitKind = Literal[
    "rss",
    "cpu",
    "processes",
    "open_files",
    "wall",
    "stall",
    "system_memory",
    "concurrency",
    "cost_budget",
    "token_budget",
]
LimitActionTaken = Literal["warn", "pause", "stop", "resume", "pause_session"]


class TreeSample(Frozen):
    """One agent's whole process tree at one instant. ``None``: not readable (AccessDenied)."""

    agent: AgentName
    slot: RunSlot = Field(default=1, description="which of the agent's parallel runs (<agent>#2: 2)")
    pid: int
    status: str = Field(description="the worker's status when sampled: running, paused, ...")
    processes: int
    cpu_percent: float | None = Field(default=None, description="sum over the tree; 100 = one core")
    rss_bytes: int | None = None
    tmpfs_bytes: int = Field(
        default=0, description="held in the run's private tmpfs (/tmp, /dev/shm): counted with rss_bytes as memory"
    )
    open_files: int | None = Field(default=None, description="file descriptors of the tree")
    run_s: float = Field(default=0.0, description="seconds since the run started, pauses excluded")
    silent_s: float = Field(default=0.0, description="seconds since the agent's last event")
    node: str | None = Field(default=None, description="the cluster node it was sampled on (None: this machine)")
    review_id: str | None = Field(default=None, description="the review this run answers (None: the agent's own run)")


class MachineSample(Frozen):
    """The machine at one instant."""

    cpu_percent: float = Field(description="all cores, 0-100")
    cpu_count: int
    memory_available_bytes: int
    memory_total_bytes: int


class ResourcesSampled(Message):
    """ResourceMonitor -> listeners: one sample of every running agent and of the machine.

    Also appended to the session's ``resources.jsonl`` (a bounded, rotated window).
    """

    taken_at: float = Field(description="time.time() of the sample")
    machine: MachineSample
    agents: tuple[TreeSample, ...] = ()
    cost_usd: float = Field(default=0.0, description="session spend reported so far")
    tokens: int = Field(default=0, description="session tokens reported so far")


class LimitExceeded(Message):
    """ResourceMonitor -> listeners (the coordinator decides the session's next step).

    On arrival the action has already been told to the worker (a ``PauseWorker``,
    ``ResumeWorker`` or ``StopWorker`` with ``reason`` = :attr:`reason`), or, for
    ``pause_session``, it is the coordinator's to take. ``agent`` is ``None`` for
    session-wide limits (budgets).
    """

    agent: AgentName | None = None
    limit: LimitKind
    action: LimitActionTaken
    observed: float = Field(description="the figure that crossed the limit (MB, %, s, USD...)")
    threshold: float = Field(description="the configured limit (or the warn level for warn)")
    unit: str = ""
    assignment_id: str | None = None
    reason: str = Field(description="one sentence with the figures, as told to the worker")
    sampled_at: float = Field(description="time.time() of the sample that showed the breach")

    def record(self, at: datetime | None = None) -> LimitExceededRecord:
        """The entry kept in state.json ``decisions``."""
        fields = {n: getattr(self, n) for n in LimitExceededRecord.model_fields if n in type(self).model_fields}
        return LimitExceededRecord(**fields, at=at or utc_now())


class LimitExceededRecord(Frozen):
    """A limit the monitor acted on, in state.json ``decisions``."""

    kind: Literal["limit_exceeded"] = "limit_exceeded"
    source: Literal["resource_monitor"] = "resource_monitor"
    at: Timestamp
    limit: LimitKind
    action: LimitActionTaken
    agent: AgentName | None = None
    assignment_id: str | None = None
    observed: float
    threshold: float
    unit: str = ""
    reason: str


class SampleDue(Message):
    """ResourceMonitor's ticker thread -> ResourceMonitor: time for the next sample."""


class WatchWorkers(Message):
    """Wiring -> ResourceMonitor, SandboxGuard: the workers to watch and act on.

    Told once the workers exist (they are started after these actors, which listen to them).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    workers: tuple[tuple[WorkerName, Any], ...] = Field(default=(), exclude=True)  # by worker name: claude#2
