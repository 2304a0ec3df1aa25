"""Reading a process tree and the machine with psutil: the resource monitor's figures.

The first ``cpu_percent`` of a ``psutil.Process`` is a meaningless 0.0, so a tree is read
with objects kept from one sample to the next; a process met for the first time is primed
and counts from the next sample on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import psutil
from meta_orchestrator.actors.runtime.process_tree import private_tmpfs_bytes
from meta_orchestrator.messages.resources import MachineSample


class TreeReading(NamedTuple):
    """A tree's figures at one instant; ``None``: not readable (AccessDenied)."""

    processes: int
    cpu_percent: float
    rss_bytes: int | None
    open_files: int | None
    tmpfs_bytes: int = 0  # in the run's private tmpfs mounts (process_tree.private_tmpfs_bytes)


class TreeSampler:
    """The whole tree under one pid (the CLI and every descendant), read again each sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._procs: dict[int, psutil.Process] = {}

    def read(self) -> TreeReading | None:
        """The tree now; ``None`` when its root has exited."""
        members = self._members()
        if members is None:
            return None
        alive: dict[int, psutil.Process] = {}
        cpu = 0.0
        rss: int | None = 0
        fds: int | None = 0
        for member in members:
            proc = self._procs.get(member.pid)
            if proc is None or not proc.is_running():
                proc = member
                try:
                    proc.cpu_percent(None)  # first reading is meaningless: primes it
                except psutil.Error:
                    continue
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += proc.cpu_percent(None)
                    rss = None if rss is None else rss + proc.memory_info().rss
                    fds = _add_fds(fds, proc)
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                rss = None
                continue
            alive[proc.pid] = proc
        self._procs = alive
        return TreeReading(
            processes=len(alive),
            cpu_percent=cpu,
            rss_bytes=rss,
            open_files=fds,
            tmpfs_bytes=private_tmpfs_bytes(alive),
        )

    def _members(self) -> list[psutil.Process] | None:
        root = self._procs.get(self.pid)
        try:
            if root is None:
                root = self._procs[self.pid] = psutil.Process(self.pid)
                root.cpu_percent(None)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None  # exited between the worker's report and this sample
        except psutil.AccessDenied:
            return [root] if root is not None else []


class RemoteTreeSampler:
    """A remote run's tree, as its node sampled it last (it comes with the run's lines): the
    monitor reads it where it would read a local tree, and its limits act the same way."""

    def __init__(self, pid: int, latest: Callable[[], Any], node: str | None = None) -> None:
        self.pid = pid
        self.node = node
        self._latest = latest

    def read(self) -> TreeReading | None:
        """The node's latest figures; ``None`` before the first sample arrived."""
        sample = self._latest()
        if sample is None:
            return None
        figures = sample.figures
        return TreeReading(
            processes=figures.processes,
            cpu_percent=figures.cpu_percent,
            rss_bytes=figures.rss_bytes,
            open_files=figures.open_files,
            tmpfs_bytes=getattr(figures, "tmpfs_bytes", 0),  # a node of an older version sends none
        )


def _add_fds(total: int | None, proc: psutil.Process) -> int | None:
    if total is None:
        return None
    try:
        return total + proc.num_fds()
    except psutil.AccessDenied:
        return None


def prime_machine() -> None:
    """The machine-wide CPU reading counts from here (its first reading is meaningless)."""
    psutil.cpu_percent(None)


def machine_sample() -> MachineSample:
    memory = psutil.virtual_memory()
    return MachineSample(
        cpu_percent=psutil.cpu_percent(None),
        cpu_count=psutil.cpu_count() or 1,
        memory_available_bytes=memory.available,
        memory_total_bytes=memory.total,
    )


__all__ = ["RemoteTreeSampler", "TreeReading", "TreeSampler", "machine_sample", "prime_machine"]
