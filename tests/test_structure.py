"""The layout the design card fixes: messages need only stdlib and pydantic; no actor imports
another (they talk by messages; only the wiring in actors/app knows them all)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACTOR_MODULES = {p.stem for p in (ROOT / "actors").glob("*.py") if p.stem != "__init__"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_messages_need_only_the_standard_library_and_pydantic():
    allowed = set(sys.stdlib_module_names) | {"pydantic", "messages"}
    for path in (ROOT / "messages").glob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] not in allowed}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_no_actor_imports_another():
    assert {"worker", "coordinator", "gateway", "reviewer", "recovery", "resource_monitor",
            "sandbox_guard", "supervisor", "console"} <= ACTOR_MODULES
    for name in ACTOR_MODULES:
        path = ROOT / "actors" / f"{name}.py"
        others = {m for m in _imports(path)
                  if m.startswith("actors.") and m.split(".")[1] in ACTOR_MODULES - {name}}
        assert not others, f"actors/{name}.py imports {sorted(others)}"


def test_support_code_imports_no_actor():
    for folder in ("adapters", "runtime", "demo", "sandbox"):
        for path in (ROOT / "actors" / folder).glob("*.py"):
            actors = {m for m in _imports(path)
                      if m.startswith("actors.") and m.split(".")[1] in ACTOR_MODULES}
            assert not actors, f"actors/{folder}/{path.name} imports {sorted(actors)}"


def test_top_level_layout():
    for entry in ("actors", "messages", "webui", "config", "tests", "setup.cfg",
                  "pyproject.toml", "README.md", "LICENSE", "orchestrate", ".ci/run"):
        assert (ROOT / entry).exists(), entry
