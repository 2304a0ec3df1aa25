"""The ``[limits]`` section: what the resource monitor samples and tells, each agent's limits
and the session's budgets, and the hard caps set at spawn."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from meta_orchestrator.messages.base import AgentName


class _Section(BaseModel):
    """As ``settings.Section`` (which imports this module): frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# An agent's largest file: past it a write fails ("File too large") instead of filling the disk.
DEFAULT_MAX_FILE_MB = 1024

LimitAction = Literal["warn", "pause", "stop"]
LIMIT_KINDS: tuple[str, ...] = ("rss", "cpu", "processes", "open_files", "wall", "stall")


def _default_limit_actions() -> dict[str, LimitAction]:
    return {"rss": "stop", "cpu": "warn", "processes": "stop", "open_files": "warn", "wall": "stop", "stall": "stop"}


class AgentLimits(_Section):
    """Limits on one agent's whole process tree (the CLI and everything it started).

    ``None`` switches a limit off. Crossing ``warn_fraction`` of a limit is a warning; crossing
    the limit itself takes the limit's action from ``actions``.
    """

    max_rss_mb: float | None = Field(default=4096, gt=0, description="resident memory of the tree")
    max_cpu_percent: float | None = Field(
        default=None, gt=0, description="CPU of the tree (100 = one core), averaged over limits.cpu_window_s"
    )
    max_processes: int | None = Field(default=256, ge=1, description="processes in the tree")
    max_open_files: int | None = Field(default=None, ge=1, description="file descriptors held by the tree")
    max_wall_s: float | None = Field(
        default=None,
        gt=0,
        description="run time of one assignment, "
        "paused time not counted (session.assignment_timeout_s is "
        "the worker's own backstop)",
    )
    stall_s: float | None = Field(
        default=300,
        gt=0,
        description="longest time a run may be idle: no output, no file written in its folder and its "
        "tree's CPU at most stall_cpu_percent over this window (paused time not counted); a run busy "
        "in a silent test suite is not idle",
    )
    stall_cpu_percent: float = Field(
        default=10.0,
        ge=0,
        description="CPU of the tree (100 = one core), averaged over stall_s, at or below which it counts "
        "as idle: a CLI hung on a dead connection or retrying a request without end uses a little, "
        "never none (opencode retrying a 500: 1.5-3%, 5.3% on a machine loaded from every side), a test "
        "suite far more",
    )
    actions: dict[str, LimitAction] = Field(
        default_factory=_default_limit_actions,
        description="what crossing each limit does: warn (a fact only), pause (SIGSTOP the group "
        "until the pressure passes or the user resumes), stop (SIGTERM, SIGKILL after "
        "session.stop_grace_s)",
    )

    @model_validator(mode="after")
    def _known_actions(self) -> AgentLimits:
        unknown = set(self.actions) - set(LIMIT_KINDS)
        if unknown:
            raise ValueError(
                f"unknown limit(s) in actions: {', '.join(sorted(unknown))}; known: {', '.join(LIMIT_KINDS)}"
            )
        return self

    def action(self, kind: str) -> LimitAction:
        """The configured action for a limit kind (the default table fills gaps)."""
        return self.actions.get(kind) or _default_limit_actions()[kind]


class LimitsSettings(_Section):
    """The resource monitor: sampling, per-agent and session limits, hard caps at spawn."""

    enabled: bool = Field(default=True, description="run the resource monitor")
    interval_s: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        description="seconds between samples; a breach is acted on within about one interval",
    )
    history_samples: int = Field(
        default=600,
        ge=10,
        description="samples kept in the session's resources.jsonl before it rotates to resources.1.jsonl",
    )
    heartbeat_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="the limits read every sample, but the dashboard, history.jsonl and resources.jsonl get one "
        "only when a run's CPU moved by over 1 point, its memory by over 1 MiB, its processes or status changed, "
        "a run started or ended or the spend moved, a limit acted on it, or this long after the last one "
        "(0: every sample)",
    )
    warn_fraction: float = Field(
        default=0.8, gt=0, le=1, description="share of a limit at which a warning fact is published once per run"
    )
    cpu_window_s: float = Field(default=10.0, gt=0, description="window over which CPU is averaged")
    default: AgentLimits = Field(default_factory=AgentLimits, description="limits for every agent")
    agents: dict[AgentName, AgentLimits] = Field(
        default_factory=dict, description="per-agent tables; each replaces [limits.default]"
    )
    min_free_memory_mb: float | None = Field(
        default=256,
        gt=0,
        description="below this much available system memory every running "
        "agent is paused; resumed above 1.25 x this value",
    )
    max_concurrent_agents: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="agent runs at once (each parallel run of an agent counts); the newest beyond it is "
        "paused until another finishes (the coordinator's session.max_concurrent schedules)",
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        description="session budget from the agents' own cost reports; exhausted: the session pauses",
    )
    max_tokens: int | None = Field(
        default=None,
        gt=0,
        description="session budget in tokens from the agents' usage reports; exhausted: the session pauses",
    )
    spawn_nice: int = Field(
        default=5, ge=0, le=19, description="niceness added to every agent CLI at spawn (inherited by its children)"
    )
    spawn_core_dumps: bool = Field(
        default=False,
        description="allow core files (RLIMIT_CORE); off: a crashing 250 MB binary does not fill the disk",
    )
    spawn_max_file_mb: float = Field(
        default=DEFAULT_MAX_FILE_MB,
        ge=0,
        description="RLIMIT_FSIZE: largest file an agent may write (0: no limit); a bigger write fails "
        "with 'File too large' instead of filling the disk",
    )
    spawn_max_user_processes: int | None = Field(
        default=None,
        ge=64,
        description="RLIMIT_NPROC. Off by default: Linux counts every thread "
        "of every process of your user against it, and Node CLIs run many threads",
    )

    def for_agent(self, agent: str) -> AgentLimits:
        """The limits that apply to one agent."""
        return self.agents.get(agent, self.default)
