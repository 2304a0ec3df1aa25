"""The preflight that readies one session (``prepare``): from what was asked (a
``LaunchRequest``, left as it is) to what this run works with (``Prepared``): the settings for
this run, the target, the session's folder and id, the agents' environment, the agents that
cannot run and why, and on resume the saved state.

It is done in two steps, so the dashboard answers while the CLIs' version probes run (the
slowest takes seconds): ``prepare_session`` makes the session's folder and leaves the probes
running; ``agents_checked`` waits for them, disables the agents that cannot run and writes
``launch.json``. ``prepare`` is both at once."""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psutil
from meta_orchestrator.actors.adapters.registry import agent_names, driven, get_adapter, register_configured
from meta_orchestrator.actors.agents.agent_env import agent_env
from meta_orchestrator.actors.agents.cli_launch import launch_for_preflight
from meta_orchestrator.actors.cluster.cluster_auth import without_ray
from meta_orchestrator.actors.files.end_lock import SessionBusy, SessionLock
from meta_orchestrator.actors.files.end_lock import take as take_end_lock
from meta_orchestrator.actors.files.session_files import SessionFileError, new_session_id, private_dir
from meta_orchestrator.actors.app.launch_request import LaunchRequest
from meta_orchestrator.actors.history.resume import (
    LAUNCH_FILE,
    LaunchRecord,
    ResumeError,
    interrupted_cli_sessions,
    load_launch,
    recorded_answers,
    save_launch,
)
from meta_orchestrator.actors.processes.orphans import end_orphans, find_orphans
from meta_orchestrator.actors.recovery.preflight import (
    CliCheck,
    PreflightError,
    check_cli,
    check_target,
    check_workspace,
    require_clis,
)
from meta_orchestrator.actors.workspaces.workspace_wiring import isolation_refused
from meta_orchestrator.config.settings import ConfigError, Settings, with_overrides
from meta_orchestrator.messages.ids import InvalidId, check_session_id
from meta_orchestrator.messages.session import TERMINAL_STATUSES, SessionSnapshot
from meta_orchestrator.webui.security import is_loopback

log = logging.getLogger(__name__)
# How long resume waits for a launcher that finished its end work to exit.
_EXIT_GRACE_S = 5.0

DEMO_PACE_DEFAULT = "0.25"


@dataclass(frozen=True)
class Prepared:
    """What the preflight found for one session: ``prepare`` returns it, its request stays as it was."""

    request: LaunchRequest  # as it applies: on resume, with the task, target and demo of the first start
    settings: Settings  # for this run: demo commands, the first start's on resume, the agents that cannot run off
    target: Path
    session_dir: Path
    session_id: str
    env: Mapping[str, str]  # what each agent's environment allowlist takes its variables from
    # agent -> why it cannot run; None: the CLIs' probes still run (prepare_session; agents_checked takes them)
    agents_out: Mapping[str, str] | None = field(default_factory=dict)
    resume_state: Mapping[str, Any] | None = None  # the saved state.json of the session continued
    # On resume, the session's lock (files.end_lock), taken before its saved state was read: start holds it on.
    end_lock: SessionLock | None = None

    @property
    def session(self) -> tuple[str, Path, Path]:
        return self.session_id, self.session_dir, self.target

    @property
    def workspace(self) -> Path:
        """The checked folder every session's folder is in."""
        return self.session_dir.parent


def demo_settings(settings: Settings) -> Settings:
    """The same settings with every agent's command pointed at the built-in demo agents. Each
    speaks what its CLI speaks (its stream; codex's app-server; gemini's, qwen's, copilot's and
    opencode's ACP), so the demo goes the way each is configured, by default the default way."""
    agents = {}
    for name, agent in settings.agents.items():
        adapter = get_adapter(name)
        cmd = shlex.join(adapter.demo_argv())
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


def agent_environment(request: LaunchRequest) -> dict[str, str]:
    """The environment each agent CLI's allowlist takes its variables from (``agent_env``)."""
    env = without_ray(request.env if request.env is not None else os.environ)  # nothing of Ray's: its token above all
    if request.demo:
        env.setdefault("ORCHESTRATE_DEMO_PACE", DEMO_PACE_DEFAULT)
    return env


def _check_role_names(settings: Settings) -> None:
    """Every agent [session] roles / role_fallback names is one the registry knows (any
    registered CLI, configured ACP ones included; which exist is the registry's business).

    Raises:
        PreflightError: a name no adapter knows.
    """
    named = {*settings.session.roles.values(), *(a for order in settings.session.role_fallback.values() for a in order)}
    strangers = named - set(agent_names())
    if strangers:
        raise PreflightError(
            f"[session] roles / role_fallback name {', '.join(sorted(strangers))}, which no adapter knows; "
            f"known agents: {', '.join(agent_names())}"
        )


def prepare(settings: Settings, request: LaunchRequest) -> Prepared:
    """Preflight, both steps at once (``prepare_session``, then ``agents_checked``).

    Raises:
        PreflightError: something must be fixed first; the message says what.
    """
    prepared = prepare_session(settings, request)
    try:
        return agents_checked(prepared)
    except BaseException:
        if prepared.end_lock is not None:
            prepared.end_lock.release()
        raise


def prepare_session(settings: Settings, request: LaunchRequest) -> Prepared:
    """The first step of the preflight: every check but the CLIs' version probes, the session's
    folder made; the probes are left running (``agents_out`` is None) for ``agents_checked``.
    ``request`` is left as it was.

    On resume the request's task, target and demo, and the settings, are those of the first
    start (``launch.json``), with this run's flags over them.

    Raises:
        PreflightError: something must be fixed first; the message says what.
    """
    check_agents(settings)
    _check_role_names(settings)
    for given in (request.resume, request.session_id):
        if given is not None:
            try:
                check_session_id(given)
            except InvalidId as exc:
                raise PreflightError(str(exc)) from None
    if request.resume:
        settings, request, resume_state, end_lock = _resumed(settings, request)
        try:
            check_agents(settings)
            return _prepared(settings, request, resume_state, end_lock)
        except BaseException:
            end_lock.release()
            raise
    if request.demo:
        settings = demo_settings(settings)
    return _prepared(settings, request)


def agents_checked(prepared: Prepared) -> Prepared:
    """The second step: the CLIs' probes waited for; the settings with the agents that cannot
    run disabled (their roles go to the others), each with why; a new session's ``launch.json``
    written with them (a resume probes again, from its first start's settings).

    Raises:
        PreflightError: none of the agents can run; the message names each and why.
    """
    if prepared.agents_out is not None:
        return prepared  # taken already
    settings, agents_out = _runnable_agents(prepared.settings, dict(prepared.env))
    if not prepared.request.resume:
        request = prepared.request
        first = LaunchRecord(
            task=request.task, target=prepared.target, demo=request.demo, settings=settings.model_dump(mode="json")
        )
        save_launch(prepared.session_dir, first)
    return dataclasses.replace(prepared, settings=settings, agents_out=agents_out)


def _prepared(
    settings: Settings,
    request: LaunchRequest,
    resume_state: dict[str, Any] | None = None,
    end_lock: SessionLock | None = None,
) -> Prepared:
    """The rest of ``prepare_session``: the checks every start makes, the session folder made,
    the CLIs' probes running."""
    check_dashboard_reach(settings, request)
    workspace = check_workspace(settings.workspace)
    target = check_target(request.target) if request.target is not None else None
    if target is None and not request.demo:
        raise PreflightError("no --target given; pass the repository the agents should work in")
    if not any(agent.enabled for agent in settings.agents.values()):
        raise PreflightError("every agent is disabled in the config; enable at least one")
    env = agent_environment(request)
    if target is not None and not request.resume and not request.in_place:
        refused = isolation_refused(target, workspace, request.include_uncommitted)
        if refused is not None:  # before the session folder is made: nothing is left behind
            raise PreflightError(refused)
    session_id = request.resume or request.session_id or new_session_id()
    session_dir = workspace / session_id
    try:
        private_dir(session_dir)
    except SessionFileError as exc:
        raise PreflightError(str(exc)) from None
    if target is None:
        target = make_demo_target(session_dir)
    _probe(settings, env)  # unless the launcher's early probes are of these very agents
    return Prepared(
        request, settings, target, session_dir, session_id, MappingProxyType(env), None, resume_state, end_lock
    )


def check_agents(settings: Settings) -> None:
    """Every [agents.<name>] names a CLI an adapter knows (an ACP one by its table alone),
    driven over a protocol it speaks.

    Raises:
        PreflightError: an unknown name, or a protocol the CLI does not speak.
    """
    try:
        register_configured(settings.agents)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    unknown = [name for name in settings.agents if name not in agent_names()]
    if unknown:
        raise PreflightError(
            f"[agents] names {', '.join(sorted(unknown))}, which no adapter knows; "
            f"known agents: {', '.join(agent_names())}; a CLI that speaks ACP is added with "
            'protocol = "acp" and its command in its [agents.<name>] table'
        )
    for name, agent in settings.agents.items():
        try:
            driven(name, agent.protocol)
        except ValueError as exc:
            raise PreflightError(f"[agents.{name}] protocol: {exc}") from None


def check_dashboard_reach(settings: Settings, request: LaunchRequest) -> None:
    """A dashboard other machines can reach only on purpose, and never without saying the cost.

    Raises:
        PreflightError: a host other machines reach, without allow_remote.
    """
    host = settings.web.host
    if not request.dashboard or is_loopback(host):
        return
    if not settings.web.allow_remote:
        raise PreflightError(
            f"--host {host} lets other machines reach the dashboard; pass --allow-remote if "
            "you mean it, or keep 127.0.0.1 and use an SSH tunnel (ssh -L 8000:127.0.0.1:8000 <this machine>)"
        )
    print(
        f"orchestrate: warning: the dashboard on {host} is plain HTTP: the token in its address travels "
        "in clear, and anyone who reads it can steer the agents",
        file=sys.stderr,
        flush=True,
    )


def start_version_checks(settings: Settings, request: LaunchRequest) -> None:
    """Start the enabled CLIs' version probes now, in a thread, for ``prepare`` to take: they
    wait on processes while the launcher imports the rest of the start. A resume probes later
    (its settings are the first start's); anything unusual here is left for ``prepare`` to say."""
    if request.resume:
        return
    try:
        check_agents(settings)
        if request.demo:
            settings = demo_settings(settings)
        env = agent_environment(request)
    except Exception:  # noqa: BLE001 - prepare checks it all again and says what is wrong
        return
    _probe(settings, env)


# Probes running in the background, for agents_checked to take (started by start_version_checks
# or prepare_session): (agents, env, their checks).
_early: list[tuple[dict[str, Any], dict[str, str], Future[list[CliCheck]]]] = []


def _probe(settings: Settings, env: dict[str, str]) -> None:
    """Start the enabled CLIs' probes in a thread, unless some of these very agents and
    environment already run."""
    if any(agents == dict(settings.agents) and early_env == env for agents, early_env, _ in _early):
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-early")
    _early.append((dict(settings.agents), env, pool.submit(_version_checks, settings, env)))
    pool.shutdown(wait=False)


def _early_checks(settings: Settings, env: dict[str, str]) -> list[CliCheck] | None:
    """The background probes' checks when they were of these very agents and environment (the
    others stay for ``forget_version_checks``)."""
    for i, (agents, early_env, checks) in enumerate(_early):
        if agents == dict(settings.agents) and early_env == env:
            del _early[i]
            return checks.result()
    return None


def forget_version_checks() -> None:
    """Wait for background probes nobody took (the start failed before): none is left running."""
    while _early:
        _early.pop()[2].exception()


def _version_checks(settings: Settings, env: dict[str, str]) -> list[CliCheck]:
    """Every enabled CLI's check; each waits on its CLI's version probe: all at once, the
    start waits for the slowest only."""
    probes = [
        (
            name,
            get_adapter(name),
            launch_for_preflight(get_adapter(name), agent),
            {**agent_env(get_adapter(name), agent, env), **agent.env},
        )
        for name, agent in settings.agents.items()
        if agent.enabled
    ]
    with ThreadPoolExecutor(max_workers=max(1, len(probes)), thread_name_prefix="preflight") as pool:
        return list(pool.map(lambda probe: check_cli(*probe), probes))


def _runnable_agents(settings: Settings, env: dict[str, str]) -> tuple[Settings, Mapping[str, str]]:
    """The settings with every enabled CLI checked; those that cannot run are disabled (their
    roles move to the others) unless none can run; and each one disabled, with why.

    Raises:
        PreflightError: no agent is enabled, or none of them can run.
    """
    checks = _early_checks(settings, env)
    if checks is None:
        checks = _version_checks(settings, env)
    if not checks:  # prepare_session said so already; a Prepared made otherwise
        raise PreflightError("every agent is disabled in the config; enable at least one")
    bad = [c for c in checks if c.problem]
    if len(bad) == len(checks):
        require_clis(checks, settings)  # none can run: stop the launch, naming each
    out: dict[str, str] = {}
    if bad:
        # Some can run: the others' roles move to them (role_fallback), each with its reason.
        agents = dict(settings.agents)
        for check in bad:
            agents[check.agent] = agents[check.agent].model_copy(update={"enabled": False})
            out[check.agent] = f"not_installed: {check.problem}"
            print(
                f"orchestrate: {check.agent} cannot run ({check.problem}); its roles go to the others",
                file=sys.stderr,
                flush=True,
            )
        settings = settings.model_copy(update={"agents": agents})
    for check in checks:
        if not check.problem:
            log.info("%s: %s (%s)", check.agent, check.version, shlex.join(check.argv))
    return settings, MappingProxyType(out)


def _resumed(settings: Settings, request: LaunchRequest) -> tuple[Settings, LaunchRequest, dict[str, Any], SessionLock]:
    """The session continued: its first start's settings with this run's flags over them (the
    workspace named now wins: the folder may have moved), the request as it applies, its saved
    state, and its lock, held; what its dead orchestrator left running is ended.

    A session still running is refused at once; one whose launcher is finishing its end work
    is waited for (``request.end_wait_s``), and only then is its state read or anything ended.

    Raises:
        PreflightError: no such session, its files are unreadable, it still runs, or its end
            work was not done by the deadline.
    """
    session_dir = settings.workspace.expanduser().resolve() / str(request.resume)
    deadline = time.monotonic() + request.end_wait_s
    _, state = _saved_launch(session_dir)
    if state.get("status") not in TERMINAL_STATUSES and _live_orchestrator(state.get("orchestrator_pid")):
        raise PreflightError(
            f"session {request.resume} is still running (orchestrator pid {state['orchestrator_pid']})"
        )
    try:
        end_lock = take_end_lock(session_dir, request.end_wait_s, "resume")
    except SessionBusy as exc:
        raise PreflightError(str(exc)) from None
    except OSError as exc:
        raise PreflightError(f"{session_dir} cannot be locked: {exc}") from None
    try:
        first, state = _saved_launch(session_dir)  # as the end work left it
        owner = state.get("orchestrator_pid")
        # Its end work is done; a launcher that released the lock may still be exiting (give
        # it a few seconds), or keep its dashboard up on the final state (then it is still
        # running, and waiting the whole deadline for it would only delay the refusal).
        exit_by = min(deadline, time.monotonic() + _EXIT_GRACE_S)
        while _live_orchestrator(owner) and time.monotonic() < exit_by:
            time.sleep(0.02)  # a condition wait: the owner's exit, up to its grace
        if _live_orchestrator(owner):
            raise PreflightError(
                f"session {request.resume} is still running (orchestrator pid {owner}): "
                "close its dashboard (Ctrl-C) first"
            )
        try:
            resumed = with_overrides(
                first.settings, {**request.settings_overrides, "workspace": str(settings.workspace)}, LAUNCH_FILE
            )
        except ConfigError as exc:
            raise PreflightError(f"session {request.resume}: {exc}") from None
        orphans = find_orphans(str(request.resume))
        if orphans:
            log.warning(
                "ending %d process(es) the previous orchestrator left: %s",
                len(orphans),
                "; ".join(f"{o.pid} {o.cmdline[:80]}" for o in orphans),
            )
            end_orphans(orphans)
    except BaseException:
        end_lock.release()
        raise
    return resumed, request.resumed(first.task, first.target, first.demo), state, end_lock


def _saved_launch(session_dir: Path) -> tuple[LaunchRecord, dict[str, Any]]:
    try:
        return load_launch(session_dir)
    except ResumeError as exc:
        raise PreflightError(str(exc)) from None


def resume_arguments(prepared: Prepared) -> dict[str, Any]:
    """The coordinator's resume_from and resume_ids, when resuming."""
    if not prepared.resume_state:
        return {}
    saved = SessionSnapshot.model_validate(prepared.resume_state)
    interrupted = {a.id for a in saved.assignments if a.status == "running"}
    return {
        "resume_from": saved,
        "resume_ids": interrupted_cli_sessions(prepared.session_dir, interrupted),
        "recorded_answers": recorded_answers(prepared.session_dir),
    }


def _live_orchestrator(pid: Any) -> bool:
    """Whether ``pid`` is another process running the orchestrator (not a zombie, not us)."""
    if not pid or pid == os.getpid() or not psutil.pid_exists(pid):
        return False
    try:
        return "orchestrate" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
