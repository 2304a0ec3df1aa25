"""What one run of an agent CLI is started with: its launch spec, its OS confinement, its log line."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from meta_orchestrator.actors.adapters.base import POLICY_FILE_ENV, POLICY_SHA256_ENV, AgentAdapter, LaunchSpec
from meta_orchestrator.actors.agents.agent_env import agent_env
from meta_orchestrator.actors.cluster.cluster_auth import without_ray
from meta_orchestrator.actors.processes.process_host import SESSION_MARKER_ENV
from meta_orchestrator.actors.sandbox.bwrap import (
    DEFAULT_CONNECT_PORTS,
    PRIVATE_TMP,
    Confinement,
    OsSandbox,
    PrivateBind,
    under_private_tmp,
)
from meta_orchestrator.actors.sandbox.hook_launch import hook_read_paths
from meta_orchestrator.actors.sandbox.launch_path import launch_path
from meta_orchestrator.actors.sandbox.policy import RUN_WORKDIR_ENV
from meta_orchestrator.config.settings import AgentSettings
from meta_orchestrator.messages.worker import StartAssignment

SHOWN_PROMPT_CHARS = 60


def launch_for_preflight(adapter: AgentAdapter, settings: AgentSettings) -> tuple[str, ...]:
    """The executable argv prefix for an agent (config command or the CLI's own name)."""
    if settings.command:
        return tuple(shlex.split(settings.command))
    return (adapter.default_executable,)


def launch_spec(
    adapter: AgentAdapter,
    settings: AgentSettings,
    command: StartAssignment,
    *,
    session_id: str,
    workdir: Path,
    extra_dirs: Sequence[Path],
    base_env: Mapping[str, str],
    confined: bool = False,
) -> LaunchSpec:
    """The run ``command`` asks for, with the agent's configured command, model and flags.

    It works in ``command.workdir`` (its checkout) when the command names one, else in
    ``workdir`` (the target). The tool hook learns that folder from ``RUN_WORKDIR_ENV``.
    Of ``base_env`` it receives only what ``agent_env`` lets through, and nothing of Ray's
    (``RAY_*``: the cluster's token, its addresses) even when a setting would pass it.
    """
    folder = Path(command.workdir) if command.workdir else workdir
    passed = agent_env(adapter, settings, base_env)  # an allowlist: the rest stays behind
    env = without_ray({**passed, **settings.env, SESSION_MARKER_ENV: session_id, RUN_WORKDIR_ENV: str(folder)})
    env.update(_policy_digest(env))
    protocol = adapter.run_protocol(settings.protocol, resuming=bool(command.resume_session_id))
    return LaunchSpec(
        executable=launch_for_preflight(adapter, settings),
        prompt=command.prompt,
        workdir=folder,
        extra_dirs=tuple(dict.fromkeys([*extra_dirs, *map(Path, command.extra_dirs)])),
        mode=command.mode,
        model=settings.model,
        resume_session_id=command.resume_session_id,
        extra_args=(*settings.extra_args, *command.extra_args),
        env=env,
        confined=confined,
        protocol=protocol,
        serve_port=free_loopback_port() if confined and protocol == "acp" and adapter.acp_port_flag else None,
    )


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a CLI's own server (``AgentAdapter.acp_port_flag``):
    its run may connect to it through Landlock; should another program take it first, the CLI
    cannot listen, its run fails and its retry chooses again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _policy_digest(env: Mapping[str, str]) -> dict[str, str]:
    """The sha256 of the policy a bridge judges by (codex app-server), read as this run starts:
    a restarted guard rewrites the file (new channel, new secret), so it is read again each run.
    The bridge refuses a file that differs from it."""
    policy = env.get(POLICY_FILE_ENV)
    if not policy:
        return {}
    try:
        return {POLICY_SHA256_ENV: hashlib.sha256(Path(policy).read_bytes()).hexdigest()}
    except OSError:
        return {POLICY_SHA256_ENV: "unreadable"}  # the bridge then refuses it: every call declined


def confinement(
    adapter: AgentAdapter,
    sandbox: OsSandbox | None,
    spec: LaunchSpec,
    read_only_dirs: Sequence[str] = (),
    private: Sequence[PrivateBind] | None = (),
) -> Confinement | None:
    """What this run may write under the OS sandbox: its folders and the CLI's private state.

    ``private``: the CLI's state as private copies bound over the user's (``cli_state``);
    None (a run on a cluster node, whose copies are not made here) binds the node user's own
    state folders writable. ``read_only_dirs`` are bound read-only (a checkout's git folder
    and the objects it reads); a working folder inside one of them (a read-only view of a
    commit) is not writable. The CLI's launch path is read-only wherever it is installed.
    """
    if sandbox is None:
        return None
    places = adapter.cli_state(spec.env).places
    legacy: tuple[Path, ...] = ()
    if private is None:
        legacy = tuple(p.real for p in places)
        for place in places:
            if place.folder:
                place.real.mkdir(mode=0o700, parents=True, exist_ok=True)  # the CLI cannot create it inside
    # A read-only run (planning, a review) never gets its folder writable: inside the OS
    # sandbox codex's own sandbox is off, so ours is what keeps such a run from writing.
    viewed = spec.mode == "read_only" or any(_inside(spec.workdir, Path(d)) for d in read_only_dirs)
    folders = (*(() if viewed else (spec.workdir,)), *spec.extra_dirs, *legacy)
    # What the CLI runs from stays readable and unwritable: its executable's whole launch
    # path and, for the Python the hook and the demo agents use, the interpreter, its import
    # path and the package's own source (an editable install's source under /tmp is on no
    # import path), bound back where the private /tmp would hide them.
    taken = {os.path.realpath(p) for p in (*folders, *(b.dest for b in private or ()), *sandbox.hidden)}
    started = launch_path(spec.executable, spec.env.get("PATH"), [p.real for p in places if p.folder])
    own = (
        *(p for p in started if p not in taken and p != PRIVATE_TMP),
        *under_private_tmp(hook_read_paths()),
    )
    return Confinement(
        bwrap=sandbox.bwrap,
        writable=tuple(str(p) for p in folders),
        hidden=sandbox.hidden,
        # A read-only run still works in its folder: bound read-only (in place, or under the
        # private /tmp, nothing else would show it).
        readable=(*own, *sandbox.readable, *read_only_dirs, *((str(spec.workdir),) if viewed else ())),
        chdir=str(spec.workdir),
        private=tuple(private or ()),
        tmpfs_bytes=sandbox.tmpfs_bytes,
        connect_ports=None
        if sandbox.allow_connect is None
        else (
            *DEFAULT_CONNECT_PORTS,
            *endpoint_ports(spec.env, spec.extra_args),
            *sandbox.allow_connect,
            *((spec.serve_port,) if spec.serve_port else ()),  # the CLI's own server (opencode acp)
        ),
    )


# Variables naming where a CLI connects: its vendor's endpoint, a proxy.
_ENDPOINT_SUFFIXES = ("_BASE_URL", "_API_BASE", "_ENDPOINT", "_PROXY", "_proxy")
_URL = re.compile(r"https?://[^\s\"']+")


def endpoint_ports(env: Mapping[str, str], args: Sequence[str] = ()) -> tuple[int, ...]:
    """The TCP ports of the endpoints and proxies the run is configured for: in its environment
    (``ANTHROPIC_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL``, ``HTTPS_PROXY``...) and in its flags
    (codex's ``-c model_providers.x.base_url="..."``). The run may connect to them."""
    urls = [v for n, v in env.items() if n.endswith(_ENDPOINT_SUFFIXES)]
    urls += [m for a in args if "base_url" in a or "endpoint" in a for m in _URL.findall(a)]
    # A provider's JSON settings in a variable (opencode's OPENCODE_CONFIG_CONTENT: "baseURL").
    urls += [m for v in env.values() if "baseURL" in v for m in _URL.findall(v)]
    ports = []
    for url in urls:
        try:
            parsed = urlsplit(url.strip())
            port = parsed.port or {"https": 443, "http": 80}.get(parsed.scheme)
        except ValueError:
            continue  # not a URL: nothing to allow
        if port:
            ports.append(port)
    return tuple(dict.fromkeys(ports))


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def shown_command(argv: tuple[str, ...], prompt: str) -> str:
    """The command line for the log, with the prompt it reads on stdin shortened after it."""
    short = (
        prompt if len(prompt) < 80 else prompt[:SHOWN_PROMPT_CHARS].replace("\n", " ") + f"... ({len(prompt)} chars)"
    )
    return f"{shlex.join(argv)} <<< {shlex.quote(short)}"


__all__ = [
    "confinement",
    "endpoint_ports",
    "free_loopback_port",
    "launch_for_preflight",
    "launch_spec",
    "shown_command",
]
