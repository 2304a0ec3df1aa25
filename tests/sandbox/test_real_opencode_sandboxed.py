"""The real pinned opencode (1.18.33) inside the OS sandbox, as root.

One run by the real Worker, over ACP (its default) and with the host's TCP services cut off
(Landlock): it writes a file in the checkout, and the user's opencode folders
(``~/.config/opencode``, ``~/.local/share/opencode``, ``~/.cache/opencode``,
``~/.local/state/opencode``) are never written: its sessions, logs and locks go to the
session's private copy. Then a whole session with every role on the real opencode: its plan,
its written file on the session branch, and its review, each edit put to the broker first.

``opencode acp`` is the client of an HTTP server it starts on 127.0.0.1; on the random port of
its default Landlock refused the connect and every ``session/new`` failed ("OpenCode service
failure", service "directory"): the run names the port (``--port``) and may reach that one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from meta_orchestrator.actors.adapters.registry import driven
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.config.settings import AgentSettings, SessionSettings, load_settings
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures
from tests.conftest import ProbeHandle, session_store
from tests.realcli.model_server import WRITE_CONTENT, ScriptedModelServer

pytestmark = pytest.mark.realcli
MODEL = "anthropic/claude-sonnet-4-5"
USER_FOLDERS = (".config/opencode", ".local/share/opencode", ".cache/opencode", ".local/state/opencode")


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the session live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-sbx-opencode-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30).stdout


def _target(root: Path) -> Path:
    target = root / "app"
    target.mkdir()
    (target / "README.md").write_text("# app\n")
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return target


def _environment(root: Path, url: str) -> dict[str, str]:
    """The user's: opencode's npm kept offline in their config folder, the provider in the environment."""
    home = root / "home"
    (home / ".config" / "opencode").mkdir(parents=True)
    (home / ".config" / "opencode" / ".npmrc").write_text("offline=true\n")
    provider = {"anthropic": {"options": {"baseURL": f"{url}/v1"}}}
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANTHROPIC_API_KEY": "sk-ant-mock",
        "OPENCODE_CONFIG_CONTENT": json.dumps({"provider": provider}),
    }


def _files_under(home: Path) -> dict[str, bytes]:
    found = {}
    for name in USER_FOLDERS:
        for path in (home / name).rglob("*") if (home / name).exists() else ():
            if path.is_file():
                found[str(path.relative_to(home))] = path.read_bytes()
    return found


def test_real_opencode_in_the_os_sandbox_writes_its_checkout_and_not_the_users_folders(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    probe: ProbeHandle,
    root: Path,
) -> None:
    env = _environment(root, server.url)
    home = Path(env["HOME"])
    before = _files_under(home)
    work = _target(root)
    session_dir = root / "workspace" / "s1"
    (session_dir / "scratch").mkdir(parents=True)
    worker = Worker.start(
        agent="opencode",
        adapter=driven("opencode", None),  # its default, as a session drives it
        agent_settings=AgentSettings(command=str(cli_bin / "opencode"), model=MODEL, share_min=0.3, share_max=0.5),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="s1",
        session_dir=session_dir,
        target=work,
        base_env=env,
        extra_dirs=(session_dir / "scratch",),
        # allow_connect=(): Landlock on, as in a session (the model server's port is its baseURL's).
        sandbox=OsSandbox(bwrap=bwrap, hidden=(str(root / "workspace"),), allow_connect=()),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt="SCRIPT:write by-opencode.txt", reply_to=probe.ref))
        finished = probe.expect(AssignmentFinished, timeout=120)
    finally:
        worker.stop()
    assert finished.outcome.success, (finished.outcome.error, finished.stderr_tail)
    assert (work / "by-opencode.txt").read_text() == WRITE_CONTENT
    assert _files_under(home) == before, "the run wrote the user's opencode folders"
    private = session_dir / "cli-state" / "opencode"
    assert (private / "opencode-data" / "opencode.db").is_file()  # its session, for -s, in the private copy
    records = read_jsonl(session_dir / "opencode.jsonl").records
    assert any(r["payload"].get("kind") == "file_written" for r in records)
    launch = next(r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch")
    assert "acp_bridge" in launch and " acp --port " in launch, launch
    assert {r.api for r in server.requests} == {"anthropic"}


@pytest.mark.session
@pytest.mark.timeout(300)  # five real opencode runs, each 10-20 s on a busy machine (it starts slowly)
def test_a_whole_session_with_every_role_on_the_real_opencode(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    root: Path,
) -> None:
    target = _target(root)
    overrides = {
        "workspace": str(root / "workspace"),
        "limits.enabled": False,
        "questions.unattended": "defaults",
        "session.assignment_timeout_s": 120,
        "session.plan_retries": 0,  # the scripted answer is no plan: one try, then the default breakdown
        "agents.opencode": {"command": str(cli_bin / "opencode"), "model": MODEL, "enabled": True},
        **{f"agents.{name}.enabled": False for name in ("claude", "codex", "gemini")},
        **{f"session.roles.{role}": "opencode" for role in ("architect", "implementer", "reviewer")},
    }
    settings = load_settings(None, overrides)
    assert settings.sandbox.os == "bwrap"
    options = LaunchRequest(
        task="SCRIPT:write own-{cli}.txt",
        target=target,
        dashboard=False,
        console=False,
        session_id="real-opencode",
        env=_environment(root, server.url),
    )
    code = run(settings, options)
    session = root / "workspace" / "real-opencode"
    state = json.loads((session / "state.json").read_text())
    assert code == 0, (code, json.dumps(state["assignments"], indent=1)[:6000])
    assert {a["agent"] for a in state["assignments"]} == {"opencode"}
    roles = {a["role"]: a["status"] for a in state["assignments"]}
    assert roles.get("implementer") == "completed" and roles.get("reviewer") == "completed", roles
    branch = "orchestrate/real-opencode"
    store = session_store(session)
    assert _git(store, "show", f"{branch}:own-opencode.txt") == WRITE_CONTENT
    records = read_jsonl(session / "opencode.jsonl").records
    prompts = [r["payload"].get("text") or "" for r in records if r["payload"].get("kind") == "launch"]
    assert len(prompts) >= 2, prompts  # the plan's run and the implementer's, at least
    # Over ACP, its own server on the port its run was given; its edits put to the broker first.
    assert all("acp_bridge" in p and " acp --port " in p for p in prompts), prompts
    asked = [r["payload"] for r in records if r["payload"].get("kind") == "permission"]
    assert asked and all(p["details"]["by"] == "policy" for p in asked), asked
    assert any("Kind: plan" in json.dumps(r.body) for r in server.requests), "no planning run reached the model"
    assert sorted(p.name for p in target.iterdir()) == [".git", "README.md"]  # the user's tree as it was
