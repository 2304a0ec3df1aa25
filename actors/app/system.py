"""One function wires the system: refs through constructors, the coordinator last, stop in reverse."""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shlex
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

import psutil
import pykka

from meta_orchestrator.actors.adapters.registry import agent_names, get_adapter, hooked_agent
from meta_orchestrator.actors.cluster import cluster_wiring
from meta_orchestrator.actors.console.console_answers import read_console_answers
from meta_orchestrator.actors.workspaces.workspace_wiring import (
    abandon_workspace,
    finish_workspace,
    in_place_note,
    isolation_refused,
    open_workspace,
    plan_checkout,
    say_on_stderr,
)
from meta_orchestrator.actors.console.console import ConsoleView
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.actors.supervision.supervision import ActorHandle, ReplyInbox, SupervisedRef, tell_all
from meta_orchestrator.actors.supervision.supervisor import Supervisor
from meta_orchestrator.actors.recovery.recovery import Recovery
from meta_orchestrator.actors.reviews.reviewer import Reviewer
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.actors.processes.process_host import SpawnCaps
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox, dns_files, socket_dirs
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.history.history import HistoryRecorder
from meta_orchestrator.webui.gateway import Gateway, GatewayError
from meta_orchestrator.actors.recovery.preflight import (
    PreflightError,
    check_cli,
    check_host_isolation,
    check_os_sandbox,
    check_tool_hook,
    check_target,
    check_workspace,
    proactive_fixes,
    require_clis,
)
from meta_orchestrator.actors.agents.cli_launch import launch_for_preflight
from meta_orchestrator.actors.agents.agent_env import agent_env, describe_env
from meta_orchestrator.actors.cluster.cluster_auth import secret_paths, without_ray
from meta_orchestrator.actors.processes.orphans import end_orphans, find_orphans
from meta_orchestrator.actors.history.resume import (
    ResumeError,
    interrupted_cli_sessions,
    load_launch,
    recorded_answers,
    save_launch,
)
from meta_orchestrator.actors.files.session_files import SessionFileError, new_session_id, private_dir
from meta_orchestrator.messages.ids import InvalidId, check_session_id
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.workspaces.workspace_registry import register_workspace
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.workspaces.workspace import Workspace
from meta_orchestrator.messages.workspace import WorkspaceNotOpened
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.resources import WatchWorkers
from meta_orchestrator.messages.sandbox import GetSandboxFiles
from meta_orchestrator.messages.gateway import GetGatewayAddress
from meta_orchestrator.messages.session import (
    AnswerChannelChanged,
    ControlRequested,
    SessionEnded,
    SessionSnapshot,
    StartSession,
)

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


@dataclass
class RunningSession:
    """Handles on a started session (for the launcher's signal handlers and for tests)."""

    session_id: str
    session_dir: Path
    target: Path
    coordinator: pykka.ActorRef[Any]
    workers: Mapping[str, ActorHandle]
    gateway: ActorHandle | None = None
    dashboard_url: str | None = None
    token: str | None = None
    dashboard_closed: threading.Event = field(default_factory=threading.Event)
    ended: queue.Queue[SessionEnded] = field(default_factory=queue.Queue)
    host: Any = None  # started every CLI of the session (a cluster_wiring.HostSet): a forced stop kills them
    workspace: SessionRepo | None = None  # the session's branch and checkouts (None: in place)


class LateRef:
    """Stands in for an actor started later (the gateway is told of the coordinator this way:
    it must start first, to hear the coordinator's first facts)."""

    def __init__(self) -> None:
        self.target: pykka.ActorRef[Any] | None = None

    def tell(self, message: Any) -> None:
        """Forward to the target; before it exists, behave like a stopped actor."""
        if self.target is None:
            raise pykka.ActorDeadError("not started yet")
        self.target.tell(message)


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


def _resume_arguments(options: RunOptions, session_dir: Path) -> dict[str, Any]:
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


@dataclass
class _Wiring:
    """What the stages of ``start`` share: the prepared session and what is started so far.

    ``host``, ``sandboxes`` and ``review_agents`` are filled in once the workers' watchers
    exist; the review workers, started later on demand, read them then.
    """

    settings: Settings
    options: RunOptions
    started: list[ActorHandle]
    target: Path
    session_dir: Path
    session_id: str
    env: dict[str, str]
    scratch: Path
    workspaces: tuple[Path, ...] = ()  # every workspace of this user: hidden inside each run
    supervisor: Any = None
    listeners: list[Any] = field(default_factory=list)
    coordinator_slot: LateRef = field(default_factory=LateRef)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    dashboard_closed: threading.Event = field(default_factory=threading.Event)
    host: cluster_wiring.HostSet | None = None
    sandboxes: dict[str, OsSandbox] = field(default_factory=dict)
    review_agents: dict[str, Any] = field(default_factory=dict)
    repo: SessionRepo | None = None  # the git workspace; None: the agents work in the target
    no_branch: str | None = None  # why there is no workspace (told to the dashboard)

    @property
    def checkouts(self) -> Path | None:
        """Where the runs' checkouts are (their sandbox guard's run roots), with a workspace."""
        return self.session_dir / "checkouts" if self.repo is not None else None


def start(
    settings: Settings,
    options: RunOptions,
    started: list[ActorHandle],
    log_setup: Callable[[Path], None] | None = None,
) -> RunningSession:
    """Start every actor for one session and tell the coordinator to begin."""
    settings, target, session_dir, session_id, env = prepare(settings, options)
    if log_setup:
        log_setup(session_dir)
    _log_agent_environments(settings, env)
    bwrap = check_os_sandbox(settings.sandbox, options.demo, env)
    if bwrap is not None:
        check_host_isolation(settings.sandbox)
    check_tool_hook(settings, bwrap, env)
    cluster_wiring.join(settings, target)  # with [cluster] address: this process is the Ray driver
    wiring = _Wiring(
        settings=settings,
        options=options,
        started=started,
        target=target,
        session_dir=session_dir,
        session_id=session_id,
        env=env,
        scratch=session_dir / "scratch",
        workspaces=register_workspace(session_dir.parent),
    )
    _start_listeners(wiring)
    gateway = _start_dashboard(wiring) if options.dashboard else None
    private_dir(wiring.scratch)
    wiring.repo = _open_workspace(wiring, bwrap)
    try:
        running = _start_session(wiring, bwrap, gateway)
    except BaseException:
        if wiring.repo is not None and not options.resume:
            abandon_workspace(wiring.repo, session_dir)  # nothing ran on its branch
        raise
    _begin(running, options)
    return running


def _log_agent_environments(settings: Settings, env: dict[str, str]) -> None:
    """Say, by name only, what of this environment each enabled agent's CLI receives."""
    for name, agent in settings.agents.items():
        if agent.enabled:
            log.info("%s", describe_env(name, agent_env(get_adapter(name), agent, env), env, agent.env))


def _open_workspace(wiring: _Wiring, bwrap: str | None) -> SessionRepo | None:
    """The session's git workspace (see workspace_wiring.open_workspace).

    Raises:
        PreflightError: git cannot make it, or the session was discarded.
    """
    options = wiring.options
    try:
        return open_workspace(
            wiring.target,
            wiring.session_dir,
            wiring.session_id,
            options.include_uncommitted,
            resuming=bool(options.resume),
            in_place=options.in_place,
            say=say_on_stderr if options.console else None,
            no_branch=lambda reason: setattr(wiring, "no_branch", reason),
            bwrap=bwrap,
        )
    except (WorkspaceError, SessionFileError) as exc:
        raise PreflightError(f"the session's branch cannot be made: {exc}") from None
    except OSError as exc:
        raise PreflightError(f"the session's branch cannot be made: {exc.strerror or exc}: {exc.filename}") from None


def _start_session(wiring: _Wiring, bwrap: str | None, gateway: SupervisedRef | None) -> RunningSession:
    """Every actor after the listeners and the dashboard, the coordinator last."""
    settings, started, target = wiring.settings, wiring.started, wiring.target
    wiring.settings, fixes = proactive_fixes(settings, target, wiring.env)
    for fix in fixes:
        log.info("preflight %s: %s", fix.agent, fix.action)
    recovery = _supervised(
        started,
        wiring.supervisor,
        "recovery",
        Recovery,
        settings=wiring.settings.recovery,
        target=target,
        workspace=wiring.settings.workspace,
        listeners=tuple(wiring.listeners),
    )
    reviewer = _start_reviewer(wiring)
    workers = _start_workers(wiring, bwrap, heard_by=(reviewer, recovery))
    coordinator = _start_coordinator(wiring, workers, reviewer, recovery, fixes, dashboard=gateway is not None)
    return RunningSession(
        host=wiring.host,
        session_id=wiring.session_id,
        session_dir=wiring.session_dir,
        target=target,
        coordinator=coordinator,
        workers=workers,
        gateway=gateway,
        token=wiring.token,
        dashboard_closed=wiring.dashboard_closed,
        workspace=wiring.repo,
    )


def _start_listeners(wiring: _Wiring) -> None:
    """The history and the console (the listeners of every actor), then the supervisor."""
    settings, options, started = wiring.settings, wiring.options, wiring.started
    # The history hears every fact first, so a replay sees what any view saw.
    wiring.listeners.append(_start(started, HistoryRecorder, session_dir=wiring.session_dir))
    if options.console:
        wiring.listeners.append(_start(started, ConsoleView, demo=options.demo, bell=settings.questions.bell))
    wiring.supervisor = Supervisor.start(
        max_restarts=settings.session.max_restarts,
        window_s=settings.session.restart_window_s,
        listeners=tuple(wiring.listeners),
    )
    started.append(wiring.supervisor)  # stopped again first (see _start_coordinator) if the start fails half-way


def _start_dashboard(wiring: _Wiring) -> SupervisedRef:
    """The gateway, supervised; it hears every fact from here on.

    Raises:
        PreflightError: its address cannot be bound.
    """
    web = {"settings": wiring.settings.web, "next_free_port": wiring.options.next_free_port}

    def start_gateway(_ref: SupervisedRef) -> pykka.ActorRef[Any]:
        return Gateway.start(
            settings=web["settings"],
            session_dir=wiring.session_dir,
            token=wiring.token,
            coordinator=wiring.coordinator_slot,
            next_free_port=web["next_free_port"],
            close_requested=wiring.dashboard_closed,
        )

    try:
        gateway = SupervisedRef("gateway", start_gateway, wiring.supervisor).start()
        # A restarted dashboard comes back where the browser already is.
        port = gateway.ask(GetGatewayAddress(), timeout=5).port
        web.update(settings=wiring.settings.web.model_copy(update={"port": port}), next_free_port=False)
        wiring.supervisor.proxy().supervise(gateway).get(timeout=5)
        wiring.started.append(gateway)
    except GatewayError as exc:
        raise PreflightError(f"{exc}; pick another port with --port, or pass --next-free-port") from None
    wiring.listeners.append(gateway)
    return gateway


def _start_reviewer(wiring: _Wiring) -> SupervisedRef:
    """The reviewer, supervised; each peer it asks runs in a worker of its own."""

    def start_review_worker(agent: str, events_path: Path) -> pykka.ActorRef[Any]:
        """A peer's read-only review run: its own worker, recorded under reviews/<id>/,
        limited by the review timeout, heard by the console and dashboard only."""
        settings = wiring.settings
        timeout_s = min(settings.review.reviewer_timeout_s, settings.session.assignment_timeout_s)
        return _start(
            wiring.started,
            Worker,
            agent=agent,
            adapter=get_adapter(agent),
            agent_settings=wiring.review_agents[agent],
            session_settings=settings.session.model_copy(update={"assignment_timeout_s": timeout_s}),
            session_id=wiring.session_id,
            session_dir=wiring.session_dir,
            target=wiring.target,
            listeners=tuple(wiring.listeners),
            base_env=wiring.env,
            events_path=events_path,
            extra_dirs=(wiring.scratch,),
            host=wiring.host.for_agent(agent) if wiring.host is not None else None,
            sandbox=wiring.sandboxes.get(agent),
        )

    return _supervised(
        wiring.started,
        wiring.supervisor,
        "reviewer",
        Reviewer,
        settings=wiring.settings.review,
        session_id=wiring.session_id,
        session_dir=wiring.session_dir,
        target=wiring.target,
        agents=tuple(n for n, agent in wiring.settings.agents.items() if agent.enabled),
        start_review_worker=start_review_worker,
        decisions_to=wiring.coordinator_slot,
        listeners=tuple(wiring.listeners),
        task=wiring.options.task,
        workspace=wiring.repo,
    )


def _start_workers(wiring: _Wiring, bwrap: str | None, heard_by: tuple[Any, ...]) -> dict[str, SupervisedRef]:
    """The watchers (resource monitor, sandbox guard), then one supervised worker per enabled
    agent, heard by the listeners, the watchers and ``heard_by`` (reviewer, recovery)."""
    settings = wiring.settings
    # Monitor and guard listen to the workers, so they start first; they hear the coordinator
    # through its slot and get the worker refs once those exist.
    # ``workers`` is filled below; a watcher restarted after a crash starts with all of them.
    workers: dict[str, SupervisedRef] = {}
    watchers = _start_watchers(
        wiring.started,
        wiring.supervisor,
        settings,
        wiring.session_dir,
        wiring.target,
        (wiring.scratch,),
        (*wiring.listeners, wiring.coordinator_slot),
        workers,
        wiring.checkouts,
        launch_env=_hooked_launch_env(settings, wiring.env),
    )
    wiring.host = cluster_wiring.hosts(settings, _spawn_caps(settings))
    wiring.sandboxes = _os_sandboxes(bwrap, settings, (wiring.session_dir.parent, *wiring.workspaces), watchers)
    for name, agent_settings in settings.agents.items():
        if not agent_settings.enabled:
            continue
        workers[name] = _supervised(
            wiring.started,
            wiring.supervisor,
            f"worker:{name}",
            Worker,
            agent=name,
            adapter=get_adapter(name),
            agent_settings=_sandboxed(name, settings, watchers),
            session_settings=settings.session,
            session_id=wiring.session_id,
            session_dir=wiring.session_dir,
            target=wiring.target,
            listeners=(*wiring.listeners, *watchers.values(), *heard_by),
            base_env=wiring.env,
            extra_dirs=(wiring.scratch,),
            host=wiring.host.for_agent(name),
            sandbox=wiring.sandboxes.get(name),
        )
    for watcher in watchers.values():
        watcher.tell(WatchWorkers(workers=tuple(workers.items())))
    wiring.review_agents = {name: _sandboxed(name, settings, watchers) for name in workers}
    return workers


def _start_coordinator(
    wiring: _Wiring,
    workers: dict[str, SupervisedRef],
    reviewer: SupervisedRef,
    recovery: SupervisedRef,
    fixes: Any,
    dashboard: bool,
) -> pykka.ActorRef[Any]:
    """The coordinator, last: everything it tells is running; the slots now point at it."""
    options, started, supervisor = wiring.options, wiring.started, wiring.supervisor
    coordinator = _start(
        started,
        Coordinator,
        **_workspace_arguments(wiring),
        settings=wiring.settings,
        session_id=wiring.session_id,
        session_dir=wiring.session_dir,
        task=options.task,
        target=wiring.target,
        workers=workers,
        listeners=(*wiring.listeners, reviewer),
        demo=options.demo,
        reviewer=reviewer,
        recovery=recovery,
        preflight_fixes=fixes,
        answer_channels=_answer_channels(options, dashboard),
        agents_out=options.agents_out,
        **_resume_arguments(options, wiring.session_dir),
    )
    wiring.coordinator_slot.target = coordinator
    supervisor.proxy().set_coordinator(coordinator).get(timeout=5)
    started.remove(supervisor)
    started.append(supervisor)  # stopped first, so nothing is restarted during shutdown
    return coordinator


def _workspace_arguments(wiring: _Wiring) -> dict[str, Any]:
    """The coordinator's workspace, branch and plan checkout; the Workspace actor started."""
    repo = wiring.repo
    if repo is None:
        if wiring.no_branch:  # the Changes panel says why there is no branch
            tell_all(wiring.listeners, WorkspaceNotOpened(reason=wiring.no_branch))
        return {}
    workspace = _supervised(
        wiring.started, wiring.supervisor, "workspace", Workspace, repo=repo, listeners=tuple(wiring.listeners)
    )
    resumed = wiring.options.resume_state or {}
    # A resumed session with a plan does not plan again: no checkout for it.
    plan = None if resumed.get("assignments") else plan_checkout(repo)
    store = str(repo.store) if repo.store is not None else None
    folder = repo.record.repository if repo.record.kind == "folder" else None
    return {
        "workspace": workspace,
        "branch": repo.branch,
        "branch_store": store,
        "branch_folder": folder,
        "plan_checkout": plan,
    }


def _begin(running: RunningSession, options: RunOptions) -> None:
    """Give the user the dashboard's address, tell the coordinator to begin, read the console."""
    if running.gateway is not None:
        address = running.gateway.ask(GetGatewayAddress(), timeout=5)
        running.dashboard_url = address.url
        (options.print_url or _print_url)(address.url)
    running.coordinator.tell(StartSession(reply_to=ReplyInbox(running.ended)))
    if options.console and options.answer_stream is not None:
        threading.Thread(
            target=read_console_answers,
            args=(running.coordinator, options.answer_stream),
            name="console-answers",
            daemon=True,
        ).start()
    if options.on_started:
        options.on_started(running)


def _answer_channels(options: RunOptions, dashboard: bool) -> tuple[str, ...]:
    """Who can answer at the start. The console counts while its reader has not met end of
    file (a terminal, or a pipe someone may still write to); the reader says when it does."""
    channels = list(options.answer_channels)
    if options.console and options.answer_stream is not None and not getattr(options.answer_stream, "closed", False):
        channels.append("console")
    if dashboard:
        channels.append("dashboard")
    return tuple(dict.fromkeys(channels))


def _print_url(url: str) -> None:
    print(f"dashboard: {url}", file=sys.stderr, flush=True)


def _start_watchers(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    settings: Settings,
    session_dir: Path,
    target: Path,
    extra_dirs: tuple[Path, ...],
    listeners: tuple[Any, ...],
    workers: dict[str, SupervisedRef],
    checkouts: Path | None = None,
    launch_env: dict[str, str] | None = None,
) -> dict[str, SupervisedRef]:
    """The resource monitor and the sandbox guard (each when enabled in the config), supervised
    like every other actor: a crashed monitor is restarted and enforces the limits again.
    ``launch_env``: the environment the CLI with the tool hook starts with.
    ``checkouts``: where the runs work, with a git workspace (the guard's run roots).

    Raises:
        PreflightError: an agent's extra_args carry a bypass flag the user did not allow.
    """
    for name, agent in settings.agents.items():
        flags = get_adapter(name).bypass_flags_in(agent.extra_args)
        if agent.enabled and flags and not agent.allow_bypass:
            raise PreflightError(
                f"[agents.{name}] extra_args has {' '.join(flags)}, which turns "
                f"the CLI's own permission checks off; set [agents.{name}] "
                "allow_bypass = true only if an outer sandbox protects you"
            )
    watchers: dict[str, SupervisedRef] = {}
    coordinator = next((ref for ref in listeners if isinstance(ref, LateRef)), None)
    if settings.limits.enabled:
        watchers["monitor"] = _supervised(
            started,
            supervisor,
            "monitor",
            ResourceMonitor,
            workers=workers,
            settings=settings.limits,
            session_dir=session_dir,
            listeners=listeners,
        )
    if settings.sandbox.enabled:
        watchers["guard"] = _supervised(
            started,
            supervisor,
            "guard",
            SandboxGuard,
            workers=workers,
            settings=settings.sandbox,
            session_dir=session_dir,
            target=target,
            extra_dirs=extra_dirs,
            asker=coordinator,
            listeners=listeners,
            checkouts=checkouts,
            launch_env=launch_env,
        )
    return watchers


def _hooked_launch_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """The environment the CLI that takes the tool hook is started with (before the worker's own)."""
    hooked = hooked_agent()
    agent = settings.agents.get(hooked.name) if hooked is not None else None
    return {**env, **(agent.env if agent is not None else {})}


def _sandboxed(name: str, settings: Settings, watchers: dict[str, SupervisedRef]) -> Any:
    """The agent's settings; for the CLI that takes a tool hook, its settings-file flag with the hook's file."""
    agent = settings.agents[name]
    guard = watchers.get("guard")
    flag = get_adapter(name).hook_settings_flag
    if flag is None or guard is None:
        return agent
    files = guard.ask(GetSandboxFiles(), timeout=10)
    hook_args = get_adapter(name).hook_args(files.claude_settings)
    return agent.model_copy(update={"extra_args": (*agent.extra_args, *hook_args)})


def _os_sandboxes(
    bwrap: str | None, settings: Settings, workspaces: tuple[Path, ...], watchers: Mapping[str, ActorHandle]
) -> dict[str, OsSandbox]:
    """Per agent: every workspace of the user, Ray's token files and the host's socket folders hidden (what DNS
    reads there shown), the private tmpfs sized, the host's services cut off (Landlock); for
    the CLI with the tool hook, the hook's files and socket shown read-only."""
    if bwrap is None:
        return {}
    token_file = settings.cluster.token_file
    tokens = (*secret_paths(os.environ, Path.home()), *([str(token_file.expanduser())] if token_file else []))
    hidden = (*(str(w) for w in dict.fromkeys(workspaces)), *socket_dirs(), *tokens)
    readable = dns_files(hidden)
    sandbox = settings.sandbox
    ports = sandbox.allowed_ports() if sandbox.isolate_host_services else None
    hooked = hooked_agent()
    shown: tuple[str, ...] = ()
    if (guard := watchers.get("guard")) is not None and hooked is not None:
        files = guard.ask(GetSandboxFiles(), timeout=10)
        shown = (str(Path(files.policy).parent), str(Path(files.channel).parent))
    return {
        name: OsSandbox(
            bwrap=bwrap,
            hidden=hidden,
            readable=(*readable, *(shown if hooked is not None and name == hooked.name else ())),
            tmpfs_bytes=sandbox.private_tmp_bytes(settings.limits.for_agent(name).max_rss_mb),
            allow_connect=ports,
        )
        for name in settings.agents
    }


def _spawn_caps(settings: Settings) -> SpawnCaps:
    limits = settings.limits
    return SpawnCaps(
        nice=limits.spawn_nice,
        core_dumps=limits.spawn_core_dumps,
        max_file_bytes=int(limits.spawn_max_file_mb * 1024 * 1024) if limits.spawn_max_file_mb else None,
        max_user_processes=limits.spawn_max_user_processes,
    )


def _start(started: list[ActorHandle], actor_class: type[pykka.Actor], **kwargs: Any) -> pykka.ActorRef[Any]:
    ref = actor_class.start(**kwargs)
    started.append(ref)
    return ref


def _supervised(
    started: list[Any], by: pykka.ActorRef[Any], child_name: str, actor_class: type[pykka.Actor], **kwargs: Any
) -> SupervisedRef:
    """Start an actor the supervisor ``by`` restarts (same arguments) when it crashes."""
    child = SupervisedRef(child_name, lambda _ref: actor_class.start(**kwargs), by).start()
    by.proxy().supervise(child).get(timeout=5)
    started.append(child)
    return child


def stop_all(started: list[ActorHandle], timeout: float = 15.0) -> None:
    """Stop actors in reverse start order; log and move on if one hangs.

    ``started`` is emptied from its end: an actor started while the others stop (a review's
    peer, say, after a forced stop) is stopped too, not left running."""
    while started:
        ref = started.pop()
        try:
            ref.stop(block=True, timeout=timeout)
        except pykka.Timeout:
            log.error("%s did not stop within %.0fs", ref, timeout)
        except pykka.ActorDeadError:
            pass
    survivors = pykka.ActorRegistry.get_all()
    if survivors:
        log.error("actors still running after shutdown: %s", survivors)
        pykka.ActorRegistry.stop_all(block=True, timeout=timeout)


class _Interrupts:
    """Ctrl-C and SIGTERM while a session runs: the first asks the coordinator to stop (every
    agent group ended, state saved, exit 130), a second forces it. A closed terminal (SIGHUP)
    must not end the agents silently, as its default would: the session goes on and says so.
    Handlers are installed only on the main thread (Python allows no other)."""

    def __init__(self) -> None:
        self.count = 0
        self.running: RunningSession | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
            self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hangup)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.running is not None and self.count == 1:
            print(
                f"\nstopping (signal {signal.Signals(signum).name}); press Ctrl-C again to force",
                file=sys.stderr,
                flush=True,
            )
            self.running.coordinator.tell(ControlRequested(action="stop", source="signal"))

    def _on_hangup(self, signum: int, _frame: Any) -> None:
        log.warning("the terminal hung up (SIGHUP); the session goes on - stop it with SIGTERM or from the dashboard")


def _linger(running: RunningSession, options: RunOptions, interrupts: _Interrupts) -> None:
    """Keep the dashboard up on the final state until the user closes it or presses Ctrl-C."""
    if running.gateway is None or options.exit_when_done or interrupts.count:
        return  # no dashboard, asked not to, or the user already pressed Ctrl-C to leave
    seen = interrupts.count
    print(
        f"session ended; the dashboard stays up at {running.dashboard_url} - press Ctrl-C "
        "or 'close dashboard' on the page to leave",
        file=sys.stderr,
        flush=True,
    )
    while interrupts.count == seen and not running.dashboard_closed.wait(0.2):
        pass


def run(settings: Settings, options: RunOptions, log_setup: Callable[[Path], None] | None = None) -> int:
    """Run one session to its end. Returns the process exit code.

    Ctrl-C or SIGTERM asks the coordinator to stop (every agent group ended, state saved,
    exit 130); a second Ctrl-C stops the actors at once.
    """
    started: list[ActorHandle] = []
    with _Interrupts() as interrupts:
        try:
            running = interrupts.running = start(settings, options, started, log_setup)
            if interrupts.count:
                running.coordinator.tell(ControlRequested(action="stop", source="signal"))
            return _wait_for_end(running, options, interrupts)
        finally:
            stop_all(started)
            if interrupts.running is not None and interrupts.running.workspace is not None:
                # Every agent has ended: what is merged leaves its checkout; the branch stays.
                say = (lambda line: print(line, flush=True)) if options.console else None
                finish_workspace(interrupts.running.workspace, interrupts.running.session_dir, say)
            elif interrupts.running is not None:  # in place: said at the end as at the start
                log.warning("%s", in_place_note(interrupts.running.target))
                if options.console:
                    print(f"{in_place_note(interrupts.running.target)}; their changes are there now", flush=True)
            cluster_wiring.leave()


def _wait_for_end(running: RunningSession, options: RunOptions, interrupts: _Interrupts) -> int:
    """Wait for the session's end (or a forced stop, or a coordinator gone); its exit code."""
    dashboard_told = False
    while True:
        try:
            ended = running.ended.get(timeout=0.2)
        except queue.Empty:
            ended = None
        if ended is not None:
            if ended.status == "waiting":
                if not options.console:
                    print(ended.summary, file=sys.stderr, flush=True)
                return ended.exit_code  # nobody is there: the dashboard does not linger
            _linger(running, options, interrupts)
            return ended.exit_code
        if running.gateway is not None and not dashboard_told and running.dashboard_closed.is_set():
            dashboard_told = True  # closed from the page: it can no longer answer
            running.coordinator.tell(AnswerChannelChanged(channel="dashboard", open=False))
        if interrupts.count >= 2:
            # The workers would each wait out stop_grace_s on an agent that ignores SIGTERM.
            killed = running.host.kill_all() if running.host is not None else 0
            log.warning("forced stop: ended %d agent process group(s) at once", killed)
            return 130
        if not running.coordinator.is_alive() and running.ended.empty():
            # Nothing would ever end the session: stop the agents rather than hang.
            log.error(
                "the coordinator stopped unexpectedly; ending every agent - the "
                "session can be continued with: orchestrate resume %s",
                running.session_id,
            )
            return 1


__all__ = ["PreflightError", "RunOptions", "RunningSession", "run", "start", "stop_all"]
