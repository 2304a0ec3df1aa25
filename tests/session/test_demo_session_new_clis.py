"""A demo session whose roles are only on the CLIs added in 2026 (qwen, copilot, opencode),
each driven the way it is by default (over ACP: each edit and command asked first), with the
seed's three turned off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.config.settings import load_settings
from tests.conftest import branch_files, session_store

NEW = ("qwen", "copilot", "opencode")


@pytest.mark.session
def test_a_demo_session_with_roles_on_qwen_copilot_and_opencode_only_completes(
    tmp_path: Path, demo_env: dict[str, str]
) -> None:
    overrides = {
        "workspace": str(tmp_path / "ws"),
        "session.roles": {"architect": "qwen", "implementer": "copilot", "reviewer": "opencode"},
        **{f"agents.{name}.enabled": True for name in NEW},
        **{f"agents.{name}.enabled": False for name in ("claude", "codex", "gemini")},
    }
    request = LaunchRequest(
        task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
    )
    code = run(load_settings(None, overrides), request)
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    state = json.loads((session / "state.json").read_text())
    assert code == 0, json.dumps(state["assignments"], indent=1)[:4000]
    assert state["status"] == "completed" and state["plan_source"] == "architect"
    agents = {a["agent"] for a in state["assignments"]}
    assert agents <= set(NEW) and {"qwen", "copilot"} <= agents, state["assignments"]
    assert all(a["status"] == "completed" for a in state["assignments"])
    on_branch = branch_files(session_store(session), f"orchestrate/{session.name}")
    assert "docs/DESIGN.md" in on_branch and any(f.startswith("app/") for f in on_branch), on_branch
    # Each agent's events are its own file, numbered without a gap; nothing of the seed's three ran.
    for name in agents:
        records = read_jsonl(session / f"{name}.jsonl").records
        assert records and [r["seq"] for r in records] == list(range(1, len(records) + 1)), name
    assert not any((session / f"{name}.jsonl").exists() for name in ("claude", "codex", "gemini"))
    # Peer reviews crossed CLIs: someone other than the author reviewed a milestone.
    reviews = [r for name in agents for r in read_jsonl(session / f"{name}.jsonl").records if r["type"] == "review"]
    assert reviews, "no peer review ran"
    # Driven over ACP by default: each edit and command was put to the broker before it ran
    # (the policy allowed them all: only asks reach security.jsonl and the inbox).
    for name in agents:
        records = read_jsonl(session / f"{name}.jsonl").records
        calls = [r["payload"] for r in records if r["payload"].get("kind") == "tool_call"]
        allowed = [r["payload"] for r in records if r["payload"].get("kind") == "permission"]
        assert calls and len(allowed) == len(calls), name
        assert all(p["details"]["by"] == "policy" for p in allowed), allowed
