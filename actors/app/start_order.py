"""The start order of one session, in one function (``start``), after Mopidy's ``run``: each
feature starts through its own ``start`` module; refs go through constructors; whoever hears
an actor starts before it; the coordinator starts last; ``stop_all`` stops in reverse. The
dashboard answers (its address printed) before the CLIs' version probes are waited for."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.agent_env import agent_env, describe_env
from meta_orchestrator.actors.app.launch_request import LaunchRequest
from meta_orchestrator.actors.app.prepare import (
    Prepared,
    agents_checked,
    forget_version_checks,
    prepare_session,
    resume_arguments,
)
from meta_orchestrator.actors.cluster import cluster_wiring
from meta_orchestrator.actors.cluster.cluster_auth import secret_paths
from meta_orchestrator.actors.console.start import read_answers, start_console
from meta_orchestrator.actors.files.end_lock import RUNNING, SessionBusy, SessionLock
from meta_orchestrator.actors.files.end_lock import take as end_lock_of
from meta_orchestrator.actors.files.session_files import SessionFileError, private_dir
from meta_orchestrator.actors.history.start import start_history
from meta_orchestrator.actors.notify.start import start_notifier
from meta_orchestrator.actors.processes.process_host import SpawnCaps
from meta_orchestrator.actors.recovery.preflight import (
    PreflightError,
    check_host_isolation,
    check_os_sandbox,
    check_tool_hook,
    proactive_fixes,
)
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.actors.sandbox.start import hooked_launch_env, sandboxed, start_guard
from meta_orchestrator.actors.sandbox.start import os_sandboxes as confinements
from meta_orchestrator.actors.supervision.starting import LateRef, start_supervisor
from meta_orchestrator.actors.supervision.supervision import ActorHandle, ReplyInbox, SupervisedRef, tell_all
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.workspaces.workspace_registry import register_workspace
from meta_orchestrator.actors.workspaces.workspace_wiring import abandon_workspace, open_workspace, say_on_stderr
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.gateway import GetGatewayAddress
from meta_orchestrator.messages.notify import DashboardAddressKnown
from meta_orchestrator.messages.resources import WatchWorkers
from meta_orchestrator.messages.session import SessionEnded, StartSession
from meta_orchestrator.webui.dashboard_server import GatewayError
from meta_orchestrator.webui.start import start_dashboard

if TYPE_CHECKING:
    from meta_orchestrator.actors.agents.start import AgentRuns

log = logging.getLogger(__name__)


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
    notifier: pykka.ActorRef[Any] | None = None  # tells webhooks and the desktop (None: nothing asked)
    end_lock: SessionLock | None = None  # held until the end work is done (files.end_lock)


def start(
    settings: Settings,
    request: LaunchRequest,
    started: list[pykka.ActorRef[Any]],
    log_setup: Callable[[Path], None] | None = None,
) -> RunningSession:
    """Start every actor for one session, in order, and tell the coordinator to begin."""
    prepared = prepare_session(settings, request)  # the CLIs' probes still run: _start takes them
    # From here the request as it applies (on resume: with what the first start asked).
    request, settings, session_dir = prepared.request, prepared.settings, prepared.session_dir
    # apply and discard wait on this lock: held from before the session begins to its end work's end.
    try:  # a resume took it before it read the saved state
        end_lock = prepared.end_lock or end_lock_of(session_dir, request.end_wait_s)
    except SessionBusy as exc:
        raise PreflightError(str(exc)) from None
    try:
        end_lock.mark(RUNNING)
        running = _start(settings, request, prepared, started, log_setup)
        running.end_lock = end_lock
        _begin(running, request)
    except BaseException:
        end_lock.release()
        forget_version_checks()  # probes the start never took: none is left running
        raise
    return running


def _start(
    settings: Settings,
    request: LaunchRequest,
    prepared: Prepared,
    started: list[pykka.ActorRef[Any]],
    log_setup: Callable[[Path], None] | None,
) -> RunningSession:
    target, session_dir = prepared.target, prepared.session_dir
    env = dict(prepared.env)
    if log_setup:
        log_setup(session_dir)
    session, workspaces = prepared.session, register_workspace(prepared.workspace)
    token, closed, coordinator_slot = secrets.token_urlsafe(24), threading.Event(), LateRef()
    listeners, notifier, supervisor = _listeners(started, settings, request, session)
    gateway = _dashboard(started, supervisor, settings, request, (session_dir, token, coordinator_slot, closed))
    url = _announce(gateway, notifier, request)
    heard = (*listeners, *([gateway] if gateway is not None else []))
    # Imported once the dashboard serves: the actors started from here on are no part of the page.
    from meta_orchestrator.actors.agents.start import review_worker_starter, start_workers
    from meta_orchestrator.actors.limits.start import start_monitor
    from meta_orchestrator.actors.recovery.start import start_recovery
    from meta_orchestrator.actors.reviews.start import start_reviewer
    from meta_orchestrator.actors.session.start import start_coordinator
    from meta_orchestrator.actors.workspaces.start import start_workspace

    # The dashboard answers while the checks run (the CLIs' version probes, those of bubblewrap
    # and the tool hook, a cluster to join): none of it is needed to show the page, all of it
    # before an agent. The probes come first: the agents that cannot run are off for the rest.
    prepared = agents_checked(prepared)
    settings = prepared.settings
    bwrap = _launch_checks(settings, request, env, target)
    scratch = private_dir(session_dir / "scratch")
    repo, no_branch = _open_workspace(session, request, bwrap)
    with _abandoned_if_it_fails(repo, session_dir, request):
        settings, fixes = proactive_fixes(settings, target, env)
        recovery = start_recovery(started, supervisor, settings, target, heard)
        # The watchers hear the workers, so they start first; ``workers`` is filled below (a
        # watcher restarted after a crash starts with all of them).
        workers: dict[str, SupervisedRef] = {}
        watching = (*heard, coordinator_slot)
        monitor = start_monitor(started, supervisor, settings, session_dir, watching, workers)
        checkouts = session_dir / "checkouts" if repo is not None else None
        guard = start_guard(
            started,
            supervisor,
            settings,
            session,
            (scratch,),
            checkouts,
            watching,
            workers,
            hooked_launch_env(settings, env),
        )
        runs = _agent_runs(settings, session, env, (scratch, (session_dir.parent, *workspaces)), bwrap, guard)
        review_worker = review_worker_starter(started, runs, (*heard, *([monitor] if monitor else [])))
        reviewer = start_reviewer(
            started, supervisor, settings, session, review_worker, coordinator_slot, heard, request.task, repo
        )
        watchers = tuple(w for w in (monitor, guard) if w is not None)
        workers.update(start_workers(started, supervisor, runs, (*heard, *watchers, reviewer, recovery)))
        tell_all(watchers, WatchWorkers(workers=tuple(workers.items())))
        coordinator = start_coordinator(
            started,
            supervisor,
            coordinator_slot,
            **start_workspace(started, supervisor, repo, heard, no_branch, dict(prepared.resume_state or {})),
            **_coordinator_arguments(prepared, settings, gateway is not None),
            workers=workers,
            listeners=(*heard, reviewer),
            reviewer=reviewer,
            recovery=recovery,
            preflight_fixes=fixes,
        )
    running = RunningSession(*session, coordinator, workers, gateway, url, token, closed)
    running.host, running.workspace, running.notifier = runs.hosts, repo, notifier
    return running


def _listeners(
    started: list[pykka.ActorRef[Any]], settings: Settings, request: LaunchRequest, session: tuple[str, Path, Path]
) -> tuple[list[pykka.ActorRef[Any]], pykka.ActorRef[Any] | None, pykka.ActorRef[Any]]:
    """Who hears every fact, the dashboard aside, and the supervisor: the history first (a
    replay sees what any view saw), the console, the notifier (None: nothing asked), then the
    supervisor, which hears them all; the dashboard starts next (supervised)."""
    session_id, session_dir, _ = session
    listeners = [start_history(started, session_dir)]
    if request.console:
        listeners.append(start_console(started, request.demo, settings.questions.bell))
    notifier = start_notifier(started, settings.notify, session_id)
    if notifier is not None:
        listeners.append(notifier)
    return listeners, notifier, start_supervisor(started, settings.session, tuple(listeners))


def _launch_checks(settings: Settings, request: LaunchRequest, env: dict[str, str], target: Path) -> str | None:
    """Before any actor: the agents' environments said, the OS sandbox and the tool hook checked,
    no bypass flag the user did not allow, the cluster joined; bubblewrap's path (None: none).

    Raises:
        PreflightError: something must be fixed first; the message says what.
    """
    for name, agent in settings.agents.items():
        if agent.enabled:
            log.info("%s", describe_env(name, agent_env(get_adapter(name), agent, env), env, agent.env))
    bwrap = check_os_sandbox(settings.sandbox, request.demo, env)
    if bwrap is not None:
        check_host_isolation(settings.sandbox)
    check_tool_hook(settings, bwrap, env)
    for name, agent in settings.agents.items():
        flags = get_adapter(name).bypass_flags_in(agent.extra_args)
        if agent.enabled and flags and not agent.allow_bypass:
            raise PreflightError(
                f"[agents.{name}] extra_args has {' '.join(flags)}, which turns "
                f"the CLI's own permission checks off; set [agents.{name}] "
                "allow_bypass = true only if an outer sandbox protects you"
            )
    cluster_wiring.join(settings, target)  # with [cluster] address: this process is the Ray driver
    return bwrap


def _dashboard(
    started: list[Any], supervisor: pykka.ActorRef[Any], settings: Settings, request: LaunchRequest, place: tuple
) -> SupervisedRef | None:
    """The dashboard when asked for. ``place``: the session's folder, its token, the
    coordinator's stand-in and the event the page's close button sets.

    Raises:
        PreflightError: its address cannot be bound.
    """
    if not request.dashboard:
        return None
    session_dir, token, coordinator, closed = place
    try:
        return start_dashboard(
            started, supervisor, settings.web, session_dir, token, coordinator, request.next_free_port, closed
        )
    except GatewayError as exc:
        raise PreflightError(f"{exc}; pick another port with --port, or pass --next-free-port") from None


def _open_workspace(
    session: tuple[str, Path, Path], request: LaunchRequest, bwrap: str | None
) -> tuple[SessionRepo | None, str | None]:
    """The session's git workspace (see workspace_wiring.open_workspace), and why there is none.

    Raises:
        PreflightError: git cannot make it, or the session was discarded.
    """
    session_id, session_dir, target = session
    why: list[str] = []
    try:
        repo = open_workspace(
            target,
            session_dir,
            session_id,
            request.include_uncommitted,
            resuming=bool(request.resume),
            in_place=request.in_place,
            say=say_on_stderr if request.console else None,
            no_branch=why.append,
            bwrap=bwrap,
        )
    except (WorkspaceError, SessionFileError) as exc:
        raise PreflightError(f"the session's branch cannot be made: {exc}") from None
    except OSError as exc:
        raise PreflightError(f"the session's branch cannot be made: {exc.strerror or exc}: {exc.filename}") from None
    return repo, (why[-1] if why else None)


@contextlib.contextmanager
def _abandoned_if_it_fails(repo: SessionRepo | None, session_dir: Path, request: LaunchRequest) -> Iterator[None]:
    """A start that fails after the workspace is made leaves no branch behind: nothing ran on it."""
    try:
        yield
    except BaseException:
        if repo is not None and not request.resume:
            abandon_workspace(repo, session_dir)
        raise


def _agent_runs(
    settings: Settings,
    session: tuple[str, Path, Path],
    env: dict[str, str],
    folders: tuple[Path, tuple[Path, ...]],
    bwrap: str | None,
    guard: SupervisedRef | None,
) -> AgentRuns:
    """What every run shares: the hosts that start them (here or a cluster's), each enabled
    agent's settings with its tool hook, and its OS sandbox. ``folders``: the session's scratch
    folder, and every workspace of the user (hidden inside each run)."""
    from meta_orchestrator.actors.agents.start import AgentRuns  # after the dashboard answers (_start)

    session_id, session_dir, target = session
    scratch, workspaces = folders
    enabled = [name for name, agent in settings.agents.items() if agent.enabled]
    return AgentRuns(
        settings=settings,
        session_id=session_id,
        session_dir=session_dir,
        target=target,
        env=env,
        extra_dirs=(scratch,),
        hosts=cluster_wiring.hosts(settings, spawn_caps(settings)),
        agents={name: sandboxed(name, settings, guard) for name in enabled},
        sandboxes=os_sandboxes(bwrap, settings, workspaces, {"guard": guard} if guard is not None else {}),
    )


def os_sandboxes(
    bwrap: str | None, settings: Settings, workspaces: tuple[Path, ...], watchers: Mapping[str, ActorHandle]
) -> dict[str, OsSandbox]:
    """Per agent, its OS sandbox (``sandbox.start.os_sandboxes``), hiding every workspace of
    the user and the cluster's token files."""
    token_file = settings.cluster.token_file
    tokens = (*secret_paths(os.environ, Path.home()), *([str(token_file.expanduser())] if token_file else []))
    return confinements(bwrap, settings, workspaces, tokens, watchers.get("guard"))


def spawn_caps(settings: Settings) -> SpawnCaps:
    limits = settings.limits
    return SpawnCaps(
        nice=limits.spawn_nice,
        core_dumps=limits.spawn_core_dumps,
        max_file_bytes=int(limits.spawn_max_file_mb * 1024 * 1024) if limits.spawn_max_file_mb else None,
        max_user_processes=limits.spawn_max_user_processes,
    )


def _coordinator_arguments(prepared: Prepared, settings: Settings, dashboard: bool) -> dict[str, Any]:
    """``settings``: the prepared ones with the preflight's proactive fixes."""
    return {
        "settings": settings,
        "session_id": prepared.session_id,
        "session_dir": prepared.session_dir,
        "task": prepared.request.task,
        "target": prepared.target,
        "demo": prepared.request.demo,
        "answer_channels": _answer_channels(prepared.request, dashboard),
        "agents_out": dict(prepared.agents_out or {}),  # taken (agents_checked) before the coordinator
        **resume_arguments(prepared),
    }


def _announce(
    gateway: SupervisedRef | None, notifier: pykka.ActorRef[Any] | None, request: LaunchRequest
) -> str | None:
    """Give the user the dashboard's address as soon as it answers (the page shows the session
    starting until the coordinator's first state), and the notifier: every notice carries it."""
    if gateway is None:
        return None
    address = gateway.ask(GetGatewayAddress(), timeout=5)
    if notifier is not None:
        tell_all((notifier,), DashboardAddressKnown(base_url=address.base_url))
    (request.print_url or _print_url)(address.url)
    return address.url


def _begin(running: RunningSession, request: LaunchRequest) -> None:
    """Tell the coordinator to begin, read the console."""
    running.coordinator.tell(StartSession(reply_to=ReplyInbox(running.ended)))
    if request.console and request.answer_stream is not None:
        read_answers(running.coordinator, request.answer_stream)
    if request.on_started:
        request.on_started(running)


def _answer_channels(request: LaunchRequest, dashboard: bool) -> tuple[str, ...]:
    """Who can answer at the start. The console counts while its reader has not met end of
    file (a terminal, or a pipe someone may still write to); the reader says when it does."""
    channels = list(request.answer_channels)
    if request.console and request.answer_stream is not None and not getattr(request.answer_stream, "closed", False):
        channels.append("console")
    if dashboard:
        channels.append("dashboard")
    return tuple(dict.fromkeys(channels))


def _print_url(url: str) -> None:
    print(f"dashboard: {url}", file=sys.stderr, flush=True)
