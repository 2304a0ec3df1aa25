"""A session on a folder without git, or on a git repository without a commit: the folder is
imported into the session's own store (``<session>/git/session.git``) as its base commit, and
from then on the session works exactly as on a repository (checkouts, merges, reviews,
planning views); ``orchestrate apply`` writes the changed files back (``folder_apply``).

The folder is only read: no ``.git`` is made in it, and for a repository without a commit
nothing in its ``.git`` is written (its ``info/exclude`` is read). The store needs no
alternates: every object is its own.

What the import takes (``survey_folder`` checks it first, before anything is made):

- every regular file (with its executable bit) and every symbolic link, stored as a link
  (its target text), never followed: a link pointing out of the folder stays a link;
- not what an ignore rule hides: the folder's ``.gitignore`` files, your global excludes file
  (``core.excludesFile``) and, for a repository without a commit, its ``.git/info/exclude``;
- not ``.git`` itself, nor a nested git repository (a folder holding its own ``.git``): each
  is named at start and left out;
- not the session workspace, when it lies inside the folder;
- not special files (FIFOs, sockets, devices): each is named at start and left out;
- content byte for byte: no ``.gitattributes`` conversion (line endings, filters) applies,
  neither at the import nor in the checkouts;
- at most ``IMPORT_MAX_FILES`` files and ``IMPORT_MAX_BYTES`` bytes: a bigger folder is
  refused, naming the way out (a ``.gitignore`` for the bulky parts, a repository of your own,
  or ``--in-place``).

Names that are not UTF-8 are kept as the bytes they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from meta_orchestrator.actors.workspaces.git_command import (
    DEFAULT_TIMEOUT_S,
    HOSTILE_TREE_CONFIG,
    TOOL_IDENTITY,
    Git,
    WorkspaceError,
)
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import (
    GIT_FOLDER,
    RECORD_FILE,
    TRAILER_SESSION,
    OpenResult,
    SessionRepo,
    session_branch,
    store_path,
)
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.messages.workspace import WorkspaceRecord

IMPORT_MAX_FILES = 200_000
IMPORT_MAX_BYTES = 2 * 1024**3
_NAMED = 10  # names shown per kind of thing left out
# $GIT_DIR/info/attributes wins over every .gitattributes: the content stays byte for byte.
BYTE_FOR_BYTE = b"* -text -eol -filter -ident -working-tree-encoding\n"
# The orchestrator's git over the user's folder: nothing in it runs, nothing is converted.
_IMPORT_CONFIG = (*HOSTILE_TREE_CONFIG, "core.autocrlf=false", "core.safecrlf=false", "core.symlinks=true")


class ImportRefused(WorkspaceError):
    """The folder cannot be imported as it is; ``str()`` names the fix. Nothing was made."""


@dataclass(frozen=True)
class FolderSurvey:
    """What the import of a folder takes and leaves out (see the module's docstring)."""

    files: int
    size: int
    special: tuple[str, ...]  # FIFOs, sockets, devices
    nested: tuple[str, ...]  # nested git repositories
    ignored: int  # entries an ignore rule hides (a folder counts once)
    workspace: str | None  # the session workspace inside the folder


@dataclass(frozen=True)
class _Folder:
    """The folder to import; ``git_dir``: the git folder of a repository without a commit."""

    path: Path
    git_dir: Path | None


def _folder(target: Path, timeout_s: float) -> _Folder:
    """The folder, and the git folder it is in when it is a repository without a commit.

    Raises:
        ImportRefused: it is no folder.
    """
    if not target.is_dir():
        raise ImportRefused(f"{target} is not a folder: pass the folder the agents should work in as --target")
    found = Git(["-C", str(target)], timeout_s=timeout_s).run("rev-parse", "--absolute-git-dir", ok=(0, 128))
    git_dir = Path(found.text) if found.returncode == 0 and found.text else None
    return _Folder(target.resolve(), git_dir)


def _make_store(store: Path, folder: _Folder, branch: str, timeout_s: float) -> Git:
    """A bare repository of the session's own (sha1; no alternates), reading the folder as its
    working tree: the repository's ``info/exclude`` applies, no attribute converts."""
    private_dir(store.parent)
    Git([], timeout_s=timeout_s, private=True).run(
        "init", "-q", "--bare", "--template=", "--object-format=sha1", str(store)
    )
    store.chmod(0o700)
    info = store / "info"
    info.mkdir(mode=0o700, exist_ok=True)
    (info / "attributes").write_bytes(BYTE_FOR_BYTE)
    if folder.git_dir is not None:
        with contextlib.suppress(OSError):
            (info / "exclude").write_bytes((folder.git_dir / "info" / "exclude").read_bytes())
    (store / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    return Git(
        ["--git-dir", str(store), "--work-tree", str(folder.path)],
        config=_IMPORT_CONFIG,
        timeout_s=timeout_s,
        cwd=folder.path,
        private=True,
    )


def _ignored(git: Git) -> tuple[set[str], set[str]]:
    """``(files, folders)`` an ignore rule hides, relative to the folder (a folder once)."""
    listed = git.run("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory").fields
    return {p for p in listed if not p.endswith("/")}, {p.rstrip("/") for p in listed if p.endswith("/")}


def _inside(folder: Path, workspace: Path | None) -> str | None:
    if workspace is None:
        return None
    with contextlib.suppress(ValueError):
        inside = workspace.resolve().relative_to(folder)
        return inside.as_posix() if inside.parts else "."
    return None


@dataclass
class _Walk:
    """The survey's walk: what it counted so far (see survey_folder)."""

    folder: Path
    skip: set[str]  # the workspace and ignored files
    ignored_dirs: set[str]
    files: int = 0
    size: int = 0
    special: list[str] = field(default_factory=list)
    nested: list[str] = field(default_factory=list)

    def scan(self, rel: str) -> list[str]:
        """Count one folder's entries; returns its sub-folders to walk.

        Raises:
            ImportRefused: it cannot be read.
        """
        below = []
        try:
            with os.scandir(self.folder / rel if rel else self.folder) as entries:
                for entry in entries:
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.name != ".git" and path not in self.skip:
                        below += self._count(entry, path)
        except OSError as exc:
            raise ImportRefused(
                f"{self.folder / rel} cannot be read ({exc.strerror or exc}): make it readable, or name it in a "
                ".gitignore, or run with --in-place (no isolation, nothing to undo)"
            ) from None
        return below

    def _count(self, entry: os.DirEntry[str], path: str) -> list[str]:
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            if path in self.ignored_dirs:
                return []
            if os.path.lexists(os.path.join(entry.path, ".git")):
                self.nested.append(path)
                return []
            return [path]
        if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
            self.files += 1
            self.size += info.st_size if stat.S_ISREG(info.st_mode) else 0
        else:
            self.special.append(path)
        return []


def survey_folder(
    folder: Path,
    git: Git,
    workspace: Path | None,
    git_dir: Path | None = None,
    *,
    limits: tuple[int, int] | None = None,
) -> FolderSurvey:
    """Walk ``folder`` as the import will take it (``git``: over it as working tree, for the
    ignore rules), links never followed.

    Raises:
        ImportRefused: it is too big or unreadable, or the session workspace is the folder itself.
    """
    max_files, max_bytes = limits or (IMPORT_MAX_FILES, IMPORT_MAX_BYTES)
    skipped_workspace = _inside(folder, workspace)
    if skipped_workspace == ".":
        raise ImportRefused(f"the session workspace {workspace} is {folder} itself: pass another --workspace")
    ignored_files, ignored_dirs = _ignored(git)
    walk = _Walk(folder, {*ignored_files, *([skipped_workspace] if skipped_workspace else [])}, ignored_dirs)
    pending = [""]
    while pending:
        pending += walk.scan(pending.pop())
        if walk.files > max_files or walk.size > max_bytes:
            raise ImportRefused(_too_big(folder, max_files, max_bytes, git_dir))
    return FolderSurvey(
        files=walk.files,
        size=walk.size,
        special=tuple(sorted(walk.special)),
        nested=tuple(sorted(walk.nested)),
        ignored=len(ignored_files) + len(ignored_dirs),
        workspace=skipped_workspace,
    )


def _too_big(folder: Path, max_files: int, max_bytes: int, git_dir: Path | None) -> str:
    repo = (
        "commit once yourself (`git add -A && git commit -m start`)"
        if git_dir is not None
        else "make it a repository (`git init && git add -A && git commit -m start`)"
    )
    return (
        f"{folder} has no git commit and holds more than {max_files} files or {max_bytes // 2**20} MiB (ignored "
        f"ones not counted): too much to import into the session's own repository. Add a .gitignore for the "
        f"bulky parts (build output, data), or {repo}, or run with --in-place (no isolation, nothing to undo)"
    )


def check_folder(
    target: Path,
    workspace: Path | None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    limits: tuple[int, int] | None = None,
) -> FolderSurvey:
    """Before anything starts: what importing ``target`` would take (a scratch store, removed).
    ``limits``: (files, bytes), IMPORT_MAX_FILES and IMPORT_MAX_BYTES unless given.

    Raises:
        ImportRefused: it cannot be imported; the message names the fix.
    """
    folder = _folder(target, timeout_s)
    with tempfile.TemporaryDirectory(prefix="orchestrate-survey-") as scratch:
        git = _make_store(Path(scratch) / GIT_FOLDER / "survey.git", folder, "survey", timeout_s)
        return survey_folder(folder.path, git, workspace, folder.git_dir, limits=limits)


def import_folder(
    target: Path,
    session_dir: Path,
    session_id: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sandbox: OsSandbox | None = None,
) -> OpenResult:
    """A new session's store holding ``target`` as its base commit, its branch there, and
    workspace.json (kind "folder"). Nothing half-made is left when it fails.

    Raises:
        WorkspaceError: git failed; ImportRefused: the folder cannot be imported (the fix named).
    """
    folder = _folder(target, timeout_s)
    store = store_path(session_dir)
    branch = session_branch(session_id)
    try:
        git = _make_store(store, folder, branch, timeout_s)
        survey = survey_folder(folder.path, git, session_dir.parent, folder.git_dir)
        base = _import_commit(git, survey, session_dir, session_id, folder.path)
        record = WorkspaceRecord(
            session_id=session_id,
            kind="folder",
            repository=str(folder.path),
            git_dir=str(store),
            common_dir=str(store),
            branch=branch,
            store=str(store),
            base=base,
            user_head=base,
            tip=base,
        )
        repo = SessionRepo(record, session_dir, timeout_s, sandbox)
        repo.save()
        repo.resume()
    except BaseException:
        _remove_made(session_dir)
        raise
    return OpenResult(repo, import_note(record, survey, folder.git_dir is not None))


def _import_commit(git: Git, survey: FolderSurvey, session_dir: Path, session_id: str, folder: Path) -> str:
    """The folder's files as one commit in the store (a scratch index; the branch set to it)."""
    left_out = [*survey.nested, *([survey.workspace] if survey.workspace else [])]
    skip = [f":(top,literal,exclude){path}" for path in left_out]
    with tempfile.TemporaryDirectory(prefix=".import-", dir=session_dir) as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        git = git.also_writable(scratch)
        git.run("add", "-A", "--", ":(top)", *skip, env=env)
        tree = git.out("write-tree", env=env)
    message = f"The folder {folder} at the start of session {session_id}\n\n{TRAILER_SESSION}: {session_id}"
    base = git.out("commit-tree", tree, "-m", message, env=TOOL_IDENTITY)
    git.run("update-ref", "-m", f"orchestrate: session {session_id}", f"refs/heads/{session_branch(session_id)}", base)
    return base


def _remove_made(session_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (session_dir / RECORD_FILE).unlink()
    shutil.rmtree(session_dir / GIT_FOLDER, ignore_errors=True)


def shown(name: str) -> str:
    """A file name as it can be printed and logged: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _named(items: tuple[str, ...]) -> str:
    shown_ = ", ".join(shown(item) for item in items[:_NAMED])
    return shown_ + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")


def import_note(record: WorkspaceRecord, survey: FolderSurvey, no_commit: bool) -> str:
    """What the start says: the folder was imported, what was left out, what apply will do."""
    what = "is a git repository without a commit" if no_commit else "has no git"
    size = f"{survey.size / 2**20:.1f} MiB" if survey.size >= 2**20 else f"{survey.size} bytes"
    lines = [
        f"{record.repository} {what}: its {survey.files} file(s) ({size}; symlinks as links, never followed) "
        f"are imported as the base {record.base[:10]} of branch {record.branch} in the session's own repository "
        f"{record.store}; your folder is not written until `orchestrate apply {record.session_id}` writes the "
        "changed files into it"
    ]
    if survey.ignored:
        lines.append(f"left out: {survey.ignored} entr{'ies' if survey.ignored != 1 else 'y'} an ignore rule hides")
    if survey.special:
        lines.append(f"left out, special files (FIFOs, sockets, devices): {_named(survey.special)}")
    if survey.nested:
        lines.append(f"left out, nested git repositories (run a session on each): {_named(survey.nested)}")
    if survey.workspace:
        lines.append(f"left out: the session workspace {survey.workspace}")
    return "\n".join(lines)


__all__ = ["IMPORT_MAX_BYTES", "IMPORT_MAX_FILES", "FolderSurvey", "ImportRefused", "check_folder", "import_folder"]
