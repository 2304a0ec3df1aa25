"""Which processes belong to a process group: the standard library only, read from /proc.

Kept apart from the process host so that the lifeline guardian (a tiny process on every
cluster node) starts in milliseconds without pydantic or psutil.
"""

from __future__ import annotations

import os


def pids_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is ``pgid``, read straight from /proc:
    one small read per process, where psutil would build an object and read several files."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        import psutil  # no /proc (not Linux): the slow, portable way

        return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
