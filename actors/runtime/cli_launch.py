"""What one run of an agent CLI is started with: its launch spec, its OS confinement, its log line."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from meta_orchestrator.actors.adapters.base import AgentAdapter, LaunchSpec
from meta_orchestrator.actors.runtime.cluster_auth import without_ray
from meta_orchestrator.actors.runtime.process_host import SESSION_MARKER_ENV
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox, under_private_tmp
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
) -> LaunchSpec:
    """The run ``command`` asks for, with the agent's configured command, model and flags.

    It works in ``command.workdir`` (its checkout) when the command names one, else in
    ``workdir`` (the target). The tool hook learns that folder from ``RUN_WORKDIR_ENV``.
    Nothing of Ray's reaches it (``RAY_*``: the cluster's token, its addresses).
    """
    folder = Path(command.workdir) if command.workdir else workdir
    env = without_ray({**base_env, **settings.env, SESSION_MARKER_ENV: session_id, RUN_WORKDIR_ENV: str(folder)})
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
    )


def confinement(
    adapter: AgentAdapter, sandbox: OsSandbox | None, spec: LaunchSpec, read_only_dirs: Sequence[str] = ()
) -> Confinement | None:
    """What this run may write under the OS sandbox: its folders and the CLI's own state.

    ``read_only_dirs`` are bound read-only (a checkout's git folder and the objects it reads);
    a working folder inside one of them (a read-only view of a commit) is not writable.
    """
    if sandbox is None:
        return None
    state = adapter.cli_state(spec.env)
    for folder in state.dirs:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the CLI cannot create it inside
    # What the CLI runs from must stay readable: its executable (or script) and, for the
    # Python the hook and the demo agents use, the interpreter and its import path.
    own = under_private_tmp([*spec.executable, sys.prefix, sys.base_prefix, *sys.path])
    viewed = any(_inside(spec.workdir, Path(d)) for d in read_only_dirs)
    folders = (*(() if viewed else (spec.workdir,)), *spec.extra_dirs, *state.dirs, *state.files)
    return Confinement(
        bwrap=sandbox.bwrap,
        writable=tuple(str(p) for p in folders),
        hidden=sandbox.hidden,
        readable=(*own, *sandbox.readable, *read_only_dirs),
        chdir=str(spec.workdir),
    )


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def shown_command(argv: tuple[str, ...], prompt: str) -> str:
    """The command line for the log, with the (long) prompt shortened."""
    short = (
        prompt if len(prompt) < 80 else prompt[:SHOWN_PROMPT_CHARS].replace("\n", " ") + f"... ({len(prompt)} chars)"
    )
    return shlex.join(short if a == prompt else a for a in argv)


__all__ = ["confinement", "launch_for_preflight", "launch_spec", "shown_command"]
