"""The demo codex in app-server mode: the same bridge and parser as the real one, in demo sessions.

The demo codex answers ``codex app-server`` with the real JSON-RPC (initialize, thread/start,
turn/start, notifications, approval requests before each command and patch); the adapter's
app-server launch runs it under the bridge and ``parser_for("app-server")`` reads the lines.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.config.settings import load_settings
from tests.agents.test_demo_agents import DEMO, TIMEOUT, demo_env, prompt


def through_bridge(text: str, workdir: Path, scenario: str | None = None, mode: Any = "write") -> tuple[Any, list]:
    adapter = get_adapter("codex")
    launch = adapter.build_launch(
        LaunchSpec(
            executable=(*DEMO, "codex"),
            prompt=text,
            workdir=workdir,
            mode=mode,
            env=demo_env(scenario),
            protocol="app-server",
        )
    )
    done = subprocess.run(
        launch.argv, cwd=launch.cwd, env=launch.env, input=launch.stdin, capture_output=True, timeout=TIMEOUT
    )
    parser = adapter.parser_for("app-server")
    drafts = [d for line in done.stdout.splitlines() for d in parser.feed_line(line)]
    drafts.extend(parser.finish(done.returncode, tuple(done.stderr.decode().splitlines()[-20:])))
    return parser.outcome(writing=mode == "write"), drafts


def test_the_demo_reviewer_writes_its_review_through_the_bridge(tmp_path: Path) -> None:
    outcome, drafts = through_bridge(prompt(role="reviewer"), tmp_path)
    assert outcome.success, outcome.error
    assert outcome.files_written == (str(tmp_path / "docs" / "REVIEW.md"),)
    assert (tmp_path / "docs" / "REVIEW.md").is_file() and outcome.session_id
    # No sandbox guard here: codex is told never to ask (the sessions below have one and ask).
    assert [d for d in drafts if d.payload.kind == "approval"] == []
    assert [d.type for d in drafts if d.type == "unknown"] == []
    assert not [d for d in drafts if d.type == "error"], drafts


@pytest.mark.parametrize(
    "scenario,said",
    [
        ("auth_error", "401 Unauthorized"),
        ("crash", "exited (exit 1) before the turn ended"),
        ("garbage", "not JSON"),
    ],
)
def test_the_demo_failures_end_the_run(tmp_path: Path, scenario: str, said: str) -> None:
    outcome, drafts = through_bridge(prompt(role="reviewer"), tmp_path, scenario)
    assert not outcome.success and said in (outcome.error or ""), drafts
    assert [d for d in drafts if d.type == "error" and d.payload.terminal]


def _session(tmp_path: Path, env: dict[str, str], **overrides: Any) -> tuple[int, Path]:
    from meta_orchestrator.actors.app.system import LaunchRequest, run

    settings = load_settings(
        None, {"workspace": str(tmp_path / "ws"), "agents.codex.protocol": "app-server", **overrides}
    )
    request = LaunchRequest(
        task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=env
    )
    code = run(settings, request)
    return code, next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())


def _codex_events(session: Path) -> list[dict[str, Any]]:
    files = [session / "codex.jsonl", *sorted((session / "reviews").glob("*/codex.jsonl"))]
    return [json.loads(line) for f in files if f.is_file() for line in f.read_text().splitlines()]


@pytest.mark.session
def test_a_demo_session_with_codex_on_app_server(tmp_path: Path, demo_env: dict[str, str]) -> None:
    code, session = _session(tmp_path, demo_env)
    assert code == 0
    events = _codex_events(session)
    launches = [e for e in events if e["payload"].get("kind") == "launch"]
    assert launches and all("codex_app_bridge" in e["payload"]["text"] for e in launches)
    assert [e for e in events if e["type"] == "review"], "codex's review ended without its result"
    assert any(e["payload"].get("kind") == "approval" for e in events)
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed"


@pytest.mark.session
def test_codex_risky_call_in_a_session_nobody_answers(tmp_path: Path, demo_env: dict[str, str]) -> None:
    """codex's ``git push`` is asked before it runs; nobody can answer, the unattended default
    denies it, the decision is in security.jsonl, and the session completes."""
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CODEX": "risky_call"}
    code, session = _session(tmp_path, env, **{"questions.unattended": "defaults"})
    assert code == 0
    records = [json.loads(line) for line in (session / "security.jsonl").read_text().splitlines()]
    pushes = [r for r in records if r["kind"] == "decision" and r["call"]["tool"] == "Bash"]
    assert pushes and pushes[0]["call"]["agent"] == "codex", records
    assert (pushes[0]["decision"], pushes[0]["decided_by"], pushes[0]["rule"]) == ("deny", "unavailable", "git_push")
    declined = [e for e in _codex_events(session) if e["payload"].get("kind") == "approval"]
    assert any(e["payload"]["details"]["decision"] == "decline" for e in declined)
