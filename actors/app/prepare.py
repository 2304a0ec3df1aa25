"""What one session is asked for (``RunOptions``) and the preflight that readies it: the settings
for this run, the target, the session's folder and id, the agents' environment."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from meta_orchestrator.actors.adapters.registry import agent_names, get_adapter
from meta_orchestrator.actors.agents.agent_env import agent_env
from meta_orchestrator.actors.agents.cli_launch import launch_for_preflight
from meta_orchestrator.actors.cluster.cluster_auth import without_ray
from meta_orchestrator.actors.files.session_files import SessionFileError, new_session_id, private_dir
from meta_orchestrator.actors.history.resume import (
    ResumeError,
    interrupted_cli_sessions,
    load_launch,
    recorded_answers,
    save_launch,
)
from meta_orchestrator.actors.processes.orphans import end_orphans, find_orphans
from meta_orchestrator.actors.recovery.preflight import (
    PreflightError,
    check_cli,
    check_target,
    check_workspace,
    require_clis,
)
from meta_orchestrator.actors.workspaces.workspace_wiring import isolation_refused
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.ids import InvalidId, check_session_id
from meta_orchestrator.messages.session import SessionSnapshot

if TYPE_CHECKING:
    from meta_orchestrator.actors.app.start_order import RunningSession

log = logging.getLogger(__name__)

DEMO_PACE_DEFAULT = "0.25"


@dataclass
class RunOptions:
    """What the launcher asks for one session."""

    task: str
    target: Path | None
    demo: bool = False
    dashboard: bool = True
    exit_when_done: bool = False
    verbose: bool = False
    console: bool = True
    session_id: str | None = None
    env: dict[str, str] | None = None
    answer_stream: Any = None  # where typed answers come from (the launcher passes stdin)
    # Channels beyond the console and the dashboard: "program" when the caller itself answers
    # through the coordinator (tests, an embedding program). None of them: no question waits.
    answer_channels: tuple[str, ...] = ()
    next_free_port: bool = False
    resume: str | None = None  # a session id: continue that session
    resume_state: dict[str, Any] | None = None  # filled in by prepare()
    agents_out: dict[str, str] = field(default_factory=dict)  # filled in by prepare(): CLIs that cannot run
    print_url: Callable[[str], None] | None = None
    on_started: Callable[[RunningSession], None] | None = None
    # The user's uncommitted files go into the session's base (their tree stays as it is).
    include_uncommitted: bool = False
    # The agents write straight into the target: no branch, no checkout, nothing to undo.
    in_place: bool = False


def demo_settings(settings: Settings) -> Settings:
    """The same settings with every agent's command pointed at the built-in demo agents."""
    agents = {}
    for name, agent in settings.agents.items():
        cmd = shlex.join(get_adapter(name).demo_argv())
        agents[name] = agent.model_copy(update={"command": cmd})
    return settings.model_copy(update={"agents": agents})


def make_demo_target(session_dir: Path) -> Path:
    """A small git repository inside the session folder for a demo run without --target."""
    target = session_dir / "demo-app"
    (target / "app").mkdir(parents=True, exist_ok=True)
    (target / "README.md").write_text("# demo-app\n\nA tiny app the demo agents work on.\n")
    (target / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    (target / "app" / "__init__.py").write_text('"""The demo application."""\n')
    (target / "app" / "main.py").write_text(
        "def handle(path: str) -> tuple[int, str]:\n"
        '    """Route a request path to a status and body."""\n'
        '    if path == "/":\n        return 200, "hello"\n    return 404, "not found"\n'
    )
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=demo", "-c", "user.email=demo@localhost", "commit", "-q", "-m", "demo app"],
    ):
        try:
            subprocess.run(cmd, cwd=target, check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            break  # git is optional for the demo; codex is told to skip its repo check anyway
    return target


def agent_environment(options: RunOptions) -> dict[str, str]:
    """The environment each agent CLI's allowlist takes its variables from (``agent_env``)."""
    env = without_ray(options.env if options.env is not None else os.environ)  # nothing of Ray's: its token above all
    if options.demo:
        env.setdefault("ORCHESTRATE_DEMO_PACE", DEMO_PACE_DEFAULT)
    return env


def prepare(settings: Settings, options: RunOptions) -> tuple[Settings, Path, Path, str, dict[str, str]]:
    """Preflight: settings for this run, the target, the session folder, its id, the agent env.

    Raises:
        PreflightError: something must be fixed first; the message says what.
    """
    unknown = [name for name in settings.agents if name not in agent_names()]
    if unknown:
        raise PreflightError(
            f"[agents] names {', '.join(sorted(unknown))}, which no adapter knows; "
            f"known agents: {', '.join(agent_names())}"
        )
    for given in (options.resume, options.session_id):
        if given is not None:
            try:
                check_session_id(given)
            except InvalidId as exc:
                raise PreflightError(str(exc)) from None
    if options.resume:
        settings = _prepare_resume(settings, options)
    elif options.demo:
        settings = demo_settings(settings)
    workspace = check_workspace(settings.workspace)
    target = check_target(options.target) if options.target is not None else None
    if target is None and not options.demo:
        raise PreflightError("no --target given; pass the repository the agents should work in")
    env = agent_environment(options)
    settings = _runnable_agents(settings, options, env)
    if target is not None and not options.resume and not options.in_place:
        refused = isolation_refused(target, workspace, options.include_uncommitted)
        if refused is not None:  # before the session folder is made: nothing is left behind
            raise PreflightError(refused)
    session_id = options.resume or options.session_id or new_session_id()
    session_dir = workspace / session_id
    try:
        private_dir(session_dir)
    except SessionFileError as exc:
        raise PreflightError(str(exc)) from None
    if target is None:
        target = make_demo_target(session_dir)
    if not options.resume:
        save_launch(session_dir, options.task, target, options.demo, settings.model_dump(mode="json"))
    return settings, target, session_dir, session_id, env


def _runnable_agents(settings: Settings, options: RunOptions, env: dict[str, str]) -> Settings:
    """The settings with every enabled CLI checked; those that cannot run are disabled (their
    roles move to the others, named in ``options.agents_out``) unless none can run.

    Raises:
        PreflightError: no agent is enabled, or none of them can run.
    """
    checks = [
        check_cli(
            name,
            get_adapter(name),
            launch_for_preflight(get_adapter(name), agent),
            {**agent_env(get_adapter(name), agent, env), **agent.env},
        )
        for name, agent in settings.agents.items()
        if agent.enabled
    ]
    if not checks:
        raise PreflightError("every agent is disabled in the config; enable at least one")
    bad = [c for c in checks if c.problem]
    if len(bad) == len(checks):
        require_clis(checks, settings)  # none can run: stop the launch, naming each
    if bad:
        # Some can run: the others' roles move to them (role_fallback), each with its reason.
        agents = dict(settings.agents)
        for check in bad:
            agents[check.agent] = agents[check.agent].model_copy(update={"enabled": False})
            options.agents_out[check.agent] = f"not_installed: {check.problem}"
            print(
                f"orchestrate: {check.agent} cannot run ({check.problem}); its roles go to the others",
                file=sys.stderr,
                flush=True,
            )
        settings = settings.model_copy(update={"agents": agents})
    for check in checks:
        if not check.problem:
            log.info("%s: %s (%s)", check.agent, check.version, shlex.join(check.argv))
    return settings


def _prepare_resume(settings: Settings, options: RunOptions) -> Settings:
    """Load how the session was started; end what its dead orchestrator left running."""
    session_dir = settings.workspace.expanduser().resolve() / str(options.resume)
    try:
        launch = load_launch(session_dir)
    except ResumeError as exc:
        raise PreflightError(str(exc)) from None
    state = launch["state"]
    owner = state.get("orchestrator_pid")
    if owner and owner != os.getpid() and psutil.pid_exists(owner) and _is_orchestrator(owner):
        raise PreflightError(f"session {options.resume} is still running (orchestrator pid {owner})")
    orphans = find_orphans(str(options.resume))
    if orphans:
        log.warning(
            "ending %d process(es) the previous orchestrator left: %s",
            len(orphans),
            "; ".join(f"{o.pid} {o.cmdline[:80]}" for o in orphans),
        )
        end_orphans(orphans)
    options.task = launch["task"]
    options.target = Path(launch["target"])
    options.demo = bool(launch["demo"])
    options.resume_state = state
    saved = Settings.model_validate(launch["settings"])
    # The workspace the user named now wins over the one recorded (the folder may have moved).
    return saved.model_copy(update={"workspace": settings.workspace})


def resume_arguments(options: RunOptions, session_dir: Path) -> dict[str, Any]:
    """The coordinator's resume_from and resume_ids, when resuming."""
    if not options.resume_state:
        return {}
    saved = SessionSnapshot.model_validate(options.resume_state)
    interrupted = {a.id for a in saved.assignments if a.status == "running"}
    return {
        "resume_from": saved,
        "resume_ids": interrupted_cli_sessions(session_dir, interrupted),
        "recorded_answers": recorded_answers(session_dir),
    }


def _is_orchestrator(pid: int) -> bool:
    try:
        return "orchestrate" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
