"""The resource monitor's rules: which figures break which limit, and what that does.

Pure: figures and settings in, decisions out; the actor samples, tells and publishes.
Limits are graduated: a warning at ``warn_fraction`` of a limit (once per run), then the
limit's own action (warn, pause, stop) once per run; after the user resumed an agent a limit
had paused, that limit only warns.

The stall limit is about liveness, not silence: a run is stalled when, for the whole window,
it printed nothing, wrote no file in its folder and its tree used at most a trickle of CPU
(``stall_cpu_percent`` averaged over the window: a CLI hung on a dead connection or retrying
without end still wakes for its timers, so never exactly zero). A run busy in a silent test
suite uses CPU or writes files, and is left alone.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meta_orchestrator.config.settings import AgentLimits, LimitsSettings
from meta_orchestrator.messages.resources import TreeSample

MB = 1024 * 1024
RESUME_FACTOR = 1.25  # system memory must recover this far above the minimum before resuming
_VERBS = {"warn": "warning", "pause": "pausing", "stop": "stopping"}


@dataclass(frozen=True)
class Breach:
    """A figure past a limit (or, ``early``, past the warning share of it) and the action it takes."""

    kind: str
    action: str
    observed: float
    threshold: float
    unit: str
    early: bool = False
    note: str = ""

    def reason(self, agent: str) -> str:
        return (
            f"{self.kind} limit: {self.observed:.1f} {self.unit} > {self.threshold:g} {self.unit}{self.note}; "
            f"{_VERBS[self.action]} {agent}"
        )


@dataclass(frozen=True)
class Liveness:
    """One run's signs of life at a sample: seconds since its last output and since the newest
    write in its folder (``None``: none seen, or no folder to look at), paused time left out
    of the first; and its tree's CPU as (run seconds, CPU seconds used so far), oldest first
    (empty: the tree could not be read, and CPU is no sign either way)."""

    silent_s: float
    written_s: float | None = None
    cpu: Sequence[tuple[float, float]] = ()


def cpu_percent_over(cpu: Sequence[tuple[float, float]], window_s: float) -> float | None:
    """The tree's CPU (100 = one core) over the last ``window_s`` of run time; ``None`` until
    the samples span the window."""
    if not cpu:
        return None
    now_r, now_used = cpu[-1]
    start = next(((r, used) for r, used in reversed(cpu) if r <= now_r - window_s), None)
    if start is None or now_r <= start[0]:
        return None
    return 100.0 * max(0.0, now_used - start[1]) / (now_r - start[0])


def idle_over(live: Liveness, window_s: float, cpu_percent: float) -> tuple[bool, float | None]:
    """Whether the run was idle the whole window (nothing printed, nothing written in its
    folder, CPU at most ``cpu_percent``), with its CPU over the window (``None``: unknown)."""
    if live.silent_s < window_s or (live.written_s is not None and live.written_s < window_s):
        return False, None
    if not live.cpu:
        return True, None  # no CPU figure at all: output and files decide
    used = cpu_percent_over(live.cpu, window_s)
    return used is not None and used <= cpu_percent, used


WALKS_PER_WINDOW = 20  # while a run looks idle, its folder is walked at most this often per window


def walk_due(
    live: Liveness, window_s: float, warn_fraction: float, cpu_percent: float, since_walk_s: float | None
) -> bool:
    """Whether to walk the run's folder for its newest write now: only once output and CPU say
    it is idle (past the warning's share of the window), then every ``window_s /
    WALKS_PER_WINDOW``, and always before a stall is decided (no stop on a stale walk)."""
    if not idle_over(live, window_s * warn_fraction, cpu_percent)[0]:
        return False
    if since_walk_s is None or since_walk_s >= window_s / WALKS_PER_WINDOW:
        return True
    return idle_over(live, window_s, cpu_percent)[0]


def drop_older(cpu: collections.deque[tuple[float, float]], keep_s: float) -> None:
    """Forget the samples a window of ``keep_s`` no longer needs: one at or before its start stays."""
    if not cpu:
        return
    start = cpu[-1][0] - keep_s
    while len(cpu) > 2 and cpu[1][0] <= start:
        cpu.popleft()


def tree_breaches(
    tree: TreeSample,
    cpu_average: float | None,
    limits: AgentLimits,
    warn_fraction: float,
    *,
    acted: Collection[str],
    warned: Collection[str],
    overridden: Collection[str],
    live: Liveness | None = None,
) -> list[Breach]:
    """What this sample of a running tree breaks, in the table's order; nothing after a stop.
    The stall limit is judged on ``live`` (no signs given: not judged)."""
    found: list[Breach] = []
    for kind, observed, threshold, unit in _figures(tree, cpu_average, limits):
        if observed is None or threshold is None:
            continue
        if observed > threshold:
            if kind in acted:
                continue
            action = "warn" if kind in overridden else limits.action(kind)
            found.append(Breach(kind, action, observed, threshold, unit, note=_memory_note(kind, tree)))
            if action == "stop":
                return found  # one stop is enough
        elif observed > threshold * warn_fraction and kind not in warned:
            note = f" ({warn_fraction:.0%} of the limit {threshold:g} {unit})"
            found.append(Breach(kind, "warn", observed, threshold * warn_fraction, unit, early=True, note=note))
    if live is not None:
        found.extend(stall_breaches(live, limits, warn_fraction, acted=acted, warned=warned, overridden=overridden))
    return found


def stall_breaches(
    live: Liveness,
    limits: AgentLimits,
    warn_fraction: float,
    *,
    acted: Collection[str],
    warned: Collection[str],
    overridden: Collection[str],
) -> list[Breach]:
    """The stall limit: idle for ``stall_s`` takes its action; idle for ``warn_fraction`` of it warns."""
    window = limits.stall_s
    if window is None or "stall" in acted:
        return []
    idle, used = idle_over(live, window, limits.stall_cpu_percent)
    if idle:
        action = "warn" if "stall" in overridden else limits.action("stall")
        return [Breach("stall", action, _quiet_s(live), window, "s", note=_idle_note(used, limits))]
    early = window * warn_fraction
    idle, used = idle_over(live, early, limits.stall_cpu_percent)
    if idle and "stall" not in warned:
        note = f" ({warn_fraction:.0%} of the limit {window:g} s){_idle_note(used, limits)}"
        return [Breach("stall", "warn", _quiet_s(live), early, "s", early=True, note=note)]
    return []


def _quiet_s(live: Liveness) -> float:
    """How long nothing was printed or written (CPU has no instant to count from)."""
    return live.silent_s if live.written_s is None else min(live.silent_s, live.written_s)


def _idle_note(used: float | None, limits: AgentLimits) -> str:
    cpu = "" if used is None else f", CPU {used:.1f}% <= {limits.stall_cpu_percent:g}%"
    return f" (idle: no output, no file written in its folder{cpu})"


def memory_bytes(tree: TreeSample) -> int | None:
    """The tree's memory: its resident pages and what it holds in its private tmpfs mounts."""
    return None if tree.rss_bytes is None else tree.rss_bytes + tree.tmpfs_bytes


def _memory_note(kind: str, tree: TreeSample) -> str:
    if kind != "rss" or not tree.tmpfs_bytes or tree.rss_bytes is None:
        return ""
    return (
        f" (memory limit: RSS {tree.rss_bytes / MB:.1f} MB + {tree.tmpfs_bytes / MB:.1f} MB "
        "in the private /tmp and /dev/shm)"
    )


def _figures(
    tree: TreeSample, cpu_average: float | None, limits: AgentLimits
) -> list[tuple[str, float | None, float | None, str]]:
    memory = memory_bytes(tree)
    return [
        ("rss", memory / MB if memory is not None else None, limits.max_rss_mb, "MB"),
        ("processes", tree.processes, limits.max_processes, "processes"),
        ("open_files", tree.open_files, limits.max_open_files, "fds"),
        ("cpu", cpu_average, limits.max_cpu_percent, "%"),
        ("wall", tree.run_s, limits.max_wall_s, "s"),
    ]


def cpu_average(samples: Iterable[tuple[float, float]], started: float, now: float, window_s: float) -> float | None:
    """The tree's CPU over the last ``window_s``; ``None`` until the run is that old."""
    if now - started < window_s:
        return None  # not enough history for a sustained figure yet
    recent = [cpu for t, cpu in samples if t >= now - window_s]
    return sum(recent) / len(recent) if recent else None


def memory_victim(
    trees: Sequence[TreeSample], exempt: Collection[str], key: Callable[[TreeSample], str] = lambda t: t.agent
) -> TreeSample | None:
    """Under memory pressure the biggest running tree is paused first, one per sample (``exempt``
    holds runs named by ``key``)."""
    candidates = [t for t in trees if t.status == "running" and key(t) not in exempt]
    return max(candidates, key=lambda t: memory_bytes(t) or 0, default=None)


def beyond_concurrency(running: Sequence[tuple[float, str]], limit: int) -> list[str]:
    """Of the running agents (with their start times), the newest beyond the limit wait."""
    return [agent for _, agent in sorted(running, key=lambda item: item[0])[limit:]]


def exhausted(cost_usd: float, tokens: int, settings: LimitsSettings) -> list[tuple[str, float, float, str]]:
    """The session budgets spent in full: (kind, spent, budget, unit)."""
    table = (
        ("cost_budget", cost_usd, settings.max_cost_usd, "USD"),
        ("token_budget", float(tokens), settings.max_tokens, "tokens"),
    )
    return [
        (kind, spent, budget, unit) for kind, spent, budget, unit in table if budget is not None and spent >= budget
    ]


def tokens_of(usage: dict[str, Any] | None) -> int:
    """Total tokens in a usage report (claude, codex and gemini name them differently)."""
    if not usage:
        return 0
    for key in ("total_tokens", "totalTokenCount"):
        if isinstance(usage.get(key), int):
            return usage[key]
    return sum(
        value
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        if isinstance(value := usage.get(key), int)
    )


__all__ = [
    "MB",
    "RESUME_FACTOR",
    "WALKS_PER_WINDOW",
    "Breach",
    "Liveness",
    "beyond_concurrency",
    "cpu_average",
    "cpu_percent_over",
    "drop_older",
    "exhausted",
    "idle_over",
    "memory_bytes",
    "memory_victim",
    "stall_breaches",
    "tokens_of",
    "tree_breaches",
    "walk_due",
]
