"""Where the resource monitor's figures come from: a run's tree (``process_tree.TreeReader``
here, or the samples a cluster node took with the same reader) and the machine (psutil)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil
from meta_orchestrator.actors.processes.process_tree import TreeFigures, TreeReader
from meta_orchestrator.messages.resources import MachineSample


def tree_reader(pid: int, remote_sample: Callable[[], Any] | None = None, node: str | None = None) -> TreeSource:
    """The reader of a run's tree: read here when the run is on this machine, or the samples
    its node sends with its lines, read there by the same ``TreeReader``."""
    return TreeReader(pid) if remote_sample is None else RemoteTreeSampler(pid, remote_sample, node)


class RemoteTreeSampler:
    """A remote run's tree, as its node sampled it last (it comes with the run's lines): the
    monitor reads it where it would read a local tree, and its limits act the same way."""

    def __init__(self, pid: int, latest: Callable[[], Any], node: str | None = None) -> None:
        self.pid = pid
        self.node = node
        self._latest = latest

    def read(self) -> TreeFigures | None:
        """The node's latest figures; ``None`` before the first sample arrived."""
        sample = self._latest()
        return None if sample is None else sample.figures

    def written_s(self) -> float | None:
        """Seconds since the newest write in the run's folder on its node, as of its last
        sample (``None``: not known)."""
        sample = self._latest()
        return None if sample is None else sample.written_s


TreeSource = TreeReader | RemoteTreeSampler


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


__all__ = ["RemoteTreeSampler", "TreeSource", "machine_sample", "prime_machine", "tree_reader"]
