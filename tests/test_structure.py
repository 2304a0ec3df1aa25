"""The layout the design card fixes: messages need only stdlib and pydantic; no actor imports
another (they talk by messages; only the wiring in actors/app knows them all); every import
of the project goes through its one installed namespace, ``meta_orchestrator``."""

from __future__ import annotations

import ast
import re
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


# Where a CLI's name may still appear as data outside its adapter, and why.
CLI_NAME_EXCEPTIONS = {
    # The default team: shares and roles of the three built-in agents.
    "config/settings.py",
    "messages/base.py",
    # The role table's fallback order names the built-in agents per role.
    "actors/session/coordinator.py",
    # The program's --help describes the default team.
    "actors/app/launcher.py",
}
_CLI_NAME = re.compile(r"\b(claude|codex|gemini)\b", re.IGNORECASE)


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """Every string constant except docstrings (prose may name a CLI as an example)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_the_adapters_and_demo_agents_name_a_cli():
    """Per-CLI knowledge lives with its adapter: a string naming a CLI anywhere else is a
    flag, a path or an error message that belongs there."""
    offenders = []
    for folder in SUBPACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(("actors/adapters/", "actors/agents/demo/")) or rel in CLI_NAME_EXCEPTIONS:
                continue
            for node in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
                if _CLI_NAME.search(node.value):
                    offenders.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
    assert not offenders, "\n".join(offenders)


# -- shape: no class of the product over 400 lines, no function over 80 (issue 12) -------------

MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 80
# Modules allowed past the caps (none: the coordinator's rules moved into actors/session/core).
SHAPE_EXCEPTIONS: frozenset[str] = frozenset()
MAX_COORDINATOR_LINES = 300  # the switchboard only: the rules are in the session core


def _oversized(source: str) -> list[tuple[str, str, int]]:
    """(kind, qualified name, lines) of every class and function past its cap, nested ones too."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                is_class = isinstance(child, ast.ClassDef)
                if lines > (MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES):
                    found.append(("class" if is_class else "function", name, lines))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _product_modules() -> dict[str, Path]:
    return {path.relative_to(ROOT).as_posix(): path for folder in SUBPACKAGES for path in (ROOT / folder).rglob("*.py")}


def test_no_class_over_400_lines_and_no_function_over_80():
    modules = _product_modules()
    assert {"actors/agents/worker.py", "messages/base.py", "webui/app.py", "config/settings.py"} <= set(modules)
    offenders = [
        f"{rel}: {kind} {name} has {lines} lines"
        for rel, path in sorted(modules.items())
        if rel not in SHAPE_EXCEPTIONS
        for kind, name, lines in _oversized(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "\n".join(offenders)


def test_the_coordinator_is_a_switchboard():
    tree = ast.parse((ROOT / "actors" / "session" / "coordinator.py").read_text(encoding="utf-8"))
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Coordinator"]
    assert (cls.end_lineno or cls.lineno) - cls.lineno + 1 < MAX_COORDINATOR_LINES


def test_each_shape_exception_is_still_needed():
    """An exception that no longer exceeds a cap is deleted, so the caps hold there too."""
    modules = _product_modules()
    for rel in SHAPE_EXCEPTIONS:
        assert rel in modules, f"{rel} is gone: remove it from SHAPE_EXCEPTIONS"
        assert _oversized(modules[rel].read_text(encoding="utf-8")), f"{rel} is within the caps now: remove it"


def test_the_shape_measure_sees_nested_and_async_definitions():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    method = f"    async def long(self):\n{body.replace('    x', '        x')}\n"
    source = (
        f"def fits():\n{body[: body.rfind(chr(10))]}\n\n"  # exactly at the cap
        f"class Small:\n{method}\n"
        f"class Big:\n" + "\n".join(f"    y{i} = {i}" for i in range(MAX_CLASS_LINES)) + "\n"
    )
    assert _oversized(source) == [
        ("function", "Small.long", MAX_FUNCTION_LINES + 1),
        ("class", "Big", MAX_CLASS_LINES + 1),
    ]


# The cluster path (the optional extra ``cluster``): the only product modules that import ray,
# and imported by no other product module, so that without ray installed nothing changes;
# the launcher's cluster wiring imports it only inside the functions ``--cluster`` calls.
RAY_MODULES = {"actors/cluster/remote_host.py", "actors/cluster/cluster_host.py"}
LAZY_CLUSTER_MODULES = {"actors/cluster/cluster_wiring.py"}


def test_only_the_cluster_path_imports_ray():
    for folder in SUBPACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            imports = _imports(path)
            if rel in RAY_MODULES:
                continue
            assert not {m for m in imports if m.split(".")[0] == "ray"}, f"{rel} imports ray"
            if rel in LAZY_CLUSTER_MODULES:
                imports = _top_level_imports(path)
            cluster = {m for m in imports if m.endswith((".remote_host", ".cluster_host"))}
            assert not cluster, f"{rel} imports {sorted(cluster)}: ray would be needed"
    for rel in LAZY_CLUSTER_MODULES:
        lazy = {m for m in _imports(ROOT / rel) if m.endswith((".remote_host", ".cluster_host"))}
        assert lazy, f"{rel} no longer imports the cluster path: drop it from LAZY_CLUSTER_MODULES"


def _top_level_imports(path: Path) -> set[str]:
    """The modules a file imports when it is imported itself (not inside its functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found
