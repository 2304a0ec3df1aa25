"""Coordinator <-> Worker, and Worker -> everyone who listens to agent events."""

from __future__ import annotations

from typing import Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, RunSlot, worker_name
from meta_orchestrator.messages.events import Event
from pydantic import ConfigDict, Field, model_validator

AssignmentMode = Literal["write", "read_only"]
# waiting: a remote run waits for a free agent slot on the cluster (no process yet).
WorkerStatus = Literal["idle", "starting", "waiting", "running", "paused", "stopping", "exited"]


class RunOutcome(Frozen):
    """What one CLI run amounted to, as its adapter understood the stream and the exit."""

    success: bool
    final_text: str = ""
    session_id: str | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    total_tokens: int | None = None
    files_written: tuple[str, ...] = ()
    permission_denials: tuple[str, ...] = ()
    error: str | None = Field(default=None, description="why it failed, in the CLI's words")
    terminal_event_seen: bool = False


class StartAssignment(Message):
    """Coordinator -> Worker: run the CLI once for this assignment.

    The worker answers with ``AssignmentFinished`` to ``reply_to`` when the process
    group is gone and every line has been recorded.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assignment_id: str
    prompt: str
    mode: AssignmentMode = "write"
    resume_session_id: str | None = None
    extra_dirs: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = Field(default=(), description="flags added by Recovery")
    workdir: str | None = Field(default=None, description="the checkout to work in (None: the target itself)")
    read_only_dirs: tuple[str, ...] = Field(
        default=(), description="folders the run reads but must not write (the checkout's git objects)"
    )
    reply_to: Any = Field(default=None, exclude=True)


class PauseWorker(Message):
    """-> Worker: SIGSTOP the whole process group."""

    reason: str = "user"


class ResumeWorker(Message):
    """-> Worker: SIGCONT the whole process group."""

    reason: str = "user"


class StopWorker(Message):
    """-> Worker: SIGTERM the group, SIGKILL after the grace period."""

    reason: str = "user"


class GetWorkerState(Message):
    """Question (ask, with a timeout): answered with a ``WorkerSnapshot``. Told by an actor
    (which must never ask), the answer is a ``WorkerStateChanged`` told to ``reply_to``: a
    restarted monitor learns this way which process each worker runs."""

    reply_to: Any = Field(default=None, exclude=True, description="receives WorkerStateChanged")


class WorkerSnapshot(Frozen):
    """A worker as seen from outside."""

    agent: AgentName
    slot: RunSlot = Field(default=1, description="which of the agent's parallel runs (its name: <agent>#2)")
    status: WorkerStatus
    pid: int | None = None
    assignment_id: str | None = None
    events_recorded: int = 0
    last_activity: str | None = None
    last_progress: int | None = None
    started_at: float | None = None
    node: str | None = Field(default=None, description="the cluster node the CLI runs on (None: this machine)")
    review_id: str | None = Field(
        default=None, description="the review this worker answers (a peer's read-only run); None: the agent's own"
    )

    @property
    def name(self) -> str:
        """The worker's name: the agent's for its first run, ``claude#2`` for the second."""
        return worker_name(self.agent, self.slot)

    # A review worker's own ref, so the resource monitor can stop that run and not the agent's
    # own worker (it is started per review, after the monitor was told the workers); never serialised.
    worker: Any = Field(default=None, exclude=True)
    # A remote run's latest sample of its tree on its node (a callable, for the resource
    # monitor, which cannot read a process on another machine); never serialised.
    remote_sample: Any = Field(default=None, exclude=True)
    # The folder a local run works in, for the resource monitor's stall limit (None: no run, or
    # a remote one, whose node looks itself); never serialised.
    workdir: str | None = Field(default=None, exclude=True)


class EventsRecorded(Message):
    """Worker -> listeners: these events (one or more, in order: one read of the CLI's output)
    are appended and flushed to ``<agent>.jsonl``. One message per batch keeps a flood cheap
    to pass on; a single event is a batch of one."""

    events: tuple[Event, ...] = Field(min_length=1)
    lines: tuple[str, ...] = Field(
        default=(),
        description="each event as written to the .jsonl, serialised once and reused by whoever forwards it"
        " (empty: not at hand, e.g. read back from disk)",
    )

    @model_validator(mode="after")
    def _one_line_per_event(self) -> EventsRecorded:
        if self.lines and len(self.lines) != len(self.events):
            raise ValueError(f"{len(self.lines)} lines for {len(self.events)} events")
        return self

    def jsonl_lines(self) -> tuple[str, ...]:
        """Each event as its ``.jsonl`` line: the worker's own, or serialised here when absent."""
        return self.lines or tuple(event.model_dump_json(exclude_none=True) for event in self.events)


class WorkerStateChanged(Message):
    """Worker -> listeners: the worker's lifecycle moved (started, paused, exited...)."""

    snapshot: WorkerSnapshot


class AssignmentFinished(Message):
    """Worker -> the ``reply_to`` of ``StartAssignment``: the process group is gone, pipes drained.

    ``returncode`` is negative when a signal ended the CLI; ``None`` when it never started.
    """

    agent: AgentName
    assignment_id: str
    returncode: int | None
    stderr_tail: tuple[str, ...] = ()
    outcome: RunOutcome
    duration_s: float = 0.0
    spawn_error: str | None = None
    stopped_by: str | None = Field(default=None, description="reason given to StopWorker, if any")
    fatal: str | None = Field(
        default=None, description="the session cannot go on (its files cannot be written); the coordinator stops it"
    )


class LinesRead(Message):
    """Worker's reader thread -> Worker: the lines one read of a pipe returned, in order.

    Each line is ``(data, total_bytes, overflow_path)``: ``total_bytes`` is more than
    ``len(data)`` when the line was too long and ``overflow_path`` holds it whole.
    """

    stream: Literal["stdout", "stderr"]
    lines: tuple[tuple[bytes, int, str | None], ...]
    run_id: int


class ProcessEnded(Message):
    """Worker's reaper thread -> Worker: the CLI exited and both pipes reached EOF."""

    returncode: int
    run_id: int
