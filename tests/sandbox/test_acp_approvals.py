"""Approval before a tool call runs, for a CLI driven over ACP: the agent's
``session/request_permission`` is answered by the one broker (``tool_broker.decide``), so a
call the policy asks about waits in the inbox, runs after yes, never after no, and is denied
when nobody can answer; every decision is in ``security.jsonl``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.config.settings import SandboxSettings, load_settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles
from meta_orchestrator.messages.session import AnswerGiven, GetSessionState
from tests.agents.test_acp import acp_team_settings, fixture_command, lines, parse
from tests.conftest import branch_files, session_store, wait_for

HELD = r"\btouch\s+ran\.txt\b"  # the call the policy asks about in these tests


@pytest.fixture
def forget_configured() -> Iterator[None]:
    before = set(registry.agent_names())
    yield
    for name in set(registry.agent_names()) - before:
        registry.unregister(name)


def _security(session_dir: Path) -> list[dict[str, Any]]:
    path = session_dir / "security.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _open_questions(coordinator: Any) -> list[Any]:
    return [q for q in coordinator.ask(GetSessionState(), timeout=5).questions if q.status == "open"]


@pytest.mark.parametrize(("answer", "approve"), [("yes", True), ("no", False)])
def test_a_call_the_policy_asks_about_waits_in_the_inbox_and_runs_only_after_yes(tmp_path, answer, approve):
    settings = load_settings(None, {"workspace": str(tmp_path)})
    session_dir = tmp_path / "s"
    target = tmp_path / "target"
    target.mkdir()
    coordinator = Coordinator.start(
        settings=settings, session_id="s", session_dir=session_dir, task="t", target=target, workers={}
    )
    guard = SandboxGuard.start(
        settings=SandboxSettings(high_risk_patterns=(HELD,)),
        session_dir=session_dir,
        target=target,
        asker=coordinator,
        home=str(tmp_path / "home"),
    )
    try:
        policy = guard.ask(GetSandboxFiles(), timeout=5).policy
        digest = hashlib.sha256(Path(policy).read_bytes()).hexdigest()
        argv = [sys.executable, "-I", "-m", "meta_orchestrator.actors.agents.acp_bridge", "--agent", "fixture"]
        proc = subprocess.Popen(
            [*argv, "--policy", policy, "--policy-sha256", digest, "--", *fixture_command()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=target,
            env={"ORCHESTRATE_DEMO_PACE": "0", "PATH": "/usr/bin:/bin", RUN_WORKDIR_ENV: str(target)},
            start_new_session=True,
        )
        try:
            proc.stdin.write(b"ACP:bash touch ran.txt\n")
            proc.stdin.close()
            proc.stdin = None  # the prompt is all it reads
            wait_for(lambda: _open_questions(coordinator), timeout=30, message="the question in the inbox")
            [question] = _open_questions(coordinator)
            assert (question.kind, question.asked_by, question.agent) == ("confirmation", "sandbox", "fixture")
            assert "touch ran.txt" in question.text
            # Held: the agent waits for its permission, the command has not run.
            assert proc.poll() is None and not (target / "ran.txt").exists()
            coordinator.tell(AnswerGiven(question_id=question.id, answer=answer, approve=approve, source="command"))
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        guard.stop()
        coordinator.stop()
    assert proc.returncode == 0, err
    assert (target / "ran.txt").exists() is approve
    [permission] = [line for line in lines(out) if line.get("bridge") == "permission"]
    assert (permission["decision"], permission["by"]) == ("allow" if approve else "deny", "user")
    parser, drafts = parse(out, proc.returncode)
    assert bool(parser.outcome().permission_denials) is not approve
    assert any(d.type == "blocker" and d.payload.kind == "denial" for d in drafts) is not approve
    [decision] = [r for r in _security(session_dir) if r["kind"] == "decision"]
    assert decision["call"]["agent"] == "fixture" and decision["call"]["tool_input"] == {"command": "touch ran.txt"}
    assert (decision["decision"], decision["decided_by"]) == ("allow" if approve else "deny", "user")


@pytest.mark.session
@pytest.mark.usefixtures("forget_configured")
def test_with_nobody_to_answer_an_acp_agents_asked_call_is_denied_and_the_session_goes_on(tmp_path, demo_env):
    env = {
        **demo_env,
        "ORCHESTRATE_DEMO_SCENARIO_ACP_WORK": "shell_script",
        "ORCHESTRATE_DEMO_SHELL": "touch ran.txt",
    }
    settings = acp_team_settings(tmp_path, **{"questions.unattended": "defaults", "sandbox.high_risk_patterns": [HELD]})
    code = run(
        settings,
        LaunchRequest(task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=env),
    )
    assert code == 0
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed"
    question = next(q for q in state["questions"] if q["kind"] == "confirmation")
    assert (question["approve"], question["answered_by"], question["agent"]) == (False, "unattended", "fixture")
    decisions = [r for r in _security(session) if r["kind"] == "decision"]
    assert decisions and all(d["decision"] == "deny" and d["decided_by"] == "unavailable" for d in decisions)
    assert {d["call"]["agent"] for d in decisions} == {"fixture"}
    # The command never ran: nothing it would have made reached the session's branch.
    assert "ran.txt" not in branch_files(session_store(session), f"orchestrate/{state['session_id']}")
    records = [json.loads(line) for line in (session / "fixture.jsonl").read_text().splitlines()]
    assert any(r["type"] == "blocker" and r["payload"].get("kind") == "denial" for r in records)
