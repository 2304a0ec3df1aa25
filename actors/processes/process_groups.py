"""Which processes belong to a process group: the standard library only, read from /proc.

Kept apart from the process host so that the lifeline guardian (a tiny process on every
cluster node) starts in milliseconds without pydantic or psutil.
"""

from __future__ import annotations

import os


def pids_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``, read straight from /proc:
    one small read per process, where psutil would build an object and read several files."""
    try:
        return _pids_where(_PGRP, pgid)
    except OSError:
        import psutil  # no /proc (not Linux): the slow, portable way

        return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]


def pids_in_session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid`` (Linux: /proc)."""
    return _pids_where(_SESSION, sid)


# Fields of /proc/<pid>/stat after "pid (comm) ": state ppid pgrp session ...
_PGRP = 2
_SESSION = 3


def _pids_where(field: int, value: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: the fields start after the last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > field and fields[0] != b"Z" and int(fields[field]) == value:
            found.append(int(entry))
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
