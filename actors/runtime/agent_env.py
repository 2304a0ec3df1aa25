"""Which of the orchestrator's environment variables an agent CLI receives: an allowlist.

A CLI gets what every CLI needs (``BASE_ENV``: PATH, HOME, locale, terminal, proxies, CA
bundles), its vendor's keys, endpoints and settings (the adapter's ``env_patterns``), the
demo agents' scenario variables, and the names the user adds with ``[agents.<name>]
pass_env``. Everything else (a GitHub token, cloud keys, the SSH agent's and the desktop
bus's sockets) stays behind. ``[agents.<name>] env`` values and the run's own markers are
set on top by the launch (``cli_launch.launch_spec``). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.config.settings import AgentSettings

# The orchestrator's own variables a run may read: the demo agents' scenario and pacing.
# (The session marker and the run's folder are set per run, not passed.)
ORCHESTRATOR_ENV: tuple[str, ...] = ("ORCHESTRATE_DEMO_*",)


def env_patterns(adapter: AgentAdapter, settings: AgentSettings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Every name or ``*``/``?`` glob that passes for this agent."""
    return (*adapter.env_patterns(environ, settings.extra_args), *ORCHESTRATOR_ENV, *settings.pass_env)


def allowed(name: str, patterns: Iterable[str]) -> bool:
    """Does ``name`` match one of ``patterns`` (case-sensitive, as the environment is)?"""
    return any(name == p or fnmatchcase(name, p) for p in patterns)


def agent_env(adapter: AgentAdapter, settings: AgentSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` this agent's CLI receives."""
    patterns = env_patterns(adapter, settings, environ)
    return {name: value for name, value in environ.items() if allowed(name, patterns)}


def describe_env(agent: str, passed: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """One log line: the names that pass (never their values) and how many stay behind."""
    names = ", ".join(sorted(passed)) or "nothing"
    dropped = len(set(environ) - set(passed))
    return f"{agent} receives from this environment: {names} ({dropped} other variables withheld)"


__all__ = ["ORCHESTRATOR_ENV", "agent_env", "allowed", "describe_env", "env_patterns"]
