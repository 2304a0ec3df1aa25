"""One path for launch options: the request is built once and never changed; ``prepare()``
returns what it found; a resumed session starts from the launch.json of its first start, with
the flags ``orchestrate`` and ``orchestrate resume`` share over its settings.

Real preflights (the demo agents answer ``--version``, a missing CLI does not), real git,
real sessions for the resume."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app import launcher
from meta_orchestrator.actors.app.launch_request import LaunchRequest
from meta_orchestrator.actors.app.system import PreflightError, Prepared, prepare, run
from meta_orchestrator.actors.history.resume import LAUNCH_FILE, LaunchRecord
from meta_orchestrator.config.settings import load_settings
from tests.conftest import kill_tree, popen_orchestrate

TASK = "Add a /health endpoint"
BLOCKER = {"ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "blocker"}  # claude escalates: nobody there, exit 3


def _repository(folder: Path) -> Path:
    folder.mkdir()
    (folder / "README.md").write_text("# app\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "first"]):
        env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t"}
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env={**env, "GIT_COMMITTER_EMAIL": "t@x"})
    return folder


def test_prepare_leaves_its_request_unchanged_and_returns_what_it_found(tmp_path, demo_env):
    demo = {name: shlex.join(get_adapter(name).demo_argv()) for name in ("gemini", "codex")}
    settings = load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "agents.gemini.command": demo["gemini"],
            "agents.codex.command": demo["codex"],
            "agents.claude.command": str(tmp_path / "no-such-claude"),
        },
    )
    given_settings = settings.model_copy(deep=True)
    asked = {"web.port": 8123}
    request = LaunchRequest(task=TASK, target=_repository(tmp_path / "app"), settings_overrides=asked, env=demo_env)
    before = dataclasses.replace(request)

    prepared = prepare(settings, request)

    assert request == before and settings == given_settings  # nothing the caller gave was changed
    assert request.task == TASK and request.settings_overrides == {"web.port": 8123}
    asked["web.port"] = 1  # the request holds its own copy
    assert request.settings_overrides == {"web.port": 8123}
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.task = "something else"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.settings_overrides["web.port"] = 9  # type: ignore[index]
    with pytest.raises(TypeError):
        request.env["PATH"] = "/"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.session_id = "other"  # type: ignore[misc]
    # What it found: the folder and its id, the target, the agent that cannot run and why.
    assert isinstance(prepared, Prepared) and prepared.request == request
    assert prepared.session_dir == (tmp_path / "ws" / prepared.session_id).resolve() and prepared.session_dir.is_dir()
    assert prepared.target == (tmp_path / "app").resolve() and prepared.workspace == (tmp_path / "ws").resolve()
    assert list(prepared.agents_out) == ["claude"] and "not_installed" in prepared.agents_out["claude"]
    assert not prepared.settings.agents["claude"].enabled and settings.agents["claude"].enabled
    assert prepared.resume_state is None
    first = LaunchRecord.model_validate_json((prepared.session_dir / LAUNCH_FILE).read_text())
    assert (first.task, first.target, first.demo) == (TASK, prepared.target, False)


def test_a_request_for_no_target_is_refused_before_any_folder(tmp_path, demo_env):
    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    with pytest.raises(PreflightError, match="no --target"):
        prepare(settings, LaunchRequest(task=TASK, target=None, env=demo_env))
    assert not any((tmp_path / "ws").iterdir())


def _waiting_session(tmp_path: Path, env: dict[str, str]) -> tuple[Path, bytes]:
    """A demo session that ended waiting for an answer (exit 3), started with a setting of its own."""
    first = load_settings(None, {"workspace": str(tmp_path / "ws"), "session.max_restarts": 2, "limits.enabled": False})
    code = run(first, LaunchRequest(task=TASK, target=None, demo=True, dashboard=False, console=False, env=env))
    assert code == 3
    [folder] = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    return folder, (folder / LAUNCH_FILE).read_bytes()


@pytest.mark.session
def test_a_resumed_session_starts_from_the_launch_json_of_its_first_start(tmp_path, demo_env):
    env = {**demo_env, **BLOCKER}
    folder, launch = _waiting_session(tmp_path, env)
    # This run's own settings differ; only its workspace and its flags count on resume.
    now = load_settings(None, {"workspace": str(tmp_path / "ws"), "session.max_restarts": 7})
    request = LaunchRequest(
        task="",
        target=None,
        resume=folder.name,
        settings_overrides={"web.port": 8123, "questions.unattended": "defaults"},
        dashboard=False,
        console=False,
        env=env,
    )
    before = dataclasses.replace(request)

    prepared = prepare(now, request)
    assert prepared.end_lock is not None  # held from before the saved state was read, for start
    prepared.end_lock.release()

    assert request == before  # still the command line's: no task, no target
    assert (prepared.request.task, prepared.request.demo) == (TASK, True)
    assert prepared.target == folder / "demo-app" and prepared.request.target == prepared.target
    assert prepared.session_dir == folder and prepared.session_id == folder.name
    assert prepared.settings.session.max_restarts == 2  # the first start's, not this run's 7
    assert (prepared.settings.web.port, prepared.settings.questions.unattended) == (8123, "defaults")
    assert "meta_orchestrator.actors.agents.demo" in prepared.settings.agents["claude"].command
    assert prepared.resume_state is not None and prepared.resume_state["status"] == "waiting"
    assert (folder / LAUNCH_FILE).read_bytes() == launch  # written once, at the first start


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    return proc.returncode, err


@pytest.mark.session
def test_resume_takes_the_flags_it_shares_with_orchestrate(tmp_path, demo_env):
    env = {**demo_env, **BLOCKER}
    ws = tmp_path / "ws"
    code, err = _finish(popen_orchestrate([TASK, "--demo", "--no-dashboard", "--workspace", str(ws)], env))
    assert code == 3, err
    [folder] = [p for p in ws.iterdir() if p.is_dir()]
    launch = (folder / LAUNCH_FILE).read_bytes()
    # --unattended on resume: the open escalation takes its default (stop) instead of waiting again.
    args = ["resume", folder.name, "--no-dashboard", "--unattended", "--exit-when-done", "--workspace", str(ws)]
    code, err = _finish(popen_orchestrate(args, env))
    state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    assert (code, state["status"]) == (130, "stopped"), err  # without the flag: 3, waiting again
    escalation = next(q for q in state["questions"] if q["kind"] == "escalation")
    assert (escalation["status"], escalation["answered_by"], escalation["answer"]) == ("expired", "unattended", "stop")
    assert (folder / LAUNCH_FILE).read_bytes() == launch


def test_orchestrate_and_resume_share_one_set_of_flags():
    parsers = launcher.command_parsers()
    shared = {a.dest for a in launcher._session_flags()._actions if a.option_strings and a.dest != "help"}
    for name in ("orchestrate", "resume"):
        assert shared <= {a.dest for a in parsers[name]._actions}, name
    run_args = parsers["orchestrate"].parse_args([TASK, "--port", "9001", "--unattended", "--no-dashboard"])
    resume_args = parsers["resume"].parse_args(
        ["20261207-002608-18190a", "--port", "9001", "--unattended", "--no-dashboard"]
    )
    for flag in shared:
        assert getattr(run_args, flag) == getattr(resume_args, flag), flag


def test_version_probes_started_early_are_the_ones_prepare_takes(tmp_path, demo_env):
    """The launcher starts the probes before it imports the rest; prepare takes their checks
    (the same agents and environment), and a probe of other settings is not taken."""
    from meta_orchestrator.actors.app import prepare as preparing

    demo = shlex.join(get_adapter("gemini").demo_argv())
    missing = str(tmp_path / "no-such-claude")
    settings = load_settings(
        None,
        {"workspace": str(tmp_path / "ws"), "agents.gemini.command": demo, "agents.claude.command": missing},
    )
    request = LaunchRequest(task=TASK, target=_repository(tmp_path / "app"), env=demo_env)
    preparing.start_version_checks(settings, request)
    assert len(preparing._early) == 1
    prepared = prepare(settings, request)
    assert preparing._early == []  # taken
    assert missing in prepared.agents_out["claude"] and "gemini" not in prepared.agents_out
    other = load_settings(None, {"workspace": str(tmp_path / "ws"), "agents.gemini.command": demo})
    preparing.start_version_checks(other, request)  # claude is the real one here: other checks
    prepared = prepare(settings, request)
    assert missing in prepared.agents_out["claude"]  # probed again, the other's not taken ...
    assert [agents for agents, _, _ in preparing._early] == [dict(other.agents)]
    preparing.forget_version_checks()  # ... but waited for at the launcher's end
    assert preparing._early == []
    preparing.start_version_checks(settings, dataclasses.replace(request, resume="20260101-000000-abcdef"))
    assert preparing._early == []  # a resume probes later, with its first start's settings


def test_prepare_session_leaves_the_probes_running_and_agents_checked_takes_them(tmp_path, demo_env):
    """The first step makes the session's folder without waiting for the CLIs' probes (the
    dashboard answers meanwhile); the second takes them and only then writes launch.json."""
    from meta_orchestrator.actors.app import prepare as preparing

    missing = str(tmp_path / "no-such-claude")
    settings = load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "agents.gemini.command": shlex.join(get_adapter("gemini").demo_argv()),
            "agents.codex.enabled": False,
            "agents.claude.command": missing,
        },
    )
    request = LaunchRequest(task=TASK, target=_repository(tmp_path / "app"), env=demo_env)
    session = preparing.prepare_session(settings, request)
    assert session.agents_out is None and session.session_dir.is_dir() and len(preparing._early) == 1
    assert not (session.session_dir / LAUNCH_FILE).exists()
    prepared = preparing.agents_checked(session)
    assert preparing._early == [] and missing in (prepared.agents_out or {})["claude"]
    assert not prepared.settings.agents["claude"].enabled and session.settings.agents["claude"].enabled
    first = LaunchRecord.model_validate_json((prepared.session_dir / LAUNCH_FILE).read_text())
    assert first.settings["agents"]["claude"]["enabled"] is False  # a resume starts from what ran
    assert preparing.agents_checked(prepared) is prepared  # taken once


def test_what_starts_after_the_dashboard_is_imported_after_it():
    """What the launcher imports before the dashboard answers (the start order, prepare, the
    history, console, notifier and dashboard start modules) leaves out the actors that start
    after it and the notifier's delivery when no notification is asked for (issue 25: the
    imports are most of the start's CPU)."""
    code = (
        "import sys\n"
        "import meta_orchestrator.actors.app.launcher, meta_orchestrator.actors.app.system\n"
        "import meta_orchestrator.actors.notify.start, meta_orchestrator.webui.start\n"
        "later = ('meta_orchestrator.actors.session.coordinator', 'meta_orchestrator.actors.recovery.recovery',\n"
        "    'meta_orchestrator.actors.reviews.reviewer', 'meta_orchestrator.actors.agents.worker',\n"
        "    'meta_orchestrator.actors.limits.resource_monitor', 'meta_orchestrator.actors.notify.delivery')\n"
        "print(','.join(m for m in later if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "", done.stdout
