"""Isolated workspaces: a session works on its own branch, each writing assignment in its own
checkout; the user's working tree, index, HEAD, current branch and stash are never touched.

A session's branch, ``orchestrate/<session_id>``, and every object its agents made live in a
store of the session's own, ``<session>/git/session.git``: a bare repository (0700) whose
``objects/info/alternates`` names the user's object folder, so nothing of the user's is
copied and nothing of the session's is written into the user's repository. The branch starts
at the base (HEAD's commit, or a snapshot of the user's uncommitted files on top of it, made
in the store) and moves only by fetching a commit from a checkout into that ref (a
fast-forward). Merges are computed without a working tree (``git merge-tree --write-tree``).
``apply_session`` (``orchestrate apply``) is when the user's repository gains the session's
commits (fetched from the store, then merged or fast-forwarded); ``discard_session``
(``orchestrate discard``) removes the store with the checkouts, so the user's ``.git`` is as
it was. A session of the older layout (workspace.json without ``store``) has its branch in
the user's repository; it resumes, applies and discards as before.

In the session folder::

  workspace.json              base, branch, checkouts and merges (WorkspaceRecord)
  git/session.git/            the store: the session branch and its objects (bare)
  checkouts/<assignment>/     an assignment's working tree, on orchestrate/<session>/<assignment>
  views/<name>/               a read-only checkout of exactly one commit (planning, reviews)
  git/checkouts/<assignment>/ the git folder of each (the tree's .git is a file pointing here)
  git/views/<name>/

Why not ``git worktree``: a linked worktree shares the user's ``.git`` (refs, config, hooks),
so an agent could move or delete the user's branches. Each checkout is instead a repository
of its own whose ``objects/info/alternates`` names the store's object folder (and through it
the user's), as ``git clone --shared`` makes, minus the copy of the user's refs and the ``origin`` remote pointing back:
making one costs one ``git init`` and one ``git checkout``, no object is copied, and nothing
of it can write to the user's repository.

Why the git folder sits outside the tree: the orchestrator runs git (add, commit, merge) in
each checkout outside the sandbox. A ``.git/config`` or hook an agent could write would run
its commands there (``core.fsmonitor``, a filter driver, a hook), so the git folder is the
orchestrator's (agents get it read-only), every call names it (``--git-dir``), and its config
must still hash as written. Every call also runs with ``CHECKOUT_CONFIG`` (hooks, fsmonitor,
pager and signing off; never into a submodule or nested repository) and, when the agents run
in the OS sandbox, inside the same bwrap without network, writable only the checkout and its
git folder (a fetch into the session branch: only the store), the workspace
hidden: a setting that slipped through still writes nothing outside.

A nested repository an agent makes in its checkout (``git init`` there, or a gitlink of the
base it fills) is left out of its commits: a gitlink to a commit that exists only in that
checkout would be of no use on the branch, and its own ``.git/config`` is the agent's. It
stays in the checkout, which is then kept at the end (``CheckoutRecord.left_out``; the log
and the end report name it); the base's submodules stay at the base's commits. Their folders
hold those commits' files, read-only, taken from the user's own submodule checkouts
(``checkout_submodules``); one the user has not checked out stays empty, and is named.

Content is stored in checkouts as in the user's repository (``storage_config``): their
repository config's filters and line-ending settings and their ``info/attributes`` are
written into each checkout's config before its digest is taken, and Git LFS objects are
shared with their LFS store through the session's store (linked, never downloaded).

For a sandboxed agent (``Checkout.sandbox_paths``): read-write, its tree
``<session>/checkouts/<assignment>``; read-only, its git folder
``<session>/git/checkouts/<assignment>`` and the object folders named by alternates: the
store's ``objects``, the user's ``<common git dir>/objects`` and any alternates that folder
names itself; in an LFS repository the session's LFS folder and the user's too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from meta_orchestrator.actors.workspaces import checkout_submodules as submodules
from meta_orchestrator.actors.workspaces import storage_config
from meta_orchestrator.actors.workspaces import workspace_changes as changes
from meta_orchestrator.actors.sandbox.cli_state import CLI_STATE_FOLDER
from meta_orchestrator.actors.workspaces.git_command import (
    DEFAULT_TIMEOUT_S,
    HOSTILE_TREE_CONFIG,
    TOOL_IDENTITY,
    Git,
    WorkspaceError,
    add_all,
    commit_staged,
    confined_git,
)
from meta_orchestrator.actors.workspaces.repository_state import (
    unfinished_note,
    unfinished_operation,
    unfinished_refusal,
    unmerged_files,
    unmerged_refusal,
)
from meta_orchestrator.actors.files.session_files import private_dir, read_json, write_json_atomic
from meta_orchestrator.actors.workspaces.workspace_apply import (
    few,
    overlap_refusal,
    replayed_tree,
    snapshot_base,
    snapshot_conflict,
)
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox
from meta_orchestrator.messages.ids import InvalidId, check_session_id
from meta_orchestrator.messages.workspace import (
    ApplyResult,
    ApplyStatus,
    CheckoutKind,
    CheckoutRecord,
    DiscardResult,
    MergeRecord,
    MergeResult,
    SessionChanges,
    WorkspaceRecord,
)

log = logging.getLogger(__name__)

RECORD_FILE = "workspace.json"
BRANCH_PREFIX = "orchestrate/"
_FOLDERS: dict[CheckoutKind, str] = {"assignment": "checkouts", "view": "views"}
GIT_FOLDER = "git"
STORE = "session.git"  # in GIT_FOLDER: the session's own bare repository
TRAILER_SESSION = "Orchestrate-Session"
# The config every call in a checkout runs with: nothing an agent wrote runs (no hook, no
# fsmonitor, no submodule), no recorded resolutions, a conflict an agent can read (with the base).
CHECKOUT_CONFIG = (*HOSTILE_TREE_CONFIG, "rerere.enabled=false", "merge.conflictStyle=diff3")
# Fetching a commit by its id from a checkout (protocol v2 allows any id; v0 needs the flag).
_FETCH_CONFIG = ("protocol.version=2", "uploadpack.allowAnySHA1InWant=true")
# Not -q: a rejected (non-fast-forward) update is said only on stderr, as "[rejected]".
_FETCH = ("fetch", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance", "--no-recurse-submodules")
# Fetching the objects a partial clone lacks from its promisor remote (by id, no negotiation:
# the store's haves are the user's whole history), over the usual transports only.
_PROMISOR_FETCH = tuple(
    part
    for pair in (
        "fetch.negotiationAlgorithm=noop",
        "protocol.version=2",
        *(f"protocol.{scheme}.allow=always" for scheme in ("file", "git", "http", "https")),
    )
    for part in ("-c", pair)
)
_FETCH_BATCH = 1000  # object ids per fetch command line
_KEEP_IGNORED = 50  # ignored files named per checkout
_KEEP_UNCOMMITTED = 200  # names kept in workspace.json; the count is exact
_MARKERS = re.compile(rb"^(<{7}|>{7})( |$)", re.MULTILINE)


class ConflictMarkersLeft(WorkspaceError):
    """commit_assignment after prepare_conflict: these files still hold conflict markers."""

    def __init__(self, assignment_id: str, files: tuple[str, ...]) -> None:
        super().__init__(f"assignment {assignment_id}: conflict markers remain in {', '.join(files)}")
        self.files = files


class RepositoryRefused(WorkspaceError):
    """git refuses the target as it is; ``str()`` names the fix. Nothing was started."""


def _refusal(target: Path, said: str) -> str:
    """Why git refuses ``target``, with the fix: the agents never work there in place."""
    said = " ".join(said.split())
    if "dubious ownership" in said:
        return (
            f"git refuses {target}: it belongs to another user ({said}). If you trust it: "
            f"git config --global --add safe.directory {target}; then start again"
        )
    if "must be run in a work tree" in said:
        return (
            f"{target} is a bare repository: the agents need a working tree. Make one "
            f"(git -C {target} worktree add <folder> <branch>, or git clone {target} <folder>) "
            "and pass that folder as --target"
        )
    return f"git cannot use {target} ({said}); nothing was started"


class ApplyRefused(WorkspaceError):
    """``orchestrate apply`` would overwrite the user's changes or conflict; nothing was done."""

    def __init__(self, message: str, files: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.files = files


def session_branch(session_id: str) -> str:
    """The session's branch (in its store; in the user's repository for an older session)."""
    return f"{BRANCH_PREFIX}{session_id}"


def store_path(session_dir: Path) -> Path:
    """The session's store: the bare repository holding its branch and objects."""
    return session_dir / GIT_FOLDER / STORE


def store_git(store: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> Git:
    """git in a session's store (the orchestrator's own repository), hardened all the same:
    the objects it reads came from the agents."""
    return Git(["--git-dir", str(store)], config=HOSTILE_TREE_CONFIG, timeout_s=timeout_s, cwd=store, private=True)


def where_branch(branch: str, store: Path | str | None) -> str:
    """Where the session branch is, for the user: in its store until ``orchestrate apply``."""
    if store is None:
        return f"branch {branch}"
    return f"branch {branch} in the session's store {store} (your repository gets it at `orchestrate apply`)"


def check_name(name: str, what: str) -> str:
    """A session or assignment id usable in a branch name and as a folder name.

    Raises:
        WorkspaceError: it is not.
    """
    try:
        return check_session_id(name, what)
    except InvalidId as exc:
        raise WorkspaceError(str(exc)) from None


@dataclass(frozen=True)
class Checkout:
    """A checkout in the session folder: where an agent works (``workdir``) and what it is."""

    name: str
    kind: CheckoutKind
    path: Path  # the working tree
    git_dir: Path
    workdir: Path  # the target's folder inside the tree (the tree itself for a target at the top)
    branch: str | None
    base: str
    object_dirs: tuple[Path, ...]  # read through alternates
    submodules: tuple[Path, ...] = ()  # submodule folders filled read-only (checkout_submodules)
    note: str | None = None  # for its agent: which submodule folders are filled, which empty
    storage_dirs: tuple[Path, ...] = ()  # the session's LFS objects (its git-lfs reads them)

    @property
    def writable(self) -> bool:
        """An assignment's checkout is written by its agent; a view is only read."""
        return self.kind == "assignment"

    def sandbox_paths(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(read_write, read_only)`` paths a sandbox must bind for git to work in it."""
        readable = (
            str(self.git_dir),
            *(str(p) for p in (*self.object_dirs, *self.storage_dirs, *self.submodules)),
        )
        if self.writable:
            return (str(self.path),), readable
        return (), (str(self.path), *readable)


class OpenResult(NamedTuple):
    """``repo`` None: the target cannot have a session branch, ``message`` says why (a
    warning naming the fix); otherwise ``message`` is the note to show at start."""

    repo: SessionRepo | None
    message: str


@dataclass(frozen=True)
class _Repository:
    top: str
    git_dir: str
    common_dir: str
    prefix: str
    head: str
    branch: str | None


def probe_repository(target: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> _Repository | str:
    """The git repository ``target`` is in, or the reason it cannot have a session branch (a
    folder without git, or without a commit).

    Raises:
        RepositoryRefused: git refuses the folder (a bare repository, one owned by another
            user...): a session there is refused, never run in place.
    """
    if not target.is_dir():
        return f"{target} is not a folder"
    git = Git(["-C", str(target)], timeout_s=timeout_s)
    result = git.run(
        "rev-parse",
        "--path-format=absolute",
        "--show-toplevel",
        "--absolute-git-dir",
        "--git-common-dir",
        "--show-prefix",
        "HEAD^{commit}",
        "--symbolic-full-name",
        "HEAD",
        ok=(0, 128),
    )
    lines = result.stdout.decode("utf-8", "surrogateescape").split("\n")
    if result.returncode != 0:
        if "not a git repository" in result.stderr:
            return f"{target} is not a git repository"
        if len(lines) >= 4 and ("unknown revision" in result.stderr or "ambiguous argument" in result.stderr):
            return f"{target} is a git repository without a commit"
        raise RepositoryRefused(_refusal(target, result.stderr or f"exit {result.returncode}"))
    top, git_dir, common_dir, prefix, head, symbolic = lines[:6]
    branch = symbolic if symbolic.startswith("refs/heads/") else None
    return _Repository(top, git_dir, common_dir, prefix, head, branch)


def uncommitted_files(git: Git, exclude: tuple[str, ...] = (), *, agents: bool = False) -> list[str]:
    """The user's changed, staged and untracked files (ignored ones excluded); reads only.
    ``exclude``: pathspecs left out (the workspace, when it lies inside the repository).
    ``agents``: an agent's checkout, whose submodules are never looked into (only the command
    line's ``--ignore-submodules`` wins over a ``.gitmodules`` its agent wrote)."""
    args: tuple[str, ...] = ("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    if agents:
        args = (*args, "--ignore-submodules=all")
    fields = git.run(*args, *(("--", *exclude) if exclude else ())).fields
    return [field[3:] for field in fields if len(field) > 3]


def _workspace_inside(session_dir: Path, top: str) -> tuple[str, ...]:
    """A pathspec leaving out the workspace (every session folder) when it is inside the
    user's working tree: it is no change of theirs, and checkouts are no files to snapshot."""
    workspace = session_dir.resolve().parent
    try:
        inside = workspace.relative_to(Path(top).resolve())
    except ValueError:
        return ()
    return (f":(top,exclude){inside.as_posix()}",) if inside.parts else ()


def open_session_repo(
    target: Path,
    session_dir: Path,
    session_id: str,
    include_uncommitted: bool = False,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sandbox: OsSandbox | None = None,
) -> OpenResult:
    """Open the session's workspace: a new one (base, branch, workspace.json), or the one
    recorded in ``session_dir`` (a resume: same base, branch and checkouts).

    ``include_uncommitted``: the base is a commit of the user's uncommitted files (untracked
    included, .gitignore respected) on top of HEAD, made with a temporary index; their
    tree and index stay as they are. ``sandbox``: the OS sandbox the agents run in; git over
    their checkouts runs in it too.

    Raises:
        WorkspaceError: git failed, or the session was discarded.
    """
    check_name(session_id, "session id")
    if (session_dir / RECORD_FILE).exists():
        record = WorkspaceRecord.model_validate(read_json(session_dir / RECORD_FILE))
        if record.discarded:
            raise WorkspaceError(f"session {session_id} was discarded: its branch and checkouts are gone")
        repo = SessionRepo(record, session_dir, timeout_s, sandbox)
        repo.resume()
        kept = sum(1 for r in record.checkouts.values() if r.present)
        return OpenResult(repo, f"resumed on branch {record.branch} ({kept} checkout{'s' * (kept != 1)} kept)")
    found = probe_repository(Path(target), timeout_s)
    if isinstance(found, str):
        return OpenResult(None, found)
    try:
        return _open_new(found, session_dir, session_id, include_uncommitted, timeout_s, sandbox)
    except BaseException:  # no half-made workspace: a new start makes it again from nothing
        _remove(session_dir / RECORD_FILE, session_dir / GIT_FOLDER, *(session_dir / f for f in _FOLDERS.values()))
        raise


def _open_new(
    found: _Repository,
    session_dir: Path,
    session_id: str,
    include_uncommitted: bool,
    timeout_s: float,
    sandbox: OsSandbox | None,
) -> OpenResult:
    """A new session's store, base, branch and workspace.json (see open_session_repo)."""
    git = Git(["-C", found.top], timeout_s=timeout_s)
    if include_uncommitted:
        _refuse_half_made(found, git)
    storage = storage_config.read_user_storage(Path(found.git_dir), Path(found.common_dir), Path(found.top), timeout_s)
    storage_config.check_required_filters(storage, git, found.head)
    exclude = _workspace_inside(session_dir, found.top)
    dirty = uncommitted_files(git, exclude)
    store = store_path(session_dir)
    _init_store(store, Path(found.common_dir), session_branch(session_id), timeout_s)
    base = found.head
    if include_uncommitted and dirty:
        base = _snapshot_uncommitted(store, found, session_dir, session_id, exclude, timeout_s)
    try:
        fetch_missing_objects(store, git, base, timeout_s)
    except WorkspaceError:
        _remove(store.parent)  # the session is refused: its store goes (nothing of it was used)
        raise
    record = WorkspaceRecord(
        session_id=session_id,
        repository=found.top,
        git_dir=found.git_dir,
        common_dir=found.common_dir,
        prefix=found.prefix,
        branch=session_branch(session_id),
        store=str(store),
        base=base,
        user_head=found.head,
        user_branch=found.branch,
        uncommitted_count=len(dirty),
        uncommitted=tuple(dirty[:_KEEP_UNCOMMITTED]),
        include_uncommitted=include_uncommitted,
        tip=base,
    )
    repo = SessionRepo(record, session_dir, timeout_s, sandbox)
    repo.save()  # first, so that a kill before the branch exists resumes and makes it
    repo.resume()
    unfinished = unfinished_operation(Path(found.git_dir))
    notes = (
        _start_note(record, len(dirty)),
        unfinished_note(unfinished, found.head, found.branch) if unfinished else None,
        submodules.start_note(store_git(store, timeout_s), Path(found.top), base, timeout_s),
    )
    return OpenResult(repo, "; ".join(note for note in notes if note))


def check_can_start(target: Path, include_uncommitted: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """What refuses a new session before anything is made (the launcher asks before it makes
    the session folder): git refuses the target, or ``include_uncommitted`` would copy the
    half-made state of a merge, rebase... into the base.

    Raises:
        RepositoryRefused: the reason, with the fix.
    """
    found = probe_repository(Path(target), timeout_s)
    if include_uncommitted and isinstance(found, _Repository):
        _refuse_half_made(found, Git(["-C", found.top], timeout_s=timeout_s))


def _refuse_half_made(found: _Repository, git: Git) -> None:
    """A snapshot of the user's uncommitted files must not hold an unfinished operation's state.

    Raises:
        RepositoryRefused: a merge, rebase... is unfinished, or files are unmerged.
    """
    unfinished = unfinished_operation(Path(found.git_dir))
    if unfinished is not None:
        raise RepositoryRefused(unfinished_refusal(found.top, unfinished, found.head))
    unmerged = unmerged_files(git)
    if unmerged:
        raise RepositoryRefused(unmerged_refusal(found.top, unmerged))


def _start_note(record: WorkspaceRecord, dirty: int) -> str:
    where = f"branch {record.branch} at {record.base[:10]}"
    if record.store is not None:
        where += f" in the session's store {record.store} (your repository gets it only at `orchestrate apply`)"
    if not dirty:
        return f"{where}; your working tree is clean"
    files = f"{dirty} uncommitted file{'s' * (dirty != 1)} of yours {'are' if dirty != 1 else 'is'}"
    if record.include_uncommitted:
        return f"{where}; {files} in the session's base (your tree and index stay as they are)"
    return f"{where}; {files} not part of the session (--include-uncommitted takes them in)"


def _snapshot_uncommitted(
    store: Path, found: _Repository, session_dir: Path, session_id: str, exclude: tuple[str, ...], timeout_s: float
) -> str:
    """A commit of the user's working tree on top of HEAD, through a copy of their index,
    written into the session's store (their repository gains no object)."""
    # Stored as their repository stores it: their filters and line endings (LFS objects into the store).
    user = storage_config.read_user_storage(Path(found.git_dir), Path(found.common_dir), Path(found.top), timeout_s)
    storage_config.link_tool_state(store, user)
    git = Git(
        ["--git-dir", str(store), "--work-tree", found.top],
        config=storage_config.as_config(user, store),
        timeout_s=timeout_s,
        cwd=Path(found.top),
        private=True,
    )
    tree = _tree_through_index_copy(git, Path(found.git_dir) / "index", session_dir, exclude)
    message = f"The uncommitted changes at the start of session {session_id}\n\n{TRAILER_SESSION}: {session_id}"
    return git.out("commit-tree", tree, "-p", found.head, "-m", message, env=TOOL_IDENTITY)


def _tree_through_index_copy(
    git: Git, index: Path, scratch: Path, exclude: tuple[str, ...] = (), agents: Path | None = None
) -> str:
    """The tree of the working tree as it is (untracked files too, ignored ones not), written
    through a copy of ``index`` (a copy: only changed files are hashed; the index stays).
    ``agents``: the tree is an agent's checkout, whose nested repositories are left out."""
    with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=scratch) as folder:
        copy = Path(folder) / "index"
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(index, copy)
        env = {"GIT_INDEX_FILE": str(copy)}
        git = git.also_writable(folder)
        if agents is not None:
            add_all(git, agents, env=env)
        else:
            git.run("add", "-A", *(("--", *exclude) if exclude else ()), env=env)
        return git.out("write-tree", env=env)


def _key(kind: CheckoutKind, name: str) -> str:
    """The checkout's key in WorkspaceRecord.checkouts: a view may share an assignment's name."""
    return name if kind == "assignment" else f"view:{name}"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class SessionRepo:
    """One session's branch and checkouts. Methods may be called from several threads."""

    def __init__(
        self,
        record: WorkspaceRecord,
        session_dir: Path,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        sandbox: OsSandbox | None = None,
    ) -> None:
        self._record = record
        self._dir = session_dir
        self._timeout = timeout_s
        self._sandbox = sandbox  # git over the checkouts runs inside it (None: only hardened)
        self._lock = threading.RLock()
        self._user = Git(["-C", record.repository], timeout_s=timeout_s)
        # Where the branch is: the session's store, or the user's repository (an older session).
        self._store = Path(record.store) if record.store is not None else None
        self._branch_git = store_git(self._store, timeout_s) if self._store is not None else self._user
        self._user_storage: storage_config.UserStorage | None = None

    @property
    def record(self) -> WorkspaceRecord:
        """What workspace.json holds."""
        return self._record

    @property
    def session_id(self) -> str:
        return self._record.session_id

    @property
    def branch(self) -> str:
        return self._record.branch

    @property
    def base(self) -> str:
        return self._record.base

    @property
    def store(self) -> Path | None:
        """The session's store (None: an older session, its branch in the user's repository)."""
        return self._store

    def branch_git(self) -> Git:
        """git where the session branch is, to read it (diffs, logs)."""
        return self._branch_git

    def save(self) -> None:
        """Write workspace.json (atomically, private)."""
        with self._lock:
            write_json_atomic(self._dir / RECORD_FILE, self._record.model_dump(mode="json"))

    def _update(self, **fields: object) -> None:
        with self._lock:
            self._record = self._record.model_copy(update=fields)
            self.save()

    def _set_checkout(self, record: CheckoutRecord | None, key: str) -> None:
        with self._lock:
            checkouts = dict(self._record.checkouts)
            if record is None:
                checkouts.pop(key, None)
            else:
                checkouts[key] = record
            self._update(checkouts=checkouts)

    def resume(self) -> None:
        """Make the branch again if it is missing (at the last tip the session set), and clear
        the lock files a killed orchestrator left in its own checkouts and branch."""
        ref = f"refs/heads/{self.branch}"
        if self._store is not None:
            _init_store(self._store, Path(self._record.common_dir), self.branch, self._timeout)
        (Path(self._store or self._record.common_dir) / f"{ref}.lock").unlink(missing_ok=True)
        for record in self._record.checkouts.values():
            if not record.present:
                continue
            _, git_dir = self._paths(record.kind, record.name)
            for lock in ("index.lock", "HEAD.lock"):
                (git_dir / lock).unlink(missing_ok=True)
        if self._branch_git.run("rev-parse", "-q", "--verify", ref, ok=(0, 1)).returncode == 1:
            self._branch_git.run(
                "update-ref", "-m", f"orchestrate: session {self.session_id}", ref, self._record.tip, ""
            )

    def tip(self) -> str:
        """The session branch's commit now.

        Raises:
            WorkspaceError: the branch is gone from the store (or the user's repository).
        """
        git = self._branch_git
        result = git.run("rev-parse", "-q", "--verify", f"refs/heads/{self.branch}^{{commit}}", ok=(0, 1))
        if result.returncode == 1:
            raise WorkspaceError(f"branch {self.branch} is gone from {self._store or self._record.repository}")
        return result.text

    # -- checkouts ------------------------------------------------------------------------

    def _paths(self, kind: CheckoutKind, name: str) -> tuple[Path, Path]:
        folder = _FOLDERS[kind]
        return self._dir / folder / name, self._dir / GIT_FOLDER / folder / name

    def _storage(self) -> storage_config.UserStorage:
        """How the user's repository stores content (read once: checkouts store it so)."""
        with self._lock:
            if self._user_storage is None:
                record = self._record
                self._user_storage = storage_config.read_user_storage(
                    Path(record.git_dir), Path(record.common_dir), Path(record.repository), self._timeout
                )
            return self._user_storage

    def _as_checkout(self, record: CheckoutRecord) -> Checkout:
        path, git_dir = self._paths(record.kind, record.name)
        objects = _with_their_alternates(_alternates(self._record, self._store, self._dir, record.kind))
        checkout = _checkout(record, path, git_dir, self._record.prefix, objects)
        return replace(checkout, storage_dirs=storage_config.storage_dirs(self._store, self._storage()))

    def _git_in(self, record: CheckoutRecord, *, tree: bool = True) -> Git:
        """git for a checkout, once its config is known to be the one the orchestrator wrote.

        Raises:
            WorkspaceError: the config was changed (by its agent?): nothing is run there.
        """
        path, git_dir = self._paths(record.kind, record.name)
        try:
            digest = _digest(git_dir / "config")
        except OSError as exc:
            raise WorkspaceError(f"checkout {record.name}: its git folder {git_dir} is unreadable: {exc}") from exc
        if digest != record.config_digest and not storage_config.only_tool_writes(git_dir, record.config_digest):
            raise WorkspaceError(
                f"checkout {record.name}: {git_dir / 'config'} was changed after the orchestrator wrote it; "
                "no git command is run there (remove the checkout, or discard the session)"
            )
        objects = self._as_checkout(record).object_dirs
        storage = storage_config.confined_paths(self._store, self._storage())
        return _checkout_git(git_dir, path if tree else None, objects, self._sandbox, self._timeout, storage)

    def _make(self, kind: CheckoutKind, name: str, commit: str, branch: str | None) -> CheckoutRecord:
        path, git_dir = self._paths(kind, name)
        _remove(path, git_dir)  # a half-made one (killed before it was recorded)
        for folder in (self._dir / _FOLDERS[kind], self._dir / GIT_FOLDER, git_dir.parent):
            private_dir(folder)
        _init_checkout(
            path,
            git_dir,
            _alternates(self._record, self._store, self._dir, kind),
            Path(self._record.common_dir),
            self._timeout,
        )
        storage_config.write_checkout_storage(git_dir, self._storage(), self._store, self._timeout)
        record = CheckoutRecord(
            name=name, kind=kind, branch=branch, base=commit, config_digest=_digest(git_dir / "config")
        )
        git = self._git_in(record)
        _fetch_missing(git, self._store, self._user, commit, self._timeout)
        if branch is None:
            git.run("checkout", "-q", "--detach", commit)
            record = record.model_copy(update={"base": git.out("rev-parse", "HEAD")})
        else:
            git.run("checkout", "-q", "-b", branch, commit)
        _verify_checkout(git, name, commit)
        record = _with_submodules(record, git, path, Path(self._record.repository), self._dir, self._timeout)
        self._set_checkout(record, _key(kind, name))
        return record

    def checkout(self, assignment_id: str, writing: bool = True) -> Checkout:
        """The assignment's checkout on ``orchestrate/<session>/<assignment>``, made from the
        session branch's tip (its base from then on), or the existing one. ``writing`` False:
        a read-only view of the tip instead.

        Raises:
            WorkspaceError: git failed.
        """
        check_name(assignment_id, "assignment id")
        if not writing:
            return self.readonly_checkout(assignment_id, self.tip())
        with self._lock:
            record = self._record.checkouts.get(assignment_id)
            path, git_dir = self._paths("assignment", assignment_id)
            if record is None or not record.present or not (git_dir / "HEAD").exists() or not path.is_dir():
                if record is not None and record.present:
                    log.warning("checkout %s was recorded but is gone: making it again", assignment_id)
                branch = f"{self.branch}/{assignment_id}"
                record = self._make("assignment", assignment_id, self.tip(), branch)
            return self._as_checkout(record)

    def readonly_checkout(self, name: str, commit: str) -> Checkout:
        """A checkout of exactly ``commit`` (detached) in ``views/<name>``, for planning or a
        review; an existing one is moved to that commit, files it does not hold removed.

        Raises:
            WorkspaceError: git failed (e.g. the commit is unknown).
        """
        check_name(name, "view name")
        with self._lock:
            record = self._record.checkouts.get(_key("view", name))
            path, git_dir = self._paths("view", name)
            if record is None or not (git_dir / "HEAD").exists() or not path.is_dir():
                record = self._make("view", name, commit, None)
            elif record.base != commit:
                git = self._git_in(record)
                _fetch_missing(git, self._store, self._user, commit, self._timeout)
                for filled in record.submodules:  # git moves no submodule's files: they go, refilled after
                    submodules.clear(path / filled)
                git.run("checkout", "-q", "-f", "--detach", commit)
                git.run("clean", "-q", "-ffdx")
                _verify_checkout(git, name, commit)
                record = record.model_copy(update={"base": git.out("rev-parse", "HEAD")})
                record = _with_submodules(record, git, path, Path(self._record.repository), self._dir, self._timeout)
                self._set_checkout(record, _key("view", name))
            return self._as_checkout(record)

    # -- commits and merges ---------------------------------------------------------------

    def _assignment(self, assignment_id: str, *, present: bool = True) -> CheckoutRecord:
        record = self._record.checkouts.get(assignment_id)
        if record is None or record.kind != "assignment":
            raise WorkspaceError(f"assignment {assignment_id} has no checkout in session {self.session_id}")
        if present and not record.present:
            raise WorkspaceError(f"assignment {assignment_id}'s checkout was removed (checkout() makes a new one)")
        return record

    def commit_assignment(
        self, assignment_id: str, agent: str, title: str, written: tuple[str, ...] = ()
    ) -> str | None:
        """Commit everything in the assignment's checkout (untracked files too, ignored ones
        not) as the tool, hooks off. Returns the assignment's head, or None when it has no
        change at all against its base. ``written``: the files its CLI reported writing; those
        an ignore rule hides are recorded with the rule (``CheckoutRecord.ignored``: the
        checkout is kept); other ignored files (a test run's caches) are only logged.

        Raises:
            ConflictMarkersLeft: after prepare_conflict, markers are still in these files.
            WorkspaceError: git failed.
        """
        with self._lock:
            record = self._assignment(assignment_id)
            git = self._git_in(record)
            path, git_dir = self._paths("assignment", assignment_id)
            left = tuple(f for f in record.conflicts if _has_markers(path / f))
            if left:
                raise ConflictMarkersLeft(assignment_id, left)
            left_out = add_all(git, path)
            if left_out:
                log.warning("%s: nested git repositories left out of its commit: %s", assignment_id, left_out)
            ignored = _ignored_writes(git, git_dir, _in_tree(written, path, self._record.prefix))
            commit_staged(git, git_dir, *_commit_message(self.session_id, assignment_id, agent, title))
            head = git.out("rev-parse", "HEAD")
            update = {"head": head, "conflicts": (), "left_out": left_out, "ignored": ignored}
            self._set_checkout(record.model_copy(update=update), assignment_id)
            return None if head == record.base else head

    def merge_assignment(self, assignment_id: str) -> MergeResult:
        """Merge the assignment's head into the session branch: a fast-forward when the
        branch has not moved since the assignment's base, else a merge commit made without a
        working tree. On a conflict nothing moves and the files are named.

        Raises:
            WorkspaceError: git failed, or the branch moved in a way that is no fast-forward.
        """
        with self._lock:
            record = self._assignment(assignment_id)
            head = record.head
            tip = self.tip()
            if head is None or head == record.base or head == record.merged_head:
                return MergeResult(assignment_id=assignment_id, status="up_to_date", commit=tip)
            _, git_dir = self._paths("assignment", assignment_id)
            if tip == record.base and _fetch_into_branch(
                self._record, self._store, self._sandbox, self._timeout, git_dir, head
            ):
                return self._merged(record, tip, head, fast_forward=True)
            git = self._git_in(record, tree=False)
            found_fork = git.run("merge-base", tip, head, ok=(0, 1))
            if found_fork.returncode == 1:
                raise WorkspaceError(
                    f"assignment {assignment_id}: its branch shares no history with {self.branch} (rewritten?)"
                )
            fork = found_fork.text
            if fork == head:
                return self._merged(record, tip, tip, fast_forward=True)
            if fork == tip:
                if not _fetch_into_branch(self._record, self._store, self._sandbox, self._timeout, git_dir, head):
                    raise WorkspaceError(f"branch {self.branch} moved while merging {assignment_id}; try again")
                return self._merged(record, tip, head, fast_forward=True)
            message = (
                f"Merge assignment {assignment_id} into {self.branch}\n\n"
                f"{TRAILER_SESSION}: {self.session_id}\nOrchestrate-Assignment: {assignment_id}"
            )
            merge, conflicts = _merge_commit(git, tip, head, message)
            if merge is None:
                return MergeResult(assignment_id=assignment_id, status="conflict", commit=tip, conflicts=conflicts)
            if not _fetch_into_branch(self._record, self._store, self._sandbox, self._timeout, git_dir, merge):
                raise WorkspaceError(f"branch {self.branch} moved while merging {assignment_id}; try again")
            return self._merged(record, tip, merge, fast_forward=False)

    def _merged(self, record: CheckoutRecord, before: str, after: str, *, fast_forward: bool) -> MergeResult:
        with self._lock:
            merges = self._record.merges
            if after != before:
                entry = MergeRecord(assignment_id=record.name, before=before, after=after, fast_forward=fast_forward)
                merges = (*merges, entry)
            checkouts = {**self._record.checkouts, record.name: record.model_copy(update={"merged_head": record.head})}
            self._update(tip=after, merges=merges, checkouts=checkouts)
        status = "up_to_date" if after == before else "fast_forward" if fast_forward else "merged"
        return MergeResult(assignment_id=record.name, status=status, commit=after)

    def prepare_conflict(self, assignment_id: str) -> tuple[str, ...]:
        """Merge the session tip into the assignment's checkout, leaving the conflict markers
        for its agent; the tip becomes the assignment's base. Then commit_assignment and
        merge_assignment fast-forward. Returns the files to resolve (empty: it merged cleanly
        and the merge is staged). Calling it again before the commit changes nothing.

        Raises:
            WorkspaceError: git failed (e.g. the checkout has uncommitted changes).
        """
        with self._lock:
            record = self._assignment(assignment_id)
            _, git_dir = self._paths("assignment", assignment_id)
            tip = self.tip()
            with contextlib.suppress(FileNotFoundError):
                if (git_dir / "MERGE_HEAD").read_text().strip() == tip:
                    return record.conflicts
            message = f"Merge {self.branch} into {assignment_id} (conflict resolution)"
            conflicts = _merge_with_markers(self._git_in(record), git_dir, tip, message, assignment_id)
            self._set_checkout(record.model_copy(update={"base": tip, "conflicts": conflicts}), assignment_id)
            return conflicts

    # -- what changed ---------------------------------------------------------------------

    def assignment_diff(self, assignment_id: str) -> str:
        """The diff of the assignment's commits against its own base: nothing of the user's
        uncommitted change, nothing of other assignments."""
        record = self._assignment(assignment_id, present=False)
        if record.head is None or record.head == record.base:
            return ""
        git = self._git_in(record, tree=False) if record.present else self._branch_git
        return git.run("diff", *changes.DIFF_OPTIONS, "--find-renames", record.base, record.head).text

    def working_tree_commit(self, assignment_id: str) -> tuple[str, str]:
        """Its working tree now (untracked too) as a commit on its base, and that diff: for reviews."""
        with self._lock:
            record = self._assignment(assignment_id)
            git = self._git_in(record)
            path, git_dir = self._paths("assignment", assignment_id)
            tree = _tree_through_index_copy(git, git_dir / "index", self._dir, agents=path)
            message = f"The working tree of {assignment_id} under review\n\n{TRAILER_SESSION}: {self.session_id}"
            commit = git.out("commit-tree", tree, "-p", record.base, "-m", message)
            return commit, git.run("diff", *changes.DIFF_OPTIONS, "--find-renames", record.base, commit).text

    def session_changes(self, max_file_bytes: int = 64_000, max_total_bytes: int = 2_000_000) -> SessionChanges:
        """The session branch against its base: per file, per assignment, and the text."""
        return changes.session_changes(self._branch_git, self._record, self.tip(), max_file_bytes, max_total_bytes)

    # -- nothing left behind --------------------------------------------------------------

    def checkouts_left(self) -> list[str]:
        """Checkouts on disk or recorded: assignment ids, and views as ``view:<name>``."""
        return _checkouts_left(self._record, self._dir)

    def remove_checkout(self, name: str, force: bool = False) -> None:
        """Remove a checkout (an assignment id, or ``view:<name>``) and its git folder.
        Without ``force`` an assignment's must be merged and hold no uncommitted file.

        Raises:
            WorkspaceError: it holds work that is not in the session branch.
        """
        kind: CheckoutKind = "view" if name.startswith("view:") else "assignment"
        plain = name.removeprefix("view:")
        with self._lock:
            record = self._record.checkouts.get(name)
            path, git_dir = self._paths(kind, plain)
            if record is not None and kind == "assignment" and not force and path.is_dir():
                self._check_nothing_unmerged(record)
            _remove(path, git_dir)
            if record is not None and kind == "assignment":
                self._set_checkout(record.model_copy(update={"present": False}), name)
            else:
                self._set_checkout(None, name)

    def _check_nothing_unmerged(self, record: CheckoutRecord) -> None:
        if (kept := _work_not_on_branch(record, self.branch)) is not None:
            raise WorkspaceError(kept)
        if uncommitted_files(self._git_in(record), agents=True):
            raise WorkspaceError(f"checkout {record.name} has uncommitted files (commit_assignment first)")

    def cleanup(self, keep_branch: bool = True, keep_unmerged: bool = True) -> list[str]:
        """Remove the views and every checkout whose work is in the session branch; with
        ``keep_unmerged`` False every checkout, and with ``keep_branch`` False the session's
        branches too (``discard_session``). Returns the checkouts left."""
        if not keep_branch:
            discard_session(Path(self._record.repository), self._dir, self.session_id)
            self._record = WorkspaceRecord.model_validate(read_json(self._dir / RECORD_FILE))
            return self.checkouts_left()
        for name in self.checkouts_left():
            try:
                self.remove_checkout(name, force=not keep_unmerged)
            except WorkspaceError as exc:
                log.info("keeping checkout %s: %s", name, exc)
        return self.checkouts_left()


def _with_submodules(
    record: CheckoutRecord, git: Git, tree: Path, repository: Path, scratch: Path, timeout_s: float
) -> CheckoutRecord:
    """The record of a checkout of ``record.base`` once its submodule folders are filled."""
    filled, empty = submodules.fill_all(git, tree, repository, record.base, scratch, timeout_s)
    return record.model_copy(update={"submodules": filled, "empty_submodules": empty})


def _alternates(record: WorkspaceRecord, store: Path | None, session_dir: Path, kind: CheckoutKind) -> list[Path]:
    """The object folders a new checkout reads: the store's (and through it the user's); a
    view also every assignment's (it may show a commit not merged yet)."""
    sources = [(store or Path(record.common_dir)) / "objects"]
    if kind == "view":
        writing = [n for n, r in record.checkouts.items() if r.kind == "assignment" and r.present]
        sources += [session_dir / GIT_FOLDER / _FOLDERS["assignment"] / n / "objects" for n in writing]
    return sources


def _fetch_into_branch(
    record: WorkspaceRecord, store: Path | None, sandbox: OsSandbox | None, timeout_s: float, git_dir: Path, commit: str
) -> bool:
    """Bring ``commit`` from a checkout into the session branch; False: no fast-forward."""
    ref = f"refs/heads/{record.branch}"
    fetcher = _fetch_git(record, store, git_dir, sandbox, timeout_s)
    result = fetcher.run(*_FETCH, str(git_dir), f"{commit}:{ref}", ok=(0, 1))
    if result.returncode == 0:
        return True
    if "non-fast-forward" in result.stderr or "rejected" in result.stderr:
        return False
    raise WorkspaceError(f"cannot update {record.branch} in {store or record.repository}: {result.stderr}")


def _checkout(record: CheckoutRecord, path: Path, git_dir: Path, prefix: str, objects: tuple[Path, ...]) -> Checkout:
    return Checkout(
        name=record.name,
        kind=record.kind,
        path=path,
        git_dir=git_dir,
        workdir=path / prefix if prefix else path,
        branch=record.branch,
        base=record.base,
        object_dirs=objects,
        submodules=tuple(path / name for name in record.submodules),
        note=submodules.agent_note(record.submodules, record.empty_submodules),
    )


def _checkouts_left(record: WorkspaceRecord, session_dir: Path) -> list[str]:
    found = {key for key, checkout in record.checkouts.items() if checkout.present}
    for kind, folder in _FOLDERS.items():
        with contextlib.suppress(FileNotFoundError):
            found.update(_key(kind, p.name) for p in (session_dir / folder).iterdir())
    return sorted(found)


def _work_not_on_branch(record: CheckoutRecord, branch: str) -> str | None:
    """Why a checkout holds work its session branch has not (a reason to keep it), or None."""
    if record.head not in (None, record.base, record.merged_head):
        return f"checkout {record.name} has commits not merged into {branch}"
    if record.left_out:
        return f"checkout {record.name} holds nested git repositories: {', '.join(record.left_out)}"
    if record.ignored:
        return f"checkout {record.name} holds files an ignore rule hides: {', '.join(record.ignored)}"
    return None


def _commit_message(session_id: str, assignment_id: str, agent: str, title: str) -> tuple[str, ...]:
    """``-m`` arguments of an assignment's commit: subject, body, trailers."""
    subject = _one_line(f"{assignment_id} ({agent}): {title}", 100)
    trailers = (
        f"{TRAILER_SESSION}: {session_id}\n"
        f"Orchestrate-Assignment: {assignment_id}\nOrchestrate-Agent: {_one_line(agent, 64)}"
    )
    body = f"Assignment {assignment_id} of session {session_id}, by {_one_line(agent, 64)}."
    return ("-m", subject, "-m", body, "-m", trailers)


def _merge_commit(git: Git, tip: str, head: str, message: str) -> tuple[str | None, tuple[str, ...]]:
    """A merge commit of ``tip`` and ``head`` made without a working tree, or (None, the
    files that conflict)."""
    found = git.run("merge-tree", "--write-tree", "--no-messages", "--name-only", "-z", tip, head, ok=(0, 1))
    if found.returncode == 1:
        return None, tuple(dict.fromkeys(found.fields[1:]))
    return git.out("commit-tree", found.fields[0], "-p", tip, "-p", head, "-m", message), ()


def _merge_with_markers(git: Git, git_dir: Path, tip: str, message: str, assignment_id: str) -> tuple[str, ...]:
    """``git merge`` of ``tip`` into a checkout, leaving conflict markers; the files to resolve."""
    merged = git.run("merge", "-q", "--no-ff", "--no-commit", "--no-verify", "-m", message, tip, ok=(0, 1))
    if merged.returncode == 1 and not (git_dir / "MERGE_HEAD").exists():
        raise WorkspaceError(f"assignment {assignment_id}: git merge failed: {merged.stderr or merged.text}")
    unmerged = ("diff", "--name-only", "-z", "--diff-filter=U", "--ignore-submodules=all")
    return tuple(git.run(*unmerged).fields)


def _confinement(sandbox: OsSandbox | None, writable: tuple[str, ...], readable: tuple[str, ...]) -> Confinement | None:
    return confined_git(sandbox.bwrap, writable, readable, sandbox.hidden) if sandbox is not None else None


def _checkout_git(
    git_dir: Path,
    tree: Path | None,
    objects: tuple[Path, ...],
    sandbox: OsSandbox | None,
    timeout_s: float,
    storage: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> Git:
    """git for a checkout (``tree`` None: without its working tree), hardened, and confined
    in ``sandbox``: writable only its tree and git folder (and ``storage``'s writable: the
    session's LFS folder), its object folders and ``storage``'s readable readable."""
    writable = (str(tree), str(git_dir)) if tree is not None else (str(git_dir),)
    confine = _confinement(sandbox, (*writable, *storage[0]), (*(str(p) for p in objects), *storage[1]))
    if tree is not None:
        prefix = ["--git-dir", str(git_dir), "--work-tree", str(tree)]
        return Git(
            prefix, config=CHECKOUT_CONFIG, env=TOOL_IDENTITY, timeout_s=timeout_s, confine=confine, private=True
        )
    # No working tree: run in the git folder, or git takes the current folder for one.
    prefix = ["--git-dir", str(git_dir)]
    return Git(
        prefix,
        config=CHECKOUT_CONFIG,
        env=TOOL_IDENTITY,
        timeout_s=timeout_s,
        confine=confine,
        cwd=git_dir,
        private=True,
    )


def _fetch_git(
    record: WorkspaceRecord, store: Path | None, git_dir: Path, sandbox: OsSandbox | None, timeout_s: float
) -> Git:
    """git in the session's store (an older session: the user's repository), to fetch from a
    checkout's git folder: confined, it may write only the store (objects, refs)."""
    readable = (str(git_dir), *(str(p) for p in object_folders(git_dir)))
    config = (*HOSTILE_TREE_CONFIG, *_FETCH_CONFIG)
    if store is not None:
        confine = _confinement(sandbox, (str(store),), readable)
        return Git(
            ["--git-dir", str(store)], config=config, timeout_s=timeout_s, confine=confine, cwd=store, private=True
        )
    confine = _confinement(sandbox, (record.common_dir,), (record.repository, *readable))
    return Git(["-C", record.repository], config=config, timeout_s=timeout_s, confine=confine)


def _init_store(store: Path, common_dir: Path, branch: str, timeout_s: float) -> None:
    """The session's store (made once; a half-made one is completed): a bare repository,
    private, reading the user's objects through alternates, its HEAD the session branch (so
    that ``git --git-dir <store> log`` shows it)."""
    private_dir(store.parent)
    if not (store / "HEAD").is_file():
        formats = f"--object-format={object_format(common_dir, timeout_s)}"
        Git([], timeout_s=timeout_s, private=True).run("init", "-q", "--bare", "--template=", formats, str(store))
    store.chmod(0o700)
    info = store / "objects" / "info"
    info.mkdir(parents=True, exist_ok=True)
    if common_dir != store:  # an imported folder's store has every object of its own
        _write_private(info / "alternates", f"{common_dir / 'objects'}\n".encode())
    if (common_dir / "shallow").exists():  # a shallow clone's boundary, or its history looks broken
        _write_private(store / "shallow", (common_dir / "shallow").read_bytes())
    _write_private(store / "HEAD", f"ref: refs/heads/{branch}\n".encode())


def _missing_objects(git: Git, commit: str) -> list[str]:
    """The objects of ``commit``'s tree that no object folder ``git`` reads holds."""
    listed = git.run("rev-list", "--objects", "--missing=print", "--no-walk", commit).text.splitlines()
    return [line[1:] for line in listed if line.startswith("?")]


def _promisor_urls(user: Git) -> list[str]:
    """Where the user's partial clone fetches what it lacks: its promisor remotes' URLs."""
    found = user.run("config", "-z", "--get-regexp", r"^remote\..*\.promisor$", ok=(0, 1)).fields
    names = [
        key.removeprefix("remote.").removesuffix(".promisor")
        for key, _, value in (f.partition("\n") for f in found)
        if value == "true"
    ]
    urls = (user.run("config", "--get", f"remote.{name}.url", ok=(0, 1)).text for name in names)
    return [url for url in urls if url]


def fetch_missing_objects(store: Path, user: Git, commit: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Fetch the objects of ``commit``'s tree that the user's repository lacks (a partial
    clone's, e.g. outside a sparse checkout) from its promisor remote into the session's
    store; without them a checkout would miss those files and its branch would delete them.

    Raises:
        WorkspaceError: they cannot all be fetched: the session must not start.
    """
    git = store_git(store, timeout_s)
    missing = _missing_objects(git, commit)
    if not missing:
        return
    said = f"{len(missing)} file(s) of commit {commit[:10]} have no content in your repository (a partial clone?)"
    fix = (
        "make that remote reachable, or fetch them yourself (`git sparse-checkout disable` fetches every file), "
        "and start again"
    )
    urls = _promisor_urls(user)
    if not urls:
        raise WorkspaceError(f"{said} and it names no promisor remote to fetch them from: {fix}")
    try:
        for start in range(0, len(missing), _FETCH_BATCH):
            git.run(*_PROMISOR_FETCH, *_FETCH, "-q", urls[0], *missing[start : start + _FETCH_BATCH])
    except WorkspaceError as exc:
        why = _one_line(exc.stderr or str(exc), 300)
        raise WorkspaceError(f"{said}, and fetching them from {urls[0]} failed ({why}): {fix}") from None
    left = _missing_objects(git, commit)
    if left:
        raise WorkspaceError(f"{said}; {len(left)} are still missing after a fetch from {urls[0]}: {fix}")


def _in_tree(written: tuple[str, ...], tree: Path, prefix: str) -> set[str]:
    """The files a CLI reported writing (absolute, or relative to its workdir), as paths in ``tree``."""
    found = set()
    for name in written:
        path = Path(os.path.normpath(tree / prefix / name))  # an absolute name stays as it is
        with contextlib.suppress(ValueError):
            found.add(path.relative_to(tree).as_posix())
    return found


def _ignored_writes(git: Git, git_dir: Path, written: set[str]) -> tuple[str, ...]:
    """The files (a folder once) its agent reported writing in its checkout that an ignore
    rule keeps off its commits, each with the rule, as ``path (source:line: pattern)``."""
    every = git.run("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory").fields
    listed = [p for p in every if p in written or (p.endswith("/") and any(w.startswith(p) for w in written))]
    if len(every) > len(listed):
        log.info("ignored files not reported as written (kept off the branch): %s", every[:_KEEP_IGNORED])
    if not listed:
        return ()
    shown = listed[:_KEEP_IGNORED]
    # One "source:line:pattern<TAB>path" a line (-z needs --stdin; a path git quotes is named without its rule).
    said = git.run("-c", "core.quotePath=false", "check-ignore", "-v", "--", *shown, ok=(0, 1)).text.splitlines()
    rules = {}
    for rule, _, path in (line.partition("\t") for line in said):
        source, line, pattern = (rule.split(":", 2) + ["", ""])[:3]
        where = ".git/info/exclude" if source.startswith(str(git_dir)) else source
        rules[path] = f"{where}:{line}: {pattern}"
    named = tuple(f"{path} ({rules[path]})" if path in rules else path for path in shown)
    return named + ((f"... {len(listed) - len(shown)} more",) if len(listed) > len(shown) else ())


def _fetch_missing(git: Git, store: Path | None, user: Git, commit: str, timeout_s: float) -> None:
    """Before a checkout (``git``) of ``commit``: the objects it needs that no object folder
    holds, fetched into the ``store`` (an older session has none: the check after it refuses)."""
    if store is not None and _missing_objects(git, commit):
        fetch_missing_objects(store, user, commit, timeout_s)


def _verify_checkout(git: Git, name: str, commit: str) -> None:
    """A checkout's tree and index must be exactly ``commit``'s: git's checkout may print
    errors (an object it cannot read) and still exit 0, and a file missing here would be
    deleted on the branch.

    Raises:
        WorkspaceError: it is not.
    """
    # The index against the commit, and its files present: no content is read (`git status`
    # would run the tree's content filters), and git leaves out a file whose blob it lacks.
    staged = git.run("diff-index", "--cached", "--name-only", "-z", "--ignore-submodules=all", commit).fields
    differ = list(dict.fromkeys([*staged, *git.run("ls-files", "-z", "--deleted").fields]))
    if differ:
        shown = ", ".join(differ[:10]) + (" ..." if len(differ) > 10 else "")
        raise WorkspaceError(
            f"checkout {name} does not hold commit {commit[:10]}: {len(differ)} file(s) differ: {shown}"
        )


def object_format(git_dir: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The repository's object format (sha1, sha256): the store and checkouts are made with
    it, or they could read none of its objects."""
    return Git(["--git-dir", str(git_dir)], timeout_s=timeout_s, cwd=git_dir).out("rev-parse", "--show-object-format")


def _init_checkout(path: Path, git_dir: Path, alternates: list[Path], common_dir: Path, timeout_s: float) -> None:
    """An empty repository with its git folder apart, reading the objects of ``alternates``,
    excluding what the user's ``info/exclude`` excludes."""
    formats = f"--object-format={object_format(common_dir, timeout_s)}"
    Git([], timeout_s=timeout_s, private=True).run(
        "init", "-q", "--template=", formats, f"--separate-git-dir={git_dir}", str(path)
    )
    info = git_dir / "objects" / "info"
    info.mkdir(parents=True, exist_ok=True)
    _write_private(info / "alternates", "".join(f"{source}\n" for source in alternates).encode())
    for rules in ("exclude", "attributes"):  # the user's (an imported folder's: byte for byte)
        if (common_dir / "info" / rules).is_file():
            (git_dir / "info").mkdir(mode=0o700, exist_ok=True)
            _write_private(git_dir / "info" / rules, (common_dir / "info" / rules).read_bytes())
    if (common_dir / "shallow").exists():  # a shallow clone's boundary, or its history looks broken
        _write_private(git_dir / "shallow", (common_dir / "shallow").read_bytes())


def _write_private(path: Path, data: bytes) -> None:
    """A file of the session's git folders, readable by this user alone (as git makes them there)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def _with_their_alternates(sources: list[Path]) -> tuple[Path, ...]:
    """``sources`` and the object folders they name in turn (git follows alternates of alternates)."""
    found: list[Path] = []
    pending = list(sources)
    while pending and len(found) < 16:
        folder = pending.pop(0)
        if folder in found:
            continue
        found.append(folder)
        with contextlib.suppress(OSError):
            for line in (folder / "info" / "alternates").read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    pending.append((folder / line.strip()).resolve())
    return tuple(found)


def object_folders(git_dir: Path) -> tuple[Path, ...]:
    """The object folders a checkout's git folder reads: its own and those its alternates name."""
    return _with_their_alternates([git_dir / "objects"])


def checkout_of(folder: Path) -> tuple[Path, Path] | None:
    """``(tree, git folder)`` of the assignment checkout ``folder`` is in, by the workspace's
    layout (``<session>/checkouts/<name>``, ``<session>/git/checkouts/<name>``), never by the
    tree's ``.git`` file, which its agent can rewrite; None: no such checkout."""
    folder = Path(os.path.abspath(folder))
    for tree in (*reversed(folder.parents), folder):  # outermost first: the agent makes none above its tree
        if tree.parent.name == _FOLDERS["assignment"] and (tree.parent.parent / RECORD_FILE).is_file():
            git_dir = tree.parent.parent / GIT_FOLDER / _FOLDERS["assignment"] / tree.name
            return (tree, git_dir) if (git_dir / "HEAD").is_file() else None
    return None


def _has_markers(path: Path) -> bool:
    try:
        return _MARKERS.search(path.read_bytes()) is not None
    except (FileNotFoundError, IsADirectoryError):
        return False


def _remove(*paths: Path) -> None:
    for path in paths:
        submodules.clear(path)  # a filled submodule folder inside is read-only


# -- orchestrate apply / discard / sessions -------------------------------------------------


def apply_session(
    target: Path,
    session_id: str,
    squash: bool = False,
    title: str | None = None,
    *,
    store: Path | None = None,
    started_on: str | None = None,
    onto: str | None = None,
    sign: bool = True,
    snapshot: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ApplyResult:
    """Merge ``orchestrate/<session_id>`` into the user's current branch (``squash``: as one
    commit). Everything is checked before anything moves, in the session's ``store`` (None:
    an older session, its branch in the user's repository): the current branch must be the
    one the session started from (``started_on``, refs/heads/<name>) unless ``onto`` names it,
    the merge must not conflict and the user's uncommitted files must not be among those it
    changes. Only then does the user's repository gain the session's commits (fetched from the
    store), and their branch is fast-forwarded to the merge (or squash) commit, keeping every
    other change of theirs, staged or not. Idempotent: when their branch's tree already holds
    the session's changes, nothing is done (never an empty commit). ``commit.gpgSign`` in
    their config is honoured (``sign`` False: the commit is made unsigned). ``snapshot``: the
    session's base is this snapshot of the user's uncommitted files; only the session's own
    changes since it come in, as one commit (``workspace_apply``).

    Raises:
        ApplyRefused: the reason nothing was done (and the files concerned).
        WorkspaceError: git failed.
    """
    check_name(session_id, "session id")
    found = probe_repository(Path(target), timeout_s)
    if isinstance(found, str):
        raise ApplyRefused(found)
    git = Git(["-C", found.top], timeout_s=timeout_s)
    branch = session_branch(session_id)
    reader = store_git(store, timeout_s) if store is not None else git
    session_tip = _apply_preconditions(reader, found, branch, store)
    into = (found.branch or "").removeprefix("refs/heads/")
    _check_onto(found, started_on, onto)
    plan = _plan_apply(reader, found, branch, session_tip, store, squash, snapshot)
    if plan is None:
        return ApplyResult(session_id=session_id, status="up_to_date", branch=into, commit=found.head)
    touched = reader.run("diff", "--name-only", "-z", "--no-renames", found.head, plan.tree or session_tip).fields
    overlap = sorted(set(touched) & set(uncommitted_files(git)))
    if overlap:
        raise ApplyRefused(overlap_refusal(overlap), tuple(overlap))
    if store is not None:
        _fetch_from_store(git, store, session_tip)
        if plan.tree is not None:  # again in the user's repository: the merge's trees were written in the store
            plan = _plan_apply(git, found, branch, session_tip, store, squash, snapshot) or plan
    signing = _signing(git, sign)
    commit = _apply_commit(git, found, session_id, session_tip, plan, title, signing)
    if store is not None:  # before their branch moves: git-lfs smudges the session's files from their store
        user = storage_config.read_user_storage(Path(found.git_dir), Path(found.common_dir), Path(found.top))
        storage_config.bring_lfs_objects(git, user, store, commit, touched)
    git.run("merge", "-q", "--ff-only", commit)
    status = plan.status if commit != session_tip else "fast_forward"
    return ApplyResult(session_id=session_id, status=status, branch=into, commit=commit, files=tuple(touched))


class _ApplyPlan(NamedTuple):
    """What apply will make: ``tree`` None, a fast-forward to the session tip; else a commit
    of that tree, a merge or one commit on HEAD (its message lists ``since``..tip)."""

    tree: str | None
    since: str
    one_commit: bool
    status: ApplyStatus


def _plan_apply(
    git: Git, found: _Repository, branch: str, session_tip: str, store: Path | None, squash: bool, snapshot: str | None
) -> _ApplyPlan | None:
    """What apply will make, in the repository of ``git``; None: the user's branch already
    holds the session's changes (apply makes no empty commit).

    Raises:
        ApplyRefused: the merge would conflict.
    """
    into = (found.branch or "").removeprefix("refs/heads/")
    if snapshot is not None:
        tree, conflicts = replayed_tree(git, found.head, snapshot, session_tip)
        if tree is None:
            raise ApplyRefused(snapshot_conflict(branch, into, conflicts), conflicts)
        if tree == git.out("rev-parse", f"{found.head}^{{tree}}"):
            return None
        return _ApplyPlan(tree, snapshot, True, "squashed" if squash else "replayed")
    fork = git.out("merge-base", found.head, session_tip)
    if fork == session_tip:
        return None
    tree = _apply_tree(git, found, branch, session_tip, store) if fork != found.head else None
    if _makes_commit(squash, tree) and _already_in(git, found.head, tree, session_tip):
        return None
    return _ApplyPlan(tree, fork, squash, "squashed" if squash else "merged")


def main_worktree_of(folder: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Path | None, Path] | None:
    """``(main worktree, common git folder)`` of the repository ``folder`` is in (a working
    tree or a git folder); the main worktree None when there is none (bare, or removed);
    None: ``folder`` is in no repository."""
    if not folder.is_dir():
        return None
    found = Git(["-C", str(folder)], timeout_s=timeout_s).run(
        "rev-parse", "--path-format=absolute", "--git-common-dir", ok=(0, 128)
    )
    if found.returncode != 0:
        return None
    common = Path(found.text).resolve()
    listed = Git(["--git-dir", str(common)], timeout_s=timeout_s, cwd=common).run(
        "worktree", "list", "--porcelain", ok=(0, 128)
    )
    first = listed.text.split("\n\n")[0].splitlines() if listed.returncode == 0 else []
    if not first or not first[0].startswith("worktree ") or "bare" in first:
        return None, common
    main = Path(first[0].removeprefix("worktree "))
    return (main if main.is_dir() else None), common


def _check_onto(found: _Repository, started_on: str | None, onto: str | None) -> None:
    """Apply goes to the branch the session started from, or to the current one ``onto`` names.

    Raises:
        ApplyRefused: the current branch is neither.
    """
    current = (found.branch or "").removeprefix("refs/heads/")
    if onto is not None and onto.removeprefix("refs/heads/") != current:
        raise ApplyRefused(f"--onto {onto}, but the current branch in {found.top} is {current}: check out {onto} first")
    started = (started_on or "").removeprefix("refs/heads/")
    if onto is None and started and started != current:
        raise ApplyRefused(
            f"the session started from branch {started}, but the current branch in {found.top} is {current}; "
            f"nothing was changed. Check out {started}, or apply onto {current} with --onto {current}"
        )


def _makes_commit(squash: bool, tree: str | None) -> bool:
    """Whether apply would write a commit (a squash, or a merge); a fast-forward writes none."""
    return squash or tree is not None


def _already_in(git: Git, head: str, tree: str | None, session_tip: str) -> bool:
    """The commit apply would make holds the tree the user's HEAD has (an empty commit):
    the session's changes are in their branch already (e.g. squashed before)."""
    made = tree or git.out("rev-parse", f"{session_tip}^{{tree}}")
    return made == git.out("rev-parse", f"{head}^{{tree}}")


def _signing(git: Git, sign: bool) -> tuple[str, ...]:
    """``-S`` when the user's config asks for signed commits (``commit.gpgSign``; git's
    commit-tree does not read it) and ``sign``: signed with their own signing setup."""
    wanted = git.run("config", "--type=bool", "commit.gpgSign", ok=(0, 1)).text == "true"
    return ("-S",) if wanted and sign else ()


def _apply_tree(git: Git, found: _Repository, branch: str, session_tip: str, store: Path | None) -> str:
    """The tree of the user's HEAD merged with the session tip (merge-tree writes its objects
    into the repository ``git`` is in).

    Raises:
        ApplyRefused: the merge would conflict.
    """
    into = (found.branch or "").removeprefix("refs/heads/")
    merged = git.run(
        "merge-tree", "--write-tree", "--no-messages", "--name-only", "-z", found.head, session_tip, ok=(0, 1)
    )
    if merged.returncode == 1:
        files = tuple(dict.fromkeys(merged.fields[1:]))
        yourself = f"git merge {branch}" if store is None else f"git fetch {store} {branch} && git merge FETCH_HEAD"
        raise ApplyRefused(
            f"merging {branch} into {into} would conflict in {few(files)}; nothing was changed. "
            f"Merge it yourself ({yourself}) and resolve the conflicts",
            files,
        )
    return merged.fields[0]


def _fetch_from_store(git: Git, store: Path, commit: str) -> None:
    """The session's commits into the user's repository: their objects only, no ref (the
    user's branch names them once it is fast-forwarded)."""
    fetch = ("-c", "protocol.file.allow=always", *(p for pair in _FETCH_CONFIG for p in ("-c", pair)))
    git.run(*fetch, *_FETCH, "-q", str(store), commit)


def _apply_preconditions(git: Git, found: _Repository, branch: str, store: Path | None) -> str:
    """The session branch's commit (``git``: in the store, or the user's repository), once the
    user's HEAD is a branch to apply it to and no merge, rebase... is unfinished there."""
    ref = f"refs/heads/{branch}"
    unfinished = unfinished_operation(Path(found.git_dir))  # git's own merge would fail half-way
    if unfinished is not None:
        raise ApplyRefused(
            f"{found.top} is in the middle of {unfinished.what}; nothing was changed. Finish or abort it first "
            f"({unfinished.fix}), then apply again"
        )
    if found.branch is None:
        raise ApplyRefused(f"HEAD is detached in {found.top}: check out the branch to apply the session to")
    if found.branch == ref:
        raise ApplyRefused(f"{branch} itself is checked out in {found.top}: check out the branch to apply it to")
    if store is not None and not (store / "HEAD").is_file():
        raise ApplyRefused(f"there is no branch {branch}: the session's store {store} is gone (discarded?)")
    result = git.run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", ok=(0, 1))
    if result.returncode == 1:
        where = store or found.top
        raise ApplyRefused(f"there is no branch {branch} in {where} (discarded, or never made)")
    return result.text


def _apply_commit(
    git: Git,
    found: _Repository,
    session_id: str,
    session_tip: str,
    plan: _ApplyPlan,
    title: str | None,
    signing: tuple[str, ...] = (),
) -> str:
    """The commit the user's branch fast-forwards to: the session tip itself, a merge commit
    of both, or one commit on top of their HEAD (``signing``: ``-S``, signed).

    Raises:
        ApplyRefused: signing failed; nothing was changed.
    """
    if not plan.one_commit and plan.tree is None:
        return session_tip
    try:
        return _write_apply_commit(git, found, session_id, session_tip, plan, title, signing)
    except WorkspaceError as exc:
        if not signing:
            raise
        raise ApplyRefused(
            f"your git config asks for signed commits (commit.gpgSign) and signing failed: {exc.stderr or exc}; "
            "nothing was changed. Fix signing (user.signingKey, gpg.format), or apply with --no-sign "
            "for an unsigned commit"
        ) from None


def _write_apply_commit(
    git: Git,
    found: _Repository,
    session_id: str,
    session_tip: str,
    plan: _ApplyPlan,
    title: str | None,
    signing: tuple[str, ...],
) -> str:
    # Their own identity when git has one for them, as `git merge` would; the tool's otherwise.
    identity = {} if git.run("var", "GIT_COMMITTER_IDENT", ok=(0, 128)).returncode == 0 else dict(TOOL_IDENTITY)
    branch = session_branch(session_id)
    into = (found.branch or "").removeprefix("refs/heads/")
    trailer = f"{TRAILER_SESSION}: {session_id}"
    if not plan.one_commit:
        message = f"Merge branch '{branch}' into {into}\n\n{trailer}"
        parents = ("-p", found.head, "-p", session_tip)
        return git.out("commit-tree", *signing, plan.tree or "", *parents, "-m", message, env=identity)
    subjects = git.out("log", "--no-merges", "--format=* %s", f"{plan.since}..{session_tip}")
    subject = _one_line(title, 100) if title else f"Apply session {session_id} (orchestrate)"
    message = f"{subject}\n\n{subjects}\n\n{trailer}" if subjects else f"{subject}\n\n{trailer}"
    authored = {**identity, **{k: v for k, v in TOOL_IDENTITY.items() if k.startswith("GIT_AUTHOR")}}
    squashed = plan.tree or f"{session_tip}^{{tree}}"
    return git.out("commit-tree", *signing, squashed, "-p", found.head, "-m", message, env=authored)


def discard_session(
    target: Path | None, session_dir: Path, session_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DiscardResult:
    """Remove the session's store (its branch and every object its agents made), its
    checkouts and the agents' private CLI state from the session folder, and the branches an
    older session made in the user's repository (``orchestrate/<id>``, ``orchestrate/<id>/*``;
    a session with a store made none there, and its ``.git`` is left as it was). What could not be
    deleted (a branch checked out somewhere, a target that is no repository) is in
    ``problems``; nothing is skipped silently. ``target`` None: no repository is known, only
    the checkouts go."""
    check_name(session_id, "session id")
    if _kind_of(session_dir) == "folder":
        target = None  # an imported folder's branches are all in the store; the folder stays as it is
    deleted, problems = _delete_branches(target, session_id, timeout_s) if target is not None else ([], [])
    deleted = [*_branches_in_store(store_path(session_dir), timeout_s), *deleted]
    removed = []
    for kind, folder in _FOLDERS.items():
        with contextlib.suppress(FileNotFoundError):
            removed += [_key(kind, p.name) for p in sorted((session_dir / folder).iterdir())]
        _remove(session_dir / folder)
    _remove(session_dir / GIT_FOLDER)  # the store too: the session's objects go with it
    _remove(session_dir / CLI_STATE_FOLDER)  # the agents' private CLI state: copies of your credentials
    record_path = session_dir / RECORD_FILE
    if record_path.exists():
        record = WorkspaceRecord.model_validate(read_json(record_path))
        update = {"checkouts": {}, "discarded": not problems}
        write_json_atomic(record_path, record.model_copy(update=update).model_dump(mode="json"))
    return DiscardResult(
        session_id=session_id, branches=tuple(deleted), checkouts=tuple(removed), problems=tuple(problems)
    )


def _kind_of(session_dir: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        return WorkspaceRecord.model_validate(read_json(session_dir / RECORD_FILE)).kind
    return None


def _branches_in_store(store: Path, timeout_s: float) -> list[str]:
    """The branches the session's store holds (they go with it)."""
    if not (store / "HEAD").is_file():
        return []
    listed = store_git(store, timeout_s).run("for-each-ref", "--format=%(refname)", "refs/heads/", ok=(0, 128))
    return [r.removeprefix("refs/heads/") for r in listed.text.splitlines() if r] if listed.returncode == 0 else []


def _delete_branches(target: Path, session_id: str, timeout_s: float) -> tuple[list[str], list[str]]:
    """``git branch -D`` of the session's branches in the user's repository (an older
    session's; a session with a store made none there): the deleted ones, and what went wrong."""
    try:
        found = probe_repository(Path(target), timeout_s)
    except RepositoryRefused as exc:
        return [], [f"no branch deleted: {exc}"]
    if isinstance(found, str):
        return [], [f"no branch deleted: {found}"]
    git = Git(["-C", found.top], timeout_s=timeout_s)
    # A pattern matches the ref itself and every ref below it (orchestrate/<id>/...), not <id>1.
    pattern = f"refs/heads/{session_branch(session_id)}"

    def listed() -> list[str]:
        return [r for r in git.out("for-each-ref", "--format=%(refname)", pattern).splitlines() if r]

    names = listed()
    if not names:
        return [], []
    # branch -D refuses a branch checked out in any worktree, with the reason.
    result = git.run("branch", "-D", *(r.removeprefix("refs/heads/") for r in names), ok=(0, 1))
    left = listed()
    deleted = [r.removeprefix("refs/heads/") for r in names if r not in left]
    problems = [f"not deleted: {', '.join(left)}: {result.stderr}"] if left else []
    return deleted, problems


def workspace_summary(session_dir: Path) -> dict[str, object] | None:
    """The session's branch and what is left of its checkouts, read from its folder only
    (no git): None for a session without a workspace (no git target, or an older session)."""
    try:
        record = WorkspaceRecord.model_validate(read_json(session_dir / RECORD_FILE))
    except (OSError, ValueError):
        return None
    left = 0
    for folder in _FOLDERS.values():
        with contextlib.suppress(OSError):
            left += sum(1 for _ in (session_dir / folder).iterdir())
    return {
        "branch": record.branch,
        "kind": record.kind,
        "applied": record.applied,
        "store": str(store_path(session_dir)) if record.store is not None else None,
        "repository": record.repository,
        "common_dir": record.common_dir,
        "user_branch": record.user_branch,
        "base": record.base,
        "snapshot": snapshot_base(record.base, record.user_head, record.include_uncommitted),
        "discarded": record.discarded,
        "checkouts": left,
        "merges": len(record.merges),
    }
