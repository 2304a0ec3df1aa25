"""Codex, the real pinned CLI, run by the real Worker inside the OS sandbox, as root.

Tests run as root (as CI and containers do). Codex's own sandbox is a bubblewrap that cannot
map its uid inside ours as root: every command and patch failed while the run exited 0 and
was reported completed. Inside the orchestrator's sandbox codex now runs with its own off
(``-s danger-full-access``: ours confines it), and a writing run whose every tool call failed
is never a success: the same real codex, forced back to its own sandbox, shows both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.actors.adapters.base import Launch, LaunchSpec
from meta_orchestrator.actors.adapters.codex import CodexAdapter
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.conftest import ProbeHandle
from tests.realcli.model_server import WRITE_CONTENT, ScriptedModelServer
from tests.agents.test_real_clis import MODELS, Rig, cli_bin, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.realcli


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the session live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-sbx-cli-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class OwnSandboxCodex(CodexAdapter):
    """The real codex adapter as it was: codex's own sandbox on inside ours."""

    def build_launch(self, spec: LaunchSpec) -> Launch:
        return super().build_launch(dataclasses.replace(spec, confined=False))


def _run(rig: Rig, adapter: Any, bwrap: str, probe: ProbeHandle, prompt: str) -> tuple[AssignmentFinished, list[Any]]:
    workspace = rig.root / "workspace"
    session_dir = workspace / "s1"
    scratch = session_dir / "scratch"
    scratch.mkdir(parents=True)
    worker = Worker.start(
        agent=rig.cli,
        adapter=adapter,
        agent_settings=AgentSettings(
            command=rig.exe,
            model=MODELS[rig.cli],
            extra_args=rig.extra_args,
            share_min=0.3,
            share_max=0.5,
            protocol="stream",  # codex exec's own sandbox and its -s are what is tested here
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="s1",
        session_dir=session_dir,
        target=rig.work,
        base_env=rig.env,
        extra_dirs=(scratch,),
        sandbox=OsSandbox(bwrap=bwrap, hidden=(str(workspace),)),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt=prompt, reply_to=probe.ref))
        finished = probe.expect(AssignmentFinished, timeout=120)
    finally:
        worker.stop()
    records = read_jsonl(session_dir / f"{rig.cli}.jsonl").records
    return finished, records


def test_codex_inside_the_os_sandbox_writes_with_its_own_sandbox_off_set_once(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    probe: ProbeHandle,
    root: Path,
) -> None:
    rig = Rig("codex", cli_bin, server, root)
    rig.extra_args = (*rig.extra_args, "-s", "workspace-write")  # a user's own -s: replaced, not repeated
    finished, records = _run(rig, get_adapter("codex"), bwrap, probe, "SCRIPT:write by-codex.txt")
    assert finished.outcome.success, finished.outcome.error
    assert (rig.work / "by-codex.txt").read_text() == WRITE_CONTENT
    launch = next(r["payload"]["text"] for r in records if r["payload"].get("kind") == "launch")
    assert " -s danger-full-access " in launch and launch.count(" -s ") == 1, launch


def test_codex_with_its_own_sandbox_inside_ours_fails_its_run_instead_of_completing(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    probe: ProbeHandle,
    root: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("codex's own sandbox nests inside ours for an ordinary user: only root shows the failure")
    rig = Rig("codex", cli_bin, server, root)
    finished, records = _run(rig, OwnSandboxCodex(), bwrap, probe, "SCRIPT:write blind.txt")
    assert not (rig.work / "blind.txt").exists()
    assert finished.returncode == 0  # codex itself says nothing went wrong
    assert not finished.outcome.success
    assert "every tool call failed" in (finished.outcome.error or ""), finished.outcome.error
    lines = [finished.outcome.error or "", *finished.stderr_tail]
    found = classify_run(Evidence(agent="codex", lines=tuple(lines), returncode=0, succeeded=False))
    assert found is not None and found.cause in ("sandbox", "outside_path"), (found, lines)
    assert any(r["payload"].get("kind") == "tool_result" for r in records), json.dumps(records[-5:])[:2000]
