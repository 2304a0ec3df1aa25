"""ResourceMonitor actor: samples every agent's process tree, enforces the limits, keeps budgets.

A ticker thread tells the actor ``SampleDue`` every ``limits.interval_s``; the actor reads each
running agent's whole tree (the CLI and every descendant) with long-lived ``psutil.Process``
objects (the first ``cpu_percent`` of a process is a meaningless 0.0, so objects are kept
between samples), reads the machine, publishes ``ResourcesSampled`` and appends it to the
session's ``resources.jsonl`` (rotated to ``resources.1.jsonl`` after ``history_samples``).

Limits are graduated: a warning at ``warn_fraction`` of a limit, then the limit's action
(warn, pause the group, stop the group). Every action is a ``LimitExceeded`` fact with the
figures; the coordinator decides what the session does next. A breach is acted on in the
sample that shows it, so within about one interval. Budgets (cost, tokens) come from the
agents' own usage reports (``EventRecorded`` result events) and pause the session.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil
import pykka
from meta_orchestrator.actors.runtime.session_files import open_in_session, open_private, private_dir, read_jsonl
from meta_orchestrator.actors.runtime.supervision import report_crash_of, tell_all
from meta_orchestrator.config.settings import LimitsSettings
from meta_orchestrator.messages.base import AgentName
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
    EventRecorded,
    EventsRecorded,
    GetWorkerState,
    PauseWorker,
    ResumeWorker,
    StopWorker,
    WorkerStateChanged,
    events_in,
)

log = logging.getLogger(__name__)

MB = 1024 * 1024
RESUME_FACTOR = 1.25  # system memory must recover this far above the minimum before resuming
SAMPLED_STATUSES = ("running", "paused", "stopping")


@dataclass
class _Run:
    """What the monitor knows about one agent's current CLI run."""

    pid: int
    assignment_id: str | None
    started: float
    status: str = "running"
    last_output: float = 0.0
    paused_since: float | None = None
    paused_total: float = 0.0
    silent_at_pause: float = 0.0
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    cpu: collections.deque[tuple[float, float]] = field(default_factory=lambda: collections.deque(maxlen=3600))
    warned: set[str] = field(default_factory=set)
    acted: set[str] = field(default_factory=set)
    paused_by_me: dict[str, str] = field(default_factory=dict)  # limit kind -> reason
    overridden: set[str] = field(default_factory=set)  # the user resumed after these
    resuming: bool = False

    def run_s(self, now: float) -> float:
        paused = self.paused_total + (now - self.paused_since if self.paused_since else 0.0)
        return max(0.0, now - self.started - paused)

    def silent_s(self, now: float) -> float:
        if self.paused_since is not None:
            return self.silent_at_pause
        return max(0.0, now - self.last_output)


class ResourceMonitor(pykka.ThreadingActor):
    """Watches the agents' processes and the machine; acts on the configured limits."""

    def __init__(
        self,
        settings: LimitsSettings,
        session_dir: Path,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        workers: Mapping[AgentName, pykka.ActorRef[Any]] | None = None,
        stop_grace_s: float = 5.0,
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
        self._file: IO[str] | None = None
        self._lines = 0
        self._stop_grace_s = stop_grace_s

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        psutil.cpu_percent(None)  # primes the machine-wide reading
        self._session_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self._session_dir)
        self._open_history()
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
                    self._tokens += _tokens(payload.get("usage"))
        for kind, spent, budget in (
            ("cost_budget", self._cost, self._settings.max_cost_usd),
            ("token_budget", float(self._tokens), self._settings.max_tokens),
        ):
            if budget is not None and spent >= budget:
                self._budget_hit.add(kind)  # the crashed monitor acted on it already
        log.info("resource monitor restarted: %.4f USD and %d tokens spent so far", self._cost, self._tokens)

    def _ask_worker_states(self) -> None:
        """Each worker tells its current state back (a restarted monitor knows no process)."""
        tell_all(self._workers.values(), GetWorkerState(reply_to=self.actor_ref))

    def on_stop(self) -> None:
        self._sampling_stopped.set()
        if self._file is not None:
            self._file.close()
            self._file = None

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
            case EventRecorded() | EventsRecorded():
                for event in events_in(message):
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
        run = self._runs.get(snap.agent)
        if snap.status in ("idle", "exited") or (snap.status != "starting" and snap.pid is None):
            self._runs.pop(snap.agent, None)
            self._resume_pressure_paused()  # a finished agent may make room for a paused one
            return
        if snap.pid is None:
            return
        if run is None or run.pid != snap.pid:
            run = self._runs[snap.agent] = _Run(
                pid=snap.pid, assignment_id=snap.assignment_id, started=now, last_output=now
            )
        if snap.status == "paused" and run.paused_since is None:
            run.paused_since = now
            run.silent_at_pause = now - run.last_output
        elif snap.status == "running" and run.paused_since is not None:
            run.paused_total += now - run.paused_since
            run.paused_since = None
            run.last_output = now - run.silent_at_pause  # paused time is not silence
            if not run.resuming and run.paused_by_me:
                run.overridden |= set(run.paused_by_me)  # the user resumed: only warn now
                run.paused_by_me.clear()
            run.resuming = False
        run.status = snap.status

    def _on_event(self, event: Event) -> None:
        if event.seq is not None and event.seq <= self._replayed.get(event.agent, 0):
            return  # counted from the event file when this monitor started
        if (run := self._runs.get(event.agent)) is not None:
            run.last_output = time.monotonic()
        payload = event.payload
        if payload.kind != "result" or (payload.cost_usd is None and not payload.usage):
            return
        self._cost += payload.cost_usd or 0.0
        self._tokens += _tokens(payload.usage)
        self._check_budgets(event.agent)

    # -- sampling ---------------------------------------------------------------------------------------

    def _sample(self) -> None:
        now = time.monotonic()
        wall = time.time()
        trees = []
        for agent, run in list(self._runs.items()):
            if run.status not in SAMPLED_STATUSES:
                continue
            tree = self._read_tree(agent, run, now)
            if tree is not None:
                trees.append(tree)
        memory = psutil.virtual_memory()
        machine = MachineSample(
            cpu_percent=psutil.cpu_percent(None),
            cpu_count=psutil.cpu_count() or 1,
            memory_available_bytes=memory.available,
            memory_total_bytes=memory.total,
        )
        fact = ResourcesSampled(
            taken_at=wall, machine=machine, agents=tuple(trees), cost_usd=round(self._cost, 6), tokens=self._tokens
        )
        self._persist(fact)
        self._publish(fact)
        for tree in trees:
            self._check_agent(tree, wall)
        self._check_machine(machine, trees, wall)
        self._check_concurrency(wall)

    def _read_tree(self, agent: str, run: _Run, now: float) -> TreeSample | None:
        root = run.procs.get(run.pid)
        try:
            if root is None:
                root = run.procs[run.pid] = psutil.Process(run.pid)
                root.cpu_percent(None)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None  # exited between the worker's report and this sample
        except psutil.AccessDenied:
            members = [root] if root is not None else []
        alive: dict[int, psutil.Process] = {}
        cpu = 0.0
        rss: int | None = 0
        fds: int | None = 0
        for member in members:
            proc = run.procs.get(member.pid)
            if proc is None or not proc.is_running():
                proc = member
                try:
                    proc.cpu_percent(None)  # first reading is meaningless: primes it
                except psutil.Error:
                    continue
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += proc.cpu_percent(None)
                    rss = None if rss is None else rss + proc.memory_info().rss
                    try:
                        fds = None if fds is None else fds + proc.num_fds()
                    except psutil.AccessDenied:
                        fds = None
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                rss = None
                continue
            alive[proc.pid] = proc
        run.procs = alive
        run.cpu.append((now, cpu))
        return TreeSample(
            agent=agent,
            pid=run.pid,
            status=run.status,  # type: ignore[arg-type]
            processes=len(alive),
            cpu_percent=round(cpu, 1),
            rss_bytes=rss,
            open_files=fds,
            run_s=round(run.run_s(now), 3),
            silent_s=round(run.silent_s(now), 3),
        )

    # -- limits -------------------------------------------------------------------------------------------

    def _check_agent(self, tree: TreeSample, sampled_at: float) -> None:
        run = self._runs.get(tree.agent)
        if run is None or run.status != "running":
            return
        limits = self._settings.for_agent(tree.agent)
        now = time.monotonic()
        checks: list[tuple[str, float | None, float | None, str]] = [
            ("rss", tree.rss_bytes / MB if tree.rss_bytes is not None else None, limits.max_rss_mb, "MB"),
            ("processes", tree.processes, limits.max_processes, "processes"),
            ("open_files", tree.open_files, limits.max_open_files, "fds"),
            ("cpu", self._cpu_average(run, now), limits.max_cpu_percent, "%"),
            ("wall", tree.run_s, limits.max_wall_s, "s"),
            ("stall", tree.silent_s, limits.stall_s, "s"),
        ]
        for kind, observed, threshold, unit in checks:
            if observed is None or threshold is None:
                continue
            if observed > threshold:
                action = limits.action(kind)
                if kind in run.overridden:
                    action = "warn"
                if kind in run.acted:
                    continue
                run.acted.add(kind)
                self._act(tree.agent, run, kind, action, observed, threshold, unit, sampled_at)
                if action == "stop":
                    return  # one stop is enough
            elif observed > threshold * self._settings.warn_fraction and kind not in run.warned:
                run.warned.add(kind)
                self._act(
                    tree.agent,
                    run,
                    kind,
                    "warn",
                    observed,
                    threshold * self._settings.warn_fraction,
                    unit,
                    sampled_at,
                    note=f" ({self._settings.warn_fraction:.0%} of the limit {threshold:g} {unit})",
                )

    def _cpu_average(self, run: _Run, now: float) -> float | None:
        window = self._settings.cpu_window_s
        if not run.cpu or now - run.started < window:
            return None  # not enough history for a sustained figure yet
        recent = [cpu for t, cpu in run.cpu if t >= now - window]
        return sum(recent) / len(recent) if recent else None

    def _check_machine(self, machine: MachineSample, trees: list[TreeSample], sampled_at: float) -> None:
        minimum = self._settings.min_free_memory_mb
        if minimum is None:
            return
        available = machine.memory_available_bytes / MB
        if available >= minimum:
            if available >= minimum * RESUME_FACTOR:
                self._resume_kind("system_memory", f"available memory recovered to {available:.0f} MB")
            return
        # Graduated: pause the biggest running tree first, one per sample, until it recovers.
        candidates = sorted(
            (t for t in trees if t.status == "running" and "system_memory" not in self._runs[t.agent].overridden),
            key=lambda t: t.rss_bytes or 0,
            reverse=True,
        )
        if not candidates:
            return
        victim = candidates[0]
        run = self._runs[victim.agent]
        self._act(victim.agent, run, "system_memory", "pause", available, minimum, "MB free", sampled_at)

    def _check_concurrency(self, sampled_at: float) -> None:
        limit = self._settings.max_concurrent_agents
        if limit is None:
            return
        running = sorted(
            ((a, r) for a, r in self._runs.items() if r.status == "running"), key=lambda item: item[1].started
        )
        for agent, run in running[limit:]:  # the newest beyond the limit wait
            if "concurrency" in run.overridden:
                continue
            self._act(agent, run, "concurrency", "pause", len(running), limit, "agents", sampled_at)

    def _resume_pressure_paused(self) -> None:
        limit = self._settings.max_concurrent_agents
        running = sum(1 for r in self._runs.values() if r.status == "running")
        if limit is not None and running < limit:
            waiting = sorted((r.started, a) for a, r in self._runs.items() if "concurrency" in r.paused_by_me)
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
                agent=agent,
                limit=kind,
                action="resume",  # type: ignore[arg-type]
                observed=0,
                threshold=0,
                reason=f"resumed: {why}",
                assignment_id=run.assignment_id,
                sampled_at=time.time(),
            )
        )

    def _act(
        self,
        agent: str,
        run: _Run,
        kind: str,
        action: str,
        observed: float,
        threshold: float,
        unit: str,
        sampled_at: float,
        note: str = "",
    ) -> None:
        verb = {"warn": "warning", "pause": "pausing", "stop": "stopping"}[action]
        reason = f"{kind} limit: {observed:.1f} {unit} > {threshold:g} {unit}{note}; {verb} {agent}"
        if action == "pause":
            if run.paused_by_me.get(kind):
                return
            run.paused_by_me[kind] = reason
            self._tell_worker(agent, PauseWorker(reason=reason))
        elif action == "stop":
            self._tell_worker(agent, StopWorker(reason=reason))
        log.warning("%s", reason)
        self._publish(
            LimitExceeded(
                agent=agent,
                limit=kind,
                action=action,  # type: ignore[arg-type]
                observed=round(observed, 3),
                threshold=threshold,
                unit=unit,
                assignment_id=run.assignment_id,
                reason=reason,
                sampled_at=sampled_at,
            )
        )

    def _check_budgets(self, agent: str) -> None:
        for kind, spent, budget, unit in (
            ("cost_budget", self._cost, self._settings.max_cost_usd, "USD"),
            ("token_budget", float(self._tokens), self._settings.max_tokens, "tokens"),
        ):
            if budget is None or kind in self._budget_hit or spent < budget:
                continue
            self._budget_hit.add(kind)
            reason = f"{kind.replace('_', ' ')} exhausted: {spent:g} {unit} >= {budget:g} {unit}; pausing the session"
            log.warning("%s", reason)
            self._publish(
                LimitExceeded(
                    agent=None,
                    limit=kind,
                    action="pause_session",  # type: ignore[arg-type]
                    observed=round(spent, 6),
                    threshold=budget,
                    unit=unit,
                    reason=reason,
                    sampled_at=time.time(),
                )
            )

    # -- output -------------------------------------------------------------------------------------------

    def _tell_worker(self, agent: str, message: Any) -> None:
        worker = self._workers.get(agent)
        if worker is None:
            log.error("no worker ref for %s; cannot %s", agent, type(message).__name__)
            return
        with contextlib.suppress(pykka.ActorDeadError):
            worker.tell(message)

    def _publish(self, fact: Any) -> None:
        tell_all(self._listeners, fact)

    def _open_history(self) -> None:
        path = self._session_dir / "resources.jsonl"
        try:
            with open_in_session(self._session_dir, path) as existing:
                self._lines = sum(1 for _ in existing)
        except FileNotFoundError:
            self._lines = 0
        self._file = open_private(path)

    def _persist(self, fact: ResourcesSampled) -> None:
        if self._file is None:
            return
        try:
            if self._lines >= self._settings.history_samples:
                self._file.close()
                os.replace(self._session_dir / "resources.jsonl", self._session_dir / "resources.1.jsonl")
                self._file = open_private(self._session_dir / "resources.jsonl")
                self._lines = 0
            self._file.write(json.dumps(fact.model_dump(mode="json", exclude={"message_id"})) + "\n")
            self._file.flush()
            self._lines += 1
        except OSError as exc:
            log.error("cannot write resources.jsonl: %s", exc)


def _tokens(usage: dict[str, Any] | None) -> int:
    """Total tokens in a usage report (claude, codex and gemini name them differently)."""
    if not usage:
        return 0
    for key in ("total_tokens", "totalTokenCount"):
        if isinstance(usage.get(key), int):
            return usage[key]
    return sum(
        value
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if isinstance(value := usage.get(key), int)
    )


__all__ = ["ResourceMonitor"]
