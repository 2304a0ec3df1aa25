"""The resource monitor against real demo agents: memory, processes, stalls, budgets.

Each test runs a real ``Worker`` with a demo CLI and a real ``ResourceMonitor`` listening to
it; the probe hears the monitor's facts and the worker's finish. Reaction times are measured
from the sample that showed the breach and from the agent's own report of crossing it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from meta_orchestrator.actors.app.system import LaunchRequest, start, stop_all
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.actors.limits.sample_changes import changed
from meta_orchestrator.config.settings import LimitsSettings, load_settings
from meta_orchestrator.messages.resources import LimitExceeded, ResourcesSampled, WatchWorkers
from meta_orchestrator.messages.session import ControlRequested, GetSessionState
from meta_orchestrator.messages.worker import AssignmentFinished, EventsRecorded, GetWorkerState, StartAssignment

from tests.conftest import RecordedEvent, wait_for
from tests.limits.rig import PROMPT, demo_worker, watched_demo

INTERVAL = 0.25


def _rig(tmp_path: Path, probe: Any, demo_env: dict[str, str], agent: str = "claude", **limits: Any) -> tuple[Any, Any]:
    defaults = {
        key: limits.pop(key)
        for key in list(limits)
        if key
        in ("max_rss_mb", "max_processes", "stall_s", "stall_cpu_percent", "max_wall_s", "max_cpu_percent", "actions")
    }
    settings = LimitsSettings(
        interval_s=INTERVAL,
        min_free_memory_mb=None,
        default={**LimitsSettings().default.model_dump(), **defaults},
        **limits,
    )
    target = tmp_path / "target"
    target.mkdir()
    return watched_demo(probe.ref, tmp_path / "session", target, demo_env, settings=settings, agent=agent)


def test_samples_cover_the_whole_tree_and_are_persisted(tmp_path, probe, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "fork_bomb_lite"
    demo_env["ORCHESTRATE_DEMO_CHILDREN"] = "5"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.2"
    _monitor, worker = _rig(tmp_path, probe, demo_env)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    sample = probe.expect(ResourcesSampled, timeout=10, where=lambda m: any(a.processes >= 6 for a in m.agents))
    tree = sample.agents[0]
    assert tree.agent == "claude" and tree.rss_bytes and tree.rss_bytes > 1_000_000
    assert tree.open_files and tree.open_files >= 3
    assert sample.machine.memory_total_bytes > 0 and sample.machine.cpu_count >= 1
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert finished.outcome.success
    lines = (tmp_path / "session" / "resources.jsonl").read_text().splitlines()
    # The last sample may come after the run ended (no agent in it): look at those with one.
    with_agents = [agents for line in lines if (agents := json.loads(line)["agents"])]
    assert with_agents and "processes" in with_agents[-1][0]


def test_memory_hog_is_stopped(tmp_path, probe, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "memory_hog"
    demo_env["ORCHESTRATE_DEMO_HOG_MB"] = "640"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"  # 32 MB every 0.1 s: crosses 200 MB in < 1 s
    _monitor, worker = _rig(tmp_path, probe, demo_env, max_rss_mb=200)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=15, where=lambda m: m.action == "stop")
    finished = probe.expect(AssignmentFinished, timeout=10)
    # The agent's RSS is its heap plus the interpreter, so the limit may be crossed before
    # the agent's own count says so: measure from its last report before the stop.
    reports = [
        m.event
        for m in probe.drain()
        if isinstance(m, RecordedEvent)
        and "holding" in (m.event.payload.text or "")
        and m.event.timestamp <= fact.sent_at
    ]
    assert reports, "the agent reported no allocation before it was stopped"
    crossed = max(reports, key=lambda e: e.timestamp)
    reaction = fact.sent_at - crossed.timestamp
    assert fact.limit == "rss" and fact.observed > 200 and fact.agent == "claude"
    # How fast is a figure (`python -m tests.bench.bench --only reactions`), not an assertion:
    # on a loaded machine the sampler's interval stretches and a bound here would only be noise.
    assert not finished.outcome.success and "rss limit" in (finished.stopped_by or "")
    print(
        f"memory hog: stop told {reaction.total_seconds():.3f}s after the agent reported "
        f"crossing the limit; sample-to-action {fact.sent_at.timestamp() - fact.sampled_at:.3f}s"
    )


def test_warning_comes_before_the_limit(tmp_path, probe, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "memory_hog"
    demo_env["ORCHESTRATE_DEMO_HOG_MB"] = "320"
    # Two 32 MB steps lie between the warning share (240 MB) and the limit: paced so that several
    # samples fall between them even when a loaded machine delays some (a sample that jumps
    # past both is a pause with no warning).
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.6"
    _monitor, worker = _rig(tmp_path, probe, demo_env, max_rss_mb=300, actions={"rss": "pause"})
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    warn = probe.expect(LimitExceeded, timeout=60, where=lambda m: m.action == "warn")
    pause = probe.expect(LimitExceeded, timeout=60, where=lambda m: m.action == "pause")
    assert warn.limit == pause.limit == "rss" and warn.sent_at <= pause.sent_at
    wait_for(
        lambda: any(getattr(m, "snapshot", None) and m.snapshot.status == "paused" for m in probe.drain()),
        timeout=5,
        message="the worker paused",
    )


def test_fork_bomb_lite_is_stopped_and_its_children_are_gone(tmp_path, probe, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "fork_bomb_lite"
    demo_env["ORCHESTRATE_DEMO_CHILDREN"] = "40"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.3"
    _monitor, worker = _rig(tmp_path, probe, demo_env, max_processes=20)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=15, where=lambda m: m.action == "stop")
    assert fact.limit == "processes" and fact.observed > 20
    finished = probe.expect(AssignmentFinished, timeout=10)
    assert not finished.outcome.success and "processes limit" in (finished.stopped_by or "")
    # conftest checks that none of the 40 `sleep 300` children is left


def test_silent_agent_is_ended_after_the_stall_limit(tmp_path, probe, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    _monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=1.0)
    started = time.monotonic()
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=10, where=lambda m: m.action == "stop")
    elapsed = time.monotonic() - started
    assert fact.limit == "stall" and fact.observed >= 1.0 and elapsed >= 1.0
    finished = probe.expect(AssignmentFinished, timeout=10)
    assert "stall limit" in (finished.stopped_by or "")


def test_a_cli_hung_on_a_read_is_ended_with_the_stall_reason(tmp_path, probe, demo_env):
    """Blocked on a read nothing answers: no output, no write, no CPU."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    _monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=1.5)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=15, where=lambda m: m.action == "stop")
    assert fact.limit == "stall" and "no file written in its folder, CPU" in fact.reason
    finished = probe.expect(AssignmentFinished, timeout=10)
    assert "stall limit" in (finished.stopped_by or "") and not finished.outcome.success


def test_a_trickle_of_cpu_below_the_threshold_does_not_keep_a_silent_cli_alive(tmp_path, probe, demo_env):
    """Wakes every 0.1 s for a millisecond of CPU (a retry loop's share): still ended."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "heartbeat_silent"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"
    _monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=1.5)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=20, where=lambda m: m.action == "stop")
    assert fact.limit == "stall", fact.reason
    finished = probe.expect(AssignmentFinished, timeout=10)
    assert "stall limit" in (finished.stopped_by or "")


@pytest.mark.parametrize("scenario", ["busy_silent", "writing_silent"])
def test_a_silent_run_that_works_is_left_alone_past_the_window(tmp_path, probe, demo_env, scenario):
    """Three windows without a word, a child burning CPU (a test suite) or files written in
    its folder (a build): neither is a stall, and the run ends by itself."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = scenario
    demo_env["ORCHESTRATE_DEMO_SILENT_S"] = "4.5"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"
    # heartbeat 0: every sample is told, so the probe sees the silence grow past the window
    _monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=1.5, heartbeat_s=0)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=60)
    assert finished.outcome.success and not finished.stopped_by, finished
    silent = [s for m in probe.drain() if isinstance(m, ResourcesSampled) for s in m.agents if s.silent_s > 1.5]
    assert silent, "the run was never silent past the window"
    stalls = [m for m in probe.drain() if isinstance(m, LimitExceeded) and m.limit == "stall"]
    assert not stalls, [m.reason for m in stalls]


def test_an_idle_run_is_told_on_change_and_heartbeat_while_its_limits_read_every_sample(tmp_path, probe, demo_env):
    """A silent run: its samples go out when they change and every heartbeat, the same ones
    into resources.jsonl; the stall limit, which reads every sample, still ends it, and the
    samples it warned and acted on are told (one in four would be a heartbeat by chance)."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=4.0, heartbeat_s=1.0)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    fact = probe.expect(LimitExceeded, timeout=20, where=lambda m: m.action == "stop")
    assert fact.limit == "stall"
    probe.expect(AssignmentFinished, timeout=10)
    monitor.stop()
    lines = (tmp_path / "session" / "resources.jsonl").read_text().splitlines()
    written = [json.loads(line)["taken_at"] for line in lines]
    told = wait_for(
        lambda: len(found := [m for m in probe.drain() if isinstance(m, ResourcesSampled)]) >= len(written) and found,
        message="every sample told reached the probe",
    )
    assert [m.taken_at for m in told] == written
    acted_on = [fact.sampled_at, *(m.sampled_at for m in probe.seen if isinstance(m, LimitExceeded))]
    assert acted_on and all(at in written for at in acted_on), (acted_on, written)
    unchanged = [(a, b) for a, b in zip(told, told[1:], strict=False) if not changed(a, b)]
    assert unchanged, "no heartbeat in four silent seconds"
    # An unchanged sample waited for the heartbeat (the sampling interval is a quarter of it),
    # unless a limit acted on it.
    waited = [b.taken_at - a.taken_at for a, b in unchanged if b.taken_at not in acted_on]
    assert all(gap >= 0.95 for gap in waited), waited


def test_user_resume_overrides_a_pause(tmp_path, probe, demo_env):
    from meta_orchestrator.messages.worker import ResumeWorker, WorkerStateChanged

    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    # heartbeat 0: every sample is told, the barrier below counts them
    _monitor, worker = _rig(tmp_path, probe, demo_env, stall_s=0.5, actions={"stall": "pause"}, heartbeat_s=0)
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    probe.expect(LimitExceeded, timeout=10, where=lambda m: m.action == "pause")
    probe.expect(WorkerStateChanged, timeout=5, where=lambda m: m.snapshot.status == "paused")
    worker.tell(ResumeWorker(reason="user"))
    resumed = probe.expect(WorkerStateChanged, timeout=5, where=lambda m: m.snapshot.status == "running")
    # Barrier: four samples of the resumed, still silent agent. The monitor tells a pause in
    # the pass that samples it, before the next sample, so each would have shown one.
    for _ in range(4):
        probe.expect(ResourcesSampled, timeout=5, where=lambda m: m.sent_at > resumed.sent_at and bool(m.agents))
    later = [m for m in probe.drain() if isinstance(m, LimitExceeded) and m.action == "pause"]
    assert not later


# -- whole sessions -------------------------------------------------------------------------------


def _settings(tmp_path: Path, **overrides: object):
    return load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "limits.interval_s": INTERVAL,
            "limits.min_free_memory_mb": None,
            **overrides,
        },
    )


def _session_state(running) -> Any:
    return running.coordinator.ask(GetSessionState(), timeout=2)


def test_session_records_why_a_memory_hog_implementer_was_stopped(tmp_path, demo_env):
    from meta_orchestrator.actors.app.system import run

    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "memory_hog"
    demo_env["ORCHESTRATE_DEMO_HOG_MB"] = "640"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"
    code = run(
        _settings(tmp_path, **{"limits.agents.claude.max_rss_mb": 200}),
        LaunchRequest(
            task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
        ),
    )
    session = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    state = json.loads((session / "state.json").read_text())
    assert code == 1 and state["status"] == "failed"  # a killed implementer is no success
    implement = next(a for a in state["assignments"] if a["agent"] == "claude")
    assert implement["status"] == "failed" and "rss limit" in implement["error"]
    limits = [d for d in state["decisions"] if d.get("kind") == "limit_exceeded"]
    assert any(d["limit"] == "rss" and d["action"] == "stop" and d["observed"] > 200 for d in limits), limits
    assert (session / "resources.jsonl").stat().st_size > 0


@pytest.mark.session
def test_exhausted_cost_budget_pauses_the_session(tmp_path, demo_env):
    started: list[Any] = []
    try:
        running = start(
            _settings(tmp_path, **{"limits.max_cost_usd": 0.0001}),
            LaunchRequest(
                task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
            ),
            started,
        )
        state = wait_for(
            lambda: (s := _session_state(running)).status == "paused" and s,
            timeout=60,
            message="the session paused on the budget",
        )
        budget = [d for d in state.decisions if d.kind == "limit_exceeded" and d.limit == "cost_budget"]
        assert budget and budget[0].action == "pause_session"
        assert budget[0].observed >= 0.0001
        # Claude's result was the first cost report. Running agents are paused and nothing
        # new starts: what was pending stays pending.
        pending = {a.id for a in state.assignments if a.status == "pending"}
        assert pending
        # Barrier: every worker is paused or done. A worker tells its AssignmentFinished before
        # it answers idle, and the coordinator handles that before the next ask: the
        # scheduling pass a finished run triggers has happened when the state is read.
        wait_for(
            lambda: all(
                w.ask(GetWorkerState(), timeout=2).status in ("paused", "idle", "exited")
                for w in running.workers.values()
            ),
            timeout=30,
            message="every worker paused or done",
        )
        state = _session_state(running)
        assert state.status == "paused"
        assert {a.id for a in state.assignments if a.status == "pending"} == pending
        running.coordinator.tell(ControlRequested(action="stop", source="test"))
        ended = running.ended.get(timeout=30)
        assert ended.status == "stopped"
    finally:
        stop_all(started)


def test_a_crashed_monitor_is_restarted_and_enforces_the_limits_again(tmp_path, probe, demo_env, monkeypatch):
    from meta_orchestrator.actors.supervision.supervision import SupervisedRef
    from meta_orchestrator.actors.supervision.supervisor import Supervisor
    from meta_orchestrator.messages.supervision import ActorRestarted
    from meta_orchestrator.messages.worker import WorkerStateChanged

    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    settings = LimitsSettings(
        interval_s=INTERVAL, min_free_memory_mb=None, default={**LimitsSettings().default.model_dump(), "stall_s": 1.5}
    )
    session_dir = tmp_path / "session"
    target = tmp_path / "target"
    target.mkdir()
    supervisor = Supervisor.start(max_restarts=2, window_s=60, listeners=(probe.ref,))
    workers: dict[str, Any] = {}  # filled once the worker exists, as the wiring does
    monitor = SupervisedRef(
        "monitor",
        lambda _ref: ResourceMonitor.start(
            settings=settings, session_dir=session_dir, listeners=(probe.ref,), workers=workers
        ),
        supervisor,
    ).start()
    supervisor.proxy().supervise(monitor).get(timeout=5)
    _monitor, workers["claude"] = watched_demo(probe.ref, session_dir, target, demo_env, monitor=monitor)
    workers["claude"].tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    probe.expect(WorkerStateChanged, timeout=10, where=lambda m: m.snapshot.status == "running")

    original = ResourceMonitor._sample
    faults = {"left": 1}

    def faulty(self: Any) -> Any:  # one fault in a handler, while the agent runs
        if faults["left"]:
            faults["left"] -= 1
            raise RuntimeError("injected fault in the monitor")
        return original(self)

    monkeypatch.setattr(ResourceMonitor, "_sample", faulty)
    restarted = probe.expect(ActorRestarted, timeout=10)
    assert restarted.name == "monitor" and "injected fault" in restarted.error
    # The new monitor asked the worker what runs, so the silent agent is still ended.
    fact = probe.expect(LimitExceeded, timeout=10, where=lambda m: m.action == "stop")
    assert fact.limit == "stall" and fact.agent == "claude"
    finished = probe.expect(AssignmentFinished, timeout=10)
    assert "stall limit" in (finished.stopped_by or "")


def test_a_restarted_monitor_counts_what_was_spent_before_its_crash(tmp_path, probe):
    from meta_orchestrator.actors.files.session_files import JsonlWriter
    from meta_orchestrator.messages.events import Event, EventPayload

    session_dir = tmp_path / "session"
    session_dir.mkdir()

    def result(seq: int, cost: float) -> Event:
        return Event(type="review", agent="claude", seq=seq, payload=EventPayload(kind="result", cost_usd=cost))

    writer = JsonlWriter(session_dir / "claude.jsonl")
    before = result(1, 0.5)
    writer.write_batch([before.model_dump_json()], before.seq)
    writer.close()
    settings = LimitsSettings(interval_s=INTERVAL, min_free_memory_mb=None, max_cost_usd=1.0)
    # Started with its workers: what the supervisor's factory does after a crash.
    monitor = ResourceMonitor.start(
        settings=settings, session_dir=session_dir, listeners=(probe.ref,), workers={"claude": probe.ref}
    )
    monitor.tell(EventsRecorded(events=(before,)))  # told again after the restart: not counted twice
    monitor.tell(EventsRecorded(events=(result(2, 0.4),)))
    monitor.tell(EventsRecorded(events=(result(3, 0.2),)))
    fact = probe.expect(LimitExceeded, timeout=5, where=lambda m: m.limit == "cost_budget")
    assert fact.action == "pause_session" and fact.observed == pytest.approx(1.1)


def test_parallel_runs_of_one_agent_are_watched_apart(tmp_path, probe, demo_env):
    """claude's second run at once (its worker claude#2) hangs silent while its first works on:
    the stall limit stops the second alone, and names it; each run's samples say its slot."""
    monitor, first = _rig(tmp_path, probe, {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.2"}, stall_s=1.5)
    second = demo_worker(
        (probe.ref, monitor),
        tmp_path / "session",
        tmp_path / "target",
        {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "hang"},
        slot=2,
    )
    monitor.tell(WatchWorkers(workers=(("claude", first), ("claude#2", second))))
    second.tell(StartAssignment(assignment_id="a2", prompt=PROMPT.replace("implement", "a2"), reply_to=probe.ref))
    first.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    sampled = probe.expect(ResourcesSampled, timeout=10, where=lambda m: {t.slot for t in m.agents} == {1, 2})
    assert {(t.agent, t.slot) for t in sampled.agents} == {("claude", 1), ("claude", 2)}
    fact = probe.expect(LimitExceeded, timeout=15, where=lambda m: m.action == "stop")
    assert (fact.limit, fact.assignment_id) == ("stall", "a2") and "claude#2" in fact.reason
    ends = {}
    while len(ends) < 2:
        finished = probe.expect(AssignmentFinished, timeout=30)
        ends[finished.assignment_id] = finished
    assert ends["a1"].outcome.success and ends["a1"].stopped_by is None
    assert "stall limit" in (ends["a2"].stopped_by or "")
    assert (tmp_path / "session" / "claude#2.jsonl").is_file()  # its own event file
    second.stop()
