"""The real pinned claude CLI, scripted to run dangerous commands, meets the PreToolUse hook.

The command line comes from our claude adapter plus the ``--settings`` file the guard
generates (as the session wiring does); the model is the scripted server (``SCRIPT:bash``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.coordinator import Coordinator
from meta_orchestrator.actors.sandbox_guard import SandboxGuard
from meta_orchestrator.config.settings import SandboxSettings, load_settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles, ToolCallDecided
from meta_orchestrator.messages.session import GetSessionState
from tests.realcli.model_server import BASH_DONE_TEXT, ScriptedModelServer
from tests.test_real_clis import cli_bin, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.realcli
RUN_TIMEOUT_S = 60


def _run_claude(
    bin_dir: Path, srv: ScriptedModelServer, root: Path, target: Path, settings_file: str, prompt: str
) -> tuple[list[dict[str, Any]], float]:
    home, tmp = root / "home", root / "tmp"
    home.mkdir(exist_ok=True)
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": srv.url,
        "ANTHROPIC_API_KEY": "sk-ant-mock",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    launch = get_adapter("claude").build_launch(
        LaunchSpec(
            executable=(str(bin_dir / "claude"),),
            prompt=prompt,
            workdir=target,
            extra_args=("--settings", settings_file),
            env=env,
        )
    )
    assert launch.env["CLAUDE_CODE_MAX_RETRIES"] == "0"
    started = time.monotonic()
    proc = subprocess.Popen(
        launch.argv,
        cwd=launch.cwd,
        env=launch.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("claude did not exit within the watchdog")
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return lines, time.monotonic() - started


def _tool_results(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        block
        for line in lines
        if line.get("type") == "user"
        for block in line["message"]["content"]
        if block.get("type") == "tool_result"
    ]


def test_rm_rf_outside_the_target_is_refused_before_anything_is_deleted(cli_bin, server, tmp_path, probe):  # noqa: F811
    target = tmp_path / "target"
    target.mkdir()
    outside = tmp_path / "precious"
    (outside / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt"):
        (outside / name).write_text("keep me\n")
    guard = SandboxGuard.start(
        settings=SandboxSettings(),
        session_dir=tmp_path / "session",
        target=target,
        asker=probe.ref,
        listeners=(probe.ref,),
        home=str(tmp_path / "home"),
    )
    files = guard.ask(GetSandboxFiles(), timeout=5)
    lines, _ = _run_claude(cli_bin, server, tmp_path, target, files.claude_settings, f"SCRIPT:bash rm -rf {outside}")
    assert (outside / "a.txt").read_text() == "keep me\n"
    assert (outside / "sub" / "b.txt").is_file()
    [result] = _tool_results(lines)
    assert result["is_error"] is True
    assert "Blocked by the orchestrator's sandbox policy (rm_outside)" in result["content"]
    final = lines[-1]
    assert final["type"] == "result" and final["result"] == BASH_DONE_TEXT
    assert [d["tool_name"] for d in final["permission_denials"]] == ["Bash"]
    fact = probe.expect(ToolCallDecided, timeout=5)
    assert (fact.decision, fact.decided_by, fact.rule) == ("deny", "policy", "rm_outside")
    assert fact.call.tool_input["command"] == f"rm -rf {outside}"


def test_high_risk_command_waits_for_confirmation_and_is_denied_on_timeout(cli_bin, server, tmp_path, probe):  # noqa: F811
    target = tmp_path / "target"
    target.mkdir()
    subprocess.run(["git", "init", "-q", str(target)], check=True, capture_output=True)
    coordinator = Coordinator.start(
        settings=load_settings(None, {"workspace": str(tmp_path)}),
        session_id="s",
        session_dir=tmp_path / "session",
        task="t",
        target=target,
        workers={},
    )
    timeout_s = 1.5
    guard = SandboxGuard.start(
        settings=SandboxSettings(confirm_timeout_s=timeout_s),
        session_dir=tmp_path / "session",
        target=target,
        asker=coordinator,
        listeners=(probe.ref,),
        home=str(tmp_path / "home"),
    )
    files = guard.ask(GetSandboxFiles(), timeout=5)
    lines, elapsed = _run_claude(
        cli_bin, server, tmp_path, target, files.claude_settings, "SCRIPT:bash git push origin main"
    )
    [result] = _tool_results(lines)
    assert result["is_error"] is True
    assert f"no answer within {timeout_s:g}s; denied by default" in result["content"]
    assert elapsed >= timeout_s  # the tool call waited for the user's decision
    fact = probe.expect(ToolCallDecided, timeout=5)
    assert (fact.decision, fact.decided_by, fact.rule) == ("deny", "timeout", "git_push")
    [question] = coordinator.ask(GetSessionState(), timeout=2).questions
    assert question.kind == "confirmation" and question.status == "expired"
    assert "git push origin main" in question.text
