"""The real claude, scripted to plant hooks and MCP servers in the user's CLI state.

A HOME made for the test holds a realistic ``~/.claude`` (settings, OAuth credentials, a
claude installed the local installer's way in ``~/.claude/local``), ``~/.claude.json``,
``~/.codex`` and ``~/.gemini``. The real claude runs through the real worker inside bwrap,
with the sandbox guard's hook, in the default and the bypass mode, the user answering yes
to every question (so only the OS sandbox stands in the way). Each ``SCRIPT:bash`` attack
plants a probe that would touch a marker file when a later claude, codex or gemini ran it.
Afterwards the four state places are byte-identical, a direct run of claude outside the
sandbox (the user's next run) writes no marker, and claude resumed its own session across
two runs of the same session from its private state.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.sandbox.cli_state import CLI_STATE_FOLDER
from meta_orchestrator.actors.files.session_files import new_session_id, read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SandboxSettings, SessionSettings
from meta_orchestrator.messages.sandbox import GetSandboxFiles, SandboxFiles
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.realcli.model_server import TEXT_ANSWER, ScriptedModelServer
from tests.sandbox.test_cli_state import make_home, snapshot
from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures
from tests.sandbox.test_sandbox_real_claude import Answerer, _tool_results

pytestmark = pytest.mark.realcli

FUTURE_MS = 4102444800000  # 2100: claude must not try to refresh against the network


class Home:
    """The test's machine: a workspace with one session, a target and the user's HOME."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.workspace = root / "workspace"
        self.session_dir = self.workspace / new_session_id()
        self.target = root / "target"
        self.home = root / "home"
        self.marker = root / "probe-ran"
        for folder in (self.session_dir / "scratch", self.target, self.home):
            folder.mkdir(parents=True)
        make_home(self.home, self.target, self.marker)
        creds = self.home / ".claude" / ".credentials.json"
        data = json.loads(creds.read_text())
        data["claudeAiOauth"]["expiresAt"] = FUTURE_MS
        creds.write_text(json.dumps(data))
        # claude installed by the local installer: a wrapper in its own state folder
        local = self.home / ".claude" / "local" / "claude"
        local.write_text(f'#!/bin/sh\nexec {shlex.quote(str(bin_dir / "claude"))} "$@"\n')

    def env(self, srv: ScriptedModelServer) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": srv.url,
            "ANTHROPIC_API_KEY": "sk-ant-mock",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }


@pytest.fixture
def machine(cli_bin: Path) -> Iterator[Home]:  # noqa: F811
    root = Path(tempfile.mkdtemp(prefix="orch-cli-state-claude-", dir="/var/tmp"))  # outside the private /tmp
    yield Home(root, cli_bin)
    shutil.rmtree(root, ignore_errors=True)


def _worker(machine: Home, srv: ScriptedModelServer, files: SandboxFiles, bwrap: str, bypass: bool) -> Any:
    env = machine.env(srv)
    extra_args: tuple[str, ...] = ("--settings", files.claude_settings)
    if bypass:
        extra_args += ("--dangerously-skip-permissions",)
        env["IS_SANDBOX"] = "1"  # claude refuses bypass as root otherwise; tests run as root
    return Worker.start(
        agent="claude",
        adapter=get_adapter("claude"),
        agent_settings=AgentSettings(
            command=str(machine.home / ".claude" / "local" / "claude"),
            extra_args=extra_args,
            share_min=0.4,
            share_max=0.5,
            allow_bypass=bypass,
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=60),
        session_id=machine.session_dir.name,
        session_dir=machine.session_dir,
        target=machine.target,
        base_env=env,
        extra_dirs=(machine.session_dir / "scratch",),
        sandbox=OsSandbox(
            bwrap=bwrap,
            hidden=(str(machine.workspace),),
            readable=(str(Path(files.policy).parent), str(Path(files.channel).parent)),
        ),
    )


def _run(worker: Any, probe: Any, prompt: str, resume: str | None = None) -> AssignmentFinished:
    worker.tell(StartAssignment(assignment_id="a", prompt=prompt, reply_to=probe.ref, resume_session_id=resume))
    return probe.expect(AssignmentFinished, timeout=90)


def _attacks(marker: Path) -> list[tuple[str, str]]:
    touch = f"touch {marker}"
    probe = {"type": "command", "command": touch}
    hooks = json.dumps({"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [probe]}]}, "statusLine": probe})
    mcp = json.dumps({"mcpServers": {"probe": {"command": "sh", "args": ["-c", touch]}}})
    plant_mcp = (
        "import json, pathlib; p = pathlib.Path.home() / '.claude.json'; d = json.loads(p.read_text()); "
        f"d['mcpServers'] = {mcp}['mcpServers']; p.write_text(json.dumps(d))"
    )
    return [
        ("claude-hooks", f"echo {shlex.quote(hooks)} > ~/.claude/settings.json"),
        ("claude-local-hooks", f"echo {shlex.quote(hooks)} > ~/.claude/settings.local.json"),
        ("claude-json-mcp", f"python3 -c {shlex.quote(plant_mcp)}"),
        ("codex-notify", f'printf \'notify = ["sh", "-c", "{touch}"]\\n\' >> ~/.codex/config.toml'),
        ("gemini-mcp", f"echo {shlex.quote(mcp)} > ~/.gemini/settings.json"),
        ("local-claude", f"printf '#!/bin/sh\\n{touch}\\n' > ~/.claude/local/claude"),
    ]


@pytest.mark.parametrize("mode", ["default", "bypass"])
def test_the_real_claude_plants_nothing_in_the_users_state(cli_bin, server, machine, bwrap, probe, mode):  # noqa: F811
    answerer = Answerer.start(approve=True)
    guard = SandboxGuard.start(
        settings=SandboxSettings(),
        session_dir=machine.session_dir,
        target=machine.target,
        extra_dirs=(machine.session_dir / "scratch",),
        asker=answerer,
        listeners=(probe.ref,),
        home=str(machine.home),
    )
    files = guard.ask(GetSandboxFiles(), timeout=5)
    before = snapshot(machine.home)
    worker = _worker(machine, server, files, bwrap, bypass=mode == "bypass")
    try:
        for name, command in _attacks(machine.marker):
            finished = _run(worker, probe, f"SCRIPT:bash {command}")
            assert finished.returncode == 0, (name, finished)
            lines = [
                json.loads(r["raw"]) for r in read_jsonl(machine.session_dir / "claude.jsonl").records if r.get("raw")
            ]
            results = " ".join(_tool_results(lines[-12:]))
            if mode == "bypass" and name != "claude-json-mcp":  # the command ran; the OS refused it
                assert "Read-only file system" in results, (name, results)
            assert snapshot(machine.home) == before, f"{name} ({mode}) changed the user's CLI state"
        # claude resumes its own session from its private state, run after run
        first = _run(worker, probe, "SCRIPT:text")
        assert first.outcome.success and first.outcome.session_id, first
        again = _run(worker, probe, "SCRIPT:text", resume=first.outcome.session_id)
        assert again.outcome.success and again.outcome.session_id == first.outcome.session_id, again
        kept = machine.session_dir / CLI_STATE_FOLDER / "claude" / "claude-dir" / "projects"
        assert list(kept.rglob(f"{first.outcome.session_id}.jsonl")), "the session is kept in the private copy"
    finally:
        worker.stop()
        guard.stop()
        answerer.stop()
    assert snapshot(machine.home) == before
    private = machine.session_dir / CLI_STATE_FOLDER / "claude"
    # planted in the copy by one run, reset before the next
    assert not json.loads((private / "claude.json").read_text()).get("mcpServers")
    assert json.loads((private / "claude-dir" / "settings.json").read_text())["model"] == "opus"

    # The user's next run of claude, outside any sandbox, with what the session left behind.
    direct = subprocess.run(
        [str(machine.home / ".claude" / "local" / "claude"), "-p", "SCRIPT:text", "--output-format", "json"],
        env=machine.env(server),
        cwd=machine.target,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        start_new_session=True,
    )
    assert direct.returncode == 0 and TEXT_ANSWER in direct.stdout, (direct.stdout, direct.stderr)
    assert not machine.marker.exists()
