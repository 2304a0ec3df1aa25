"""Submodules in a session's checkouts: each submodule folder of the commit is filled, read-only,
with the files of the commit it records, taken from the user's own checkout of that submodule;
one the user has not initialized (or whose checkout lacks that commit) stays empty, and the
start message names it.

A checkout is made with ``git init`` and ``git checkout``, which leave a submodule's folder
empty: an agent would see a library the project builds on as missing. Filling the folder
through a temporary index (``read-tree`` + ``checkout-index`` in the user's submodule git
folder, which gains nothing) gives the agents the files without a ``.git`` there: the
checkout's commits keep the gitlink at the base's commit (``add_all`` never stages inside a
gitlink), so a change there would reach no branch; hence read-only (the files and folders
lose their write bits, and a sandbox binds the folder read-only).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from meta_orchestrator.actors.workspaces.git_command import DEFAULT_TIMEOUT_S, Git, WorkspaceError
from meta_orchestrator.actors.workspaces.workspace_apply import few

log = logging.getLogger(__name__)

_GITLINK = "160000"


def gitlinks(git: Git, commit: str) -> list[tuple[str, str]]:
    """``(path, commit)`` of every submodule ``commit`` records (``git`` reads its objects)."""
    listed = git.run("ls-tree", "-r", "-z", "--full-tree", commit).fields
    found = []
    for entry in listed:
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[0] == _GITLINK:
            found.append((path, parts[2]))
    return found


def submodule_source(repository: Path, path: str, commit: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Path | None:
    """The git folder of the user's checkout of the submodule at ``path`` when it holds
    ``commit``; None: not initialized there (its folder is empty, or no repository of its own),
    or it lacks that commit."""
    folder = repository / path
    if not (folder / ".git").exists():
        return None
    git = Git(["-C", str(folder)], timeout_s=timeout_s)
    found = git.run("rev-parse", "--path-format=absolute", "--show-toplevel", "--absolute-git-dir", ok=(0, 128))
    lines = found.text.splitlines()
    if found.returncode != 0 or len(lines) < 2 or Path(lines[0]).resolve() != folder.resolve():
        return None  # git found the superproject: the submodule is not checked out
    has = git.run("cat-file", "-e", f"{commit}^{{commit}}", ok=(0, 1, 128))
    return Path(lines[1]) if has.returncode == 0 else None


def fill(source: Path, dest: Path, commit: str, scratch: Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """``dest`` emptied, then holding ``commit``'s files from the submodule git folder
    ``source`` (through a temporary index: nothing there changes), read-only.

    Raises:
        WorkspaceError: git failed.
    """
    clear(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".submodule-", dir=scratch) as folder:
        env = {"GIT_INDEX_FILE": str(Path(folder) / "index")}
        git = Git(["--git-dir", str(source), "--work-tree", str(dest)], timeout_s=timeout_s, cwd=dest)
        git.run("read-tree", commit, env=env)
        git.run("checkout-index", "-a", "-f", env=env)
    _read_only(dest)


def fill_all(
    git: Git, tree: Path, repository: Path, commit: str, scratch: Path, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Fill every submodule folder of the checkout ``tree`` of ``commit`` that the user has
    checked out: the folders filled, and those left empty."""
    filled, empty = [], []
    for path, linked in gitlinks(git, commit):
        dest = tree / path
        source = submodule_source(repository, path, linked, timeout_s)
        if source is None or dest.is_symlink() or not _inside(dest, tree):
            empty.append(path)
            continue
        try:
            fill(source, dest, linked, scratch, timeout_s)
        except WorkspaceError as exc:  # a submodule the user's checkout cannot give: left empty
            log.warning("submodule %s left empty in %s: %s", path, tree, exc)
            clear(dest)
            dest.mkdir(parents=True, exist_ok=True)
            empty.append(path)
            continue
        filled.append(path)
    return tuple(filled), tuple(empty)


def agent_note(filled: tuple[str, ...], empty: tuple[str, ...]) -> str | None:
    """What an agent's prompt says of the submodule folders in its checkout, or None."""
    said = []
    if filled:
        said.append(
            f"The submodule folder(s) {few(filled)} hold the files of the commit the repository records, "
            "read-only: a change there reaches no branch."
        )
    if empty:
        said.append(
            f"The submodule folder(s) {few(empty)} are empty here: not checked out in the user's repository "
            "(their files are not missing from the project)."
        )
    return " ".join(said) or None


def start_note(git: Git, repository: Path, commit: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """What the start message says of the base's submodules, or None when it has none."""
    links = gitlinks(git, commit)
    if not links:
        return None
    empty = [path for path, linked in links if submodule_source(repository, path, linked, timeout_s) is None]
    filled = [path for path, _ in links if path not in empty]
    said = []
    if filled:
        said.append(f"{_folders(filled)} filled read-only in the checkouts from your checkouts of them")
    if empty:
        said.append(
            f"{_folders(empty)} empty in the checkouts (not checked out at the recorded commit in your "
            "repository: git submodule update --init)"
        )
    return "; ".join(said)


def _folders(paths: list[str]) -> str:
    return f"submodule folder {paths[0]} is" if len(paths) == 1 else f"submodule folders {few(paths)} are"


def clear(folder: Path) -> None:
    """Remove ``folder`` even where its files and folders lost their write bits."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists() and sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=_writable_then_again)  # type: ignore[call-arg]
    elif folder.exists():
        shutil.rmtree(folder, onerror=_writable_then_again)


def _writable_then_again(function: object, path: str, _: object) -> None:
    """rmtree's handler: a read-only folder's entry is removed once the folder is writable."""
    os.chmod(os.path.dirname(path), stat.S_IRWXU)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, stat.S_IRWXU)
    function(path)  # type: ignore[operator]


def _read_only(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & ~0o222)
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & ~0o222)
    os.chmod(folder, os.stat(folder).st_mode & ~0o222)


def _inside(path: Path, tree: Path) -> bool:
    try:
        path.resolve().relative_to(tree.resolve())
    except ValueError:
        return False
    return True
