"""Which of the monitor's samples are told to the rest of the system (rules only, no I/O).

The monitor samples every ``limits.interval_s`` and its limit rules see every sample; its
listeners (the dashboard's charts, ``history.jsonl``) and ``resources.jsonl`` get a sample
only when it differs from the last one told beyond a small threshold, or ``heartbeat_s``
after it, so a reader still sees the monitor is alive (and, the monitor's own rule, when a
limit acts on it). Idle agents then cost the session a
sample every heartbeat, not one every second through every listener and two files.

The comparison is with the last sample told, not the one before: a slow drift (half a MiB a
second) is told once it adds up past the threshold.
"""

from __future__ import annotations

from meta_orchestrator.messages.resources import ResourcesSampled, TreeSample

CPU_POINTS = 1.0  # a tree's CPU % told again once it moved by more than this
MEMORY_BYTES = 2**20  # its memory (RSS with what its private tmpfs holds): more than 1 MiB

RunKey = tuple[str, int, str | None, int]


def worth_telling(
    last: ResourcesSampled | None, sample: ResourcesSampled, since_last_s: float | None, heartbeat_s: float
) -> bool:
    """Whether ``sample`` is told: nothing told yet, the heartbeat is due (``since_last_s``:
    seconds since the last one told), or it changed since."""
    if last is None or since_last_s is None or since_last_s >= heartbeat_s:
        return True
    return changed(last, sample)


def changed(last: ResourcesSampled, sample: ResourcesSampled) -> bool:
    """A run started or ended, the spend moved, or a run's figures moved past the thresholds.
    The machine's own figures are not compared: other work on it moves them every second
    (they go out with every sample told; the memory limit reads each sample in the monitor)."""
    if (last.cost_usd, last.tokens) != (sample.cost_usd, sample.tokens):
        return True
    before = {_run_of(tree): tree for tree in last.agents}
    now = {_run_of(tree): tree for tree in sample.agents}
    if before.keys() != now.keys():
        return True
    return any(_tree_changed(before[run], tree) for run, tree in now.items())


def _run_of(tree: TreeSample) -> RunKey:
    return (tree.agent, tree.slot, tree.review_id, tree.pid)


def _tree_changed(before: TreeSample, now: TreeSample) -> bool:
    if (before.status, before.processes, before.node) != (now.status, now.processes, now.node):
        return True
    return _moved(before.cpu_percent, now.cpu_percent, CPU_POINTS) or _moved(
        _memory(before), _memory(now), MEMORY_BYTES
    )


def _memory(tree: TreeSample) -> int | None:
    return None if tree.rss_bytes is None else tree.rss_bytes + tree.tmpfs_bytes


def _moved(before: float | None, now: float | None, threshold: float) -> bool:
    """Past the threshold, or readable in one sample and not in the other."""
    if before is None or now is None:
        return (before is None) != (now is None)
    return abs(now - before) > threshold


__all__ = ["CPU_POINTS", "MEMORY_BYTES", "changed", "worth_telling"]
