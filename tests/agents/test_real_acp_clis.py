"""The real pinned qwen (0.24.4), Copilot CLI (1.0.102) and opencode (1.18.33) driven over ACP
(``qwen --acp``, ``copilot --acp``, ``opencode acp``) by the bridge, against the scripted model
server: a text answer with a marker, a written file, and a shell command the policy asks about,
held until the inbox's answer, run after yes and never after no.

Each CLI is set up as its stream tests set it up (tests/agents/test_real_{qwen,copilot,opencode}.py):
the same HOME, variables and model; only the protocol differs. What each needs over ACP is its
adapter's ``acp_options``: qwen ``--approval-mode default`` (its ACP default ``auto`` lets a model
classifier approve calls unasked), opencode ``OPENCODE_PERMISSION`` asking for edits and shell
(its defaults run them unasked); copilot asks as it is.
"""

# ruff: noqa: F811 - the fixtures cli_bin, server and copilot_cache come from other test modules
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.adapters.acp import POLICY_ENV, POLICY_SHA256_ENV
from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.config.settings import SandboxSettings, load_settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles
from meta_orchestrator.messages.session import AnswerGiven, GetSessionState
from tests.agents import test_real_opencode as real_opencode
from tests.agents import test_real_qwen as real_qwen
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    MODELS,
    Rig,
    Run,
    cli_bin,
    no_leftover_children,
    run_process,
    server,
)
from tests.agents.test_real_copilot import CopilotRig, copilot_cache  # noqa: F401 - fixture
from tests.agents.test_real_gemini_acp import HELD
from tests.conftest import wait_for
from tests.realcli.model_server import (
    BASH_DONE_TEXT,
    MARKER_ANSWER,
    MARKER_TEXT,
    TEXT_ANSWER,
    WRITE_CONTENT,
    ScriptedModelServer,
)

pytestmark = pytest.mark.realcli

ACP_CLIS = ("qwen", "copilot", "opencode")
# Resume and a review's refusal: gemini's too, to compare all four over ACP.
ALL_ACP_CLIS = ("gemini", *ACP_CLIS)
ANSWER_TIMEOUT_S = 90
# What refuses a review's edit, in its own words (verified with the pinned versions).
REVIEW_REFUSAL = {
    "gemini": "this run is read-only",
    "qwen": "Plan mode is active",
    "copilot": "this run is read-only",
    "opencode": "unavailable tool 'write'",
}


@dataclass
class AcpRig:
    """One run's world for ``cli`` over ACP: its fresh HOME and variables, as its stream tests have them."""

    cli: str
    exe: str
    work: Path
    env: dict[str, str]
    model: str | None = None
    extra_args: tuple[str, ...] = ()
    drafts: list[Any] = field(default_factory=list)

    def spec(self, prompt: str, env: dict[str, str] | None = None) -> LaunchSpec:
        return LaunchSpec(
            executable=(self.exe,),
            prompt=prompt,
            workdir=self.work,
            model=self.model,
            extra_args=self.extra_args,
            env={**self.env, RUN_WORKDIR_ENV: str(self.work), **(env or {})},
        )

    def launch(self, prompt: str, env: dict[str, str] | None = None) -> Any:
        launch = registry.driven(self.cli, "acp").build_launch(self.spec(prompt, env))
        assert "acp_bridge" in " ".join(launch.argv) and prompt not in " ".join(launch.argv)
        return launch

    def run(self, prompt: str) -> Run:
        launch = self.launch(prompt)
        return run_process(launch.argv, launch.env, launch.cwd, launch.stdin)

    def parse(self, stdout: bytes, returncode: int) -> Any:
        """The run's outcome through the ACP parser; its drafts kept in ``drafts``."""
        parser = registry.driven(self.cli, "acp").new_parser()
        self.drafts = [d for line in stdout.splitlines() for d in parser.feed_line(line)]
        self.drafts += parser.finish(returncode, ())
        return parser.outcome()

    def of(self, kind: str) -> list[Any]:
        return [d.payload for d in self.drafts if d.payload.kind == kind]


def _rig(cli: str, bin_dir: Path, model_server: ScriptedModelServer, root: Path, cache: Path) -> AcpRig:
    if cli == "gemini":  # as tests/agents/test_real_gemini_acp.py has it
        gemini = Rig("gemini", bin_dir, model_server, root)
        env = {**gemini.env, "GEMINI_CLI_TRUST_WORKSPACE": "true"}
        return AcpRig(cli, gemini.exe, gemini.work, env, MODELS["gemini"])
    if cli == "qwen":
        env = real_qwen.qwen_env(root / "home", model_server.url)
        work = root / "work"
        work.mkdir()
        return AcpRig(cli, str(bin_dir / "qwen"), work.resolve(), env, real_qwen.MODEL, real_qwen.AUTH_ARGS)
    if cli == "copilot":
        copilot = CopilotRig(bin_dir, model_server, root, cache)
        return AcpRig(cli, copilot.exe, copilot.work, copilot.env)
    opencode = real_opencode.OpencodeRig(bin_dir, model_server, root)
    return AcpRig(cli, opencode.exe, opencode.work, opencode.env, real_opencode.MODEL)


@pytest.fixture(params=ACP_CLIS)
def rig(
    request: pytest.FixtureRequest,
    cli_bin: Path,
    server: ScriptedModelServer,
    tmp_path: Path,
    copilot_cache: Path,
) -> AcpRig:
    return _rig(request.param, cli_bin, server, tmp_path, copilot_cache)


def test_over_acp_a_text_answer_with_a_marker(rig: AcpRig) -> None:
    done = rig.run("Report a milestone. SCRIPT:marker")
    assert done.returncode == 0, done.describe()
    outcome = rig.parse(done.stdout, done.returncode)
    assert outcome.success and outcome.error is None, done.describe()
    assert outcome.final_text == MARKER_ANSWER
    assert [p.text for p in rig.of("marker")] == [MARKER_TEXT], done.describe()
    assert outcome.session_id and outcome.total_tokens and outcome.total_tokens > 0


def test_over_acp_writes_a_file_after_the_broker_allows_it(rig: AcpRig) -> None:
    done = rig.run("SCRIPT:write out.txt")
    assert done.returncode == 0, done.describe()
    # qwen sends its commands update (564 KB with 0.24: every skill's body) a moment after the
    # session starts, in time for a run this long: the bridge passes the commands' names alone.
    for line in done.stdout.splitlines():
        assert len(line) < 16 * 1024, line[:300]
        if b'"available_commands_update"' in line:
            listed = json.loads(line)["params"]["update"]["availableCommands"]
            assert listed and all(command.keys() == {"name"} for command in listed), listed
    assert (rig.work / "out.txt").read_text() == WRITE_CONTENT
    outcome = rig.parse(done.stdout, done.returncode)
    assert outcome.success and outcome.files_written == (str(rig.work / "out.txt"),), done.describe()
    # Asked before it ran, in the policy's words, with the file's path.
    assert [(p.tool, p.tool_input) for p in rig.of("permission")] == [
        ("Write", {"file_path": str(rig.work / "out.txt")})
    ], done.describe()


class _Drain:
    """A pipe read to its end by a thread, so the process writing it never blocks on it."""

    def __init__(self, pipe: IO[bytes] | None) -> None:
        assert pipe is not None
        self._data = bytearray()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read1(1 << 16), b""):
                self._data += chunk

    def bytes(self) -> bytes:
        """All it read, once the pipe's writers are gone (the process group ended)."""
        self._thread.join(timeout=ANSWER_TIMEOUT_S)
        assert not self._thread.is_alive(), "the pipe is still open: a process of the run is left"
        return bytes(self._data)


def _completed_calls(stdout: bytes) -> list[str]:
    """The ids of the tool calls the agent reported completed, from the bridge's output."""
    done = []
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            update = json.loads(line).get("params", {}).get("update", {})
            if isinstance(update, dict) and update.get("status") == "completed" and update.get("toolCallId"):
                done.append(str(update["toolCallId"]))
    return done


def _held_run(rig: AcpRig, session_dir: Path, answer: str, approve: bool) -> tuple[int, bytes, bytes]:
    """The run with the session's policy; the question answered once it is open, the command not run before."""
    coordinator = Coordinator.start(
        settings=load_settings(None, {"workspace": str(session_dir.parent)}),
        session_id="s",
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
        home=rig.env["HOME"],
    )
    try:
        policy = guard.ask(GetSandboxFiles(), timeout=5).policy
        digest = hashlib.sha256(Path(policy).read_bytes()).hexdigest()
        launch = rig.launch("SCRIPT:bash touch ran.txt", {POLICY_ENV: policy, POLICY_SHA256_ENV: digest})
        proc = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # Read as it comes, as the worker's pumps do: a bridge writing into a pipe nobody
        # reads stops reading its agent, whose session/request_permission then never arrives.
        stdout, stderr = _Drain(proc.stdout), _Drain(proc.stderr)
        try:
            proc.stdin.write(launch.stdin or b"")
            proc.stdin.close()
            proc.stdin = None

            def asked() -> list[Any]:
                return [q for q in coordinator.ask(GetSessionState(), timeout=5).questions if q.status == "open"]

            try:
                wait_for(asked, timeout=ANSWER_TIMEOUT_S, message=f"{rig.cli}'s command in the inbox")
            except AssertionError:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                out, err = stdout.bytes(), stderr.bytes()
                said = f"{out.decode(errors='replace')[-4000:]}\n{err[-2000:]!r}"
                # Not asked must still mean not run: a command run unasked is a bypass.
                assert not (rig.work / "ran.txt").exists(), f"ran without being asked:\n{said}"
                assert not _completed_calls(out), f"a tool call completed without being asked:\n{said}"
                pytest.fail(f"never asked (the command did not run); the run said:\n{said}")
            [question] = asked()
            assert question.agent == rig.cli and "touch ran.txt" in question.text
            assert proc.poll() is None and not (rig.work / "ran.txt").exists()  # held
            coordinator.tell(AnswerGiven(question_id=question.id, answer=answer, approve=approve, source="command"))
            proc.wait(timeout=ANSWER_TIMEOUT_S)
            out, err = stdout.bytes(), stderr.bytes()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    finally:
        guard.stop()
        coordinator.stop()
    return proc.returncode, out, err


@pytest.mark.timeout(2 * ANSWER_TIMEOUT_S + 30)
@pytest.mark.parametrize(("answer", "approve"), [("yes", True), ("no", False)])
def test_over_acp_a_command_the_policy_asks_about_is_held(
    rig: AcpRig, tmp_path: Path, answer: str, approve: bool
) -> None:
    (tmp_path / "workspace").mkdir()
    session_dir = tmp_path / "workspace" / "s"
    returncode, out, err = _held_run(rig, session_dir, answer, approve)
    shown = f"{out.decode(errors='replace')[-3000:]}\n--- stderr\n{err.decode(errors='replace')[-2000:]}"
    assert returncode == 0, shown
    assert (rig.work / "ran.txt").exists() is approve, shown
    outcome = rig.parse(out, returncode)
    assert outcome.success, shown
    [permission] = rig.of("permission") if approve else rig.of("denial")
    assert (permission.tool, permission.tool_input) == ("Bash", {"command": "touch ran.txt"}), shown
    assert bool(outcome.permission_denials) is not approve, shown
    if approve:
        assert outcome.final_text == BASH_DONE_TEXT, shown
    decisions = [json.loads(line) for line in (session_dir / "security.jsonl").read_text().splitlines()]
    decided = "allow" if approve else "deny"
    assert [(d["decision"], d["decided_by"], d["call"]["agent"]) for d in decisions] == [(decided, "user", rig.cli)]


# gemini 0.61.0 saves the ACP session (~/.gemini/tmp/<project>/chats/session-...-<id>.jsonl) but
# answers session/load with -32603 "No previous sessions found for this project.": a resumed
# gemini run goes by its stream (``acp_resumes = False``), whose ``--resume <id>`` finds it.


@pytest.mark.parametrize("rig", ALL_ACP_CLIS, indirect=True)
def test_over_acp_a_second_run_resumes_the_first_session(rig: AcpRig, server: ScriptedModelServer) -> None:
    first = rig.run("First. SCRIPT:text")
    assert first.returncode == 0, first.describe()
    session_id = rig.parse(first.stdout, first.returncode).session_id
    assert session_id
    adapter = registry.driven(rig.cli, "acp")
    protocol = adapter.run_protocol(None, resuming=True)
    assert protocol == ("stream" if rig.cli == "gemini" else "acp")
    again = adapter.build_launch(
        replace(rig.spec("Again. SCRIPT:marker"), resume_session_id=session_id, protocol=protocol)
    )
    second = run_process(again.argv, again.env, again.cwd, again.stdin)
    assert second.returncode == 0, second.describe()
    parser = adapter.parser_for(protocol)
    for line in second.stdout.splitlines():
        parser.feed_line(line)
    parser.finish(second.returncode, ())
    outcome = parser.outcome()
    assert outcome.success and outcome.session_id == session_id, second.describe()
    assert outcome.final_text == MARKER_ANSWER  # this run's answer only, not the loaded history
    # The second turn's request carries the first exchange: the session was loaded, not new.
    [turn] = [r for r in server.recorded() if r.script and r.script.kind == "marker"]
    assert TEXT_ANSWER in json.dumps(turn.body), second.describe()


@pytest.mark.parametrize("rig", ALL_ACP_CLIS, indirect=True)
def test_over_acp_a_review_run_writes_no_file(rig: AcpRig) -> None:
    launch = registry.driven(rig.cli, "acp").build_launch(replace(rig.spec("SCRIPT:write out.txt"), mode="read_only"))
    assert "--read-only" in launch.argv
    done = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
    assert not (rig.work / "out.txt").exists(), done.describe()
    outcome = rig.parse(done.stdout, done.returncode)
    assert outcome.files_written == (), done.describe()
    # Who refuses: copilot asks and the bridge rejects (read-only); qwen's plan mode and
    # opencode's deny rules refuse before asking, and say so in the tool's result.
    said = [p.text for p in rig.of("denial") + rig.of("tool_result")]
    assert any(REVIEW_REFUSAL[rig.cli] in text for text in said), done.describe()
