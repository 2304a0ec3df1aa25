"""Which of the orchestrator's environment variables an agent CLI receives: an allowlist.

A CLI gets what every CLI needs (``BASE_ENV``: PATH, HOME, locale, terminal, proxies, CA
bundles), its vendor's keys, endpoints and settings (the adapter's ``env_patterns``), the
demo agents' scenario variables, and the names the user adds with ``[agents.<name>]
pass_env``. Everything else (a GitHub token, cloud keys, the SSH agent's and the desktop
bus's sockets) stays behind. ``[agents.<name>] env`` values and the run's own markers are
set on top by the launch (``cli_launch.launch_spec``). Pure: no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from fnmatch import translate

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.config.settings import AgentSettings

# What the orchestrator's own programs inside a run need: the demo agents' scenario and
# pacing, and the import path by which they and claude's tool hook find this package (an
# install through PYTHONPATH). The session marker and the run's folder are set per run.
ORCHESTRATOR_ENV: tuple[str, ...] = ("ORCHESTRATE_DEMO_*", "PYTHONPATH")


def env_patterns(adapter: AgentAdapter, settings: AgentSettings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Every name or ``*``/``?`` glob that passes for this agent."""
    return (*adapter.env_patterns(environ, settings.extra_args), *ORCHESTRATOR_ENV, *settings.pass_env)


def allowed(name: str, patterns: Iterable[str]) -> bool:
    """Does ``name`` match one of ``patterns`` (case-sensitive, as the environment is)?"""
    return _matcher(tuple(patterns))(name) is not None


def agent_env(adapter: AgentAdapter, settings: AgentSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` this agent's CLI receives."""
    matches = _matcher(env_patterns(adapter, settings, environ))
    return {name: value for name, value in environ.items() if matches(name) is not None}


@functools.lru_cache(maxsize=64)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match[str] | None]:
    # Every pattern in one expression, compiled once per set of patterns: a run's start
    # tested each variable against each glob in turn (a millisecond a run with 40 patterns).
    if not patterns:
        return lambda _name: None
    return re.compile("|".join(translate(p) for p in patterns)).match


def describe_env(
    agent: str, passed: Mapping[str, str], environ: Mapping[str, str], configured: Iterable[str] = ()
) -> str:
    """One log line: the names that pass and those its settings set (never a value), and how
    many stay behind."""
    names = ", ".join(sorted(passed)) or "nothing"
    dropped = len(set(environ) - set(passed))
    line = f"{agent} receives from this environment: {names} ({dropped} other variables withheld)"
    return f"{line}; set by [agents.{agent}] env: {', '.join(sorted(configured))}" if configured else line


__all__ = ["ORCHESTRATOR_ENV", "agent_env", "allowed", "describe_env", "env_patterns"]
