"""Find and end the agent processes a dead orchestrator left behind.

Every agent CLI is started with ``ORCHESTRATE_SESSION_ID=<session>`` in its environment and
leads its own process group. A later ``orchestrate resume`` finds the processes carrying the
session's marker whose orchestrator is gone, and ends their groups. Nothing is matched by
name, and a process without the marker is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import psutil
from meta_orchestrator.actors.processes.process_host import SESSION_MARKER_ENV

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orphan:
    """An agent process of a session whose orchestrator is gone."""

    pid: int
    pgid: int
    cmdline: str


def find_orphans(session_id: str, exclude_ppid: int | None = None) -> list[Orphan]:
    """Processes whose environment carries this session's marker (ours excluded)."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "ppid"]):
        try:
            if proc.pid == me or proc.info["ppid"] in (me, exclude_ppid):
                continue
            if proc.environ().get(SESSION_MARKER_ENV) != session_id:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append(Orphan(proc.pid, os.getpgid(proc.pid), " ".join(proc.cmdline())[:200]))
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def end_orphans(orphans: list[Orphan], grace_s: float = 3.0) -> int:
    """SIGTERM each orphan's group (SIGCONT first: it may be stopped), SIGKILL after grace."""
    procs = []
    for orphan in orphans:
        try:
            procs.append(psutil.Process(orphan.pid))
        except psutil.NoSuchProcess:
            continue
    for pgid in {o.pgid for o in orphans}:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            log.warning("orphan %s ignored SIGTERM; killing it", proc.pid)
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(procs)
