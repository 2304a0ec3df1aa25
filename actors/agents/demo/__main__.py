"""``python -m meta_orchestrator.actors.agents.demo <agent> [args...]``: run one demo agent CLI."""

from __future__ import annotations

import importlib
import sys

from meta_orchestrator.actors.agents.demo import AGENTS
from meta_orchestrator.actors.agents.demo.common import SCENARIOS, guarded


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in AGENTS:
        sys.stderr.write(
            f"usage: python -m meta_orchestrator.actors.agents.demo {{{','.join(AGENTS)}}} [the CLI's own arguments]\n"
            "scenarios (ORCHESTRATE_DEMO_SCENARIO[_<AGENT>]):\n"
            + "".join(f"  {name:20} {text}\n" for name, text in SCENARIOS.items())
        )
        return 2
    module = importlib.import_module(f"meta_orchestrator.actors.agents.demo.{argv[0]}")
    return guarded(module.main, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
