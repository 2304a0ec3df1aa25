"""Whole demo sessions: peer reviews applied by the coordinator, recoveries by class.

The demo CLIs print the reference's real messages (actors/agents/demo); the real pinned CLIs
against the scripted model server are at the end (marked realcli).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run, start, stop_all
from meta_orchestrator.actors.recovery.recovery import Recovery
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.config.settings import RecoverySettings, load_settings
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.recovery import RecoveryPlanned, RecoveryRequested
from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, GetSessionState
from meta_orchestrator.messages.worker import AssignmentFinished, EventsRecorded
from tests.conftest import wait_for

FAST = {
    "review.debounce_s": 0.2,
    "recovery.backoff_base_s": 0.05,
    "recovery.backoff_jitter": 0.5,
    "sandbox.enabled": False,
    "limits.enabled": False,
}


def _settings(tmp_path: Path, **overrides: Any):
    return load_settings(None, {"workspace": str(tmp_path / "ws"), **FAST, **overrides})


def _run(tmp_path: Path, env: dict[str, str], on_started: Any = None, **overrides: Any) -> tuple[int, Path, dict]:
    code = run(
        _settings(tmp_path, **overrides),
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=False,
            console=False,
            env=env,
            on_started=on_started,
            answer_channels=("program",),  # the test answers through the coordinator
        ),
    )
    session = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    return code, session, json.loads((session / "state.json").read_text())


def _answer_grants(approve: bool) -> Any:
    """An on_started hook: a thread that answers every directory-grant question like a user."""

    def hook(running: Any) -> None:
        def answer() -> None:
            answered: set[str] = set()
            while running.ended.empty():
                try:
                    state = running.coordinator.ask(GetSessionState(), timeout=2)
                except (pykka.ActorDeadError, pykka.Timeout):
                    return
                for q in state.questions:
                    if q.id.startswith("grant-") and q.status == "open" and q.id not in answered:
                        answered.add(q.id)
                        running.coordinator.tell(
                            AnswerGiven(question_id=q.id, answer="yes" if approve else "no", approve=approve)
                        )
                time.sleep(0.05)

        threading.Thread(target=answer, name="test-user", daemon=True).start()

    return hook


def _launches(session: Path, agent: str, assignment: str) -> list[str]:
    return [
        r["payload"]["text"]
        for r in read_jsonl(session / f"{agent}.jsonl").records
        if r["payload"].get("kind") == "launch" and r.get("assignment_id") == assignment
    ]


# -- reviews ------------------------------------------------------------------------------------


@pytest.mark.session
def test_default_demo_session_reviews_with_both_peers_and_decides_on_disk(tmp_path, demo_env):
    code, session, state = _run(tmp_path, demo_env)
    assert code == 0 and state["status"] == "completed"
    assert state["decisions"], "no decision recorded"
    for decision in state["decisions"]:
        folder = Path(decision["review_dir"])
        assert (folder / "request.json").is_file() and (folder / "decision.json").is_file()
        peers = {a["agent"] for a in decision["answers"]}
        assert len(peers) == 2 and decision["author"] not in peers
        for peer in peers:
            answer = json.loads((folder / f"{peer}.answer.json").read_text())
            assert answer["verdict"] == "approve" and answer["parsed"]
            assert read_jsonl(folder / f"{peer}.jsonl").records  # the peer's own event log
        assert decision["decision"]["decision"] == "CONTINUE"
        assert decision["applied"] == "continued"
    reviewed = {d["assignment_id"] for d in state["decisions"]}
    assert {"design", "implement"} <= reviewed
    # The reviews ran before the dependents started: design's review precedes implement.
    design = next(d for d in state["decisions"] if d["assignment_id"] == "design")
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert design["decided_at"] <= implement["started_at"]


def _start_session(tmp_path: Path, env: dict[str, str], **overrides: Any):
    started: list[pykka.ActorRef[Any]] = []
    running = start(
        _settings(tmp_path, **overrides),
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=False,
            console=False,
            env=env,
            answer_channels=("program",),  # the test answers through the coordinator
        ),
        started,
    )
    return started, running


def _state(running):
    return running.coordinator.ask(GetSessionState(), timeout=5)


def _open_question(running, kind: str):
    return wait_for(
        lambda: next((q for q in _state(running).questions if q.status == "open" and q.kind == kind), None),
        timeout=30,
        message=f"an open {kind} question",
    )


@pytest.mark.session
def test_two_concerns_pause_ask_and_the_answer_reaches_the_next_prompt(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CODEX"] = "concern"
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "concern"
    # gemini designs and implements by its stream: it echoes the prompt there (over ACP nothing
    # does), so the note can be seen.
    started, running = _start_session(
        tmp_path,
        demo_env,
        **{
            "agents.gemini.protocol": "stream",
            "session.roles": {"architect": "gemini", "implementer": "gemini", "reviewer": "codex"},
            "review.phase_end_roles": ["architect"],
            "review.on_milestone": False,
        },
    )
    try:
        question = _open_question(running, "clarification")
        state = _state(running)
        assert state.status == "paused"
        assert "design" not in [a.id for a in state.assignments if a.status == "running"]
        assert next(a for a in state.assignments if a.id == "implement").status == "pending"
        running.coordinator.tell(AnswerGiven(question_id=question.id, answer="Validate input with a regex."))
        ended = running.ended.get(timeout=60)
    finally:
        stop_all(started)
    assert ended.exit_code == 0
    state = json.loads((running.session_dir / "state.json").read_text())
    first = state["decisions"][0]
    assert first["decision"]["decision"] == "PAUSE_AND_CLARIFY"
    assert first["answer"] == "Validate input with a regex."
    assert "resumed" in first["applied"]
    assert any("Validate input with a regex." in n for n in state["notes"])
    prompts = [
        r.get("raw") or ""
        for r in read_jsonl(running.session_dir / "gemini.jsonl").records
        if r.get("assignment_id") == "implement"
    ]
    assert any("Validate input with a regex." in p for p in prompts)  # echoed by the CLI


@pytest.mark.session
def test_a_blocker_escalates_and_stop_ends_the_session(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "blocker"
    started, running = _start_session(tmp_path, demo_env)
    try:
        question = _open_question(running, "escalation")
        assert question.options == ("continue", "stop")
        running.coordinator.tell(AnswerGiven(question_id=question.id, answer="stop"))
        ended = running.ended.get(timeout=60)
    finally:
        stop_all(started)
    assert ended.status == "stopped" and ended.exit_code == 130
    state = json.loads((running.session_dir / "state.json").read_text())
    assert state["decisions"][0]["decision"]["decision"] == "STOP_AND_ESCALATE"
    assert "claude: blocker" in state["decisions"][0]["decision"]["reasoning"]
    assert "stopped" in state["decisions"][0]["applied"]


@pytest.mark.session
def test_user_can_ask_for_a_review(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "slow"
    demo_env["ORCHESTRATE_DEMO_PACE"] = "0.05"
    started, running = _start_session(
        tmp_path, demo_env, **{"review.phase_end_roles": [], "review.on_milestone": False}
    )
    try:
        wait_for(
            lambda: any(a.id == "implement" and a.phase == "running" for a in _state(running).assignments), timeout=30
        )
        assert running.coordinator.ask(ControlRequested(action="review", source="test"), timeout=5)
        decision = wait_for(lambda: _state(running).decisions, timeout=30)[0]
        ended = running.ended.get(timeout=60)
    finally:
        stop_all(started)
    assert ended.exit_code == 0
    assert decision.kind == "review" and decision.triggers[0].kind == "user"
    assert decision.assignment_id == "implement"
    assert {a.agent for a in decision.answers} == {"gemini", "codex"}
    # Asked while it ran: the change is its checkout's working tree against its base.
    change = json.loads((Path(decision.review_dir) / "request.json").read_text())["change"]
    assert change["how"].startswith("the working tree of implement's checkout"), change["how"]


# -- recovery, one class at a time ------------------------------------------------------------


@pytest.mark.session
@pytest.mark.parametrize(
    "agent,assignment,flag",
    [
        ("gemini", "design", "--include-directories"),
        ("claude", "implement", "--add-dir"),
    ],
)
def test_outside_path_denial_is_relaunched_with_the_directory_once_the_user_agrees(
    tmp_path, demo_env, agent, assignment, flag
):
    demo_env[f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}"] = "permission_error"
    # gemini by its stream: this recovery reads its own refusal of a path outside its folders
    # ("Path not in workspace") after the fact; over ACP the write is put to the broker first
    # and asked in the inbox (tests/sandbox/test_acp_approvals.py).
    pinned = {"agents.gemini.protocol": "stream"} if agent == "gemini" else {}
    code, session, state = _run(tmp_path, demo_env, on_started=_answer_grants(approve=True), **pinned)
    assert code == 0
    recoveries = [r for r in state["recoveries"] if r.get("assignment_id") == assignment]
    assert recoveries and recoveries[0]["cause"] == "outside_path"
    assert recoveries[0]["action"] == "relaunch" and recoveries[0]["outcome"] == "recovered"
    granted = recoveries[0]["extra_dirs"][0]
    workdir = next(a["workdir"] for a in state["assignments"] if a["id"] == assignment)
    assert granted == f"{workdir}-outside"  # beside the folder it works in: its checkout
    assert "Path not in workspace" in recoveries[0]["evidence"] or "requested permissions" in recoveries[0]["evidence"]
    launches = _launches(session, agent, assignment)
    assert len(launches) == 2 and f"{flag} {granted}" in launches[1]
    assert (Path(granted) / "NOTES.md").is_file()  # the refused write happened on the relaunch


@pytest.mark.session
@pytest.mark.parametrize(
    "agent,scenario,cause,advice",
    [
        ("codex", "force_not_git_repo", "repo_trust", "git init"),
        ("gemini", "force_untrusted", "repo_trust", "GEMINI_CLI_TRUST_WORKSPACE=true"),
    ],
)
def test_unfixable_errors_escalate_with_the_right_advice(tmp_path, demo_env, agent, scenario, cause, advice):
    demo_env[f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}"] = scenario
    # codex's folder check is exec's (its app-server has none): that is the protocol tested here
    code, session, state = _run(tmp_path, demo_env, **{f"agents.{agent}.protocol": "stream"})
    assert code == 1 and state["status"] == "failed"
    mine = [r for r in state["recoveries"] if r.get("assignment_id") and r["agent"] == agent]
    assert mine and {(r["cause"], r["action"], r["outcome"]) for r in mine} == {(cause, "escalate", "escalated")}
    assert advice in mine[0]["advice"] and mine[0]["evidence"]
    failed = next(a for a in state["assignments"] if a["agent"] == agent)
    assert failed["status"] == "failed" and advice in failed["error"]
    assert len(_launches(session, agent, failed["id"])) == 1  # never relaunched blindly


@pytest.mark.session
@pytest.mark.parametrize(
    "agent,assignment,advice",
    [("claude", "implement", "ANTHROPIC_API_KEY"), ("codex", "review", "CODEX_API_KEY")],
)
def test_refused_credentials_escalate_with_the_advice_and_the_role_moves_on(
    tmp_path, demo_env, agent, assignment, advice
):
    demo_env[f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}"] = "auth_error"
    code, session, state = _run(tmp_path, demo_env)
    assert code == 0 and state["status"] == "completed", state["summary"]
    mine = [r for r in state["recoveries"] if r.get("assignment_id") == assignment and r["agent"] == agent]
    assert mine and {(r["cause"], r["action"], r["outcome"]) for r in mine} == {("auth", "escalate", "escalated")}
    assert advice in mine[0]["advice"] and mine[0]["evidence"]
    assert len(_launches(session, agent, assignment)) == 1  # never relaunched blindly
    moved = next(a for a in state["assignments"] if a["id"] == assignment)
    assert moved["agent"] != agent and moved["status"] == "completed"
    [hand_over] = [d for d in state["decisions"] if d.get("kind") == "role_fallback"]
    assert hand_over["agent"] == agent and advice in hand_over["reason"]
    assert hand_over["moved"] == {assignment: moved["agent"]}


@pytest.mark.session
@pytest.mark.parametrize(
    "agent,scenario,cause,retries,exit_code",
    [
        # Each failure persists past its retries: the agent's roles move on, the session completes.
        ("claude", "rate_limit", "rate_limit", 3, 0),
        ("codex", "server_error", "server", 2, 0),
        ("claude", "crash", "crash", 1, 0),
    ],
)
def test_retries_back_off_and_the_caps_hold(tmp_path, demo_env, agent, scenario, cause, retries, exit_code):
    demo_env[f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}"] = scenario
    code, session, state = _run(tmp_path, demo_env)
    assert code == exit_code
    mine = [r for r in state["recoveries"] if r.get("assignment_id") and r["agent"] == agent]
    assert [r["action"] for r in mine] == ["retry_after"] * retries + ["give_up"]
    assert [r["outcome"] for r in mine] == ["failed_again"] * retries + ["given_up"]
    assert all(r["cause"] == cause for r in mine)
    delays = [r["delay_s"] for r in mine[:-1]]
    assert delays == sorted(delays) and all(d > 0 for d in delays)
    assignment = mine[0]["assignment_id"]
    assert len(_launches(session, agent, assignment)) == retries + 1


@pytest.mark.session
def test_a_retry_that_works_is_recorded_as_recovered(tmp_path, demo_env):
    # Rate-limited once: the first run fails, the relaunch (after the back-off) succeeds.
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "rate_limit_once"
    demo_env["ORCHESTRATE_DEMO_ONCE_FILE"] = str(tmp_path / "once")
    # the once-file outlives a run only outside the private /tmp of the OS sandbox
    code, session, state = _run(tmp_path, demo_env, **{"review.enabled": False, "sandbox.os": "off"})
    assert code == 0
    mine = [r for r in state["recoveries"] if r.get("assignment_id") == "implement"]
    assert [(r["cause"], r["action"], r["outcome"]) for r in mine] == [("rate_limit", "retry_after", "recovered")]


@pytest.mark.session
def test_preflight_checks_are_recorded(tmp_path, demo_env):
    code, session, state = _run(tmp_path, demo_env)
    checked = {r["agent"]: r for r in state["recoveries"] if r["outcome"] == "checked"}
    assert "--skip-git-repo-check" in checked["codex"]["action"]
    assert "--skip-trust" in checked["gemini"]["action"]


# -- the real pinned CLIs against the scripted model server -----------------------------------

try:
    from tests.agents.test_real_clis import CLIS, Rig, cli_bin, server  # noqa: F401 - fixtures
except Exception:  # noqa: BLE001 - the real-CLI tier is optional
    CLIS = ()


@pytest.fixture
def real_rig(request: pytest.FixtureRequest, cli_bin, server, tmp_path: Path):
    return Rig(request.param, cli_bin, server, tmp_path)


@pytest.mark.realcli
@pytest.mark.parametrize(
    "real_rig,status,cause,action",
    [
        (cli, status, cause, action)
        for cli in CLIS
        for status, cause, action in (
            (429, "rate_limit", "retry_after"),
            (401, "auth", "escalate"),
            (500, "server", "retry_after"),
        )
    ],
    indirect=["real_rig"],
)
def test_real_cli_errors_are_classified(real_rig, probe, status, cause, action):
    res = real_rig.run_adapter(f"Do the thing. SCRIPT:error {status}")
    ref = Recovery.start(settings=RecoverySettings(), target=real_rig.work, listeners=())
    for seq, d in enumerate(res.drafts, 1):
        ref.tell(
            EventsRecorded(
                events=(Event(type=d.type, agent=real_rig.cli, payload=d.payload, seq=seq, assignment_id="a1"),)
            )
        )
    tail = tuple(res.run.stderr_text.splitlines()[-20:])
    ref.tell(
        RecoveryRequested(
            finished=AssignmentFinished(
                agent=real_rig.cli,
                assignment_id="a1",
                returncode=res.run.returncode,
                stderr_tail=tail,
                outcome=res.outcome,
            ),
            reply_to=probe.ref,
        )
    )
    plan = probe.expect(RecoveryPlanned, timeout=10)
    assert (plan.cause, plan.action) == (cause, action), (plan, res.describe())
    assert plan.evidence


@pytest.mark.session
def test_outside_path_grant_refused_by_the_user_escalates(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "permission_error"
    code, session, state = _run(tmp_path, demo_env, on_started=_answer_grants(approve=False))
    recoveries = [r for r in state["recoveries"] if r.get("assignment_id") == "implement"]
    assert recoveries and recoveries[0]["cause"] == "outside_path"
    assert recoveries[0]["action"] == "escalate" and "was not granted" in recoveries[0]["advice"]
    assert len(_launches(session, "claude", "implement")) == 1  # never relaunched
    question = next(q for q in state["questions"] if q["id"].startswith("grant-"))
    assert question["status"] == "answered" and question["approve"] is False
    workdir = next(a["workdir"] for a in state["assignments"] if a["id"] == "implement")
    assert not (Path(workdir + "-outside") / "NOTES.md").exists()  # nothing written there
