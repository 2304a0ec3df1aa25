"""``orchestrate agents``: what every registered CLI can do on this machine.

For each adapter of the registry (the built-in ones and any registered since): installed or
not (its path), its version (``--version``, each bounded and all run at once), credentials
found or not (the variable or file that holds them, never the value), the OS sandbox ready or
not (bwrap usable; the CLI's state folders), the protocols it can be driven by, and why when
something is missing. The checks are preflight's (``check_cli``, ``check_os_sandbox``); the
rules deciding what counts as a credential are pure (``credential_names``).
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.adapters.registry import agent_names, get_adapter
from meta_orchestrator.actors.recovery.preflight import PreflightError, check_cli, check_os_sandbox
from meta_orchestrator.config.settings import Settings

VERSION_TIMEOUT_S = 5.0
# A vendor variable holds a credential when its name says so (ANTHROPIC_API_KEY,
# CLAUDE_CODE_OAUTH_TOKEN, COPILOT_PROVIDER_API_KEY...); the others are endpoints and settings.
_CREDENTIAL_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIALS")


@dataclass(frozen=True)
class StateFolder:
    path: str
    exists: bool


@dataclass(frozen=True)
class CliReport:
    """One CLI as found here; ``problems`` says why when something is missing."""

    name: str
    command: str
    installed: bool
    path: str | None
    version: str | None
    credentials: tuple[str, ...]  # names of the variables set and files present, never values
    credentials_needed: str
    sandbox_ready: bool
    state_folders: tuple[StateFolder, ...]
    protocols: tuple[str, ...]
    enabled: bool
    problems: tuple[str, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def credential_names(adapter: AgentAdapter, env: Mapping[str, str], home: Path) -> tuple[str, ...]:
    """The credential variables of the CLI's vendor set in ``env``, then its token files that
    exist under ``home`` (as ``~/...``)."""
    found = [
        name
        for name, value in sorted(env.items())
        if value
        and any(word in name for word in _CREDENTIAL_WORDS)
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in adapter.vendor_env)
    ]
    for place in adapter.cli_state({**env, "HOME": str(home)}).places:
        for relative in place.credentials:
            path = place.real / relative if place.folder else place.real
            if path.is_file():
                found.append(f"~/{path.relative_to(home)}" if home in path.parents else str(path))
    return tuple(found)


def survey(settings: Settings, env: Mapping[str, str]) -> list[CliReport]:
    """Every registered CLI, its version checks run in parallel, each within VERSION_TIMEOUT_S."""
    names = agent_names()
    sandbox_problem = _sandbox_problem(settings, env)
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(lambda name: _report(name, settings, env, sandbox_problem), names))


def _sandbox_problem(settings: Settings, env: Mapping[str, str]) -> str | None:
    if settings.sandbox.os == "off":
        return 'sandbox.os = "off": the CLIs would run without the OS sandbox'
    try:
        bwrap = check_os_sandbox(settings.sandbox, demo=False, env=dict(env))
    except PreflightError as exc:
        return str(exc).splitlines()[0]
    return None if bwrap else "no OS sandbox on this platform"


def _report(name: str, settings: Settings, env: Mapping[str, str], sandbox_problem: str | None) -> CliReport:
    adapter = get_adapter(name)
    agent = settings.agents.get(name)
    argv = tuple(shlex.split(agent.command)) if agent and agent.command else (adapter.default_executable,)
    path = shutil.which(argv[0], path=env.get("PATH")) if os.sep not in argv[0] else argv[0]
    check = check_cli(name, adapter, argv, dict(env), timeout_s=VERSION_TIMEOUT_S)
    home = Path(env.get("HOME") or Path.home())
    found = credential_names(adapter, env, home)
    problems = []
    if check.problem:
        problems.append(f"{check.problem}; install: {adapter.install_hint()}")
    if not found:
        problems.append(f"no credentials found: set {adapter.credentials}")
    if sandbox_problem:
        problems.append(sandbox_problem)
    folders = tuple(
        StateFolder(str(p.real), p.real.exists()) for p in adapter.cli_state({**env, "HOME": str(home)}).places
    )
    return CliReport(
        name=name,
        command=shlex.join(argv),
        installed=path is not None and os.access(path, os.X_OK),
        path=path,
        version=check.version,
        credentials=found,
        credentials_needed=adapter.credentials,
        sandbox_ready=sandbox_problem is None,
        state_folders=folders,
        protocols=tuple(adapter.protocols),
        enabled=bool(agent and agent.enabled),
        problems=tuple(problems),
    )


def render_text(reports: Sequence[CliReport]) -> str:
    """The survey as the user reads it: one block per CLI."""
    blocks = []
    for r in reports:
        mark = "ok" if not r.problems else "missing: " + str(len(r.problems))
        lines = [f"{r.name}  ({mark}){'' if r.enabled else '  [disabled in the config]'}"]
        lines.append(f"  installed    {'yes, ' + (r.path or r.command) if r.installed else 'no (' + r.command + ')'}")
        lines.append(f"  version      {r.version or '-'}")
        found = ", ".join(r.credentials) if r.credentials else f"none found (it needs {r.credentials_needed})"
        lines.append(f"  credentials  {found}")
        state = ", ".join(f"{f.path}{'' if f.exists else ' (not yet)'}" for f in r.state_folders) or "-"
        lines.append(f"  sandbox      {'ready' if r.sandbox_ready else 'not ready'}; state: {state}")
        lines.append(f"  protocols    {', '.join(r.protocols)}")
        lines.extend(f"  why          {p}" for p in r.problems)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


__all__ = ["CliReport", "credential_names", "render_text", "survey"]
