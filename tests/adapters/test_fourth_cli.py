"""A fourth CLI is one adapter module, its demo agent and one line in the registry.

``tests/parrot`` holds both; nothing in the project knows parrot. Registered at run time,
it takes the implementer's role in a whole demo session beside the built-in agents, and
Recovery, preflight and the sandbox learn what they need from its adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.recovery.preflight import PreflightError, proactive_fixes
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.config.settings import load_settings
from tests.conftest import branch_files, session_store
from tests.parrot.adapter import ParrotAdapter


@pytest.fixture
def parrot() -> Iterator[ParrotAdapter]:
    adapter = ParrotAdapter()
    registry.register(adapter)
    try:
        yield adapter
    finally:
        registry.unregister(adapter.name)


def _parrot_settings(tmp_path: Path, **overrides: object):
    return load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "agents.parrot": {"share_min": 0.3, "share_max": 0.6},
            "agents.claude.enabled": False,
            "session.roles.implementer": "parrot",
            **overrides,
        },
    )


@pytest.mark.session
def test_a_registered_fourth_cli_runs_a_whole_demo_session(tmp_path, demo_env, parrot):
    code = run(
        _parrot_settings(tmp_path),
        LaunchRequest(
            task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
        ),
    )
    assert code == 0
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed"
    by_id = {a["id"]: a for a in state["assignments"]}
    assert by_id["implement"]["agent"] == "parrot"
    assert by_id["implement"]["status"] == "completed"
    assert any(f.endswith(".py") for f in by_id["implement"]["files_written"])
    written = branch_files(
        session_store(session), f"orchestrate/{state['session_id']}"
    )  # the session's branch holds the work
    assert any(f.startswith("app/") and f not in ("app/__init__.py", "app/main.py") for f in written)
    records = read_jsonl(session / "parrot.jsonl").records
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    types = {r["type"] for r in records}
    assert {"status", "milestone", "review"} <= types  # markers from its text, the result from "bye"
    assert all(r["agent"] == "parrot" for r in records)
    # Its launch went through its adapter: its grant flag names the session's scratch folder.
    launch = next(r for r in records if r["payload"].get("kind") == "launch")
    assert "--grant" in launch["payload"]["text"] and "--any-dir" in launch["payload"]["text"]
    shares = {s["agent"]: s for s in state["shares"]}
    assert shares["parrot"]["busy_s"] > 0


def test_a_fourth_cli_brings_its_error_rows_and_advice(parrot, tmp_path):
    found = classify_run(Evidence(agent="parrot", lines=("parrot: no key in PARROT_KEY",), returncode=4))
    assert found is not None and found.cause == "auth" and found.groups == {"var": "PARROT_KEY"}
    # Another CLI's run never matches parrot's rows.
    assert classify_run(Evidence(agent="codex", lines=("parrot: no key in PARROT_KEY",), returncode=0)) is None
    assert parrot.advise("repo_trust", tmp_path) == f"parrot refused {tmp_path}: run `git init` there"
    assert parrot.bypass_flags_in(["--anything-goes", "--model", "m"]) == ["--anything-goes"]


def test_preflight_checks_a_fourth_cli_by_its_adapter(parrot, tmp_path):
    settings = _parrot_settings(tmp_path)
    _, records = proactive_fixes(settings, tmp_path, {}, euid=1000)
    mine = [r for r in records if r.agent == "parrot"]
    assert [r.cause for r in mine] == ["repo_trust"]
    assert mine[0].action == "verified: every parrot command line carries --any-dir"


@pytest.mark.session
def test_an_agent_no_adapter_knows_is_refused_before_launch(tmp_path, demo_env):
    settings = load_settings(
        None, {"workspace": str(tmp_path / "ws"), "agents.mystery": {"share_min": 0, "share_max": 1}}
    )
    options = LaunchRequest(task="t", target=None, demo=True, dashboard=False, console=False, env=demo_env)
    with pytest.raises(PreflightError, match=r"\[agents\] names mystery, which no adapter knows; known agents: claude"):
        run(settings, options)
    assert not (tmp_path / "ws").exists()  # refused before anything was written
