"""The OS sandbox: the bubblewrap command line an agent CLI runs under.

Pure: a ``Confinement`` (what the CLI may write, what it must not see) becomes an argv
prefix; the process host spawns it. The filesystem is the host's, read-only; the working
folder and the scratch folder are bound read-write; the CLI's state is the session's
private copy bound over the user's paths (its settings files read-only on top); the
workspace (every session's files) is an empty tmpfs, with only what the CLI must read
(claude's hook settings, policy and socket) bound back read-only; ``/tmp`` is private; the
CLI's launch path is bound read-only where a writable or hidden folder would cover it.

Flags and why:

* ``--unshare-pid``: the CLI and everything it starts live in a PID namespace whose init
  is bwrap's; when the CLI exits, the kernel ends whatever it left behind.
* ``--die-with-parent``: the namespace dies with the orchestrator's child (bwrap itself).
* ``--cap-drop ALL``: as root, bwrap keeps every capability inside unless told otherwise,
  and ``mount -o remount,rw /`` would undo the read-only root.
* no ``--new-session``: the CLI stays in the process group the worker pauses and stops;
  stdin is closed and the host starts bwrap in a new session, so there is no terminal to
  push input into.
* no ``--unshare-net``: the CLIs need their model API (the orchestrator's own git over an
  agent's tree, run in this sandbox too, gets it: ``Confinement.network`` False). Host services are kept out another
  way: named sockets are hidden (an empty tmpfs over ``/run``, ``/var/run``,
  ``$XDG_RUNTIME_DIR``; the private ``/tmp`` holds no ``/tmp/.X11-unix``), with only what DNS
  reads bound back; abstract sockets and the host's TCP services are cut by Landlock
  (``landlock.py``: the process host starts bwrap from a thread restricted to
  ``Confinement.connect_ports``).
* ``--size`` before each ``--tmpfs`` (the private ``/tmp``, ``/dev/shm``, the empty folders
  over what is hidden, all writable): each holds at most ``tmpfs_bytes`` (else half the RAM);
  what they hold is the run's memory, and the resource monitor counts it
  (``process_tree.private_tmpfs_bytes``).

bwrap always sets ``PR_SET_NO_NEW_PRIVS``, so setuid programs gain nothing inside.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "bubblewrap"  # Debian/Ubuntu/Fedora/Arch all name it so
PRIVATE_TMP = "/tmp"
PRIVATE_SHM = "/dev/shm"
# Where named Unix sockets of the host live (D-Bus, docker.sock, systemd, the user's session).
SOCKET_DIRS = ("/run", "/var/run")
# Ports a CLI reaches without asking: HTTPS (the model APIs), HTTP, DNS over TCP.
DEFAULT_CONNECT_PORTS = (443, 80, 53)

# What each mount kind does, applied parent-first so the deeper rule wins.
_ORDER = {"hidden": 0, "writable": 1, "private": 1, "private_read_only": 2, "readable": 2}
_FLAGS = {"writable": "--bind", "private": "--bind", "private_read_only": "--ro-bind", "readable": "--ro-bind"}


@dataclass(frozen=True)
class OsSandbox:
    """How a worker confines its CLI: the bwrap binary, and what the wiring hides or shows."""

    bwrap: str
    hidden: tuple[
        str, ...
    ] = ()  # empty tmpfs over these folders (every workspace, the socket folders), /dev/null over files
    readable: tuple[str, ...] = ()  # bound back read-only (claude's hook files and socket, DNS)
    tmpfs_bytes: int | None = None  # size of the private /tmp and /dev/shm (None: the kernel's half of RAM)
    allow_connect: tuple[int, ...] | None = None  # extra TCP ports; None: no Landlock (host services reachable)


@dataclass(frozen=True)
class PrivateBind:
    """A private copy bound over the path a program expects (a CLI's state over the user's)."""

    source: str  # the copy (in the session folder, hidden inside)
    dest: str  # where the program looks
    writable: bool = True


@dataclass(frozen=True)
class Confinement:
    """One run's mounts: read-write binds, hidden folders, private copies, read-only binds, the cwd."""

    bwrap: str
    writable: tuple[str, ...]
    hidden: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    chdir: str | None = None
    private: tuple[PrivateBind, ...] = ()
    tmpfs_bytes: int | None = None
    connect_ports: tuple[int, ...] | None = None  # Landlock: the TCP ports it may reach; None: no Landlock
    network: bool = True  # False: a network namespace of its own (the orchestrator's git)


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


def socket_dirs(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The folders of the host's named sockets, hidden inside every run."""
    runtime = (env if env is not None else os.environ).get("XDG_RUNTIME_DIR", "")
    return (*SOCKET_DIRS, *((runtime,) if os.path.isabs(runtime) else ()))


DNS_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf")


def dns_files(hidden: tuple[str, ...] | list[str], files: tuple[str, ...] = DNS_FILES) -> tuple[str, ...]:
    """The folders of what name resolution reads that a hidden folder would take away
    (``/etc/resolv.conf`` pointing into ``/run/systemd/resolve``, say): bound back read-only."""
    found = []
    for name in files:
        real = _real(name)
        if real != name and any(real.startswith(_real(h) + "/") for h in hidden) and os.path.exists(real):
            found.append(os.path.dirname(real))
    return tuple(dict.fromkeys(found))


def mounts(confinement: Confinement) -> list[tuple[str, str]]:
    """``(kind, path)`` in the order bwrap applies them: parents before children.

    Paths that do not exist are left out (bwrap cannot mount over nothing on a read-only
    root, and a folder that does not exist holds nothing to protect or to grant).
    """
    found: dict[str, str] = {PRIVATE_TMP: "hidden"}
    for kind in ("hidden", "writable", "private", "readable"):  # for one path, the later kind wins
        for raw in _paths(confinement, kind):
            path = _real(raw)
            # A private copy's deeper file may exist only in the copy bound above it.
            if path == "/" or not (kind == "private" or os.path.exists(path)):
                continue
            found[path] = kind
    for bind in confinement.private:
        path = _real(bind.dest)
        if found.get(path) == "private" and not bind.writable:
            found[path] = "private_read_only"
    return sorted(
        ((kind, path) for path, kind in found.items()), key=lambda item: (len(Path(item[1]).parts), _ORDER[item[0]])
    )


def _paths(confinement: Confinement, kind: str) -> tuple[str, ...]:
    if kind == "private":  # a private copy's place; its source is looked up by ``_sources``
        return tuple(b.dest for b in confinement.private if os.path.exists(b.source))
    return getattr(confinement, kind)


def _sources(confinement: Confinement) -> dict[str, str]:
    return {_real(b.dest): _real(b.source) for b in confinement.private}


def bwrap_argv(confinement: Confinement, argv: tuple[str, ...] | list[str]) -> list[str]:
    """The full command line: bwrap, its mounts and flags, ``--``, then the CLI's argv.

    A private copy's source lies in the hidden workspace: bwrap binds from the host's tree
    (its old root), so the tmpfs over the workspace does not hide it from the bind.
    """
    out = [confinement.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    sources = _sources(confinement)
    size = ["--size", str(confinement.tmpfs_bytes)] if confinement.tmpfs_bytes else []
    out += [*size, "--tmpfs", PRIVATE_SHM]
    for kind, path in mounts(confinement):
        if kind == "hidden" and not os.path.isdir(path):  # a file (a token): read as empty
            out += ["--ro-bind", "/dev/null", path]
        elif kind == "hidden":
            out += [*size, "--tmpfs", path]
        else:
            out += [_FLAGS[kind], sources.get(path, path) if kind.startswith("private") else path, path]
    out += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--cap-drop", "ALL"]
    if not confinement.network:
        out.append("--unshare-net")
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
