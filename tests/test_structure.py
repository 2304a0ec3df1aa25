"""The layout the design card fixes: messages need only stdlib and pydantic; no actor imports
another (they talk by messages; only the wiring in actors/app knows them all); every import
of the project goes through its one installed namespace, ``meta_orchestrator``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ACTOR_MODULES = {p.stem for p in (ROOT / "actors").glob("*.py") if p.stem != "__init__"}
PACKAGE = "meta_orchestrator"
SUBPACKAGES = ("actors", "messages", "config", "webui")
ACTORS = f"{PACKAGE}.actors."


def _project_sources() -> list[Path]:
    folders = [ROOT / name for name in (*SUBPACKAGES, "tests")]
    return [p for folder in folders for p in folder.rglob("*.py") if "node_modules" not in p.parts]


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
    allowed = set(sys.stdlib_module_names) | {"pydantic"}
    for path in (ROOT / "messages").glob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] not in allowed and not m.startswith(f"{PACKAGE}.messages")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_no_actor_imports_another():
    assert {
        "worker",
        "coordinator",
        "gateway",
        "reviewer",
        "recovery",
        "resource_monitor",
        "sandbox_guard",
        "supervisor",
        "console",
    } <= ACTOR_MODULES
    for name in ACTOR_MODULES:
        path = ROOT / "actors" / f"{name}.py"
        others = {m for m in _imports(path) if m.startswith(ACTORS) and m.split(".")[2] in ACTOR_MODULES - {name}}
        assert not others, f"actors/{name}.py imports {sorted(others)}"


def test_support_code_imports_no_actor():
    for folder in ("adapters", "runtime", "demo", "sandbox"):
        for path in (ROOT / "actors" / folder).glob("*.py"):
            actors = {m for m in _imports(path) if m.startswith(ACTORS) and m.split(".")[2] in ACTOR_MODULES}
            assert not actors, f"actors/{folder}/{path.name} imports {sorted(actors)}"


def test_top_level_layout():
    for entry in (
        "actors",
        "messages",
        "webui",
        "config",
        "tests",
        "setup.cfg",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "orchestrate",
        ".ci/run",
    ):
        assert (ROOT / entry).exists(), entry


def test_every_import_of_the_project_uses_its_namespace():
    """A bare ``import config`` would load PyPI's ``config`` (or nothing) once installed."""
    for path in _project_sources():
        bare = {m for m in _imports(path) if m.split(".")[0] in SUBPACKAGES}
        assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)} outside {PACKAGE}"
