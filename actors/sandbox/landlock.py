"""Landlock for the OS sandbox: no host abstract sockets, TCP only to the ports a CLI needs.

The process host restricts the one thread that starts bwrap (``restrict`` applies to the
calling thread, and a process inherits the domain of the thread that forked it), so bwrap,
the CLI and everything it starts live in the domain, at no cost to the start, while the
orchestrator's other threads stay free. What it sets (kernel ABI numbers in brackets):

* ``LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`` [6]: no connect to an abstract Unix socket made
  outside the run (a D-Bus session bus, X11's ``@/tmp/.X11-unix/X0``); the run's own
  processes still reach each other's.
* ``LANDLOCK_ACCESS_NET_CONNECT_TCP`` [4] with port rules: a TCP connect succeeds only to
  the listed ports, on any address: the dashboard's and Ray's ports on the host loopback are
  refused while the model API (443, or the port of its configured endpoint) is reached.
  Rules are per port, not per address; UDP (DNS) is not restricted; the filesystem is left
  to bwrap (no filesystem rights are handled, so bwrap may still mount).

Where the kernel lacks an ABI, what it cannot do is left out; the preflight says so loudly at
start (``missing``). Chosen over a network namespace joined by pasta: no companion process to
start, wait for and end (pasta 2023.03 left its daemon running after the namespace was gone,
and failed to join bwrap's namespace now and then), and nothing added to the start.
"""

from __future__ import annotations

import ctypes
import os

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
    try:
        if attr.handled_access_net:
            for port in ports:
                rule = _NetPortAttr(allowed_access=_ACCESS_NET_CONNECT_TCP, port=port)
                if libc.syscall(_ADD_RULE, fd, _RULE_NET_PORT, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule for port {port} failed")
        no_new_privs = libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
        if not no_new_privs or libc.syscall(_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)  # the domain holds once restricted; the ruleset's fd is not needed after


__all__ = ["NET_ABI", "SCOPE_ABI", "abi", "missing", "restrict"]
