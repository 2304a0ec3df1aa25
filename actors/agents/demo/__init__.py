"""Demo agents: stand-ins for the ``claude``, ``codex``, ``gemini`` and ``qwen`` CLIs, identical on the wire.

Run as ``python -m meta_orchestrator.actors.agents.demo <claude|codex|gemini|qwen> <the real CLI's arguments>``.
They need no credentials or network: the built-in demo and the test suite's fake CLIs. Behaviour comes from
the prompt's ``Kind:``/``Role:``/``Task:`` lines; failure modes from ``ORCHESTRATE_DEMO_SCENARIO``
(see ``actors.agents.demo.common.SCENARIOS``).
"""

AGENTS = ("claude", "codex", "gemini", "copilot", "qwen", "opencode")
