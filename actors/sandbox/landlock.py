"""Landlock inside the OS sandbox: no host abstract sockets, TCP only to the ports a CLI needs.

Run as a file (stdlib only, ``python -I -S landlock.py --connect 443,80 -- <argv>``) as the
first command inside bwrap: it restricts itself and ``exec``s the CLI, which inherits the
domain, as does everything it starts. What it sets (kernel ABI numbers in brackets):

* ``LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`` [6]: no connect to an abstract Unix socket made
  outside the run (a D-Bus session bus, X11's ``@/tmp/.X11-unix/X0``); the run's own
  processes still reach each other's.
* ``LANDLOCK_ACCESS_NET_CONNECT_TCP`` [4] with port rules: a TCP connect succeeds only to
  the listed ports, on any address: the dashboard's and Ray's ports on the host loopback are
  refused while the model API (443, or the port of its configured endpoint) is reached.
  Rules are per port, not per address; UDP (DNS) is not restricted.

Where the kernel lacks an ABI, what it cannot do is left out and said on stderr; the
preflight says it loudly at start (``missing``). Chosen over a network namespace with pasta:
no companion process to start, wait for and end, and ~10 ms against pasta's 50-80 ms setup.
"""

from __future__ import annotations

import ctypes
import os
import sys

# x86_64 and aarch64 share the generic syscall numbers for Landlock.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_ACCESS_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_RULE_NET_PORT = 2
_PR_SET_NO_NEW_PRIVS = 38
NET_ABI = 4
SCOPE_ABI = 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or off."""
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(version))


def missing(version: int) -> list[str]:
    """What a run is not isolated from on a kernel with this ABI, one phrase each."""
    gaps = []
    if version < SCOPE_ABI:
        gaps.append("abstract Unix sockets of the host (D-Bus session bus, X11)")
    if version < NET_ABI:
        gaps.append("TCP services of the host (the dashboard's and Ray's ports on the loopback)")
    return gaps


def restrict(ports: list[int], version: int) -> None:
    """Restrict this process (and what it will start) as far as the kernel allows."""
    libc = _libc()
    attr = _RulesetAttr(
        handled_access_fs=0,
        handled_access_net=_ACCESS_NET_CONNECT_TCP if version >= NET_ABI else 0,
        scoped=_SCOPE_ABSTRACT_UNIX_SOCKET if version >= SCOPE_ABI else 0,
    )
    if not attr.handled_access_net and not attr.scoped:
        return
    size = ctypes.sizeof(attr) if attr.scoped else 16  # before ABI 6 the struct ends at the net field
    fd = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    if attr.handled_access_net:
        for port in ports:
            rule = _NetPortAttr(allowed_access=_ACCESS_NET_CONNECT_TCP, port=port)
            if libc.syscall(_ADD_RULE, fd, _RULE_NET_PORT, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule for port {port} failed")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(fd)


def main(argv: list[str]) -> int:
    """``--connect P1,P2,... -- <command>``: restrict, then exec the command."""
    if len(argv) < 4 or argv[0] != "--connect" or argv[2] != "--":
        print("usage: landlock.py --connect PORT[,PORT...] -- COMMAND...", file=sys.stderr)
        return 2
    ports = [int(p) for p in argv[1].split(",") if p]
    version = abi()
    for gap in missing(version):
        print(f"orchestrate: Landlock ABI {version} on this kernel: not isolated from {gap}", file=sys.stderr)
    try:
        restrict(ports, version)
    except OSError as exc:
        print(f"orchestrate: Landlock not applied ({exc}); host services stay reachable", file=sys.stderr)
    try:
        os.execvp(argv[3], argv[3:])
    except OSError as exc:
        print(f"execvp {argv[3]}: {exc.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
