"""What a CLI starts from: every file and folder on its launch path, to be read-only inside.

The root is read-only in the OS sandbox anyway; these paths matter where a writable bind or
a hidden folder would cover them: an executable installed in the CLI's own state folder
(``~/.claude/local/claude``, the local installer's layout), in the working folder, or under
``/tmp`` (private inside, so what lives there must be bound back). For each executable: the
folder of every symlink on its chain (the link itself cannot be bound; its folder can), the
file the chain ends in, the package folder that file belongs to
(``node_modules/@anthropic-ai/claude-code``), the interpreter its ``#!`` line names, and the
entry of a state folder it is installed in (``~/.claude/local``: the wrapper script execs
the package below it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

_MAX_LINKS = 40  # as the kernel's own limit on a symlink chain
_SHEBANG_BYTES = 256


def launch_path(
    executable: Sequence[str], search_path: str | None, state_folders: Iterable[Path] = ()
) -> tuple[str, ...]:
    """The paths ``executable`` (an argv prefix) runs from, resolved, in no particular order.

    ``search_path`` is the run's ``PATH`` (the first word is looked up in it when it is a
    bare name); other words count when they are absolute paths of existing files.
    """
    found: dict[str, None] = {}
    folders = tuple(Path(os.path.realpath(f)) for f in state_folders)
    for index, word in enumerate(executable):
        start = _located(word, search_path) if index == 0 else (word if os.path.isabs(word) else None)
        if start and os.path.isfile(start):
            _add_program(found, start, search_path, folders, depth=0)
    return tuple(found)


def _located(word: str, search_path: str | None) -> str | None:
    if os.sep in word:
        return os.path.abspath(word)
    return shutil.which(word, path=search_path)


def _add_program(
    found: dict[str, None], start: str, search_path: str | None, folders: tuple[Path, ...], depth: int
) -> None:
    final = _follow(found, start)
    found[final] = None
    if (package := _package_folder(Path(final))) is not None:
        found[str(package)] = None
    for path in (Path(start), Path(final)):
        if (entry := _state_entry(path, folders)) is not None:
            found[str(entry)] = None
    interpreter = _interpreter(final, search_path)
    if interpreter and depth < 2:
        _add_program(found, interpreter, search_path, folders, depth + 1)


def _follow(found: dict[str, None], path: str) -> str:
    """Walk the symlink chain from ``path``, adding each link's folder; the file it ends in."""
    current = path
    for _ in range(_MAX_LINKS):
        folder = os.path.realpath(os.path.dirname(current))
        here = os.path.join(folder, os.path.basename(current))
        if not os.path.islink(here):
            return here
        found[folder] = None
        current = os.path.join(folder, os.readlink(here))
    return os.path.realpath(current)


def _package_folder(path: Path) -> Path | None:
    """The npm package ``path`` belongs to: ``node_modules/<name>`` or ``node_modules/@scope/<name>``."""
    parts = path.parts
    if "node_modules" not in parts[:-1]:
        return None
    at = len(parts) - 1 - parts[::-1].index("node_modules")
    end = at + (2 if at + 1 < len(parts) - 1 and parts[at + 1].startswith("@") else 1)
    return Path(*parts[: end + 1]) if end < len(parts) - 1 else None


def _state_entry(path: Path, folders: tuple[Path, ...]) -> Path | None:
    """The top entry of a state folder that holds ``path`` (``~/.claude/local``)."""
    resolved = Path(os.path.realpath(path.parent)) / path.name
    for folder in folders:
        if folder in resolved.parents:
            return folder / resolved.relative_to(folder).parts[0]
    return None


def _interpreter(path: str, search_path: str | None) -> str | None:
    """The program a script's ``#!`` line runs (``env node``: node on the run's PATH)."""
    try:
        with open(path, "rb") as script:
            head = script.read(_SHEBANG_BYTES)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return shutil.which(named[0], path=search_path) if named else None
    return words[0] if os.path.isabs(words[0]) else None


__all__ = ["launch_path"]
