"""A whole demo session with every role on opencode driven by its stream (its second way,
``protocol = "stream"``): its demo agent prints the real 1.18.33 ``run --format json`` lines,
and the same adapter that drives the real program parses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.config.settings import load_settings
from tests.conftest import branch_files, session_store

ROLES = ("architect", "implementer", "reviewer")


@pytest.mark.session
def test_a_demo_session_with_every_role_on_opencode_completes(tmp_path: Path, demo_env: dict[str, str]) -> None:
    overrides: dict[str, object] = {
        "workspace": str(tmp_path / "ws"),
        # Not in the default team; by its stream, the format this file is about.
        "agents.opencode": {"enabled": True, "protocol": "stream"},
        **{f"agents.{name}.enabled": False for name in ("claude", "codex", "gemini")},
        **{f"session.roles.{role}": "opencode" for role in ROLES},
    }
    request = LaunchRequest(
        task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
    )
    assert run(load_settings(None, overrides), request) == 0
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed", state
    assert state["plan_source"] == "architect"  # its plan, read off its own text
    assert {a["agent"] for a in state["assignments"]} == {"opencode"}
    assert {a["role"] for a in state["assignments"]} == set(ROLES)
    assert all(a["status"] == "completed" for a in state["assignments"]), state["assignments"]
    written = branch_files(session_store(session), f"orchestrate/{state['session_id']}")
    assert any(f.startswith("app/") and f not in ("app/__init__.py", "app/main.py") for f in written), written
    records = read_jsonl(session / "opencode.jsonl").records
    kinds = {(r["type"], r["payload"].get("kind")) for r in records}
    assert {("milestone", "file_written"), ("review", "result"), ("status", "step_finish")} <= kinds, kinds
    assert not [r for r in records if r["type"] == "error" and r["payload"].get("kind") == "parse_error"]


def _demo_run(tmp_path: Path, demo_env: dict[str, str], mode: str, scenario: str = "success"):
    """One demo opencode run through the adapter, as the worker would start it."""
    import subprocess

    adapter = get_adapter("opencode")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO": scenario, "ORCHESTRATE_DEMO_PACE": "0"}
    launch = adapter.build_launch(
        LaunchSpec(
            executable=adapter.demo_argv(),
            prompt="Role: implementer\nTask: add a module",
            workdir=work,
            mode=mode,
            env=env,
        )
    )
    done = subprocess.run(
        launch.argv, input=launch.stdin, env=launch.env, cwd=launch.cwd, capture_output=True, timeout=60
    )
    parser = adapter.new_parser()
    drafts = [d for line in done.stdout.splitlines() for d in parser.feed_line(line)]
    for line in done.stderr.decode().splitlines():
        drafts += parser.feed_stderr(line)
    drafts += parser.finish(done.returncode, tuple(done.stderr.decode().splitlines()))
    return done, drafts, parser.outcome(writing=mode == "write")


def test_a_review_run_of_the_demo_opencode_cannot_write(tmp_path: Path, demo_env: dict[str, str]) -> None:
    done, drafts, outcome = _demo_run(tmp_path, demo_env, "read_only")
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "work").rglob("*.py")), "a read-only run wrote a file"
    assert outcome.permission_denials and "unavailable tool 'write'" in outcome.permission_denials[0]
    assert [d for d in drafts if d.type == "blocker" and d.payload.kind == "denial"]


@pytest.mark.parametrize(("scenario", "cause"), [("auth_error", "auth"), ("rate_limit", "rate_limit")])
def test_demo_opencode_api_errors_are_classified(tmp_path, demo_env, scenario, cause) -> None:
    done, drafts, outcome = _demo_run(tmp_path, demo_env, "write", scenario)
    assert done.returncode == 1 and outcome.success is False
    terminal = [d for d in drafts if d.type == "error" and d.payload.terminal]
    assert terminal[0].payload.retryable is (cause == "rate_limit")
    lines = (outcome.error or "", *(line.decode() for line in done.stdout.splitlines()))
    found = classify_run(Evidence(agent="opencode", lines=lines, returncode=1, succeeded=False))
    assert found is not None and found.cause == cause, found


# The real 1.18.33's words (stderr in colour unless NO_COLOR), each with the class it must get.
REAL_FAILURES = (
    ("\x1b[91m\x1b[1mError: \x1b[0mFailed to change directory to /srv/nowhere", "bad_workdir"),
    ("\x1b[91m\x1b[1mError: \x1b[0mSession not found", "session_not_found"),
    (
        '{"type":"error","timestamp":1796613058192,"sessionID":"ses_db184605affeoS3pz1wrQ6CXgG","error":'
        '{"name":"UnknownError","data":{"message":"Unexpected server error. Check server logs for details.",'
        '"ref":"err_9b8c56f7"}}}',
        "invalid_model",
    ),
    ("\x1b[93m\x1b[1m! \x1b[0mpermission requested: external_directory (/tmp/oc/*); auto-rejecting", "mode_too_strict"),
)


@pytest.mark.parametrize(("line", "cause"), REAL_FAILURES)
def test_the_real_opencode_messages_are_classified(line: str, cause: str) -> None:
    succeeded = cause == "mode_too_strict"  # the run that rejected an ask still exits 0
    found = classify_run(
        Evidence(agent="opencode", lines=(line,), returncode=0 if succeeded else 1, succeeded=succeeded)
    )
    assert found is not None and found.cause == cause, found
