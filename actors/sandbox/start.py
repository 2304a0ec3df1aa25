"""How the sandbox starts: the guard that answers the tool hook, and each agent's confinement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.adapters.base import POLICY_FILE_ENV
from meta_orchestrator.actors.adapters.registry import get_adapter, hooked_agent
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox, dns_files, socket_dirs
from meta_orchestrator.actors.sandbox.sandbox_guard import SandboxGuard
from meta_orchestrator.actors.supervision.starting import LateRef, start_supervised
from meta_orchestrator.actors.supervision.supervision import ActorHandle, SupervisedRef
from meta_orchestrator.config.settings import AgentSettings, Settings
from meta_orchestrator.messages.sandbox import GetSandboxFiles


def start_guard(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    settings: Settings,
    session: tuple[str, Path, Path],
    extra_dirs: tuple[Path, ...],
    checkouts: Path | None,
    listeners: tuple[Any, ...],
    workers: dict[str, SupervisedRef],
    launch_env: dict[str, str],
) -> SupervisedRef | None:
    """The guard when ``[sandbox] enabled``, supervised. ``session``: its id, folder and target;
    ``checkouts``: where the runs work, with a git workspace (the guard's run roots);
    ``listeners``: the coordinator's stand-in among them is who the guard asks the user through;
    ``launch_env``: the environment the CLI with the tool hook starts with."""
    if not settings.sandbox.enabled:
        return None
    _session_id, session_dir, target = session
    asker = next((ref for ref in listeners if isinstance(ref, LateRef)), None)
    return start_supervised(
        started,
        supervisor,
        "guard",
        SandboxGuard,
        workers=workers,
        settings=settings.sandbox,
        session_dir=session_dir,
        target=target,
        extra_dirs=extra_dirs,
        checkouts=checkouts,
        asker=asker,
        listeners=listeners,
        launch_env=launch_env,
    )


def hooked_launch_env(settings: Settings, env: dict[str, str]) -> dict[str, str]:
    """The environment the CLI that takes the tool hook is started with (before the worker's own)."""
    hooked = hooked_agent()
    agent = settings.agents.get(hooked.name) if hooked is not None else None
    return {**env, **(agent.env if agent is not None else {})}


def sandboxed(name: str, settings: Settings, guard: SupervisedRef | None) -> AgentSettings:
    """The agent's settings; for the CLI that takes a tool hook, its settings-file flag with the hook's file;
    for one driven over ACP, the policy (and its hash) its bridge asks the broker with."""
    agent = settings.agents[name]
    flag = get_adapter(name).hook_settings_flag
    if guard is not None and asks_through_bridge(name, settings):
        # The policy file for its bridge; the worker reads its hash as each run starts (a
        # restarted guard rewrites it).
        files = guard.ask(GetSandboxFiles(), timeout=10)
        return agent.model_copy(update={"env": {**agent.env, POLICY_FILE_ENV: files.policy}})
    if flag is None or guard is None:
        return agent
    files = guard.ask(GetSandboxFiles(), timeout=10)
    hook_args = get_adapter(name).hook_args(files.claude_settings)
    return agent.model_copy(update={"extra_args": (*agent.extra_args, *hook_args)})


def asks_through_bridge(name: str, settings: Settings) -> bool:
    """The agent is driven through a bridge that asks the broker before each call (ACP's
    client, codex's app-server): it is given the policy file, and its sandbox shows it and the
    channel."""
    return get_adapter(name).protocol_for(settings.agents[name].protocol) in ("acp", "app-server")


def os_sandboxes(
    bwrap: str | None,
    settings: Settings,
    workspaces: tuple[Path, ...],
    secrets: tuple[str, ...],
    guard: ActorHandle | None,
) -> dict[str, OsSandbox]:
    """Per agent: every workspace of the user, the host's socket folders and ``secrets`` (files
    no agent may read) hidden (what DNS reads there shown), the private tmpfs sized, the host's
    services cut off (Landlock); for the CLI with the tool hook and those driven over ACP, the
    policy and the guard's socket shown read-only."""
    if bwrap is None:
        return {}
    hidden = (*(str(w) for w in dict.fromkeys(workspaces)), *socket_dirs(), *secrets)
    readable = dns_files(hidden)
    sandbox = settings.sandbox
    ports = sandbox.allowed_ports() if sandbox.isolate_host_services else None
    hooked = hooked_agent()
    shown: tuple[str, ...] = ()
    if guard is not None:
        files = guard.ask(GetSandboxFiles(), timeout=10)
        shown = (str(Path(files.policy).parent), str(Path(files.channel).parent))
    return {
        name: OsSandbox(
            bwrap=bwrap,
            hidden=hidden,
            readable=(*readable, *(shown if _asks(name, hooked, settings) else ())),
            tmpfs_bytes=sandbox.private_tmp_bytes(settings.limits.for_agent(name).max_rss_mb),
            allow_connect=ports,
        )
        for name in settings.agents
    }


def _asks(name: str, hooked: Any, settings: Settings) -> bool:
    return (hooked is not None and name == hooked.name) or asks_through_bridge(name, settings)
