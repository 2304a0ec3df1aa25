"""Role fallback after a persistent failure: whole demo sessions where one CLI keeps failing
(a vendor's 5xx, a malformed stream, a hang the stall limit ends) complete on the others, with
the reason recorded; a single transient failure moves nothing. The real pinned claude's 401
(``Invalid API key``) moves claude's roles the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.recovery.preflight import PreflightError
from meta_orchestrator.actors.session.core.planning import agent_out_reason
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.recovery import RecoveryPlanned
from tests.adapters.test_fourth_cli import parrot  # noqa: F401 - fixture
from tests.reviews.test_review_recovery_session import FAST, _launches

# The stall limit short enough for a test, sampled often enough to act on it at once.
STALL = {"limits.enabled": True, "limits.interval_s": 0.1, "limits.default.stall_s": 4.0}


def _run(tmp_path: Path, env: dict[str, str], **overrides: Any) -> tuple[int, Path, dict[str, Any]]:
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), **FAST, **overrides})
    request = LaunchRequest(
        task="Add a /health endpoint",
        target=None,
        demo=True,
        dashboard=False,
        console=False,
        env=env,
        answer_channels=("program",),
    )
    code = run(settings, request)
    session = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    return code, session, json.loads((session / "state.json").read_text())


def _hand_over(state: dict[str, Any], agent: str) -> dict[str, Any]:
    [entry] = [d for d in state["decisions"] if d.get("kind") == "role_fallback" and d["agent"] == agent]
    return entry


# -- the rules ------------------------------------------------------------------------------------


def _plan(cause: str, action: str) -> RecoveryPlanned:
    return RecoveryPlanned(
        recovery_id="rec-001", agent="claude", assignment_id="implement", cause=cause, action=action, advice="why"
    )


@pytest.mark.parametrize("cause", ["server", "network", "malformed", "hang", "crash", "rate_limit"])
def test_a_persistent_failure_moves_roles_only_once_its_retries_are_spent(cause):
    assert agent_out_reason(_plan(cause, "retry_after")) is None  # transient: retried, roles stay
    reason = agent_out_reason(_plan(cause, "give_up"))
    assert reason is not None and reason.startswith(f"{cause}: ") and "why" in reason


def test_a_stall_stop_is_a_hang_and_a_garbage_stream_without_result_is_malformed():
    stalled = Evidence(
        agent="opencode",
        lines=("stall limit: 901.0 s > 900 s; stopping opencode", "Retrying in 2s"),
        returncode=-15,
        terminal_event_seen=False,
    )
    assert classify_run(stalled).cause == "hang"
    garbage = (
        "line is not JSON: Expecting value at column 1",
        "line is not valid UTF-8 (invalid start byte at byte 0)",
    )
    assert classify_run(Evidence(agent="codex", lines=garbage, returncode=0, terminal_event_seen=False)).cause == (
        "malformed"
    )
    # Stray lines in a stream that still ended with its result are not why a run failed.
    found = classify_run(Evidence(agent="codex", lines=garbage, returncode=1, terminal_event_seen=True))
    assert found is not None and found.cause == "crash"


def test_claudes_invalid_api_key_text_is_auth():
    lines = ("Invalid API key · Fix external API key",)
    assert classify_run(Evidence(agent="claude", lines=lines, returncode=1)).cause == "auth"


# -- whole demo sessions ---------------------------------------------------------------------------


@pytest.mark.session
@pytest.mark.parametrize(
    "scenario,cause,retries,limits",
    [
        ("server_error", "server", 2, {}),
        ("garbage_only", "malformed", 1, {}),
        ("hang", "hang", 1, STALL),
    ],
)
def test_a_persistent_failure_moves_the_agents_roles_and_the_session_completes(
    tmp_path, demo_env, scenario, cause, retries, limits
):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = scenario
    code, session, state = _run(tmp_path, demo_env, **limits)
    assert code == 0 and state["status"] == "completed", state["summary"]
    mine = [r for r in state["recoveries"] if r.get("assignment_id") == "implement" and r["agent"] == "claude"]
    assert [(r["cause"], r["action"]) for r in mine] == [(cause, "retry_after")] * retries + [(cause, "give_up")]
    assert len(_launches(session, "claude", "implement")) == retries + 1  # bounded, then moved
    moved = next(a for a in state["assignments"] if a["id"] == "implement")
    assert moved["agent"] != "claude" and moved["status"] == "completed"
    hand_over = _hand_over(state, "claude")
    assert hand_over["reason"].startswith(f"{cause}: ") and hand_over["moved"] == {"implement": moved["agent"]}
    assert f"claude could not serve; its roles moved: {cause}: " in state["summary"]
    assert state["agents_out"]["claude"].startswith(f"{cause}: ")
    if cause == "hang":
        stalls = [d for d in state["decisions"] if d.get("kind") == "limit_exceeded" and d["limit"] == "stall"]
        stops = [d for d in stalls if d["action"] == "stop" and d["assignment_id"] == "implement"]
        assert len(stops) == retries + 1 and {d["agent"] for d in stops} == {"claude"}
        # claude's review runs hung too: the stall limit ended them, not reviewer_timeout_s.
        reviews = [d for d in stalls if d["action"] == "stop" and d["assignment_id"].startswith("rev-")]
        assert reviews and {d["agent"] for d in reviews} == {"claude"}


@pytest.mark.session
def test_a_single_hang_is_retried_and_moves_no_role(tmp_path, demo_env):
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang_once"
    demo_env["ORCHESTRATE_DEMO_ONCE_FILE"] = str(tmp_path / "once")
    # the once-file outlives a run only outside the private /tmp of the OS sandbox
    code, session, state = _run(tmp_path, demo_env, **STALL, **{"review.enabled": False, "sandbox.os": "off"})
    assert code == 0 and state["status"] == "completed", state["summary"]
    mine = [r for r in state["recoveries"] if r.get("assignment_id") == "implement"]
    assert [(r["cause"], r["action"], r["outcome"]) for r in mine] == [("hang", "retry_after", "recovered")]
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert implement["agent"] == "claude" and implement["status"] == "completed"
    assert not [d for d in state["decisions"] if d.get("kind") == "role_fallback"]
    assert not state["agents_out"]


@pytest.mark.session
def test_role_fallback_names_any_registered_cli(tmp_path, demo_env, parrot):  # noqa: F811
    # parrot is known to nothing but the registry: claude's implementer role falls to it.
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "server_error"
    overrides = {
        "agents.parrot": {"share_min": 0.1, "share_max": 0.5},
        "session.role_fallback.implementer": ["parrot", "codex"],
        "review.enabled": False,
    }
    code, session, state = _run(tmp_path, demo_env, **overrides)
    assert code == 0 and state["status"] == "completed", state["summary"]
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert implement["agent"] == "parrot" and implement["status"] == "completed"
    assert _hand_over(state, "claude")["moved"] == {"implement": "parrot"}


def test_role_fallback_naming_no_known_cli_is_refused_before_launch(tmp_path, demo_env):
    settings = load_settings(
        None, {"workspace": str(tmp_path / "ws"), "session.role_fallback.reviewer": ["claude", "nosuch"]}
    )
    request = LaunchRequest(task="t", target=None, demo=True, dashboard=False, console=False, env=demo_env)
    with pytest.raises(PreflightError, match=r"role_fallback name nosuch, which no adapter knows; known agents: "):
        run(settings, request)
    assert not (tmp_path / "ws").exists()


# -- the real pinned claude ------------------------------------------------------------------------

with contextlib.suppress(Exception):  # the real-CLI tier is optional
    from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("# app\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "start"]):
        subprocess.run(cmd, cwd=path, check=True, capture_output=True, env={**os.environ, **_GIT_ID})
    return path


_GIT_ID = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
}


@pytest.mark.realcli
def test_real_claudes_401_moves_its_roles_and_the_demo_backed_session_completes(
    tmp_path,
    demo_env,
    cli_bin,  # noqa: F811
    server,  # noqa: F811
):
    # The real API's words for a refused key; claude prints them as "Invalid API key".
    server.error_messages[401] = "invalid x-api-key"
    home = tmp_path / "home"
    home.mkdir()
    target = _git_repo(tmp_path / "app")
    env = {**demo_env, **_GIT_ID, "HOME": str(home), "ANTHROPIC_API_KEY": "sk-ant-mock"}
    overrides: dict[str, Any] = {
        "agents.claude.command": str(cli_bin / "claude"),
        "agents.claude.env": {"ANTHROPIC_BASE_URL": server.url, "CLAUDE_CODE_MAX_RETRIES": "0"},
        "review.enabled": False,
    }
    for name in ("codex", "gemini"):
        overrides[f"agents.{name}.command"] = shlex.join(get_adapter(name).demo_argv())
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), **FAST, **overrides})
    request = LaunchRequest(
        # Every prompt carries the task, so the directive reaches the model server from claude.
        task="Add a /health endpoint. SCRIPT:error 401",
        target=target,
        dashboard=False,
        console=False,
        env=env,
        answer_channels=("program",),
    )
    code = run(settings, request)
    session = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    state = json.loads((session / "state.json").read_text())
    assert code == 0 and state["status"] == "completed", state["summary"]
    assert [r.answered for r in server.recorded("anthropic") if r.status == 401], "claude never reached the server"
    mine = [r for r in state["recoveries"] if r["agent"] == "claude" and r.get("assignment_id")]
    assert mine and {(r["cause"], r["action"]) for r in mine} == {("auth", "escalate")}
    assert "Invalid API key" in mine[0]["evidence"]
    hand_over = _hand_over(state, "claude")
    assert hand_over["reason"].startswith("auth: ") and "ANTHROPIC_API_KEY" in hand_over["reason"]
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert implement["agent"] != "claude" and implement["status"] == "completed"
