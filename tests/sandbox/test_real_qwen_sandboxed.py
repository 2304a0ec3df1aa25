"""The real pinned ``qwen`` (qwen-code 0.24.4) inside the OS sandbox, as root: one run by the
real Worker, and a whole session with qwen in every role.

qwen 0.24.4 writes outside its workspace whenever edits are approved (``auto-edit``: a
``write_file`` to ``/var/tmp/x`` succeeds), so the sandbox is what keeps it in the checkout:
its ``~/.qwen`` inside is the session's private copy (settings read-only), and the user's
own folder is never written.
"""

# ruff: noqa: F811 - the fixtures cli_bin and server come from test_real_clis
from __future__ import annotations

import json
import shutil
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
from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures
from tests.agents.test_real_qwen import AUTH_ARGS, MODEL, SETTINGS, qwen_env
from tests.conftest import ProbeHandle, session_store
from tests.realcli.model_server import WRITE_CONTENT, ScriptedModelServer
from tests.sandbox.test_real_session_sandboxed import _environment, _git, _target

pytestmark = pytest.mark.realcli


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the session live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-sbx-qwen-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(
    cli_bin: Path, env: dict[str, str], root: Path, work: Path, bwrap: str, probe: ProbeHandle, prompt: str
) -> tuple[AssignmentFinished, list[dict[str, Any]]]:
    workspace = root / "workspace"
    session_dir = workspace / "s1"
    scratch = session_dir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    worker = Worker.start(
        agent="qwen",
        adapter=get_adapter("qwen"),
        agent_settings=AgentSettings(
            command=str(cli_bin / "qwen"), model=MODEL, extra_args=AUTH_ARGS, share_min=0.3, share_max=0.5
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="s1",
        session_dir=session_dir,
        target=work,
        base_env=env,
        extra_dirs=(scratch,),
        sandbox=OsSandbox(bwrap=bwrap, hidden=(str(workspace),)),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt=prompt, reply_to=probe.ref))
        finished = probe.expect(AssignmentFinished, timeout=120)
    finally:
        worker.stop()
    return finished, read_jsonl(session_dir / "qwen.jsonl").records


def test_qwen_inside_the_os_sandbox_writes_in_the_checkout_and_never_in_the_users_qwen_folder(
    cli_bin: Path, server: ScriptedModelServer, bwrap: str, probe: ProbeHandle, root: Path
) -> None:
    home = root / "home"
    env = qwen_env(home, server.url)
    user_qwen = home / ".qwen"
    before = sorted(p.relative_to(user_qwen) for p in user_qwen.rglob("*"))
    work = _target(root)

    finished, records = _run(cli_bin, env, root, work, bwrap, probe, "SCRIPT:write by-qwen.txt")
    assert finished.outcome.success, (finished.outcome.error, finished.stderr_tail)
    assert (work / "by-qwen.txt").read_text() == WRITE_CONTENT
    launch = next(r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch")
    argv, _, stdin = launch.partition(" <<< ")
    assert "--approval-mode auto-edit" in argv and "SCRIPT" not in argv and "SCRIPT" in stdin, launch

    # The same CLI told to write into the user's ~/.qwen (it would: qwen does not keep to its workspace).
    planted = user_qwen / "planted.txt"
    finished, _ = _run(cli_bin, env, root, work, bwrap, probe, f"SCRIPT:write {planted}")
    assert [r.answered for r in server.requests].count("tool_call") == 2  # the write was tried
    assert not planted.exists()
    assert sorted(p.relative_to(user_qwen) for p in user_qwen.rglob("*")) == before  # no session, no memory
    assert json.loads((user_qwen / "settings.json").read_text()) == SETTINGS


def test_a_session_with_qwen_planning_and_reviewing_puts_its_work_on_the_branch(
    cli_bin: Path, server: ScriptedModelServer, bwrap: str, root: Path
) -> None:
    """qwen plans and writes the design, claude implements, gemini does the review assignment;
    every agent peer-reviews the others' work (qwen: claude's and gemini's), read-only."""
    target = _target(root)
    overrides = {
        "workspace": str(root / "workspace"),
        "limits.enabled": False,
        "questions.unattended": "defaults",
        "session.assignment_timeout_s": 120,
        "session.roles": {"architect": "qwen", "implementer": "claude", "reviewer": "gemini"},
        "agents.qwen.enabled": True,
        "agents.qwen.command": str(cli_bin / "qwen"),
        "agents.qwen.model": MODEL,
        "agents.qwen.extra_args": list(AUTH_ARGS),
        "agents.claude.command": str(cli_bin / "claude"),
        "agents.gemini.command": str(cli_bin / "gemini"),
        "agents.gemini.model": "gemini-2.5-flash",
        "agents.codex.enabled": False,
    }
    settings = load_settings(None, overrides)
    assert settings.sandbox.os == "bwrap"
    session = "real-qwen"
    env = {**_environment(root, server.url), **qwen_env(root / "home", server.url)}
    options = LaunchRequest(
        task="SCRIPT:write own-{cli}.txt (one file per agent)",
        target=target,
        dashboard=False,
        console=False,
        session_id=session,
        env=env,
    )
    code = run(settings, options)
    folder = root / "workspace" / session
    state = json.loads((folder / "state.json").read_text())
    summary = [(a["id"], a["agent"], a["status"], a.get("error")) for a in state["assignments"]]
    assert code == 0, (code, state.get("status"), summary, state.get("failure") or state.get("error"))
    assert [a["agent"] for a in state["assignments"]] == ["qwen", "claude", "gemini"], summary
    branch = f"orchestrate/{session}"
    store = session_store(folder)
    for cli in ("qwen", "claude", "gemini"):
        assert _git(store, "show", f"{branch}:own-{cli}.txt") == WRITE_CONTENT
    assert sorted(p.name for p in target.iterdir()) == [".git", "README.md"]  # the user's tree as it was
    # qwen planned and reviewed read-only (plan mode) and wrote its design over ACP (its
    # default), every edit asked (``default``).
    events = read_jsonl(folder / "qwen.jsonl").records
    launches = [r["payload"]["text"] for r in events if r["payload"].get("kind") == "launch"]
    assert any("--approval-mode plan" in text for text in launches), launches
    assert any("--approval-mode default" in text for text in launches), launches
    # qwen's peer review of claude's work: a real read-only run whose answer was recorded.
    reviews = [d for d in state["decisions"] if d.get("kind") == "review" and d.get("author") == "claude"]
    assert [a["agent"] for r in reviews for a in r["answers"] if a["agent"] == "qwen"], json.dumps(reviews)[:3000]
