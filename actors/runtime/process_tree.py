"""One process tree's figures (CPU, memory, processes, open files) read with psutil.

The ``psutil.Process`` objects live from one reading to the next: the first ``cpu_percent``
of a process is a meaningless 0.0, so a reader made anew each time would always say 0.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class TreeFigures:
    """A tree at one instant. ``None``: not readable (AccessDenied)."""

    processes: int
    pids: tuple[int, ...]  # the root first
    cpu_percent: float  # summed over the tree; 100 = one core
    rss_bytes: int | None
    open_files: int | None


class TreeReader:
    """Reads the tree under one root process, again and again."""

    def __init__(self, root_pid: int) -> None:
        self._root_pid = root_pid
        self._procs: dict[int, psutil.Process] = {}

    def read(self) -> TreeFigures | None:
        """The tree now; ``None`` once the root is gone."""
        try:
            root = self._procs.get(self._root_pid) or psutil.Process(self._root_pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            members = [self._procs.get(self._root_pid) or psutil.Process(self._root_pid)]
        alive: dict[int, psutil.Process] = {}
        cpu = 0.0
        rss: int | None = 0
        fds: int | None = 0
        for member in members:
            known = self._procs.get(member.pid)
            primed = known is not None and known.is_running()
            proc = known if known is not None and primed else member
            if not primed:
                with contextlib.suppress(psutil.Error):
                    proc.cpu_percent(None)  # primes it; its figure counts from the next read
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    if primed:
                        cpu += proc.cpu_percent(None)
                    rss = None if rss is None else rss + proc.memory_info().rss
                    fds = None if fds is None else fds + proc.num_fds()
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                rss = fds = None
            alive[proc.pid] = proc
        self._procs = alive
        return TreeFigures(
            processes=len(alive), pids=tuple(alive), cpu_percent=round(cpu, 1), rss_bytes=rss, open_files=fds
        )
