"""The adapters by agent name: the one place that knows which CLIs exist.

Adding a CLI is one adapter module (its command line, stream parser and knowledge; see
``base.AgentAdapter``), its demo agent, and one line in ``ADAPTERS``. A test (or a plug-in)
can also ``register`` an adapter at run time.
"""

from __future__ import annotations

import re

from collections.abc import Mapping
from typing import Any

from meta_orchestrator.actors.adapters.acp import AcpDriven, ConfiguredAcpAdapter
from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.adapters.claude import ClaudeAdapter
from meta_orchestrator.actors.adapters.codex import CodexAdapter
from meta_orchestrator.actors.adapters.copilot import CopilotAdapter
from meta_orchestrator.actors.adapters.gemini import GeminiAdapter
from meta_orchestrator.actors.adapters.qwen import QwenAdapter
from meta_orchestrator.actors.adapters.opencode import OpencodeAdapter

# Adapters are stateless (parsers hold the per-run state), so one instance each is shared.
ADAPTERS: dict[str, AgentAdapter] = {
    "claude": ClaudeAdapter(),
    "codex": CodexAdapter(),
    "gemini": GeminiAdapter(),
    "copilot": CopilotAdapter(),
    "qwen": QwenAdapter(),
    "opencode": OpencodeAdapter(),
}
_BUILT_IN = frozenset(ADAPTERS)

# The same rule as messages.base.AgentName: the name is a file name and a config table key.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def get_adapter(name: str) -> AgentAdapter:
    """The adapter for ``name``.

    Raises:
        KeyError: ``name`` is not one of the known agents.
    """
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown agent {name!r}; known: {', '.join(ADAPTERS)}") from None


def agent_names() -> tuple[str, ...]:
    """Every known agent, in registration order."""
    return tuple(ADAPTERS)


def register(adapter: AgentAdapter) -> None:
    """Make one more CLI known (a plug-in or a test); its name must be new.

    Raises:
        ValueError: the name is taken or is not a valid agent name.
    """
    if not _NAME.match(adapter.name):
        raise ValueError(f"agent name {adapter.name!r} must match {_NAME.pattern}")
    if adapter.name in ADAPTERS:
        raise ValueError(f"agent {adapter.name!r} is already registered")
    ADAPTERS[adapter.name] = adapter


def unregister(name: str) -> None:
    """Forget an adapter added with ``register`` (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"{name} is built in")
    ADAPTERS.pop(name, None)


def hooked_agent() -> AgentAdapter | None:
    """The CLI that takes the sandbox's tool hook in a settings file, if one is known."""
    return next((a for a in ADAPTERS.values() if a.hook_settings_flag), None)


def driven(name: str, protocol: str | None) -> AgentAdapter:
    """The adapter for ``name`` driven as ``[agents.<name>] protocol`` says (None: its own first way).

    Raises:
        KeyError: ``name`` is not one of the known agents.
        ValueError: the CLI is not known to speak that protocol.
    """
    adapter = get_adapter(name)
    chosen = adapter.protocol_for(protocol)  # raises ValueError for one it does not speak
    # ACP is a wrapper around a CLI's own (stream) adapter; app-server and stream are the
    # adapter's own, and an adapter made for ACP (a configured one, a wrapper) is its own.
    native = isinstance(adapter, (AcpDriven, ConfiguredAcpAdapter))
    return AcpDriven(adapter) if chosen == "acp" and not native else adapter


def register_configured(agents: Mapping[str, Any]) -> list[str]:
    """Make every ``[agents.<name>] protocol = "acp"`` table that names no known CLI an agent
    (``ConfiguredAcpAdapter``); one configured before under that name is replaced. Returns the names."""
    made = []
    for name, settings in agents.items():
        if getattr(settings, "protocol", None) != "acp" or name in _BUILT_IN:
            continue
        current = ADAPTERS.get(name)
        if current is not None and not isinstance(current, ConfiguredAcpAdapter):
            continue  # a plug-in registered in code keeps its own adapter
        if not settings.command:
            raise ValueError(f'[agents.{name}] protocol = "acp" needs the command that starts it speaking ACP')
        ADAPTERS.pop(name, None)
        register(
            ConfiguredAcpAdapter(
                name, settings.command, settings.state_dirs, settings.state_copy, settings.install_hint
            )
        )
        made.append(name)
    return made
