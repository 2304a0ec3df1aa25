"""The OS sandbox: the bubblewrap command line an agent CLI runs under.

Pure: a ``Confinement`` (what the CLI may write, what it must not see) becomes an argv
prefix; the process host spawns it. The filesystem is the host's, read-only; the working
folder, the scratch folder and the CLI's own state folder are bound read-write; the
workspace (every session's files) is an empty tmpfs, with only what the CLI must read
(claude's hook settings, policy and socket) bound back read-only; ``/tmp`` is private.

Flags and why:

* ``--unshare-pid``: the CLI and everything it starts live in a PID namespace whose init
  is bwrap's; when the CLI exits, the kernel ends whatever it left behind.
* ``--die-with-parent``: the namespace dies with the orchestrator's child (bwrap itself).
* ``--cap-drop ALL``: as root, bwrap keeps every capability inside unless told otherwise,
  and ``mount -o remount,rw /`` would undo the read-only root.
* no ``--new-session``: the CLI stays in the process group the worker pauses and stops;
  stdin is closed and the host starts bwrap in a new session, so there is no terminal to
  push input into.
* no ``--unshare-net``: the CLIs need their model API.

bwrap always sets ``PR_SET_NO_NEW_PRIVS``, so setuid programs gain nothing inside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "bubblewrap"  # Debian/Ubuntu/Fedora/Arch all name it so
PRIVATE_TMP = "/tmp"

# What each mount kind does, applied parent-first so the deeper rule wins.
_ORDER = {"hidden": 0, "writable": 1, "readable": 2}


@dataclass(frozen=True)
class OsSandbox:
    """How a worker confines its CLI: the bwrap binary, and what the wiring hides or shows."""

    bwrap: str
    hidden: tuple[str, ...] = ()  # empty tmpfs over these folders (the workspace), /dev/null over files
    readable: tuple[str, ...] = ()  # bound back read-only (claude's hook files and socket)


@dataclass(frozen=True)
class Confinement:
    """One run's mounts: read-write binds, hidden folders, read-only binds, the cwd."""

    bwrap: str
    writable: tuple[str, ...]
    hidden: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    chdir: str | None = None


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def under_private_tmp(paths: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The existing paths among ``paths`` that live in ``/tmp``: the CLI's own files (a script,
    a virtualenv, the installed package) that the private ``/tmp`` would otherwise hide."""
    found = []
    for raw in paths:
        if not raw or not os.path.isabs(raw):
            continue
        path = _real(raw)
        if path.startswith(PRIVATE_TMP + "/") and os.path.exists(path):
            found.append(path)
    return tuple(dict.fromkeys(found))


def mounts(confinement: Confinement) -> list[tuple[str, str]]:
    """``(kind, path)`` in the order bwrap applies them: parents before children.

    Paths that do not exist are left out (bwrap cannot mount over nothing on a read-only
    root, and a folder that does not exist holds nothing to protect or to grant).
    """
    found: dict[str, str] = {PRIVATE_TMP: "hidden"}
    for kind in ("hidden", "writable", "readable"):  # for one path, the later kind wins
        for raw in getattr(confinement, kind):
            path = _real(raw)
            if path == "/" or not os.path.exists(path):
                continue
            found[path] = kind
    return sorted(
        ((kind, path) for path, kind in found.items()), key=lambda item: (len(Path(item[1]).parts), _ORDER[item[0]])
    )


def bwrap_argv(confinement: Confinement, argv: tuple[str, ...] | list[str]) -> list[str]:
    """The full command line: bwrap, its mounts and flags, ``--``, then the CLI's argv."""
    out = [confinement.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for kind, path in mounts(confinement):
        if kind == "hidden" and not os.path.isdir(path):  # a file (a token): read as empty
            out += ["--ro-bind", "/dev/null", path]
        elif kind == "hidden":
            out += ["--tmpfs", path]
        elif kind == "writable":
            out += ["--bind", path, path]
        else:
            out += ["--ro-bind", path, path]
    out += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL"]
    if confinement.chdir:
        out += ["--chdir", _real(confinement.chdir)]
    return [*out, "--", *argv]


def probe_argv(bwrap: str) -> list[str]:
    """A command that succeeds only where bwrap can build the namespaces a run needs."""
    return [
        bwrap,
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        PRIVATE_TMP,
        "--unshare-pid",
        "--unshare-ipc",
        "--die-with-parent",
        "--cap-drop",
        "ALL",
        "--",
        "true",
    ]
