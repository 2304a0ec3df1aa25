"""The real pinned gemini (0.61.0) driven over ACP (``gemini --acp``) by the bridge, against the
scripted model server: a text answer, a written file, and a shell command the policy asks about,
held until the inbox's answer, run after yes and never after no."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.adapters.acp import POLICY_ENV, POLICY_SHA256_ENV, AcpParser
from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.config.settings import AgentSettings, SandboxSettings, SessionSettings, load_settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles
from meta_orchestrator.messages.session import AnswerGiven, GetSessionState
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    MODELS,
    Rig,
    cli_bin,
    no_leftover_children,
    run_process,
    server,
)
from tests.conftest import ProbeHandle, wait_for
from tests.realcli.model_server import TEXT_ANSWER, WRITE_CONTENT, ScriptedModelServer

pytestmark = pytest.mark.realcli

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


@pytest.fixture
def var_root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the session live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-acp-gemini-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_real_gemini_over_acp_inside_the_os_sandbox_waits_for_the_inbox_then_runs(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    probe: ProbeHandle,
    var_root: Path,
) -> None:
    """The whole path: the Worker starts the bridge in bubblewrap, the bridge starts gemini --acp,
    gemini asks before its shell call, the broker asks the guard, the question is in the inbox."""
    rig = Rig("gemini", cli_bin, server, var_root)
    session_dir = var_root / "workspace" / "s1"
    session_dir.mkdir(parents=True)
    coordinator = Coordinator.start(
        settings=load_settings(None, {"workspace": str(var_root / "workspace")}),
        session_id="s1",
        session_dir=session_dir,
        task="t",
        target=rig.work,
        workers={},
    )
    guard = SandboxGuard.start(
        settings=SandboxSettings(high_risk_patterns=(HELD,)),
        session_dir=session_dir,
        target=rig.work,
        asker=coordinator,
        home=str(rig.home),
    )
    files = guard.ask(GetSandboxFiles(), timeout=5)
    digest = hashlib.sha256(Path(files.policy).read_bytes()).hexdigest()
    worker = Worker.start(
        agent="gemini",
        adapter=registry.driven("gemini", "acp"),
        agent_settings=AgentSettings(
            command=rig.exe,
            model=MODELS["gemini"],
            protocol="acp",
            env={POLICY_ENV: files.policy, POLICY_SHA256_ENV: digest},
            share_min=0.3,
            share_max=0.5,
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=120),
        session_id="s1",
        session_dir=session_dir,
        target=rig.work,
        base_env=rig.env,
        sandbox=OsSandbox(
            bwrap=bwrap,
            hidden=(str(var_root / "workspace"),),
            readable=(str(Path(files.policy).parent), str(Path(files.channel).parent)),
        ),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt="SCRIPT:bash touch ran.txt", reply_to=probe.ref))

        def asked() -> list[Any]:
            return [q for q in coordinator.ask(GetSessionState(), timeout=5).questions if q.status == "open"]

        wait_for(asked, timeout=120, message="gemini's command in the inbox")
        [question] = asked()
        assert question.agent == "gemini" and not (rig.work / "ran.txt").exists()  # held
        coordinator.tell(AnswerGiven(question_id=question.id, answer="yes", approve=True, source="command"))
        finished = probe.expect(AssignmentFinished, timeout=120)
    finally:
        worker.stop()
        guard.stop()
        coordinator.stop()
    assert finished.outcome.success, finished.outcome.error
    assert (rig.work / "ran.txt").exists()
    decisions = [json.loads(line) for line in (session_dir / "security.jsonl").read_text().splitlines()]
    assert [(d["decision"], d["decided_by"], d["call"]["agent"]) for d in decisions] == [("allow", "user", "gemini")]
    records = read_jsonl(session_dir / "gemini.jsonl").records
    launch = next(r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch")
    assert "acp_bridge" in launch and "--acp" in launch
