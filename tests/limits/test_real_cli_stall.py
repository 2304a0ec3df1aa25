"""A real pinned CLI hung on a connection that never answers is ended by the stall limit.

The scripted model server holds its answer (``SCRIPT:hold``): the CLI has said its first
line and waits on the socket, printing nothing, writing nothing in its folder, its runtime's
timers using a trickle of CPU. A real worker runs it; a real resource monitor watches it with
the default CPU threshold and a window short enough for a test (its start-up's CPU must slide
out of the window first). The time from the held request to the stop is printed, not bounded:
the benchmark keeps the figure.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.config.settings import AgentLimits, AgentSettings, LimitsSettings, SessionSettings
from meta_orchestrator.messages.resources import LimitExceeded, WatchWorkers
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment

from tests.agents.test_real_clis import MODELS, Rig, cli_bin, server  # noqa: F401 - fixtures
from tests.conftest import wait_for

pytestmark = pytest.mark.realcli

API = {"claude": "anthropic", "codex": "openai"}
WINDOW_S = 15.0


@pytest.mark.parametrize("cli", ["claude", "codex"])
def test_a_real_cli_waiting_on_a_dead_connection_is_ended_by_the_stall_limit(
    cli: str,
    cli_bin,  # noqa: F811 - the fixture
    server,  # noqa: F811 - the fixture
    tmp_path,
    probe: Any,
) -> None:
    rig = Rig(cli, cli_bin, server, tmp_path / "rig")
    session_dir = tmp_path / "session"
    limits = LimitsSettings(
        interval_s=0.5, min_free_memory_mb=None, default=AgentLimits(stall_s=WINDOW_S, max_rss_mb=None)
    )
    monitor = ResourceMonitor.start(settings=limits, session_dir=session_dir, listeners=(probe.ref,))
    worker = Worker.start(
        agent=cli,
        adapter=get_adapter(cli),
        agent_settings=AgentSettings(
            command=rig.exe, model=MODELS[cli], extra_args=rig.extra_args, share_min=0.1, share_max=0.5
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=300),
        session_id="stall-test",
        session_dir=session_dir,
        target=rig.work,
        listeners=(probe.ref, monitor),
        base_env=rig.env,
    )
    monitor.tell(WatchWorkers(workers=((cli, worker),)))
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt="Say hello. SCRIPT:hold", reply_to=probe.ref))
        wait_for(
            lambda: [r for r in server.recorded(API[cli]) if r.answered == "held"],
            timeout=60,
            message=f"{cli}'s request to reach the server",
        )
        held_at = time.time()
        stop = probe.expect(LimitExceeded, timeout=120, where=lambda m: m.action == "stop")
        assert stop.limit == "stall", stop.reason
        finished = probe.expect(AssignmentFinished, timeout=30)
        assert "stall limit" in (finished.stopped_by or "") and not finished.outcome.success
        print(f"{cli} held on a dead connection: stopped {stop.sampled_at - held_at:.1f} s later ({stop.reason})")
    finally:
        server.release()
        worker.stop()
        monitor.stop()
