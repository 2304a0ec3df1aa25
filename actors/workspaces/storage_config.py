"""Content is stored in a session's checkouts as in the user's repository.

A checkout is a repository of its own (see ``workspaces``): git reads its config, the
user's global and system config, and nothing of the user's repository config. What decides
how content is stored (filter drivers such as git-crypt's or git-lfs's, ``core.autocrlf``,
``core.eol``, the user's ``info/attributes``...) is therefore read from the USER's config
and written into the checkout's config by the orchestrator, before its digest is taken. An
agent's ``.gitattributes`` may then select a filter the user defined, as in the user's own
tree; nothing an agent can write defines a command (the checkout's config is the
orchestrator's, digest-checked; a tree's ``.lfsconfig`` cannot override what it sets).

Git LFS: the session's LFS objects live in its store, ``<store>/lfs/objects`` (git-lfs's
place in a bare repository). The user's objects are linked there (a hard link, a symbolic
link across file systems: never a copy) by the orchestrator when the session's first
checkout is made (its base is theirs: what they fetch later is not needed), outside the
sandbox, since a hard link cannot cross the sandbox's bind mounts. Each checkout's ``lfs.storage`` names
that folder, so git-lfs smudges from it and cleans an agent's new file into it; ``lfs.url``
names a path that does not exist, so a checkout never downloads (an object the user lacks
stays a pointer file, as git-lfs leaves it, and is committed back unchanged).
``lfs.repositoryformatversion`` is written first: git-lfs adds it on its first run
otherwise, and the digest check would refuse the checkout. ``orchestrate apply`` links the
objects of the session's LFS files into the user's LFS store before their branch moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meta_orchestrator.actors.workspaces.git_command import DEFAULT_TIMEOUT_S, Git, WorkspaceError
from meta_orchestrator.actors.files.session_files import write_bytes_atomic
from meta_orchestrator.actors.sandbox.bwrap import under_private_tmp

log = logging.getLogger(__name__)

# The settings of the user's repository config that decide what a file's blob is, or how a
# blob is written into the tree: copied into every checkout's config.
CONTENT_KEYS = frozenset(
    {
        "core.autocrlf",
        "core.eol",
        "core.safecrlf",
        "core.symlinks",
        "core.ignorecase",
        "core.precomposeunicode",
        "core.filemode",
        "core.attributesfile",
        "core.checkroundtripencoding",
    }
)
_FILTER_KEY = re.compile(r"^filter\.(?P<name>.+)\.(?P<part>clean|smudge|process|required)$")
_REPOSITORY_SCOPES = ("local", "worktree")  # what git does not read in a checkout by itself
LFS_FILTER = "lfs"
LFS_FOLDER = "lfs"  # in the store: the session's LFS objects (objects/) and git-lfs's scratch
# git-lfs in a checkout downloads from nowhere: a file:// path that does not exist fails at once.
LFS_NO_DOWNLOAD = "file:///nonexistent/orchestrate-checkouts-never-download"
# Folders of the user's git folder a tool keeps its state in, read through the checkout's git
# folder (git-crypt reads its key from `git rev-parse --git-dir`/git-crypt).
_TOOL_STATE = ("git-crypt",)
# Settings git-lfs writes into a repository's config by itself; none runs anything.
_TOOL_WRITTEN = re.compile(r"^lfs\.(repositoryformatversion|.+\.access|.+\.locksverify)$", re.IGNORECASE)
LINKED_MARK = "orchestrate-linked"  # in the session's LFS folder: the user's objects are linked there
WRITTEN_CONFIG = "orchestrate-config"  # in a checkout's git folder: its config as the orchestrator wrote it
_POINTER_MAX = 1024  # bytes: an LFS pointer file is smaller
_OID = re.compile(r"^oid sha256:([0-9a-f]{64})$", re.MULTILINE)
_POINTER_VERSION = "version https://git-lfs.github.com/spec/v1"
_GREP_BATCH = 500  # paths per git grep command line


@dataclass(frozen=True)
class UserStorage:
    """How the user's repository stores content, as read from its config."""

    entries: tuple[tuple[str, str], ...]  # (key, value) of its repository config, for checkouts
    filters: dict[str, dict[str, str]]  # every filter defined at any scope: part -> command
    lfs_objects: Path  # the user's LFS objects folder (<common git dir>/lfs/objects, or lfs.storage's)
    attributes: Path  # the user's $GIT_DIR/info/attributes (it may not exist)
    common_dir: Path

    @property
    def lfs(self) -> bool:
        """git-lfs's filter is defined (by ``git lfs install``, global or in the repository)."""
        return any(part in self.filters.get(LFS_FILTER, {}) for part in ("clean", "smudge", "process"))

    def readable(self) -> tuple[str, ...]:
        """What a confined git over a checkout must read besides its objects: the user's LFS
        objects (the session's may be symbolic links to them), their attributes file and the
        filter programs the private /tmp would hide."""
        paths = [str(self.lfs_objects)] if self.lfs_objects.is_dir() else []
        paths += [str(self.common_dir / name) for name in _TOOL_STATE if (self.common_dir / name).is_dir()]
        attributes = dict(self.entries).get("core.attributesfile")
        paths += [attributes] if attributes and os.path.isabs(attributes) else []
        programs = [_program(command) or "" for parts in self.filters.values() for command in parts.values()]
        return (*paths, *under_private_tmp([p for p in programs if os.path.isabs(p)]))


def read_user_storage(git_dir: Path, common_dir: Path, top: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> UserStorage:
    """The user's storage settings, from their repository's config as git reads it there
    (includes followed, a linked worktree's own config too)."""
    if not git_dir.is_dir():  # a linked worktree removed since the session started: its repository's
        git_dir = common_dir
    git = Git(["--git-dir", str(git_dir)], timeout_s=timeout_s, cwd=git_dir)
    fields = git.run("config", "--list", "-z", "--show-scope", ok=(0, 1)).fields
    entries: dict[str, str] = {}
    filters: dict[str, dict[str, str]] = {}
    lfs_storage = ""
    for scope, entry in zip(fields[::2], fields[1::2], strict=False):
        key, newline, value = entry.partition("\n")
        value = value if newline else "true"  # a key without "=": a boolean, true
        lowered = key.lower()
        found = _FILTER_KEY.match(key)
        if found:
            filters.setdefault(found["name"], {})[found["part"]] = value
        if lowered == "lfs.storage":
            lfs_storage = value
        if scope in _REPOSITORY_SCOPES and (found or lowered in CONTENT_KEYS):
            entries[key if found else lowered] = _absolute(lowered, value, top)
    storage = Path(os.path.expanduser(lfs_storage)) if lfs_storage else Path(LFS_FOLDER)
    lfs_root = storage if storage.is_absolute() else common_dir / storage
    return UserStorage(
        entries=tuple(entries.items()),
        filters=filters,
        lfs_objects=lfs_root / "objects",
        attributes=common_dir / "info" / "attributes",
        common_dir=common_dir,
    )


def _absolute(key: str, value: str, top: Path) -> str:
    """A path setting as the user's git reads it from their tree's top (a checkout's is elsewhere)."""
    if key == "core.attributesfile" and value and not value.startswith("~") and not os.path.isabs(value):
        return str(top / value)
    return value


def _program(command: str) -> str | None:
    """The program a filter command starts (its first word), or None when the shell would parse
    it some other way."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return words[0] if words and not any(c in words[0] for c in "$`=(") else None


def lfs_folder(store: Path | None, user: UserStorage) -> Path:
    """Where a checkout's git-lfs keeps objects: the session's store (an older session, without
    one, keeps its objects in the user's repository: the user's LFS folder)."""
    return store / LFS_FOLDER if store is not None else user.lfs_objects.parent


def confined_paths(store: Path | None, user: UserStorage) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(writable, readable)`` for a confined git over a checkout: the session's LFS folder
    (git-lfs cleans an agent's new file into it), what the user's settings name."""
    if not user.lfs:
        return (), user.readable()
    folder = lfs_folder(store, user)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # bwrap binds only what exists
    return (str(folder),), user.readable()


def storage_dirs(store: Path | None, user: UserStorage) -> tuple[Path, ...]:
    """What a sandboxed agent's git-lfs reads: the session's LFS objects, and the user's its links may name."""
    if not user.lfs:
        return ()
    dirs = (lfs_folder(store, user), user.lfs_objects)
    return tuple(d for d in dict.fromkeys(dirs) if d.is_dir())


def checkout_entries(user: UserStorage, lfs_dir: Path) -> list[tuple[str, str]]:
    """The settings a checkout's config gets: the user's, and where its git-lfs stores objects
    (never downloading)."""
    entries = list(user.entries)
    if user.lfs:
        entries += [
            ("lfs.repositoryformatversion", "0"),  # what git-lfs would write on its first run
            ("lfs.storage", str(lfs_dir)),
            ("lfs.url", LFS_NO_DOWNLOAD),
            ("lfs.skipdownloaderrors", "true"),  # an object the user lacks: its pointer file stays
        ]
    return entries


def as_config(user: UserStorage, store: Path | None) -> tuple[str, ...]:
    """The checkout settings as ``-c`` pairs, for git over the user's tree with the store's
    git folder (the snapshot of their uncommitted files)."""
    return tuple(f"{key}={value}" for key, value in checkout_entries(user, lfs_folder(store, user)))


def write_checkout_storage(
    git_dir: Path, user: UserStorage, store: Path | None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Write the user's storage settings into a new checkout's config (before its digest is
    taken) and make the user's LFS objects readable in the session's LFS folder. (Their
    ``info/attributes`` is copied by ``workspaces._init_checkout``, with ``info/exclude``.)"""
    git = Git([], timeout_s=timeout_s, cwd=git_dir, private=True)
    for key, value in checkout_entries(user, lfs_folder(store, user)):
        git.run("config", "--file", str(git_dir / "config"), "--", key, value)
    link_tool_state(git_dir, user)
    linked = store / LFS_FOLDER / LINKED_MARK if store is not None else None
    if user.lfs and linked is not None and not linked.exists():  # once a session: its base is the user's
        linked.parent.mkdir(mode=0o700, exist_ok=True)
        count = link_lfs_objects(user.lfs_objects, linked.parent / "objects")
        write_bytes_atomic(linked, f"{count} LFS objects of {user.lfs_objects} linked\n".encode())
    # A copy of the config as written (the digest is taken of both): what a tool's own write is told apart from.
    shutil.copyfile(git_dir / "config", git_dir / WRITTEN_CONFIG)
    os.chmod(git_dir / WRITTEN_CONFIG, 0o600)


def link_tool_state(git_dir: Path, user: UserStorage) -> None:
    """The state a filter keeps in the user's git folder (git-crypt's keys), linked into
    ``git_dir`` (a checkout's, the store): the filter finds it by ``git rev-parse --git-dir``."""
    for name in _TOOL_STATE:
        if (user.common_dir / name).is_dir() and not os.path.lexists(git_dir / name):
            os.symlink(user.common_dir / name, git_dir / name)


def only_tool_writes(git_dir: Path, digest: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether a checkout's config differs from the one the orchestrator wrote (``digest``)
    only by settings a tool writes itself and that run nothing (git-lfs's
    ``lfs.repositoryformatversion``, ``lfs.<url>.access``...): then git may run there. Any
    other change (a filter, an include, a hook path...) is not tolerated."""
    written = git_dir / WRITTEN_CONFIG
    try:
        if hashlib.sha256(written.read_bytes()).hexdigest() != digest:
            return False
    except OSError:
        return False
    now, then = _entries(git_dir / "config", timeout_s), _entries(written, timeout_s)
    if now is None or then is None:
        return False
    tolerated = [e for e in now if e not in then and _TOOL_WRITTEN.match(e.partition("\n")[0])]
    if [e for e in now if e not in tolerated] != then:
        return False
    log.info("%s: settings git-lfs wrote itself, tolerated: %s", git_dir / "config", tolerated)
    return True


def _entries(config: Path, timeout_s: float) -> list[str] | None:
    """A config file's entries (``key\nvalue``), its includes not followed; None: unreadable."""
    listed = Git([], timeout_s=timeout_s, cwd=config.parent).run(
        "config", "--file", str(config), "--no-includes", "--list", "-z", ok=(0, 1, 3, 128)
    )
    return listed.fields if listed.returncode in (0, 1) else None


def link_lfs_objects(source: Path, target: Path) -> int:
    """Link every LFS object of ``source`` that ``target`` lacks (a hard link; a symbolic link
    where a hard link is refused, e.g. across file systems). Returns how many were linked."""
    linked = 0
    for relative, names in _lfs_object_folders(source):
        folder = target / relative
        with contextlib.suppress(FileNotFoundError):
            names -= set(os.listdir(folder))  # one listing a folder: a second checkout costs little
        for name in sorted(names):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.link(source / relative / name, folder / name)
            except OSError:
                os.symlink(source / relative / name, folder / name)
            linked += 1
    return linked


def _lfs_object_folders(folder: Path) -> Iterable[tuple[Path, set[str]]]:
    """The folders of an LFS objects folder (``ab/cd``), each with its object files' names."""
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for first in os.scandir(folder):
            if not first.is_dir() or len(first.name) != 2:
                continue
            for second in os.scandir(first.path):
                if second.is_dir() and len(second.name) == 2:
                    names = {f.name for f in os.scandir(second.path) if len(f.name) == 64}
                    yield Path(first.name, second.name), names


def check_required_filters(user: UserStorage, git: Git, commit: str) -> None:
    """A filter the user's config marks required whose program is not installed, and that an
    attributes file of ``commit`` (or the user's own) selects: in the user's own tree git
    would fail there too; the session is refused with the fix.

    Raises:
        WorkspaceError: such a filter, named with its program and the fix.
    """
    missing = {name: prog for name, prog in _required_programs(user).items() if not _installed(prog)}
    if not missing:
        return
    selected = _selected_filters(user, git, commit)
    for name, program in missing.items():
        if name in selected:
            raise WorkspaceError(_missing_filter_message(name, program))


def _required_programs(user: UserStorage) -> dict[str, str]:
    required = {}
    for name, parts in user.filters.items():
        if parts.get("required", "").lower() not in ("true", "yes", "on", "1"):
            continue
        command = parts.get("process") or parts.get("smudge") or parts.get("clean") or ""
        program = _program(command)
        if program:
            required[name] = program
    return required


def _installed(program: str) -> bool:
    if "/" in program:
        return not os.path.isabs(program) or os.access(os.path.expanduser(program), os.X_OK)
    return shutil.which(program) is not None


def _missing_filter_message(name: str, program: str) -> str:
    fix = (
        "install git-lfs (Debian/Ubuntu: apt install git-lfs; https://git-lfs.com), then start again"
        if name == LFS_FILTER
        else f"install {program} (or put it on PATH), then start again"
    )
    return (
        f"your repository's files use the filter '{name}', which your git config marks required "
        f"(filter.{name}.required = true), but its program {program} is not installed: git could not "
        f"check out or commit those files, in your tree either. {fix[0].upper()}{fix[1:]}; or, if you "
        f"mean to work on the stored form, git config --unset filter.{name}.required"
    )


def _selected_filters(user: UserStorage, git: Git, commit: str) -> set[str]:
    """The filter names the attributes files select: the ``.gitattributes`` of ``commit``,
    the user's ``info/attributes`` and ``core.attributesFile``."""
    pattern = r"filter=[^[:space:]]+"
    found = git.run("grep", "-h", "-o", "-I", "-E", "-e", pattern, commit, "--", ":(glob)**/.gitattributes", ok=(0, 1))
    words = set(found.text.split())
    for path in (user.attributes, Path(os.path.expanduser(dict(user.entries).get("core.attributesfile", "") or "/"))):
        with contextlib.suppress(OSError):
            words.update(re.findall(r"filter=\S+", path.read_text("utf-8", "replace")))
    return {word.removeprefix("filter=") for word in words}


# -- orchestrate apply ----------------------------------------------------------------------


def bring_lfs_objects(
    user_git: Git, user: UserStorage, store: Path, commit: str, paths: Iterable[str]
) -> tuple[str, ...]:
    """Before the user's branch moves to ``commit``: the LFS objects of its files among
    ``paths`` (the files the session changed) that the user's store lacks, from the session's
    store into theirs (a hard link, or a copy across file systems), each checked against its
    id. Returns the object ids brought in; one the session's store lacks is left out (the
    user's git-lfs fetches it from their remote, as for any pointer)."""
    session_objects = store / LFS_FOLDER / "objects"
    if not session_objects.is_dir():
        return ()
    brought = []
    for oid in sorted(_pointer_oids(user_git, commit, list(paths))):
        relative = Path(oid[:2], oid[2:4], oid)
        source, dest = session_objects / relative, user.lfs_objects / relative
        if dest.is_file() or not source.is_file():
            continue
        if _sha256(source) != oid:
            log.warning("LFS object %s in the session's store does not hold its content: not brought in", oid)
            continue
        _link_or_copy(source, dest)
        brought.append(oid)
    return tuple(brought)


def _pointer_oids(git: Git, commit: str, paths: list[str]) -> set[str]:
    """The LFS object ids the pointer files among ``paths`` at ``commit`` name."""
    oids: set[str] = set()
    for start in range(0, len(paths), _GREP_BATCH):
        batch = [f":(top,literal){p}" for p in paths[start : start + _GREP_BATCH]]
        found = git.run("grep", "-z", "-I", "-l", "-F", "-e", _POINTER_VERSION, commit, "--", *batch, ok=(0, 1))
        for name in found.fields:
            blob = git.run("cat-file", "blob", name, ok=(0, 128), max_output=_POINTER_MAX)
            if blob.returncode == 0 and not blob.truncated:
                oids.update(_OID.findall(blob.stdout.decode("ascii", "replace")))
    return oids


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(source: Path, dest: Path) -> None:
    """``dest`` holds ``source``'s content: a hard link, else a copy written aside and renamed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source.resolve(), dest)
        return
    except FileExistsError:
        return
    except OSError:
        pass
    fd, scratch = tempfile.mkstemp(prefix=".orchestrate-", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, scratch)
        os.chmod(scratch, 0o644)
        os.replace(scratch, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
