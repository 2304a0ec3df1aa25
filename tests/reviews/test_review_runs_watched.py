"""Review runs are watched by the resource monitor like any run: a hung peer is ended by the
stall limit (not after ``reviewer_timeout_s``), a peer over its memory limit is stopped, and
the review's answer says why."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, start, stop_all
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import GetSessionState
from tests.conftest import wait_for
from tests.reviews.test_review_recovery_session import FAST

REVIEWER_TIMEOUT_S = 600.0  # the backstop a hung reviewer lasted before


def _start(tmp_path: Path, env: dict[str, str], **overrides: Any) -> tuple[list[Any], Any]:
    settings = load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            **FAST,
            "limits.enabled": True,
            "limits.interval_s": 0.1,
            "limits.min_free_memory_mb": None,
            "review.reviewer_timeout_s": REVIEWER_TIMEOUT_S,
            **overrides,
        },
    )
    started: list[Any] = []
    request = LaunchRequest(
        task="Add a /health endpoint",
        target=None,
        demo=True,
        dashboard=False,
        console=False,
        env=env,
        answer_channels=("program",),
    )
    return started, start(settings, request, started)


def _answer(running: Any, agent: str, deadline_s: float) -> tuple[dict[str, Any], Any]:
    """The first review answer of ``agent`` saved on disk, and the session's state then."""
    folder = Path(running.session_dir) / "reviews"

    def saved() -> dict[str, Any] | None:
        for path in sorted(folder.glob(f"*/{agent}.answer.json")):
            return json.loads(path.read_text())
        return None

    answer = wait_for(saved, timeout=deadline_s, message=f"{agent}'s review answer")
    return answer, running.coordinator.ask(GetSessionState(), timeout=5)


def _limit_stops(state: Any, limit: str, agent: str) -> list[Any]:
    return [
        d
        for d in state.decisions
        if d.kind == "limit_exceeded"
        and d.limit == limit
        and d.action == "stop"
        and d.agent == agent
        and (d.assignment_id or "").startswith("rev-")
    ]


@pytest.mark.session
def test_a_hung_reviewer_is_ended_by_the_stall_limit(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CODEX_PEER_REVIEW"] = "hang"
    began = time.monotonic()
    started, running = _start(tmp_path, demo_env, **{"limits.default.stall_s": 3.0})
    try:
        answer, state = _answer(running, "codex", deadline_s=120)
        assert time.monotonic() - began < REVIEWER_TIMEOUT_S / 4
        assert answer["verdict"] == "concern" and "stall limit" in json.dumps(answer), answer
        [stop] = _limit_stops(state, "stall", "codex")
        assert stop.reason.endswith(f"stopping codex's review run {stop.assignment_id}")
        # The agent's own worker was not touched: only the review run's.
        assert not [d for d in state.decisions if d.kind == "limit_exceeded" and d.assignment_id == "review"]
    finally:
        stop_all(started)


@pytest.mark.session
def test_a_reviewer_over_its_memory_limit_is_stopped_and_said_so(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE_PEER_REVIEW"] = "memory_hog"
    demo_env["ORCHESTRATE_DEMO_HOG_MB"] = "640"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.1"
    started, running = _start(tmp_path, demo_env, **{"limits.agents.claude.max_rss_mb": 200})
    try:
        answer, state = _answer(running, "claude", deadline_s=120)
        assert answer["verdict"] == "concern" and "rss limit" in json.dumps(answer), answer
        [stop] = _limit_stops(state, "rss", "claude")
        assert stop.observed > 200 and "claude's review run" in stop.reason
    finally:
        stop_all(started)
