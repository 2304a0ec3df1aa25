"""The real pinned gemini (0.61.0) driven over ACP (``gemini --acp``) by the bridge, against the
scripted model server: a text answer, a written file, and a shell command the policy asks about,
held until the inbox's answer, run after yes and never after no."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.adapters.acp import POLICY_ENV, POLICY_SHA256_ENV, AcpParser
from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.config.settings import SandboxSettings, load_settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles
from meta_orchestrator.messages.session import AnswerGiven, GetSessionState
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    MODELS,
    Rig,
    cli_bin,
    no_leftover_children,
    run_process,
    server,
)
from tests.conftest import wait_for
from tests.realcli.model_server import TEXT_ANSWER, WRITE_CONTENT, ScriptedModelServer

HELD = r"\btouch\s+ran\.txt\b"


def _spec(rig: Rig, prompt: str, env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(
        executable=(rig.exe,),
        prompt=prompt,
        workdir=rig.work,
        model=MODELS["gemini"],
        env={**rig.env, "GEMINI_CLI_TRUST_WORKSPACE": "true", RUN_WORKDIR_ENV: str(rig.work), **(env or {})},
    )


def _parsed(stdout: bytes, returncode: int) -> tuple[AcpParser, list[Any]]:
    parser = registry.driven("gemini", "acp").new_parser()
    drafts = [d for line in stdout.splitlines() for d in parser.feed_line(line)]
    return parser, drafts + parser.finish(returncode, ())


@pytest.fixture
def gemini(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> Rig:  # noqa: F811
    return Rig("gemini", cli_bin, server, tmp_path)


def test_real_gemini_over_acp_answers_with_text(gemini: Rig) -> None:
    launch = registry.driven("gemini", "acp").build_launch(_spec(gemini, "SCRIPT:text"))
    done = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
    assert done.returncode == 0, done.describe()
    parser, _ = _parsed(done.stdout, done.returncode)
    outcome = parser.outcome()
    assert outcome.success and outcome.final_text == TEXT_ANSWER and outcome.session_id
    assert outcome.total_tokens and outcome.total_tokens > 0


def test_real_gemini_over_acp_writes_a_file_after_the_broker_allows_it(gemini: Rig) -> None:
    launch = registry.driven("gemini", "acp").build_launch(_spec(gemini, "SCRIPT:write out.txt"))
    done = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
    assert done.returncode == 0, done.describe()
    assert (gemini.work / "out.txt").read_text() == WRITE_CONTENT
    parser, drafts = _parsed(done.stdout, done.returncode)
    assert parser.outcome().success and parser.outcome().files_written == (str(gemini.work / "out.txt"),)
    assert [d.payload.tool for d in drafts if d.payload.kind == "permission"] == ["Write"]
    assert [d.payload.tool for d in drafts if d.payload.kind == "tool_call"] == ["Write"]


@pytest.mark.parametrize(("answer", "approve"), [("yes", True), ("no", False)])
def test_real_gemini_over_acp_is_held_on_a_command_the_policy_asks_about(
    gemini: Rig, tmp_path: Path, answer: str, approve: bool
) -> None:
    session_dir = tmp_path / "session"
    coordinator = Coordinator.start(
        settings=load_settings(None, {"workspace": str(tmp_path)}),
        session_id="s",
        session_dir=session_dir,
        task="t",
        target=gemini.work,
        workers={},
    )
    guard = SandboxGuard.start(
        settings=SandboxSettings(high_risk_patterns=(HELD,)),
        session_dir=session_dir,
        target=gemini.work,
        asker=coordinator,
        home=str(gemini.home),
    )
    try:
        policy = guard.ask(GetSandboxFiles(), timeout=5).policy
        digest = hashlib.sha256(Path(policy).read_bytes()).hexdigest()
        spec = _spec(gemini, "SCRIPT:bash touch ran.txt", {POLICY_ENV: policy, POLICY_SHA256_ENV: digest})
        launch = registry.driven("gemini", "acp").build_launch(spec)
        proc = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            proc.stdin.write(launch.stdin or b"")
            proc.stdin.close()
            proc.stdin = None

            def asked() -> list[Any]:
                return [q for q in coordinator.ask(GetSessionState(), timeout=5).questions if q.status == "open"]

            wait_for(asked, timeout=90, message="gemini's command in the inbox")
            [question] = asked()
            assert question.agent == "gemini" and "touch ran.txt" in question.text
            assert proc.poll() is None and not (gemini.work / "ran.txt").exists()  # held
            coordinator.tell(AnswerGiven(question_id=question.id, answer=answer, approve=approve, source="command"))
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        guard.stop()
        coordinator.stop()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert (gemini.work / "ran.txt").exists() is approve
    parser, drafts = _parsed(out, proc.returncode)
    assert parser.outcome().success
    assert [d.payload.tool_input for d in drafts if d.payload.kind == "tool_call"] == [{"command": "touch ran.txt"}]
    assert bool(parser.outcome().permission_denials) is not approve
