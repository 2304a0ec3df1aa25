"""The layout the design card fixes, by feature (issue 23).

- messages need only stdlib and pydantic; config only messages;
- ``actors/`` holds one folder per feature (its actor, helpers, wiring and commands) over a
  shared ground of folders named for what they hold; the shared ground imports no feature;
- a feature uses another only where ``FEATURE_USES`` says so and why, and those uses run one
  way (no cycle): no import runs back up, and nothing but the launcher imports ``actors/app``;
- no actor imports another (they talk by messages; only the start order in actors/app knows
  them all); every import of the project goes through its one installed namespace."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "meta_orchestrator"
SUBPACKAGES = ("actors", "messages", "config", "webui")

# Shared ground: what every feature stands on. It imports only itself, config and messages.
SHARED_GROUND = {
    "actors/files": "the files of a session on disk",
    "actors/supervision": "restarting crashed actors",
    "actors/processes": "child processes: groups, the process host, reader threads, the tree",
    "actors/adapters": "what each agent CLI speaks",
    "actors/sandbox": "the OS sandbox every run goes through, and its guard",
}
# Features, and the other features each may import, with the reason. A use not listed here
# fails: move the shared part down to the ground, talk by message, or list it with its reason.
FEATURE_USES: dict[str, dict[str, str]] = {
    "actors/session": {},
    "actors/workspaces": {},
    "actors/recovery": {},
    "actors/limits": {},
    "actors/notify": {},
    "actors/history": {"actors/workspaces": "the session index reads each session's workspace record"},
    "actors/reviews": {
        "actors/workspaces": "a review request carries the diff of the session's checkouts",
        "actors/session": "the review prompts share the coordinator's prompt headers",
    },
    "actors/cluster": {
        "actors/workspaces": "a remote run's folder travels by git bundles of the session's store",
        "actors/recovery": "a node is checked before use like this machine (preflight)",
    },
    "actors/console": {"actors/history": "`orchestrate follow` reads the event logs"},
    "actors/agents": {
        "actors/cluster": "a worker's process host may be a node's",
        "actors/history": "a worker records its events",
    },
    "webui": {"actors/history": "the dashboard pages and `orchestrate serve` read the event logs"},
    "actors/mcp": {
        "actors/history": "the tools read sessions, event pages and record answers as the subcommands do",
        "actors/workspaces": "apply_session and discard_session are `orchestrate apply` and `discard`",
        "webui": "a running session's answers and controls go to its dashboard's API, with its token header",
    },
}
TOP = "actors/app"  # the launcher and the start order: imports any feature, imported by none
FOLDERS = {*SHARED_GROUND, *FEATURE_USES, TOP, "config", "messages"}


def _project_sources() -> list[Path]:
    folders = [ROOT / name for name in (*SUBPACKAGES, "tests")]
    return [p for folder in folders for p in folder.rglob("*.py") if "node_modules" not in p.parts]


def _imports(path: Path) -> set[str]:
    """Every module a file imports; ``from package import module`` counts the module too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _folder_of_path(rel: str) -> str:
    parts = rel.split("/")
    return "/".join(parts[:2]) if parts[0] == "actors" and len(parts) > 2 else parts[0]


def _folder_of_module(module: str) -> str | None:
    """The folder of the project a dotted name lives in (None outside the project)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    if parts[1] == "actors":
        return f"actors/{parts[2]}" if len(parts) > 2 and (ROOT / "actors" / parts[2]).is_dir() else "actors"
    return parts[1]


def _product_files() -> dict[str, Path]:
    return {p.relative_to(ROOT).as_posix(): p for folder in SUBPACKAGES for p in (ROOT / folder).rglob("*.py")}


def _folder_uses() -> dict[str, dict[str, set[str]]]:
    """folder -> the other folders it imports -> the files that do."""
    uses: dict[str, dict[str, set[str]]] = {}
    for rel, path in _product_files().items():
        mine = _folder_of_path(rel)
        for module in _imports(path):
            theirs = _folder_of_module(module)
            if theirs not in (None, mine, "actors"):
                uses.setdefault(mine, {}).setdefault(theirs, set()).add(rel)
    return uses


def test_messages_need_only_the_standard_library_and_pydantic():
    allowed = set(sys.stdlib_module_names) | {"pydantic"}
    for path in (ROOT / "messages").glob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] not in allowed and not m.startswith(f"{PACKAGE}.messages")}
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_config_needs_only_messages():
    assert set(_folder_uses().get("config", {})) <= {"messages"}


def test_every_module_lives_in_a_known_folder():
    """A new folder in actors/ is a decision: shared ground or a feature, with what it may use."""
    for rel in _product_files():
        assert _folder_of_path(rel) in FOLDERS or rel == "actors/__init__.py", f"{rel}: not in a known folder"
    for folder in FOLDERS:
        assert (ROOT / folder).is_dir(), f"{folder} is gone: remove it here"


def test_the_shared_ground_imports_no_feature():
    uses = _folder_uses()
    for folder in SHARED_GROUND:
        above = {
            f: files for f, files in uses.get(folder, {}).items() if f not in {*SHARED_GROUND, "config", "messages"}
        }
        assert not above, f"{folder} (shared ground) imports {above}"


def test_a_feature_uses_another_only_as_listed():
    uses = _folder_uses()
    for feature, allowed in FEATURE_USES.items():
        others = {f: files for f, files in uses.get(feature, {}).items() if f in FEATURE_USES and f not in allowed}
        assert not others, f"{feature} imports {others}: not in FEATURE_USES[{feature!r}]"
        unused = set(allowed) - set(uses.get(feature, {}))
        assert not unused, f"FEATURE_USES[{feature!r}] lists {sorted(unused)}, no longer imported: remove it"


def test_no_import_runs_back_up():
    """The features' uses form no cycle, and only the launcher's folder imports actors/app."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(feature: str, path: tuple[str, ...]) -> None:
        if state.get(feature) == "done":
            return
        assert state.get(feature) != "open", f"a cycle: {' -> '.join((*path, feature))}"
        state[feature] = "open"
        for used in FEATURE_USES[feature]:
            visit(used, (*path, feature))
        state[feature] = "done"
        order.append(feature)

    for feature in sorted(FEATURE_USES):
        visit(feature, ())
    assert len(order) == len(FEATURE_USES)
    for folder, used in _folder_uses().items():
        assert folder == TOP or TOP not in used, f"{folder} imports {TOP}: {sorted(used[TOP])}"


def _actor_modules() -> dict[str, Path]:
    """The modules that define a pykka actor."""
    found = {}
    for rel, path in _product_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("ThreadingActor") for b in node.bases):
                found[rel] = path
    return found


def _module_name(rel: str) -> str:
    return f"{PACKAGE}." + rel.removesuffix(".py").replace("/", ".")


# Modules that start the actors of other features: the start order, and `orchestrate follow`'s view.
STARTERS = {"actors/console/follow.py"}


def test_no_actor_imports_another():
    """An actor module imports no other actor; a feature's other modules (its ``start``) import
    only its own actors; only the start order in actors/app imports them all."""
    actors = _actor_modules()
    assert {
        "actors/agents/worker.py",
        "actors/session/coordinator.py",
        "webui/gateway.py",
        "actors/reviews/reviewer.py",
        "actors/recovery/recovery.py",
        "actors/limits/resource_monitor.py",
        "actors/sandbox/sandbox_guard.py",
        "actors/supervision/supervisor.py",
        "actors/console/console.py",
        "actors/history/history.py",
        "actors/notify/notifier.py",
        "actors/workspaces/workspace.py",
    } == set(actors)
    names = {_module_name(rel): rel for rel in actors}
    for rel, path in _product_files().items():
        if rel in STARTERS or rel.startswith(f"{TOP}/"):
            continue
        imported = {names[m] for m in _imports(path) if m in names and names[m] != rel}
        others = {a for a in imported if rel in actors or _folder_of_path(a) != _folder_of_path(rel)}
        assert not others, f"{rel} imports the actor modules {sorted(others)}"


def test_each_feature_starts_through_its_start_module():
    """The start order imports a feature's start function, not its actor."""
    actors = {_module_name(rel) for rel in _actor_modules()}  # once: it parses every product file
    for path in (ROOT / TOP).glob("*.py"):
        direct = {m for m in _imports(path) if m in actors}
        assert not direct, f"{TOP}/{path.name} starts {sorted(direct)} itself: go through the feature's start module"


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
    # The bridge that runs codex's app-server as the run's process (its adapter builds the command).
    "actors/agents/codex_app_bridge.py",
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


# -- shape: no module over 700 lines; the ones past it are listed, to be cut by feature ---------

MAX_MODULE_LINES = 700
MODULE_EXCEPTIONS = {
    "actors/workspaces/workspaces.py": "the session's git store: SessionRepo and its checkouts",
    "actors/sandbox/policy.py": "the hook's whole policy in one place",
    "actors/agents/demo/common.py": "what the three demo CLIs share",
}


def test_no_module_over_700_lines():
    long = {
        rel
        for rel, path in _product_files().items()
        if len(path.read_text(encoding="utf-8").splitlines()) > MAX_MODULE_LINES
    }
    assert long <= set(MODULE_EXCEPTIONS), f"past {MAX_MODULE_LINES} lines: {sorted(long - set(MODULE_EXCEPTIONS))}"
    assert set(MODULE_EXCEPTIONS) <= long, f"within the cap now, remove: {sorted(set(MODULE_EXCEPTIONS) - long)}"
