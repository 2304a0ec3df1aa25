"""ResourceMonitor actor: samples every agent's process tree, enforces the limits, keeps budgets.

A ticker thread tells the actor ``SampleDue`` every ``limits.interval_s``; the actor reads each
running agent's whole tree (the CLI and every descendant, ``processes.process_tree``) and the
machine, and the limits read every sample. When it changed since the last one told, a limit
acts on it, or ``limits.heartbeat_s`` after it (``limits.sample_changes``), it publishes ``ResourcesSampled``
and appends it to the session's ``resources.jsonl`` (rotated to ``resources.1.jsonl`` after
``history_samples``).

Limits are graduated (the rules: ``limits.limit_rules``): a warning at ``warn_fraction`` of a
limit, then the limit's action (warn, pause the group, stop the group). The stall limit
watches liveness: a run's output, the CPU its tree used (the reader's running total) and,
only when those two say it is idle, the newest write in its folder (``processes.folder_writes``;
a remote run's node looks at its own checkout and sends the figure with its samples). Every action is a
``LimitExceeded`` fact with the figures; the coordinator decides what the session does next. A
breach is acted on in the sample that shows it, so within about one interval. Budgets (cost,
tokens) come from the agents' own usage reports (``EventsRecorded`` result events) and pause
the session.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.limits.limit_rules import (
    MB,
    RESUME_FACTOR,
    Breach,
    Liveness,
    beyond_concurrency,
    cpu_average,
    drop_older,
    exhausted,
    memory_victim,
    tokens_of,
    tree_breaches,
    walk_due,
)
from meta_orchestrator.actors.processes.folder_writes import newest_write
from meta_orchestrator.actors.processes.run_clock import RunClock
from meta_orchestrator.actors.files.session_files import RotatingJsonl, private_dir, read_jsonl
from meta_orchestrator.actors.supervision.supervision import report_crash_of, tell_all
from meta_orchestrator.actors.limits.sample_changes import worth_telling
from meta_orchestrator.actors.limits.tree_sampler import (
    RemoteTreeSampler,
    TreeSource,
    machine_sample,
    prime_machine,
    tree_reader,
)
from meta_orchestrator.config.settings import AgentLimits, LimitsSettings
from meta_orchestrator.messages.base import worker_name
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.resources import (
    LimitExceeded,
    MachineSample,
    ResourcesSampled,
    SampleDue,
    TreeSample,
    WatchWorkers,
)
from meta_orchestrator.messages.worker import (
    EventsRecorded,
    GetWorkerState,
    PauseWorker,
    ResumeWorker,
    StopWorker,
    WorkerStateChanged,
)

log = logging.getLogger(__name__)

SAMPLED_STATUSES = ("running", "paused", "stopping")
CPU_SAMPLES_KEPT = 3600


def run_key(agent: str, review_id: str | None, slot: int | None = 1) -> str:
    """The monitor's name for a run: each worker of the agent's own runs one at a time (its
    name: ``claude``, ``claude#2`` for its second parallel run); a peer's review run has a
    worker of its own beside them."""
    return worker_name(agent, slot or 1) if review_id is None else f"{agent} review {review_id}"


@dataclass
class _Run:
    """What the monitor knows about one agent's current CLI run (or one of its review runs)."""

    assignment_id: str | None
    clock: RunClock
    tree: TreeSource
    agent: str = ""
    slot: int = 1
    review_id: str | None = None
    worker: Any = None  # a review run's own worker (None: the agent's, in ``_workers``)
    status: str = "running"
    last_output: float = 0.0
    silent_at_pause: float = 0.0
    cpu: collections.deque[tuple[float, float]] = field(
        default_factory=lambda: collections.deque(maxlen=CPU_SAMPLES_KEPT)
    )
    # (run seconds, CPU seconds the tree used so far), while running: the stall limit's CPU
    activity: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    workdir: str | None = None  # a local run's folder
    newest_write: float | None = None  # time.time() of the newest write found in it
    walked_at: float | None = None  # when it was looked for (monotonic)
    warned: set[str] = field(default_factory=set)
    acted: set[str] = field(default_factory=set)
    paused_by_me: dict[str, str] = field(default_factory=dict)  # limit kind -> reason
    overridden: set[str] = field(default_factory=set)  # the user resumed after these
    resuming: bool = False

    @property
    def pid(self) -> int:
        return self.tree.pid

    @property
    def who(self) -> str:
        """The run as a limit's reason names it."""
        return (
            worker_name(self.agent, self.slot)
            if self.review_id is None
            else f"{self.agent}'s review run {self.review_id}"
        )

    def silent_s(self, now: float) -> float:
        if self.clock.paused:
            return self.silent_at_pause
        return max(0.0, now - self.last_output)


class ResourceMonitor(pykka.ThreadingActor):
    """Watches the agents' processes and the machine; acts on the configured limits."""

    def __init__(
        self,
        settings: LimitsSettings,
        session_dir: Path,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        workers: Mapping[str, pykka.ActorRef[Any]] | None = None,  # by worker name (claude#2)
    ) -> None:
        super().__init__()
        self._settings = settings
        self._session_dir = session_dir
        self._listeners = tuple(listeners)
        self._workers: dict[str, Any] = dict(workers or {})
        self._runs: dict[str, _Run] = {}
        self._cost = 0.0
        self._tokens = 0
        self._budget_hit: set[str] = set()
        self._replayed: dict[str, int] = {}  # agent -> last seq counted from its event file
        self._sampling_stopped = threading.Event()  # not _stop: pykka owns that name
        self._history: RotatingJsonl | None = None
        self._told: ResourcesSampled | None = None  # the last sample told (sample_changes)
        self._told_at = 0.0  # when (monotonic)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        prime_machine()
        self._session_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self._session_dir)
        self._history = RotatingJsonl(self._session_dir, "resources", self._settings.history_samples)
        threading.Thread(target=self._tick, name="resource-ticker", daemon=True).start()
        if self._workers:  # started anew after a crash: learn what runs and what was spent
            self._replay_spending()
            self._ask_worker_states()

    def _replay_spending(self) -> None:
        """The spend the agents reported before the crash, from their event files (the
        budgets must not start again from zero); later events arrive as messages."""
        for agent in self._workers:
            for record in read_jsonl(self._session_dir / f"{agent}.jsonl").records:
                seq = record.get("seq")
                if isinstance(seq, int):
                    self._replayed[agent] = max(self._replayed.get(agent, 0), seq)
                payload = record.get("payload") or {}
                if payload.get("kind") == "result":
                    self._cost += payload.get("cost_usd") or 0.0
                    self._tokens += tokens_of(payload.get("usage"))
        for kind, *_ in exhausted(self._cost, self._tokens, self._settings):
            self._budget_hit.add(kind)  # the crashed monitor acted on it already
        log.info("resource monitor restarted: %.4f USD and %d tokens spent so far", self._cost, self._tokens)

    def _ask_worker_states(self) -> None:
        """Each worker tells its current state back (a restarted monitor knows no process)."""
        tell_all(self._workers.values(), GetWorkerState(reply_to=self.actor_ref))

    def on_stop(self) -> None:
        self._sampling_stopped.set()
        if self._history is not None:
            self._history.close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # The supervisor starts a new monitor, which asks the workers what runs now.
        self.on_stop()
        report_crash_of(self, exception_value)

    def _tick(self) -> None:
        """Ticker thread: tells the actor when a sample is due; touches no actor state."""
        interval = self._settings.interval_s
        while not self._sampling_stopped.wait(interval):
            try:
                self.actor_ref.tell(SampleDue())
            except pykka.ActorDeadError:
                return

    # -- switchboard -----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case SampleDue():
                return self._sample()
            case WorkerStateChanged():
                return self._on_worker_state(message)
            case EventsRecorded():
                for event in message.events:
                    self._on_event(event)
                return None
            case WatchWorkers():
                self._workers.update(dict(message.workers))
                self._ask_worker_states()
                return None
        return super().on_receive(message)

    # -- what the workers tell -----------------------------------------------------------------------

    def _on_worker_state(self, message: WorkerStateChanged) -> None:
        snap = message.snapshot
        now = time.monotonic()
        key = run_key(snap.agent, snap.review_id, snap.slot)
        run = self._runs.get(key)
        if snap.status in ("idle", "exited") or (snap.status != "starting" and snap.pid is None):
            self._runs.pop(key, None)
            self._resume_pressure_paused()  # a finished agent may make room for a paused one
            return
        if snap.pid is None:
            return
        if run is None or run.pid != snap.pid:
            run = self._runs[key] = _Run(
                assignment_id=snap.assignment_id,
                agent=snap.agent,
                slot=snap.slot,
                review_id=snap.review_id,
                worker=snap.worker,
                clock=RunClock(started=now),
                # A remote run's tree is on its node: the samples that come with its lines.
                tree=tree_reader(snap.pid, snap.remote_sample, snap.node),
                last_output=now,
                workdir=snap.workdir,
            )
        if snap.status == "paused" and not run.clock.paused:
            run.clock.pause(now)
            run.silent_at_pause = now - run.last_output
        elif snap.status == "running" and run.clock.paused:
            run.clock.resume(now)
            run.last_output = now - run.silent_at_pause  # paused time is not silence
            if not run.resuming and run.paused_by_me:
                run.overridden |= set(run.paused_by_me)  # the user resumed: only warn now
                run.paused_by_me.clear()
            run.resuming = False
        run.status = snap.status

    def _on_event(self, event: Event) -> None:
        own = run_key(event.agent, None, event.slot)  # its worker's name, its event file's stem
        if event.seq is not None and event.seq <= self._replayed.get(own, 0):
            return  # counted from the event file when this monitor started
        review = run_key(event.agent, event.assignment_id)
        if (run := self._runs.get(review if review in self._runs else own)) is not None:
            run.last_output = time.monotonic()
        payload = event.payload
        if payload.kind != "result" or (payload.cost_usd is None and not payload.usage):
            return
        self._cost += payload.cost_usd or 0.0
        self._tokens += tokens_of(payload.usage)
        self._check_budgets()

    # -- sampling ---------------------------------------------------------------------------------------

    def _sample(self) -> None:
        now = time.monotonic()
        wall = time.time()
        trees = []
        for run in list(self._runs.values()):
            if run.status not in SAMPLED_STATUSES:
                continue
            tree = self._read_tree(run, now)
            if tree is not None:
                trees.append(tree)
        machine = machine_sample()
        fact = ResourcesSampled(
            taken_at=wall, machine=machine, agents=tuple(trees), cost_usd=round(self._cost, 6), tokens=self._tokens
        )
        breaches = [said for tree in trees if (said := self._agent_breaches(tree)) is not None]
        # A sample a limit acts on is always told: the charts and resources.jsonl show the
        # figure that crossed it, even when it moved less than the threshold since the last one.
        if self._worth_telling(fact, now, acting=bool(breaches)):
            if self._history is not None:
                self._history.append(fact.model_dump(mode="json", exclude={"message_id"}))
            self._publish(fact)
        for key, run, of_run in breaches:
            for breach in of_run:
                (run.warned if breach.early else run.acted).add(breach.kind)
                self._act(key, run, breach, wall)
        self._check_machine(machine, trees, wall)
        self._check_concurrency(wall)

    def _worth_telling(self, fact: ResourcesSampled, now: float, acting: bool) -> bool:
        """Only a sample that changed, one a limit acts on, or the heartbeat goes out; the
        limits read every one."""
        since = None if self._told is None else now - self._told_at
        if not acting and not worth_telling(self._told, fact, since, self._settings.heartbeat_s):
            return False
        self._told, self._told_at = fact, now
        return True

    def _read_tree(self, run: _Run, now: float) -> TreeSample | None:
        reading = run.tree.read()
        if reading is None:
            return None
        run.cpu.append((now, reading.cpu_percent))
        if run.status == "running" and not run.clock.paused:  # paused time is no idleness
            run.activity.append((run.clock.run_s(now), reading.cpu_time_s))
            drop_older(run.activity, self._settings.for_agent(run.agent).stall_s or 0.0)
        return TreeSample(
            agent=run.agent,
            slot=run.slot,
            review_id=run.review_id,
            pid=run.pid,
            status=run.status,
            processes=reading.processes,
            cpu_percent=round(reading.cpu_percent, 1),
            rss_bytes=reading.rss_bytes,
            tmpfs_bytes=reading.tmpfs_bytes,
            open_files=reading.open_files,
            run_s=round(run.clock.run_s(now), 3),
            silent_s=round(run.silent_s(now), 3),
            node=getattr(run.tree, "node", None),
        )

    # -- limits -------------------------------------------------------------------------------------------

    def _agent_breaches(self, tree: TreeSample) -> tuple[str, _Run, list[Breach]] | None:
        """What a run's limits say of its sample (None: nothing, or the run is not running)."""
        key = run_key(tree.agent, tree.review_id, tree.slot)
        run = self._runs.get(key)
        if run is None or run.status != "running":
            return None
        now = time.monotonic()
        limits = self._settings.for_agent(tree.agent)
        breaches = tree_breaches(
            tree,
            cpu_average(run.cpu, run.clock.started, now, self._settings.cpu_window_s),
            limits,
            self._settings.warn_fraction,
            acted=run.acted,
            warned=run.warned,
            overridden=run.overridden,
            live=self._liveness(run, tree, limits),
        )
        return (key, run, list(breaches)) if breaches else None

    def _liveness(self, run: _Run, tree: TreeSample, limits: AgentLimits) -> Liveness:
        """The run's signs of life; its folder is walked only when the others say it is idle."""
        if isinstance(run.tree, RemoteTreeSampler):
            return Liveness(tree.silent_s, run.tree.written_s(), tuple(run.activity))
        live = Liveness(tree.silent_s, self._written_s(run), tuple(run.activity))
        if limits.stall_s is None or run.workdir is None:
            return live
        now = time.monotonic()
        since_walk = None if run.walked_at is None else now - run.walked_at
        if walk_due(live, limits.stall_s, self._settings.warn_fraction, limits.stall_cpu_percent, since_walk):
            run.newest_write, run.walked_at = newest_write(run.workdir, until=time.time()), now
            live = Liveness(tree.silent_s, self._written_s(run), live.cpu)
        return live

    @staticmethod
    def _written_s(run: _Run) -> float | None:
        return None if run.newest_write is None else max(0.0, time.time() - run.newest_write)

    def _check_machine(self, machine: MachineSample, trees: list[TreeSample], sampled_at: float) -> None:
        minimum = self._settings.min_free_memory_mb
        if minimum is None:
            return
        available = machine.memory_available_bytes / MB
        if available >= minimum:
            if available >= minimum * RESUME_FACTOR:
                self._resume_kind("system_memory", f"available memory recovered to {available:.0f} MB")
            return
        exempt = {key for key, run in self._runs.items() if "system_memory" in run.overridden}
        victim = memory_victim(trees, exempt, key=lambda t: run_key(t.agent, t.review_id, t.slot))
        if victim is not None:
            key = run_key(victim.agent, victim.review_id, victim.slot)
            breach = Breach("system_memory", "pause", available, minimum, "MB free")
            self._act(key, self._runs[key], breach, sampled_at)

    def _check_concurrency(self, sampled_at: float) -> None:
        limit = self._settings.max_concurrent_agents
        if limit is None:
            return
        running = [(r.clock.started, a) for a, r in self._runs.items() if r.status == "running"]
        for agent in beyond_concurrency(running, limit):
            run = self._runs[agent]
            if "concurrency" in run.overridden:
                continue
            self._act(agent, run, Breach("concurrency", "pause", len(running), limit, "agents"), sampled_at)

    def _resume_pressure_paused(self) -> None:
        limit = self._settings.max_concurrent_agents
        running = sum(1 for r in self._runs.values() if r.status == "running")
        if limit is not None and running < limit:
            waiting = sorted((r.clock.started, a) for a, r in self._runs.items() if "concurrency" in r.paused_by_me)
            for _, agent in waiting[: limit - running]:
                self._resume(agent, "concurrency", "another agent finished")

    def _resume_kind(self, kind: str, why: str) -> None:
        for agent, run in list(self._runs.items()):
            if kind in run.paused_by_me:
                self._resume(agent, kind, why)

    def _resume(self, agent: str, kind: str, why: str) -> None:
        run = self._runs[agent]
        reason = run.paused_by_me.pop(kind)
        if run.paused_by_me:
            return  # still held by another limit
        run.resuming = True
        self._tell_worker(agent, ResumeWorker(reason=f"{why} (was: {reason})"))
        self._publish(
            LimitExceeded(
                agent=run.agent or agent,
                limit=kind,
                action="resume",
                observed=0,
                threshold=0,
                reason=f"resumed: {why}",
                assignment_id=run.assignment_id,
                sampled_at=time.time(),
            )
        )

    def _act(self, key: str, run: _Run, breach: Breach, sampled_at: float) -> None:
        agent = run.agent or key
        reason = breach.reason(run.who or key)
        if breach.action == "pause":
            if run.paused_by_me.get(breach.kind):
                return
            run.paused_by_me[breach.kind] = reason
            self._tell_worker(key, PauseWorker(reason=reason))
        elif breach.action == "stop":
            self._tell_worker(key, StopWorker(reason=reason))
        log.warning("%s", reason)
        self._publish(
            LimitExceeded(
                agent=agent,
                limit=breach.kind,
                action=breach.action,
                observed=round(breach.observed, 3),
                threshold=breach.threshold,
                unit=breach.unit,
                assignment_id=run.assignment_id,
                reason=reason,
                sampled_at=sampled_at,
            )
        )

    def _check_budgets(self) -> None:
        for kind, spent, budget, unit in exhausted(self._cost, self._tokens, self._settings):
            if kind in self._budget_hit:
                continue
            self._budget_hit.add(kind)
            reason = f"{kind.replace('_', ' ')} exhausted: {spent:g} {unit} >= {budget:g} {unit}; pausing the session"
            log.warning("%s", reason)
            self._publish(
                LimitExceeded(
                    agent=None,
                    limit=kind,
                    action="pause_session",
                    observed=round(spent, 6),
                    threshold=budget,
                    unit=unit,
                    reason=reason,
                    sampled_at=time.time(),
                )
            )

    # -- output -------------------------------------------------------------------------------------------

    def _tell_worker(self, key: str, message: Any) -> None:
        run = self._runs.get(key)
        worker = run.worker if run is not None and run.worker is not None else self._workers.get(key)
        if worker is None:
            log.error("no worker ref for %s; cannot %s", key, type(message).__name__)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            worker.tell(message)

    def _publish(self, fact: Any) -> None:
        tell_all(self._listeners, fact)


__all__ = ["ResourceMonitor"]
