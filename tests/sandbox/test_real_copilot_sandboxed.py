"""The real pinned Copilot CLI inside the OS sandbox, as root, against the scripted model server.

Run by the real Worker: bubblewrap and Landlock around it, its prompt on stdin, only its
allowlisted environment, ``~/.copilot`` and ``~/.cache/copilot`` as the session's private
copies (copilot unpacks its bundled package into the latter on its first run). Then a whole
session where claude plans, copilot implements (its file on the session branch) and gemini reviews.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.config.settings import AgentSettings, SessionSettings, load_settings
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.agents.test_real_clis import MODELS, cli_bin, server  # noqa: F401 - fixtures
from tests.conftest import ProbeHandle, session_store
from tests.realcli.model_server import WRITE_CONTENT, ScriptedModelServer

pytestmark = pytest.mark.realcli

USER_MCP = '{"mcpServers": {}}\n'


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the session live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-sbx-copilot-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _environment(root: Path, url: str) -> dict[str, str]:
    home = root / "home"
    (home / ".copilot").mkdir(parents=True)
    (home / ".copilot" / "mcp-config.json").write_text(USER_MCP)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "COPILOT_PROVIDER_TYPE": "anthropic",
        "COPILOT_PROVIDER_BASE_URL": url,
        "COPILOT_PROVIDER_API_KEY": "sk-copilot-mock",
        "COPILOT_MODEL": "claude-sonnet-4.5",
        "GITHUB_TOKEN": "must-not-reach-an-agent",
    }


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def _start_worker(root: Path, exe: str, env: dict[str, str], bwrap: str) -> Any:
    workspace = root / "workspace"
    scratch = workspace / "s1" / "scratch"
    scratch.mkdir(parents=True)
    (root / "work").mkdir()
    return Worker.start(
        agent="copilot",
        adapter=get_adapter("copilot"),
        agent_settings=AgentSettings(command=exe, share_min=0.3, share_max=1.0),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="s1",
        session_dir=workspace / "s1",
        target=root / "work",
        base_env=env,
        extra_dirs=(scratch,),
        sandbox=OsSandbox(bwrap=bwrap, hidden=(str(workspace),)),
    )


def test_copilot_inside_the_os_sandbox_writes_in_the_checkout_and_not_in_the_user_s_copilot_home(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    probe: ProbeHandle,
    root: Path,
) -> None:
    env = _environment(root, server.url)
    home = Path(env["HOME"])
    planting = "echo planted > ~/.copilot/planted.txt; echo '{}' > ~/.copilot/mcp-config.json; env > seen-env.txt"
    worker = _start_worker(root, str(cli_bin / "copilot"), env, bwrap)
    runs = [
        {"prompt": "SCRIPT:write by-copilot.txt"},
        {"prompt": f"SCRIPT:bash {planting}"},
        {"prompt": "SCRIPT:write review-wrote.txt", "mode": "read_only"},
    ]
    finished: list[AssignmentFinished] = []
    try:
        for n, fields in enumerate(runs):
            if n == 2:  # the review resumes the first run's conversation, kept in the private copy
                fields["resume_session_id"] = finished[0].outcome.session_id
            worker.tell(StartAssignment(assignment_id=f"a{n}", reply_to=probe.ref, **fields))
            finished.append(probe.expect(AssignmentFinished, timeout=120))
    finally:
        worker.stop()
    written, planted, reviewed = finished
    records = read_jsonl(root / "workspace" / "s1" / "copilot.jsonl").records
    assert written.outcome.success, (written.outcome.error, json.dumps(records[-5:])[:3000])
    assert (root / "work" / "by-copilot.txt").read_text() == WRITE_CONTENT
    assert planted.outcome.terminal_event_seen, planted.outcome.error
    # The user's state is as it was: the run wrote only its private copy, whose MCP file is read-only.
    assert sorted(p.name for p in (home / ".copilot").iterdir()) == ["mcp-config.json"]
    assert (home / ".copilot" / "mcp-config.json").read_text() == USER_MCP
    assert not any((home / ".cache" / "copilot").iterdir())  # its package went to the private cache
    private = root / "workspace" / "s1" / "cli-state" / "copilot"
    assert (private / "copilot-home" / "planted.txt").read_text() == "planted\n"
    assert (private / "copilot-home" / "mcp-config.json").read_text() == USER_MCP
    assert any((private / "copilot-cache" / "pkg").iterdir())
    seen = (root / "work" / "seen-env.txt").read_text()
    # Neither the general GitHub token nor the provider's key reaches the shell of the model.
    assert "must-not-reach-an-agent" not in seen and "sk-copilot-mock" not in seen, seen
    assert "ORCHESTRATE_SESSION_ID=s1" in seen  # the shell ran, in the run's own environment
    # The review run: copilot's deny rule refused the write; the conversation was resumed.
    assert not (root / "work" / "review-wrote.txt").exists()
    assert reviewed.outcome.session_id == written.outcome.session_id
    assert any("following rules: `write`" in d for d in reviewed.outcome.permission_denials), reviewed.outcome


@pytest.mark.session
def test_a_whole_session_where_the_real_copilot_implements(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    root: Path,
) -> None:
    target = root / "app"
    target.mkdir()
    (target / "README.md").write_text("# app\n")
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    # Claude plans, copilot implements, gemini reviews: each writes a file of its own name (a
    # second agent's create would find copilot's file there: copilot's create refuses it).
    overrides = {
        "workspace": str(root / "workspace"),
        "agents.codex.enabled": False,
        "agents.claude.command": str(cli_bin / "claude"),
        "agents.gemini.command": str(cli_bin / "gemini"),
        "agents.gemini.model": MODELS["gemini"],
        "agents.copilot.enabled": True,
        "agents.copilot.command": str(cli_bin / "copilot"),
        "session.roles.architect": "claude",
        "session.roles.implementer": "copilot",
        "session.roles.reviewer": "gemini",
        "review.enabled": False,
        "limits.enabled": False,
        "questions.unattended": "defaults",
        "session.assignment_timeout_s": 120,
    }
    settings = load_settings(None, overrides)
    assert settings.sandbox.os == "bwrap"
    env = {
        **_environment(root, server.url),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "sk-ant-mock",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "GOOGLE_GEMINI_BASE_URL": server.url,
        "GEMINI_API_KEY": "mock-gemini-key",
    }
    gemini = {"general": {"maxAttempts": 1}, "security": {"auth": {"selectedType": "gemini-api-key"}}}
    (root / "home" / ".gemini").mkdir()
    (root / "home" / ".gemini" / "settings.json").write_text(json.dumps(gemini))
    request = LaunchRequest(
        task="SCRIPT:write own-{cli}.txt (one file per agent)",
        target=target,
        dashboard=False,
        console=False,
        session_id="real-copilot",
        env=env,
    )
    code = run(settings, request)
    session = root / "workspace" / "real-copilot"
    state = json.loads((session / "state.json").read_text())
    done = [(a["id"], a["role"], a["agent"], a["status"], a.get("error")) for a in state["assignments"]]
    assert code == 0, json.dumps(done, indent=1)[:6000]
    roles = {role: agent for _id, role, agent, _status, _error in done}
    assert roles == {"architect": "claude", "implementer": "copilot", "reviewer": "gemini"}, done
    assert all(status == "completed" for _id, _role, _agent, status, _e in done), done
    branch = "orchestrate/real-copilot"
    store = session_store(session)
    assert _git(store, "show", f"{branch}:own-copilot.txt") == WRITE_CONTENT
    assert _git(store, "show", f"{branch}:own-claude.txt") == WRITE_CONTENT
    assert _git(store, "show", f"{branch}:own-gemini.txt") == WRITE_CONTENT
    assert sorted(p.name for p in target.iterdir()) == [".git", "README.md"]  # the user's tree as it was
    records = read_jsonl(session / "copilot.jsonl").records
    assert [r["payload"]["file"] for r in records if r["payload"].get("kind") == "file_written"] == [
        str(session / "checkouts" / "implement" / "own-copilot.txt")
    ], json.dumps(records[-6:])[:3000]
