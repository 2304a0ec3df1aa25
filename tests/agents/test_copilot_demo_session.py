"""A demo session whose every role is on copilot: the demo copilot prints Copilot CLI 1.0.102's
exact JSONL, the adapter parses it, and the session plans, implements, reviews and completes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.config.settings import load_settings
from tests.conftest import session_store

pytestmark = pytest.mark.session


def test_a_demo_session_with_every_role_on_copilot_completes(tmp_path: Path, demo_env: dict[str, str]) -> None:
    overrides = {
        "workspace": str(tmp_path / "ws"),
        **{f"agents.{name}.enabled": False for name in ("claude", "codex", "gemini")},
        "agents.copilot.enabled": True,
        "agents.copilot.share_max": 1.0,
        **{f"session.roles.{role}": "copilot" for role in ("architect", "implementer", "reviewer")},
    }
    settings = load_settings(None, overrides)
    request = LaunchRequest(
        task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
    )
    code = run(settings, request)
    session = next(p for p in (tmp_path / "ws").iterdir() if p.is_dir())
    state = json.loads((session / "state.json").read_text())
    assert code == 0, json.dumps(state.get("assignments"), indent=1)[:4000]
    assert {a["agent"] for a in state["assignments"]} == {"copilot"}
    assert all(a["status"] == "completed" for a in state["assignments"]), [
        (a["id"], a["status"]) for a in state["assignments"]
    ]
    assert not (session / "claude.jsonl").exists() and not (session / "gemini.jsonl").exists()
    records = [json.loads(line) for line in (session / "copilot.jsonl").read_text().splitlines()]
    kinds = {(r["type"], r["payload"].get("kind")) for r in records}
    # Its own stream: tool calls named in the policy's words, written files, reviews, results.
    assert {("milestone", "file_written"), ("review", "result"), ("progress", "tool_call")} <= kinds, kinds
    assert not [r for r in records if r["payload"].get("kind") == "parse_error"]
    branch = f"orchestrate/{session.name}"
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", branch],
        cwd=session_store(session),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert any(name.startswith("app/") for name in files), files
