"""The adapters by agent name: the one place that knows which CLIs exist."""

from __future__ import annotations

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.adapters.claude import ClaudeAdapter
from meta_orchestrator.actors.adapters.codex import CodexAdapter
from meta_orchestrator.actors.adapters.gemini import GeminiAdapter

# Adapters are stateless (parsers hold the per-run state), so one instance each is shared.
ADAPTERS: dict[str, AgentAdapter] = {
    "claude": ClaudeAdapter(),
    "codex": CodexAdapter(),
    "gemini": GeminiAdapter(),
}


def get_adapter(name: str) -> AgentAdapter:
    """The adapter for ``name``.

    Raises:
        KeyError: ``name`` is not one of the known agents.
    """
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"unknown agent {name!r}; known: {', '.join(ADAPTERS)}") from None
