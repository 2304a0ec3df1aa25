"""Which processes belong to a process group or a session: the standard library only.

Kept apart from the process host so that the lifeline guardian (a tiny process on every
cluster node) starts in milliseconds without pydantic or psutil.
"""

from __future__ import annotations

import os
from collections.abc import Callable


def pids_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``."""
    return _pids_where(os.getpgid, pgid)


def pids_in_session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    return _pids_where(os.getsid, sid)


def _pids_where(which: Callable[[int], int], value: int) -> list[int]:
    # One system call per process, which keeps the interpreter lock (a file read per process
    # gives it up and takes it back three times: with many agents' threads waiting for it,
    # a run's end paid milliseconds for that). Only a match has its state read.
    found = []
    for entry in _pid_entries():
        try:
            if which(entry) == value and running(entry):
                found.append(entry)
        except OSError:  # gone meanwhile
            continue
    return found


def _pid_entries() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:  # no /proc (not Linux): the slow, portable way
        import psutil

        return psutil.pids()


def running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    # comm may hold spaces and parentheses: the state follows the last ")".
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
