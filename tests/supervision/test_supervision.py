"""Supervision: a crashed actor is restarted within a budget; a crashed worker leaves no CLI."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pykka

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.processes.process_host import HostedProcess, ProcessHost
from meta_orchestrator.actors.supervision.supervision import SupervisedRef, report_crash_of
from meta_orchestrator.actors.supervision.supervisor import Supervisor
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.supervision import ActorCrashed, ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    EventsRecorded,
    PauseWorker,
    StartAssignment,
    WorkerStateChanged,
)
from tests.conftest import wait_for


class Crashy(pykka.ThreadingActor):
    """Raises on "boom"; answers anything else with its incarnation number."""

    incarnations = 0

    def __init__(self) -> None:
        super().__init__()
        Crashy.incarnations += 1
        self.number = Crashy.incarnations

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom in a handler")
        return self.number

    def on_failure(self, exc_type: Any, exc: Any, tb: Any) -> None:
        report_crash_of(self, exc)


def test_a_crashed_actor_is_restarted_until_the_budget_is_spent(probe):
    Crashy.incarnations = 0
    supervisor = Supervisor.start(max_restarts=2, window_s=60)
    supervisor.proxy().set_coordinator(probe.ref).get()
    child = SupervisedRef("crashy", lambda _ref: Crashy.start(), supervisor).start()
    supervisor.proxy().supervise(child).get()
    assert child.ask("who", timeout=5) == 1
    for expected in (2, 3):
        child.tell("boom")
        restarted = probe.expect(ActorRestarted)
        assert restarted.name == "crashy" and "boom in a handler" in restarted.error
        assert child.ask("who", timeout=5) == expected  # the same handle reaches the new one
    child.tell("boom")
    failed = probe.expect(SupervisionFailed)
    assert failed.name == "crashy" and failed.restarts_in_window == 2
    wait_for(lambda: not child.is_alive(), message="the child to stay down")
    child.tell("who")  # a message for a dead actor is dropped, not raised


class FaultyProcess(HostedProcess):
    """A real process whose SIGSTOP raises: a bug in a handler while the CLI runs."""

    def signal_group(self, sig: int) -> bool:
        if sig == signal.SIGSTOP:
            raise RuntimeError("injected fault in the pause handler")
        return super().signal_group(sig)


class FaultyHost(ProcessHost):
    def spawn(self, launch: Any, confinement: Any = None) -> HostedProcess:
        proc = super().spawn(launch, confinement)
        proc.__class__ = FaultyProcess
        return proc


def test_a_worker_that_crashes_mid_run_ends_its_cli_and_reports(tmp_path: Path, probe):
    script = tmp_path / "cli.py"
    script.write_text(
        'import json, time\nprint(json.dumps({"type": "system", "subtype": "init",'
        ' "session_id": "s"}), flush=True)\ntime.sleep(60)\n'
    )
    start_worker = lambda _ref: Worker.start(  # noqa: E731 - the factory a supervisor would restart
        agent="claude",
        adapter=get_adapter("claude"),
        agent_settings=AgentSettings(command=f"{shlex.quote(sys.executable)} {script}", share_min=0, share_max=1),
        session_settings=SessionSettings(stop_grace_s=1),
        session_id="s",
        session_dir=tmp_path / "session",
        target=tmp_path,
        listeners=(probe.ref,),
        base_env=dict(os.environ),
        host=FaultyHost(),
    )
    worker = SupervisedRef("worker:claude", start_worker, probe.ref).start()
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    running = probe.expect(WorkerStateChanged, where=lambda m: m.snapshot.status == "running")
    cli = psutil.Process(running.snapshot.pid)
    worker.tell(PauseWorker())
    crashed = probe.expect(ActorCrashed)
    assert crashed.name == "worker:claude" and "injected fault" in crashed.error
    finished = probe.expect(AssignmentFinished)
    assert finished.stopped_by == "worker crashed" and not finished.outcome.success
    wait_for(
        lambda: not cli.is_running() or cli.status() == psutil.STATUS_ZOMBIE,
        message="the CLI to be ended with its worker",
    )


def test_a_dead_dashboard_never_stops_the_agents(tmp_path: Path, demo_env: dict[str, str]):
    from meta_orchestrator.actors.app.system import LaunchRequest, run
    from meta_orchestrator.config.settings import load_settings

    def kill_dashboard(running: Any) -> None:
        running.gateway.stop(block=False)  # gone before the first agent even starts

    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), "web.port": 0})
    code = run(
        settings,
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=True,
            exit_when_done=True,
            console=False,
            env=demo_env,
            on_started=kill_dashboard,
            print_url=lambda u: None,
        ),
    )
    assert code == 0


def test_a_vanished_coordinator_ends_the_agents_instead_of_hanging(tmp_path: Path, demo_env: dict[str, str]):
    from meta_orchestrator.actors.app.system import LaunchRequest, run
    from meta_orchestrator.config.settings import load_settings

    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK"] = "hang"
    pids: list[int] = []

    def lose_the_coordinator(running: Any) -> None:
        def later() -> None:
            wait_for(
                lambda: (
                    (s := _state(running))
                    and any(a["id"] == "implement" and a["status"] == "running" for a in s["assignments"])
                ),
                timeout=60,
                message="the implementer",
            )
            # "running" is recorded as the assignment is handed to the worker: wait for its CLI.
            agents = wait_for(
                lambda: [p for p in psutil.Process().children(recursive=True) if "claude" in _cmdline(p)],
                timeout=30,
                message="the implementer's CLI",
            )
            pids.extend(p.pid for p in agents)
            running.coordinator.stop(block=False)

        import threading

        threading.Thread(target=later, daemon=True).start()

    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    code = run(
        settings,
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=False,
            console=False,
            env=demo_env,
            on_started=lose_the_coordinator,
        ),
    )
    assert code == 1
    assert pids and not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""  # it has ended already


def _state(running: Any) -> dict | None:
    import json

    try:
        return json.loads((running.session_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def test_a_crashed_reviewer_is_restarted_and_the_session_does_not_wait_on_it_forever(
    tmp_path: Path, demo_env: dict[str, str], monkeypatch: Any
):
    import json

    from meta_orchestrator.actors.app.system import LaunchRequest, run
    from meta_orchestrator.actors.reviews.reviewer import Reviewer
    from meta_orchestrator.config.settings import load_settings
    from meta_orchestrator.messages.events import Event

    demo_env["ORCHESTRATE_DEMO_SCENARIO_CODEX_PEER_REVIEW"] = "hang"  # the design review never ends
    import threading

    armed = threading.Event()
    original = Reviewer._on_event

    def faulty(self: Any, event: Any) -> Any:  # a one-shot fault in a handler
        if armed.is_set():
            armed.clear()
            raise RuntimeError("injected fault in the reviewer")
        return original(self, event)

    monkeypatch.setattr(Reviewer, "_on_event", faulty)

    def crash_the_reviewer(running: Any) -> None:
        def later() -> None:
            wait_for(
                lambda: (s := _state(running)) and s["status"] == "reviewing", timeout=60, message="a review in flight"
            )
            armed.set()
            pykka.ActorRegistry.get_by_class(Reviewer)[0].tell(
                EventsRecorded(events=(Event(type="progress", agent="claude"),))
            )

        threading.Thread(target=later, daemon=True).start()

    # Later reviews by codex hang too: a short reviewer timeout turns them into concerns.
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), "review.reviewer_timeout_s": 3})
    code = run(
        settings,
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=False,
            console=False,
            env=demo_env,
            on_started=crash_the_reviewer,
        ),
    )
    state = json.loads(next((tmp_path / "ws").glob("*/state.json")).read_text())
    restarts = [d for d in state["decisions"] if d.get("kind") == "actor_restarted"]
    assert restarts and restarts[0]["name"] == "reviewer"
    assert code == 0 and state["status"] == "completed"
