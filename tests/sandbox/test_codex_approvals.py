"""The real pinned codex (app-server, through the bridge) asked before each call by the one broker.

A session's guard writes the policy; codex's commands and patches come to ``tool_broker.decide``
in the policy's words. A command the policy asks about (a ``high_risk_patterns`` rule) is held
before it runs while the question is in the inbox; it runs after yes, not after no, and is
denied when nobody can answer. A patch onto the sandbox's own files is declined by the policy
without asking. Every decision is in ``security.jsonl``.
"""

from __future__ import annotations

import hashlib
import shutil
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import POLICY_FILE_ENV, POLICY_SHA256_ENV
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.config.settings import SandboxSettings
from meta_orchestrator.messages.sandbox import GetSandboxFiles, ToolCallDecided
from meta_orchestrator.messages.session import AskQuestion, QuestionAnswered, SandboxCallSubject
from tests.agents.test_codex_app_server import run_app_server
from tests.agents.test_real_clis import AdapterRun, Rig, cli_bin, no_leftover_children, server  # noqa: F401
from tests.conftest import ProbeHandle

pytestmark = pytest.mark.realcli

ASKED = "asked.txt"
COMMAND = f"touch {ASKED}"


@pytest.fixture
def rig(cli_bin: Path, server, tmp_path: Path) -> Rig:  # noqa: F811
    return Rig("codex", cli_bin, server, tmp_path)


def guarded(rig: Rig, asker: Any, listener: Any) -> tuple[Any, dict[str, str], Path]:
    """A guard for a session working in the rig's folder, whose policy asks about ``COMMAND``;
    the run's environment naming its policy (what ``sandbox.start.sandboxed`` gives codex)."""
    session_dir = rig.root / "session"
    guard = SandboxGuard.start(
        settings=SandboxSettings(high_risk_patterns=(r"\btouch asked\.txt",), confirm_timeout_s=60),
        session_dir=session_dir,
        target=rig.work,
        asker=asker,
        listeners=(listener,),
        home=str(rig.home),
    )
    files = guard.ask(GetSandboxFiles(), timeout=10)
    digest = hashlib.sha256(Path(files.policy).read_bytes()).hexdigest()
    env = {POLICY_FILE_ENV: files.policy, POLICY_SHA256_ENV: digest, RUN_WORKDIR_ENV: str(rig.work)}
    return guard, env, session_dir


def in_thread(rig: Rig, prompt: str, env: dict[str, str]) -> tuple[threading.Thread, list[AdapterRun]]:
    done: list[AdapterRun] = []
    thread = threading.Thread(target=lambda: done.append(run_app_server(rig, prompt, env=env)))
    thread.start()
    return thread, done


def security_records(session_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (session_dir / "security.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("approve", [True, False])
def test_a_command_the_policy_asks_about_waits_for_the_answer(rig: Rig, probe: ProbeHandle, approve: bool) -> None:
    asker = ProbeHandle()
    guard, env, session_dir = guarded(rig, asker.ref, probe.ref)
    thread, done = in_thread(rig, f"SCRIPT:bash {COMMAND}", env)
    ask = asker.expect(AskQuestion, timeout=60)
    subject = ask.question.subject
    assert isinstance(subject, SandboxCallSubject) and subject.tool_input == {"command": COMMAND}
    assert ask.question.agent == "codex" and ask.question.default_answer == "no"
    assert subject.tool == "Bash" and subject.rule.startswith("config_high_risk")
    # Held before it runs: the question is open, codex waits, the file is not there.
    assert thread.is_alive() and not (rig.work / ASKED).exists()
    answer = "yes" if approve else "no"
    guard.tell(QuestionAnswered(question_id=ask.question.id, answer=answer, approve=approve))
    thread.join(60)
    [result] = done
    assert result.run.returncode == 0, result.describe()
    assert (rig.work / ASKED).exists() is approve, result.describe()
    fact = probe.expect(ToolCallDecided, timeout=5)
    assert (fact.decision, fact.decided_by, fact.call.agent) == ("allow" if approve else "deny", "user", "codex")
    [record] = [r for r in security_records(session_dir) if r["kind"] == "decision"]
    assert record["decision"] == fact.decision and COMMAND in record["call"]["tool_input"]["command"]
    [approval] = [d for d in result.of("status", "approval") if d.payload.tool == "Bash"]
    assert approval.payload.details["decision"] == ("accept" if approve else "decline")
    if not approve:
        assert result.of("blocker", "denial"), result.describe()  # the declined command item
        assert result.outcome.permission_denials


def test_nobody_to_answer_denies(rig: Rig, probe: ProbeHandle) -> None:
    guard, env, session_dir = guarded(rig, None, probe.ref)  # no inbox: the unattended default
    result = run_app_server(rig, f"SCRIPT:bash {COMMAND}", env=env)
    assert result.run.returncode == 0, result.describe()
    assert not (rig.work / ASKED).exists()
    fact = probe.expect(ToolCallDecided, timeout=5)
    assert (fact.decision, fact.decided_by) == ("deny", "unavailable")
    assert [r["decision"] for r in security_records(session_dir) if r["kind"] == "decision"] == ["deny"]
    [approval] = [d for d in result.of("status", "approval") if d.payload.tool == "Bash"]
    assert approval.payload.details == {
        "decision": "decline",
        "by": "user",
        "item_id": approval.payload.details["item_id"],
    }
    del guard


def test_a_patch_onto_the_sandbox_files_is_declined_by_the_policy(rig: Rig, probe: ProbeHandle) -> None:
    asker = ProbeHandle()
    guard, env, session_dir = guarded(rig, asker.ref, probe.ref)
    target = session_dir / "sandbox" / "planted.txt"
    result = run_app_server(rig, f"SCRIPT:write {target}", env=env)
    assert result.run.returncode == 0, result.describe()
    assert not target.exists()
    [approval] = result.of("status", "approval")
    assert approval.payload.tool_input == {"file_path": str(target)} and approval.payload.details["by"] == "policy"
    assert result.of("blocker", "denial")[0].payload.text == f"patch declined: {target}"
    blocked = [r for r in security_records(session_dir) if r["kind"] == "blocked"]
    assert blocked and blocked[0]["rule"] == "sandbox_files"
    with pytest.raises(AssertionError):
        asker.expect(AskQuestion, timeout=0.5)  # decided by the policy: nobody was asked
    del guard


def test_a_command_the_policy_allows_is_not_asked(rig: Rig, probe: ProbeHandle) -> None:
    asker = ProbeHandle()
    guard, env, _session_dir = guarded(rig, asker.ref, probe.ref)
    result = run_app_server(rig, "SCRIPT:bash touch fine.txt", env=env)
    assert result.run.returncode == 0 and (rig.work / "fine.txt").exists(), result.describe()
    [approval] = result.of("status", "approval")
    assert approval.payload.text == "allowed: touch fine.txt"
    with pytest.raises(AssertionError):
        asker.expect(AskQuestion, timeout=0.5)
    del guard


# -- the call in the policy's words (pure) -------------------------------------------------------


def test_codex_commands_are_judged_by_their_script() -> None:
    from meta_orchestrator.actors.agents.codex_app_bridge import shell_script

    assert shell_script("/bin/bash -lc 'git push origin main'") == "git push origin main"
    assert shell_script("bash -c 'a && b'") == "a && b"
    assert shell_script("ls -la") == "ls -la"
    assert shell_script("/bin/bash -lc 'unbalanced") == "/bin/bash -lc 'unbalanced"


def test_patches_and_permissions_in_the_policy_words() -> None:
    from meta_orchestrator.actors.agents.codex_app_bridge import file_change_calls, permission_writes

    item = {
        "changes": [
            {"path": "/w/new.txt", "kind": {"type": "add"}, "diff": ""},
            {"path": "/w/old.txt", "kind": {"type": "update", "move_path": "/elsewhere/moved.txt"}, "diff": ""},
            {"path": "/w/gone.txt", "kind": {"type": "delete"}, "diff": ""},
        ]
    }
    assert file_change_calls(item) == [
        ("Write", "/w/new.txt"),
        ("Edit", "/w/old.txt"),
        ("Write", "/elsewhere/moved.txt"),
        ("Edit", "/w/gone.txt"),
    ]
    assert file_change_calls(None) == []
    asked = {
        "fileSystem": {
            "write": ["/a"],
            "entries": [
                {"access": "write", "path": {"type": "path", "path": "/b"}},
                {"access": "read", "path": {"type": "path", "path": "/c"}},
                {"access": "write", "path": {"type": "glob_pattern", "pattern": "/d/**"}},
            ],
        },
        "network": {"enabled": True},
    }
    assert permission_writes(asked) == (["/a", "/b"], ["write /d/**", "network"])


# -- through the real Worker, inside the OS sandbox (as a session runs it) --------------------------


def test_inside_the_os_sandbox_through_the_worker(rig: Rig, probe: ProbeHandle, bwrap: str, tmp_path: Path) -> None:
    """The bridge runs as the run's process inside bwrap (its interpreter and the policy shown
    read-only, the channel reachable); codex's command waits for the user's yes, then runs."""
    import tempfile

    import pykka

    from meta_orchestrator.actors.agents.worker import Worker
    from meta_orchestrator.actors.files.session_files import read_jsonl
    from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
    from meta_orchestrator.config.settings import AgentSettings, SessionSettings
    from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
    from tests.agents.test_real_clis import MODELS

    root = Path(tempfile.mkdtemp(prefix="orch-sbx-app-", dir="/var/tmp"))  # /tmp is private inside
    boxed = Rig("codex", rig.bin_dir, rig.server, root)
    asker = ProbeHandle()
    guard, env, session_dir = guarded(boxed, asker.ref, probe.ref)
    files = guard.ask(GetSandboxFiles(), timeout=10)
    scratch = root / "scratch"
    scratch.mkdir()
    worker = Worker.start(
        agent="codex",
        adapter=get_adapter_codex(),
        agent_settings=AgentSettings(
            command=boxed.exe,
            model=MODELS["codex"],
            extra_args=boxed.extra_args,
            share_min=0.3,
            share_max=0.5,
            protocol="app-server",
            env={k: v for k, v in env.items() if k != RUN_WORKDIR_ENV},
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="s1",
        session_dir=session_dir,
        target=boxed.work,
        base_env=boxed.env,
        extra_dirs=(scratch,),
        sandbox=OsSandbox(
            bwrap=bwrap,
            hidden=(str(session_dir),),
            readable=(str(Path(files.policy).parent), str(Path(files.channel).parent)),
        ),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt=f"SCRIPT:bash {COMMAND}", reply_to=probe.ref))
        ask = asker.expect(AskQuestion, timeout=90)
        assert not (boxed.work / ASKED).exists()  # held before it runs
        guard.tell(QuestionAnswered(question_id=ask.question.id, answer="yes", approve=True))
        finished = probe.expect(AssignmentFinished, timeout=90)
        records = read_jsonl(session_dir / "codex.jsonl").records
        assert finished.outcome.success, (finished.outcome.error, finished.stderr_tail)
        assert (boxed.work / ASKED).exists()
        launch = next(r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch")
        assert "codex_app_bridge" in launch and "--sandbox danger-full-access" in launch
        kinds = [r["payload"].get("kind") for r in records]
        assert "approval" in kinds and "tool_result" in kinds
    finally:
        worker.stop()
        pykka.ActorRegistry.stop_all(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def get_adapter_codex() -> Any:
    from meta_orchestrator.actors.adapters.registry import get_adapter

    return get_adapter("codex")


def test_each_run_reads_the_policy_hash_as_it_starts(tmp_path: Path) -> None:
    """A restarted guard rewrites the policy (new channel, new secret): the next run's bridge is
    given the new file's hash, not the one of the session's start."""
    from meta_orchestrator.actors.agents.cli_launch import launch_spec
    from meta_orchestrator.config.settings import AgentSettings
    from meta_orchestrator.messages.worker import StartAssignment

    policy = tmp_path / "policy.json"
    policy.write_text('{"version": 1}')
    settings = AgentSettings(share_min=0.3, share_max=0.5, protocol="app-server", env={POLICY_FILE_ENV: str(policy)})
    adapter = get_adapter_codex()

    def spec() -> Any:
        return launch_spec(
            adapter,
            settings,
            StartAssignment(assignment_id="a", prompt="p"),
            session_id="s",
            workdir=tmp_path,
            extra_dirs=(),
            base_env={},
        )

    first = spec()
    assert first.env[POLICY_SHA256_ENV] == hashlib.sha256(policy.read_bytes()).hexdigest()
    assert first.protocol == "app-server"
    policy.write_text('{"version": 1, "secret": "new"}')
    second = spec()
    assert (
        second.env[POLICY_SHA256_ENV] == hashlib.sha256(policy.read_bytes()).hexdigest() != first.env[POLICY_SHA256_ENV]
    )
    launch = adapter.build_launch(second)
    assert launch.argv[launch.argv.index("--policy-sha256") + 1] == second.env[POLICY_SHA256_ENV]


def test_a_protocol_the_cli_does_not_speak_is_refused_before_the_session(tmp_path: Path, demo_env) -> None:
    from meta_orchestrator.actors.app.system import LaunchRequest, start, stop_all
    from meta_orchestrator.actors.recovery.preflight import PreflightError
    from meta_orchestrator.config.settings import load_settings

    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), "agents.claude.protocol": "app-server"})
    started: list[Any] = []
    try:
        with pytest.raises(
            PreflightError, match=r"\[agents.claude\] protocol: claude cannot be driven by 'app-server'"
        ):
            start(
                settings,
                LaunchRequest(task="t", target=None, demo=True, dashboard=False, console=False, env=demo_env),
                started,
            )
    finally:
        stop_all(started)
