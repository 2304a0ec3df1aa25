"""A whole demo session with every role on the demo ``qwen`` driven by its stream (its second
way, ``protocol = "stream"``: qwen-code 0.24.4's stream format), and the demo qwen's failures as
the adapter and Recovery read them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.config.settings import load_settings
from tests.conftest import branch_files, session_store


@pytest.mark.session
def test_a_demo_session_with_every_role_on_qwen_completes(tmp_path: Path, demo_env: dict[str, str]) -> None:
    overrides = {
        "workspace": str(tmp_path / "ws"),
        "session.roles": {"architect": "qwen", "implementer": "qwen", "reviewer": "qwen"},
        "agents.qwen": {"enabled": True, "protocol": "stream"},  # the stream format is what this is about
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
    by_id = {a["id"]: a for a in state["assignments"]}
    assert {a["agent"] for a in by_id.values()} == {"qwen"}
    assert all(a["status"] == "completed" for a in by_id.values())
    on_branch = branch_files(session_store(session), f"orchestrate/{session.name}")
    assert "docs/DESIGN.md" in on_branch and any(f.startswith("app/") for f in on_branch), on_branch
    records = read_jsonl(session / "qwen.jsonl").records
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = {(r["type"], r["payload"].get("kind")) for r in records}
    assert {("status", "init"), ("milestone", "file_written"), ("milestone", "marker"), ("review", "result")} <= kinds
    launches = [r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch"]
    assert any("--approval-mode plan" in t for t in launches) and any("auto-edit" in t for t in launches)
    # The review assignment ran with edits approved; qwen's shell needs a person: a denial, not a crash.
    assert by_id["implement"]["files_written"], by_id["implement"]


@pytest.mark.parametrize(
    ("scenario", "cause"), [("auth_error", "auth"), ("rate_limit", "rate_limit"), ("server_error", "server")]
)
def test_the_demo_qwens_api_errors_are_classified_like_the_real_ones(
    tmp_path: Path, demo_env: dict[str, str], scenario: str, cause: str
) -> None:
    adapter = get_adapter("qwen")
    launch = adapter.build_launch(
        LaunchSpec(
            executable=adapter.demo_argv(),
            prompt="Do the thing.",
            workdir=tmp_path,
            env={**demo_env, "ORCHESTRATE_DEMO_SCENARIO": scenario},
        )
    )
    done = subprocess.run(
        launch.argv, cwd=launch.cwd, env=launch.env, input=launch.stdin, capture_output=True, timeout=60, check=False
    )
    parser = adapter.new_parser()
    drafts = [d for line in done.stdout.splitlines() for d in parser.feed_line(line)]
    drafts += parser.finish(done.returncode, ())
    outcome = parser.outcome()
    assert done.returncode == 1 and not outcome.success and outcome.terminal_event_seen, done.stdout[-2000:]
    terminal = [d for d in drafts if d.type == "error" and d.payload.terminal]
    assert len(terminal) == 1 and terminal[0].payload.details["cause"] == cause, drafts
    found = classify_run(Evidence("qwen", (outcome.error or "",), done.returncode))
    assert found is not None and found.cause == cause, outcome.error
