"""A corpus of repository shapes, each built here with real git, each given a whole demo
session through the launcher (the OS sandbox on, as a user runs it); then, for each:

* the user's tree (every file's bytes and mode), ``.git`` (index, HEAD, refs, stash, config,
  objects) and everything else in the shape's folder are byte for byte as before;
* the session branch (in the session's store) holds exactly what the demo agents wrote,
  against the session's base: nothing deleted, nothing of the user's, no file left out
  that no ignore rule hides;
* ``orchestrate apply`` does what it says: the user's branch gains exactly those changes
  and nothing of theirs is lost (or it is refused, naming the fix, with nothing changed);
* ``orchestrate discard`` (on the shape as it was before apply) leaves it byte for byte as
  it was, and the session's store and checkouts gone.

Shapes git refuses are refused before anything starts, naming the fix, and leave no session
folder. The sessions of all the shapes selected run first, a few at a time (a demo session
is mostly waiting), so that the whole file takes about a minute.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from meta_orchestrator.actors.agents.demo.common import design_md, module_py, review_md, slugify, unit_test_py
from tests.conftest import kill_tree, popen_orchestrate, session_store
from tests.workspaces.test_workspace_sessions import TASK

SLUG = slugify(TASK)
PYC = sys.implementation.cache_tag
# What the demo agents write in their checkouts (relative to the target folder): the
# architect's design, the implementer's module and test (and the .pyc files its
# `python -m py_compile` makes), the reviewer's review (its text depends on what it read).
AGENT_FILES = (
    "docs/DESIGN.md",
    f"app/{SLUG}.py",
    f"tests/test_{SLUG}.py",
    f"app/__pycache__/{SLUG}.{PYC}.pyc",
    f"tests/__pycache__/test_{SLUG}.{PYC}.pyc",
    "docs/REVIEW.md",
)
IDENTITY = {
    "GIT_AUTHOR_NAME": "User",
    "GIT_AUTHOR_EMAIL": "user@example.com",
    "GIT_COMMITTER_NAME": "User",
    "GIT_COMMITTER_EMAIL": "user@example.com",
}
SESSIONS_AT_ONCE = 4
# The module's first test builds every shape and runs its session (each bounded by
# ``orchestrate``'s own deadline): minutes on a loaded machine, not the default 120 s.
pytestmark = pytest.mark.timeout(900)


# -- git, as the user runs it -----------------------------------------------------------------


class Env:
    """The environment of one shape: its own global git config (nothing from this machine's;
    the shape's own settings are written once it is built), for the builders (with an
    identity) and for the launcher (without one)."""

    def __init__(self, folder: Path, state: Path) -> None:
        self.config = folder / "gitconfig"
        self.config.write_text("")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATE_DEMO_SCENARIO", "GIT_"))}
        base.update(GIT_CONFIG_GLOBAL=str(self.config), GIT_CONFIG_NOSYSTEM="1", XDG_STATE_HOME=str(state))
        self.launcher = {**base, "ORCHESTRATE_DEMO_PACE": "0"}
        self.user = {**base, **IDENTITY, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def git(self, cwd: Path, *args: str, ok: tuple[int, ...] = (0,)) -> bytes:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=self.user, capture_output=True, timeout=120, stdin=subprocess.DEVNULL
        )
        assert done.returncode in ok, f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}"
        return done.stdout

    def text(self, cwd: Path, *args: str) -> str:
        return self.git(cwd, *args).decode("utf-8", "surrogateescape").strip()


def _write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _repo(env: Env, folder: Path, files: dict[str, str | bytes] | None = None, *init: str) -> Path:
    """A repository with one commit of ``files`` on main (``init``: more `git init` options)."""
    folder.mkdir(parents=True)
    env.git(folder, "init", "-q", "-b", "main", *init)
    for name, data in (files or {"README.md": "# project\n", "src/main.py": "print('hi')\n"}).items():
        _write(folder / name, data)
    env.git(folder, "add", "-A")
    env.git(folder, "commit", "-q", "-m", "start")
    return folder


# -- the shapes: each builder makes its repository under ``root`` and returns the target ----------


def plain(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    env.git(repo, "add", "run.sh")
    env.git(repo, "commit", "-q", "-m", "an executable")
    return repo


def uncommitted(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project", {"README.md": "# project\n", "lib/util.py": "VALUE = 1\n", "gone.txt": "x\n"})
    (repo / "README.md").write_text("# project\n\nthe user's own note\n")  # modified
    (repo / "lib" / "util.py").write_text("VALUE = 2  # staged by the user\n")
    env.git(repo, "add", "lib/util.py")  # staged
    (repo / "lib" / "util.py").write_text("VALUE = 3  # and changed again\n")  # staged, then changed
    (repo / "gone.txt").unlink()  # deleted, not staged
    (repo / "notes.txt").write_text("the user's untracked notes\n")  # untracked
    _write(repo / "app" / "scratch.py", "# the user's untracked file where the agents write\n")
    return repo


def detached(env: Env, root: Path) -> Path:
    repo = plain(env, root)
    env.git(repo, "checkout", "-q", "--detach", "HEAD~1")
    return repo


def linked_worktree(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    env.git(repo, "worktree", "add", "-q", "-b", "feature", str(root / "feature"))
    (root / "feature" / "README.md").write_text("# project\n\nworked on in the linked worktree\n")
    return root / "feature"


def subfolder(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "mono", {"README.md": "# mono\n", "services/api/main.py": "API = 1\n", "web/x.js": "1\n"})
    return repo / "services" / "api"


def _origin(env: Env, root: Path) -> Path:
    """A repository to clone from over file://: three commits, two folders."""
    origin = _repo(env, root / "origin", {"kept/file.txt": "in the sparse cone\n", "elsewhere/file.txt": "far\n"})
    env.git(origin, "config", "uploadpack.allowFilter", "true")
    for i in (1, 2):
        _write(origin / "kept" / f"more{i}.txt", f"commit {i}\n")
        env.git(origin, "add", "-A")
        env.git(origin, "commit", "-q", "-m", f"more {i}")
    return origin


def shallow_clone(env: Env, root: Path) -> Path:
    origin = _origin(env, root)
    env.git(root, "clone", "-q", "--depth", "1", origin.as_uri(), "clone")
    assert (root / "clone" / ".git" / "shallow").is_file()
    return root / "clone"


def partial_sparse_clone(env: Env, root: Path) -> Path:
    origin = _origin(env, root)
    env.git(root, "clone", "-q", "--filter=blob:none", "--sparse", origin.as_uri(), "clone")
    env.git(root / "clone", "sparse-checkout", "set", "kept")
    return root / "clone"


def with_submodule(env: Env, root: Path) -> Path:
    library = _repo(env, root / "library", {"lib.py": "LIB = 1\n"})
    repo = _repo(env, root / "project")
    env.git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", library.as_uri(), "vendor/library")
    env.git(repo, "commit", "-q", "-m", "the library as a submodule")
    assert (repo / "vendor" / "library" / "lib.py").is_file()
    return repo


def sha256(env: Env, root: Path) -> Path:
    return _repo(env, root / "project", None, "--object-format=sha256")


NON_UTF8 = b"caf\xe9-\xff.txt"


def non_utf8_names(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    (repo / os.fsdecode(NON_UTF8)).write_bytes(b"latin-1 name\n")
    (repo / os.fsdecode(b"dir\xe8")).mkdir()
    (repo / os.fsdecode(b"dir\xe8/inner\xfe.txt")).write_bytes(b"inner\n")
    env.git(repo, "add", "-A")
    env.git(repo, "commit", "-q", "-m", "non-UTF-8 names")
    (repo / os.fsdecode(b"untracked-\xe9.txt")).write_bytes(b"the user's, uncommitted\n")
    (repo / os.fsdecode(NON_UTF8)).write_bytes(b"latin-1 name, changed by the user\n")
    return repo


def gitignore_of_agent_files(env: Env, root: Path) -> Path:
    return _repo(env, root / "project", {"README.md": "# project\n", ".gitignore": "app/\n__pycache__/\n"})


def info_exclude(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("# the user's own\n*.pyc\n")
    return repo


def autocrlf(env: Env, root: Path) -> Path:
    repo = root / "project"
    repo.mkdir()
    env.git(repo, "init", "-q", "-b", "main")
    env.git(repo, "config", "core.autocrlf", "true")
    (repo / "README.md").write_bytes(b"# project\r\n\r\nwindows lines\r\n")
    env.git(repo, "add", "-A")
    env.git(repo, "commit", "-q", "-m", "start")
    assert env.git(repo, "cat-file", "-p", "HEAD:README.md") == b"# project\n\nwindows lines\n"  # stored LF
    return repo


def protocol_never(env: Env, root: Path) -> Path:
    return _repo(env, root / "project")  # the global config says protocol.allow=never


def gpgsign_without_key(env: Env, root: Path) -> Path:
    return _repo(env, root / "project")  # the global config asks for signed commits, no key exists


def mid_merge(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project", {"README.md": "# project\n", "shared.txt": "base\n"})
    env.git(repo, "checkout", "-q", "-b", "other")
    (repo / "shared.txt").write_text("theirs\n")
    env.git(repo, "commit", "-q", "-am", "theirs")
    env.git(repo, "checkout", "-q", "main")
    (repo / "shared.txt").write_text("ours\n")
    env.git(repo, "commit", "-q", "-am", "ours")
    env.git(repo, "merge", "-q", "other", ok=(1,))  # stops with a conflict
    assert (repo / ".git" / "MERGE_HEAD").is_file()
    return repo


def mid_rebase(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project", {"README.md": "# project\n", "shared.txt": "base\n"})
    env.git(repo, "checkout", "-q", "-b", "topic")
    (repo / "shared.txt").write_text("topic\n")
    env.git(repo, "commit", "-q", "-am", "topic")
    env.git(repo, "checkout", "-q", "main")
    (repo / "shared.txt").write_text("main\n")
    env.git(repo, "commit", "-q", "-am", "main")
    env.git(repo, "checkout", "-q", "topic")
    env.git(repo, "rebase", "-q", "main", ok=(1,))  # stops with a conflict
    assert (repo / ".git" / "rebase-merge").is_dir()
    return repo


def with_stash(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    for i in (1, 2):
        (repo / "README.md").write_text(f"# project\n\nidea {i}\n")
        (repo / f"untracked{i}.txt").write_text("stashed with -u\n")
        env.git(repo, "stash", "push", "-q", "-u", "-m", f"idea {i}")
    return repo


def many_refs(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    head = env.text(repo, "rev-parse", "HEAD")
    packed = "".join(f"create refs/tags/v1.{i} {head}\ncreate refs/heads/topic/{i} {head}\n" for i in range(1500))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=repo, env=env.user, input=packed.encode(), check=True)
    env.git(repo, "pack-refs", "--all")
    loose = "".join(f"create refs/tags/v2.{i} {head}\n" for i in range(500))
    subprocess.run(["git", "update-ref", "--stdin"], cwd=repo, env=env.user, input=loose.encode(), check=True)
    env.git(repo, "tag", "-a", "-m", "annotated", "v3.0")
    env.git(repo, "update-ref", "refs/notes/commits", head)
    return repo


def bare(env: Env, root: Path) -> Path:
    source = _repo(env, root / "source")
    env.git(root, "clone", "-q", "--bare", str(source), "project.git")
    shutil.rmtree(source)
    return root / "project.git"


def another_users(env: Env, root: Path) -> Path:
    repo = _repo(env, root / "project")
    subprocess.run(["chown", "-R", "12345:12345", str(repo)], check=True)  # git refuses it to root
    return repo


def no_git(env: Env, root: Path) -> Path:
    folder = root / "folder"
    for name, data in {"README.md": "# folder\n", "src/main.py": "print('hi')\n"}.items():
        _write(folder / name, data)
    (folder / "run.sh").write_text("#!/bin/sh\n")
    (folder / "run.sh").chmod(0o755)
    return folder


def no_commit(env: Env, root: Path) -> Path:
    folder = no_git(env, root)
    env.git(folder, "init", "-q", "-b", "main")
    return folder


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    build: Callable[[Env, Path], Path]
    global_config: str = ""
    refused: str | None = None  # the launcher refuses it; its message names this fix
    off_branch: tuple[str, ...] = ()  # agent files an ignore rule keeps off the branch
    kept_with_rule: str | None = None  # the end report names them with this rule
    apply: tuple[str, ...] = ()
    apply_refused: tuple[str, ...] = ()  # apply refuses, saying these (the reason, the fix)
    then_apply: tuple[str, ...] | None = None  # after the refusal, apply with these works
    fetched_first: bool = False  # refused after the session's objects came (unreferenced) into .git/objects
    crlf: bool = False  # the user's tree gets the files with CRLF line ends
    sparse: bool = False  # the agents' files are outside the user's sparse checkout
    folder: bool = False  # no commit: the session imports the folder (own repository)


PYCS = tuple(name for name in AGENT_FILES if name.endswith(".pyc"))
SHAPES: dict[str, Shape] = {
    "plain": Shape(plain),
    "uncommitted": Shape(uncommitted),
    "detached": Shape(detached, apply_refused=("HEAD is detached", "check out the branch")),
    "linked_worktree": Shape(linked_worktree),
    "subfolder": Shape(subfolder),
    "shallow_clone": Shape(shallow_clone),
    "partial_sparse_clone": Shape(partial_sparse_clone, sparse=True),
    "submodule": Shape(with_submodule),
    "sha256": Shape(sha256),
    "non_utf8_names": Shape(non_utf8_names),
    "gitignore": Shape(
        gitignore_of_agent_files,
        off_branch=(f"app/{SLUG}.py", *PYCS),
        kept_with_rule="app/ (.gitignore:1: app/)",
    ),
    "info_exclude": Shape(info_exclude, off_branch=PYCS),
    "autocrlf": Shape(autocrlf, crlf=True),
    "protocol_never": Shape(protocol_never, global_config="[protocol]\n\tallow = never\n"),
    "gpgsign_without_key": Shape(
        gpgsign_without_key,
        global_config="[commit]\n\tgpgSign = true\n[user]\n\tsigningKey = 0xDEADBEEFDEADBEEF\n",
        apply=("--squash",),  # a fast-forward makes no commit: a squash must be signed
        apply_refused=("signing failed", "nothing was changed", "apply with --no-sign"),
        fetched_first=True,
        then_apply=("--squash", "--no-sign"),
    ),
    "mid_merge": Shape(mid_merge, apply_refused=("in the middle of a merge; nothing was changed", "git merge --abort")),
    "mid_rebase": Shape(mid_rebase, apply_refused=("in the middle of a rebase", "git rebase --abort")),
    "stash": Shape(with_stash),
    "many_refs": Shape(many_refs),
    "bare": Shape(bare, refused="git worktree add"),
    "another_users": Shape(another_users, refused="git config --global --add safe.directory"),
    "no_git": Shape(no_git, folder=True),
    "no_commit": Shape(no_commit, folder=True),
}


# -- what is compared ---------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every entry under ``root``, by its path: its mode and its bytes (a link: its target)."""
    found: dict[str, tuple[int, bytes]] = {}
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                data = os.fsencode(os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = b""
            found[os.path.relpath(path, root)] = (info.st_mode, data)
    return found


def _differences(before: dict[str, tuple[int, bytes]], after: dict[str, tuple[int, bytes]]) -> list[str]:
    """The paths added, removed or changed (content or mode), named."""
    said = [f"added {p!r}" for p in sorted(after.keys() - before.keys())]
    said += [f"removed {p!r}" for p in sorted(before.keys() - after.keys())]
    said += [f"changed {p!r}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return said


def _worktree(snapshot: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, bytes]]:
    """The snapshot without what is inside git folders (and a linked worktree's .git file)."""
    return {p: v for p, v in snapshot.items() if ".git" not in PurePosixPath(p).parts}


def _git_state(env: Env, target: Path) -> dict[str, object]:
    """What git says of the user's repository: HEAD, branch, every ref, the stash, the index, status."""
    git_dir = Path(env.text(target, "rev-parse", "--absolute-git-dir"))
    index = git_dir / "index"
    return {
        "head": env.text(target, "rev-parse", "HEAD"),
        "branch": env.git(target, "symbolic-ref", "-q", "HEAD", ok=(0, 1)),
        "refs": env.git(target, "for-each-ref", "--format=%(objectname) %(refname)"),
        "stash": env.git(target, "stash", "list"),
        "index": index.read_bytes() if index.exists() else None,
        "status": env.git(target, "status", "--porcelain=v2", "-z", "--untracked-files=all"),
        "staged": env.git(target, "diff", "--cached", "--binary"),
        "unstaged": env.git(target, "diff", "--binary"),
    }


# -- the sessions: all selected shapes, a few at a time, before the first test -------------------


@dataclass
class Run:
    name: str
    shape: Shape
    env: Env
    root: Path
    target: Path
    ws: Path
    before: dict[str, tuple[int, bytes]]
    state: dict[str, object] | None
    done: subprocess.CompletedProcess | None = None
    folder: Path | None = None

    def orchestrate(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        proc = popen_orchestrate([*args, "--workspace", str(self.ws)], self.env.launcher)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(proc)  # the launcher and its agents (each in a group of its own)
            out, err = proc.communicate()
            raise AssertionError(f"orchestrate {args[0]} ({self.name}) did not end: {err[-3000:]}") from None
        return subprocess.CompletedProcess(args, proc.returncode, out, err)

    def session(self) -> None:
        self.done = self.orchestrate(TASK, "--demo", "--target", str(self.target), "--no-dashboard")
        folders = [p for p in self.ws.iterdir() if p.is_dir()] if self.ws.is_dir() else []
        assert len(folders) <= 1, folders
        self.folder = folders[0] if folders else None

    @property
    def record(self) -> dict[str, object]:
        assert self.folder is not None
        return json.loads((self.folder / "workspace.json").read_text())


def _selected(request: pytest.FixtureRequest) -> list[str]:
    """The shapes the tests of this module selected (-k ...) need a session of."""
    names = []
    for item in request.session.items:
        params = getattr(item, "callspec", None)
        if item.module is sys.modules[__name__] and params is not None and params.params.get("name") in SHAPES:
            names.append(params.params["name"])
    return list(dict.fromkeys(names))


@pytest.fixture(scope="module")
def shapes_root() -> Iterator[Path]:
    """The shapes live outside /tmp (private inside the OS sandbox), as a user's repositories do."""
    folder = Path(tempfile.mkdtemp(prefix="orch-corpus-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, shapes_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each selected shape built and given a demo session; every session has ended (no process
    of them left) before the first test asserts anything."""
    made: dict[str, Run] = {}
    for name in _selected(request):
        shape = SHAPES[name]
        folder = shapes_root / name
        folder.mkdir()
        env = Env(folder, folder / "state")  # the sessions it lists: its own
        root = folder / "shape"
        root.mkdir()
        target = shape.build(env, root)
        env.config.write_text(shape.global_config)
        state = None if shape.refused or shape.folder else _git_state(env, target)
        ws = tmp_path_factory.mktemp(f"ws-{name}")
        made[name] = Run(name, shape, env, root, target, ws, _snapshot(root), state)
    with ThreadPoolExecutor(max_workers=SESSIONS_AT_ONCE) as pool:
        for finished in [pool.submit(run.session) for run in made.values()]:
            finished.result()
    return made


# -- the branch: exactly what the agents wrote --------------------------------------------------


def _expected_text(name: str, on_branch: set[str]) -> str | None:
    """The text the demo agents write to ``name`` (None: a .pyc file, checked apart). The
    reviewer lists what it read of docs/DESIGN.md, app/*.py and tests/test_*.py."""
    if name == "docs/REVIEW.md":
        read = sorted(
            p
            for p in on_branch
            if p == "docs/DESIGN.md"
            or (PurePosixPath(p).parent.as_posix() == "app" and p.endswith(".py"))
            or (PurePosixPath(p).parent.as_posix() == "tests" and PurePosixPath(p).name.startswith("test_"))
        )
        return review_md(TASK, read)
    return {
        "docs/DESIGN.md": design_md(TASK, SLUG),
        f"app/{SLUG}.py": module_py(TASK, SLUG),
        f"tests/test_{SLUG}.py": unit_test_py(SLUG),
    }.get(name)


def _raw_diff(env: Env, git_dir: Path, old: str, new: str) -> dict[str, tuple[str, str, str]]:
    """``git diff --raw`` of two commits by path: (status, new mode, new object)."""
    fields = env.git(git_dir, "diff", "--raw", "-z", "--no-renames", "--no-abbrev", old, new).split(b"\0")
    changes = {}
    for meta, path in zip(fields[0:-1:2], fields[1::2], strict=True):
        _, mode, _, blob, status = meta.decode().lstrip(":").split(" ")
        changes[os.fsdecode(path)] = (status, mode, blob)
    return changes


def _assert_branch_holds_the_agents_writes(run: Run) -> None:
    record = run.record
    store = session_store(run.folder)  # type: ignore[arg-type]
    base, branch, prefix = str(record["base"]), str(record["branch"]), str(record.get("prefix") or "")
    listed = run.env.git(store, "ls-tree", "-r", "-z", "--name-only", branch).split(b"\0")
    in_target = {os.fsdecode(p).removeprefix(prefix) for p in listed if p and os.fsdecode(p).startswith(prefix)}
    expected = set(AGENT_FILES) - set(run.shape.off_branch)
    changes = _raw_diff(run.env, store, base, branch)
    assert set(changes) == {prefix + name for name in expected}, sorted(changes)
    assert {status for status, _, _ in changes.values()} == {"A"}  # added: nothing else changed or deleted
    assert {mode for _, mode, _ in changes.values()} == {"100644"}
    for name in expected:
        data = run.env.git(store, "cat-file", "blob", changes[prefix + name][2])
        text = _expected_text(name, in_target)
        if text is None:  # a .pyc of the module beside it: the compiler's header, the source's size
            source = _expected_text(name.replace("__pycache__/", "").replace(f".{PYC}.pyc", ".py"), in_target)
            assert data[:4] == importlib.util.MAGIC_NUMBER and source is not None
            assert int.from_bytes(data[12:16], "little") == len(source.encode()), name
        else:
            assert data.decode() == text, name


# -- the tests -----------------------------------------------------------------------------------

REFUSED = [name for name, shape in SHAPES.items() if shape.refused]
SESSIONS = [name for name, shape in SHAPES.items() if not shape.refused]


@pytest.mark.parametrize("name", REFUSED)
def test_a_shape_git_refuses_is_refused_before_anything_starts_naming_the_fix(runs: dict[str, Run], name: str) -> None:
    run = runs[name]
    assert run.done is not None
    assert run.done.returncode == 2, (run.done.returncode, run.done.stderr[-2000:])
    assert run.shape.refused in run.done.stderr and "Traceback" not in run.done.stderr, run.done.stderr[-2000:]
    assert _differences(run.before, _snapshot(run.root)) == []  # nothing landed in it
    assert run.folder is None or not (run.folder / "git").exists()  # no store, no checkout


@pytest.mark.parametrize("name", REFUSED)
def test_a_refused_shape_leaves_no_session_folder(runs: dict[str, Run], name: str) -> None:
    assert runs[name].folder is None


@pytest.mark.parametrize("name", SESSIONS)
def test_a_demo_session_leaves_the_shape_as_it_was_and_its_branch_holds_the_agents_writes(
    runs: dict[str, Run], name: str
) -> None:
    run = runs[name]
    assert run.done is not None and run.folder is not None
    assert run.done.returncode == 0, run.done.stderr[-3000:]
    assert "Traceback" not in run.done.stderr
    assert _differences(run.before, _snapshot(run.root)) == []  # the tree, .git, everything
    if run.state is not None:
        assert _git_state(run.env, run.target) == run.state
    _assert_branch_holds_the_agents_writes(run)
    if run.shape.kept_with_rule is not None:  # named at the end, and kept with its checkout
        [kept] = [line for line in run.done.stdout.splitlines() if "an ignore rule keeps off" in line]
        assert run.shape.kept_with_rule in kept
        [written] = list(run.folder.glob(f"checkouts/*/app/{SLUG}.py"))
        assert written.read_text() == module_py(TASK, SLUG)
    else:
        assert "an ignore rule keeps off" not in run.done.stdout


# -- apply and discard ---------------------------------------------------------------------------


def _refs(state: dict[str, object]) -> dict[str, str]:
    lines = bytes(state["refs"]).decode("utf-8", "surrogateescape").splitlines()  # type: ignore[arg-type]
    return {ref: obj for obj, ref in (line.split(" ", 1) for line in lines)}


def _checked_out(data: bytes, crlf: bool) -> bytes:
    """A file as git writes it into the user's tree (autocrlf: text with CRLF line ends)."""
    return data.replace(b"\n", b"\r\n") if crlf and b"\0" not in data else data


def _assert_applied(run: Run, squash: bool) -> None:
    """The user's branch gained exactly the session's changes (a fast-forward to the session's
    tip, or one squash commit on their HEAD) and nothing of theirs was lost: the other refs,
    the stash, the index's and the tree's own changes as they were."""
    state, after = run.state, _git_state(run.env, run.target)
    assert state is not None
    store, record = session_store(run.folder), run.record  # type: ignore[arg-type]
    tip = run.env.text(store, "rev-parse", str(record["branch"]))
    head, old = str(after["head"]), str(state["head"])
    assert after["branch"] == state["branch"]
    if squash:
        assert run.env.text(run.target, "rev-parse", f"{head}^@") == old  # one commit, on their HEAD
        assert run.env.text(run.target, "rev-parse", f"{head}^{{tree}}") == run.env.text(
            store, "rev-parse", f"{tip}^{{tree}}"
        )
        assert b"\ngpgsig" not in run.env.git(run.target, "cat-file", "commit", head)  # --no-sign: unsigned
    else:
        assert head == tip  # the base is their HEAD: a fast-forward
    gained = _raw_diff(run.env, run.target, old, head)
    assert gained == _raw_diff(run.env, store, str(record["base"]), tip)
    branch = bytes(state["branch"]).decode().strip()  # type: ignore[arg-type]
    assert {**_refs(after), branch: ""} == {**_refs(state), branch: ""}  # only their branch moved
    for mine in ("stash", "status", "staged", "unstaged"):
        assert after[mine] == state[mine], mine
    before, now = _worktree(run.before), _worktree(_snapshot(run.root))
    assert {p: now.get(p) for p in before} == before  # every file of theirs as it was
    top = Path(run.env.text(run.target, "rev-parse", "--show-toplevel"))
    where = top.relative_to(run.root)
    expected = set() if run.shape.sparse else {(where / name).as_posix() for name in gained}
    assert set(now) - set(before) - _folders_of(expected) == expected
    for name, (_, _, blob) in gained.items():
        if not run.shape.sparse:
            data = _checked_out(run.env.git(store, "cat-file", "blob", blob), run.shape.crlf)
            assert now[(where / name).as_posix()][1] == data, name


def _assert_written_back(run: Run) -> None:
    """A folder's session (no commit there): apply wrote exactly the session's files into the
    folder, and nothing else of it changed (a repository without a commit: its .git neither)."""
    store, record = session_store(run.folder), run.record  # type: ignore[arg-type]
    gained = _raw_diff(run.env, store, str(record["base"]), str(record["branch"]))
    before, now = run.before, _snapshot(run.root)
    assert {p: now.get(p) for p in before} == before
    where = run.target.relative_to(run.root)
    expected = {(where / name).as_posix() for name in gained}
    assert set(now) - set(before) - _folders_of(expected) == expected
    for name, (_, _, blob) in gained.items():
        assert now[(where / name).as_posix()][1] == run.env.git(store, "cat-file", "blob", blob), name


def _folders_of(paths: set[str]) -> set[str]:
    return {parent.as_posix() for p in paths for parent in PurePosixPath(p).parents if parent.as_posix() != "."}


def _apply_as_the_shape_says(run: Run) -> None:
    shape = run.shape
    args: tuple[str, ...] | None = shape.apply
    if shape.apply_refused:
        refused = run.orchestrate("apply", run.folder.name, *shape.apply)  # type: ignore[union-attr]
        assert refused.returncode == 1, (refused.returncode, refused.stderr[-2000:])
        assert [said for said in shape.apply_refused if said not in refused.stderr] == [], refused.stderr
        assert "Traceback" not in refused.stderr
        changed = _differences(run.before, _snapshot(run.root))
        if shape.fetched_first:  # objects only, referenced by nothing: their branch, index, tree as they were
            assert _git_state(run.env, run.target) == run.state
            changed = [said for said in changed if not said.startswith("added 'project/.git/objects/")]
        assert changed == []  # nothing was changed
        args = shape.then_apply
    if args is None:
        return
    applied = run.orchestrate("apply", run.folder.name, *args)  # type: ignore[union-attr]
    assert applied.returncode == 0, applied.stderr[-2000:]
    if shape.folder:
        _assert_written_back(run)
    else:
        _assert_applied(run, squash="--squash" in args)
    now = _snapshot(run.root)
    again = run.orchestrate("apply", run.folder.name, *args)  # type: ignore[union-attr]
    assert again.returncode == 0, again.stderr[-2000:]
    assert _differences(now, _snapshot(run.root)) == []  # already in: nothing, never an empty commit


@pytest.mark.parametrize("name", SESSIONS)
def test_apply_does_what_it_says_and_discard_leaves_the_shape_as_it_was(runs: dict[str, Run], name: str) -> None:
    """Apply on the shape, then the shape as it was before apply back in its place (moved, not
    copied: every file as it was) for discard."""
    run = runs[name]
    assert run.done is not None and run.done.returncode == 0 and run.folder is not None
    kept = run.root.with_name("before-apply")
    subprocess.run(["cp", "-a", str(run.root), str(kept)], check=True)
    try:
        _apply_as_the_shape_says(run)
    finally:
        shutil.rmtree(run.root)
        kept.rename(run.root)
    discarded = run.orchestrate("discard", run.folder.name)
    assert discarded.returncode == 0, discarded.stderr[-2000:]
    assert _differences(run.before, _snapshot(run.root)) == []
    assert not (run.folder / "git").exists() and not list(run.folder.glob("checkouts/*"))
