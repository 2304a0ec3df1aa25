"""How claude runs the sandbox's PreToolUse hook: its command, its settings file, what it reads.

Claude 2.1 runs a command hook as ``/bin/sh -c <command>`` in its own environment and blocks
the call only on exit 2 (stderr becomes the reason) or a JSON ``deny``; any other failure (exit
1, an interpreter that is missing or cannot import the hook, a hook past its timeout) lets the
call through. So the command

* starts this process's interpreter by its absolute path, isolated (``-I``: no ``PYTHON*``
  variables, no user site, neither the working folder nor a script's folder on ``sys.path``),
  so no module the agent plants and no variable it sets decides which code answers;
* ends in exit 2 with a reason whenever the interpreter fails to start or the hook fails to
  import (``|| { ...; exit 2; }``); past that point the hook itself answers ``deny`` on error;
* tells the hook its deadline, shorter than claude's timeout, after which it denies.

The settings file holds this hook, ``disableAllHooks: false`` and an ``env`` that pins the
variables deciding what runs before the hook's Python does. Claude is started with
``--setting-sources ""`` (the adapter's ``hook_settings_args``), so the user, project and local
settings files, all of which an agent can write, are not read at all: none of them can turn
hooks off, swap the hook's shell (``env.CLAUDE_CODE_SHELL_PREFIX``) or enter safe mode. The
``env`` of ``~/.claude.json`` (also writable inside) is applied whatever the sources are, but
before the settings file's: the pinned variables keep the orchestrator's values.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HOOK_MODULE = "meta_orchestrator.actors.sandbox.hook"
DEADLINE_MARGIN_S = 10  # the hook denies this long before claude would give up on it
# What the dynamic loader and a shell read before any of the hook's code runs.
LOADER_ENV = ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "BASH_ENV", "ENV")


def hook_command(
    policy_file: Path, policy_sha256: str = "", python: str = sys.executable, deadline_s: float | None = None
) -> str:
    """The shell command claude runs for each tool call.

    The policy's hash rides in the command, which claude reads once at start: a policy
    rewritten later (where the OS sandbox does not make it read-only) denies every call.
    """
    if not os.path.isabs(python):
        raise ValueError(f"the hook's interpreter must be an absolute path, not {python!r}")
    args = [python, "-I", "-m", HOOK_MODULE, "--policy", str(policy_file)]
    if policy_sha256:
        args += ["--policy-sha256", policy_sha256]
    if deadline_s is not None:
        args += ["--deadline-s", f"{deadline_s:g}"]
    failed = "the orchestrator's sandbox hook could not run (exit $?), so the call is blocked"
    return f'{shlex.join(args)} || {{ echo "{failed}" >&2; exit 2; }}'


def pinned_env(launch_env: Mapping[str, str], off_switches: Sequence[str] = ()) -> dict[str, str]:
    """The settings file's ``env``: the loader's variables as the orchestrator launches the CLI
    (empty when unset), and the CLI's own hook off-switches empty."""
    return {**{name: launch_env.get(name, "") for name in LOADER_ENV}, **dict.fromkeys(off_switches, "")}


def claude_settings(command: str, timeout_s: float, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``--settings`` JSON: one PreToolUse command hook for every tool, hooks on, ``env``.

    ``disableAllHooks: false`` outranks the same key in the user, project and local settings
    (flag settings merge after them) should any of those be loaded after all.
    """
    return {
        "env": dict(env or {}),
        "disableAllHooks": False,
        "hooks": {
            "PreToolUse": [
                {"matcher": "*", "hooks": [{"type": "command", "command": command, "timeout": int(timeout_s)}]}
            ]
        },
    }


def hook_deadline_s(timeout_s: float) -> float:
    """When the hook stops waiting and denies, given claude's timeout for it."""
    return max(1.0, timeout_s - DEADLINE_MARGIN_S)


def hook_read_paths() -> tuple[str, ...]:
    """What the hook reads to start: the interpreter, its standard library and site-packages,
    and the package's own source folders (an editable install's source is not on ``sys.path``:
    its finder in site-packages maps the package there)."""
    import meta_orchestrator.actors as actors  # the hook's package; already imported here

    return (sys.executable, sys.prefix, sys.base_prefix, *sys.path, *actors.__path__)


__all__ = [
    "HOOK_MODULE",
    "LOADER_ENV",
    "claude_settings",
    "hook_command",
    "hook_deadline_s",
    "hook_read_paths",
    "pinned_env",
]
