"""The resource monitor's rules, without processes: figures and settings in, breaches out."""

from __future__ import annotations

import collections
from pathlib import Path

from meta_orchestrator.actors.limits.limit_rules import (
    MB,
    WALKS_PER_WINDOW,
    Breach,
    Liveness,
    beyond_concurrency,
    cpu_average,
    cpu_percent_over,
    drop_older,
    exhausted,
    idle_over,
    memory_victim,
    tokens_of,
    tree_breaches,
    walk_due,
)
from meta_orchestrator.actors.processes.run_clock import RunClock
from meta_orchestrator.actors.files.session_files import RotatingJsonl, read_jsonl
from meta_orchestrator.config.settings import AgentLimits, LimitsSettings
from meta_orchestrator.messages.resources import TreeSample


def _tree(
    agent: str = "claude", rss_mb: float = 100, processes: int = 3, status: str = "running", **more
) -> TreeSample:
    return TreeSample(agent=agent, pid=1, status=status, processes=processes, rss_bytes=int(rss_mb * MB), **more)


def _breaches(tree: TreeSample, limits: AgentLimits, cpu: float | None = None, **seen) -> list[Breach]:
    sets = {"acted": set(), "warned": set(), "overridden": set(), **seen}
    return tree_breaches(tree, cpu, limits, 0.8, **sets)


def test_a_limit_warns_at_its_share_then_takes_its_action_once():
    limits = AgentLimits(max_rss_mb=1000, max_processes=None, stall_s=None)
    assert _breaches(_tree(rss_mb=700), limits) == []
    (early,) = _breaches(_tree(rss_mb=900), limits)
    assert (early.kind, early.action, early.early, early.threshold) == ("rss", "warn", True, 800)
    assert "(80% of the limit 1000 MB)" in early.reason("claude")
    assert _breaches(_tree(rss_mb=900), limits, warned={"rss"}) == []
    (over,) = _breaches(_tree(rss_mb=1200), limits, warned={"rss"})
    assert (over.action, over.early) == ("stop", False)
    assert over.reason("claude") == "rss limit: 1200.0 MB > 1000 MB; stopping claude"
    assert _breaches(_tree(rss_mb=1200), limits, acted={"rss"}) == []


def test_after_the_user_overrode_a_limit_it_only_warns():
    limits = AgentLimits(max_processes=10, actions={"processes": "pause"})
    (breach,) = _breaches(_tree(processes=20), limits)
    assert breach.action == "pause"
    (breach,) = _breaches(_tree(processes=20), limits, overridden={"processes"})
    assert breach.action == "warn"


def test_nothing_is_judged_after_a_stop():
    limits = AgentLimits(max_rss_mb=100, max_processes=10, stall_s=None)
    breaches = _breaches(_tree(rss_mb=500, processes=50), limits)
    assert [(b.kind, b.action) for b in breaches] == [("rss", "stop")]  # processes comes after rss


def test_cpu_counts_only_over_a_full_window():
    samples = [(t, 100.0 if t >= 5 else 0.0) for t in range(11)]
    assert cpu_average(samples, started=0, now=9.9, window_s=10) is None
    assert cpu_average(samples, started=0, now=10, window_s=4) == 100.0
    assert cpu_average(samples, started=0, now=10, window_s=10) == 600 / 11
    assert cpu_average([], started=0, now=100, window_s=10) is None


def test_memory_pressure_pauses_the_biggest_running_tree_not_exempt():
    trees = [
        _tree("claude", rss_mb=300),
        _tree("codex", rss_mb=900, status="paused"),
        _tree("gemini", rss_mb=500),
    ]
    assert memory_victim(trees, exempt=()).agent == "gemini"
    assert memory_victim(trees, exempt={"gemini"}).agent == "claude"
    assert memory_victim(trees, exempt={"gemini", "claude"}) is None


def test_beyond_concurrency_the_newest_wait():
    running = [(3.0, "gemini"), (1.0, "claude"), (2.0, "codex")]
    assert beyond_concurrency(running, 1) == ["codex", "gemini"]
    assert beyond_concurrency(running, 3) == []


def test_budgets_are_spent_at_their_figure():
    settings = LimitsSettings(max_cost_usd=1.0, max_tokens=1000)
    assert exhausted(0.99, 999, settings) == []
    assert exhausted(1.0, 1000, settings) == [
        ("cost_budget", 1.0, 1.0, "USD"),
        ("token_budget", 1000.0, 1000, "tokens"),
    ]
    assert exhausted(5.0, 10**6, LimitsSettings()) == []  # no budget set


def test_tokens_are_counted_whatever_the_cli_calls_them():
    assert tokens_of({"total_tokens": 7, "input_tokens": 100}) == 7
    assert tokens_of({"totalTokenCount": 9}) == 9
    assert tokens_of({"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 5, "other": 100}) == 12
    assert tokens_of(None) == 0


def test_a_run_clock_leaves_paused_time_out():
    clock = RunClock(started=100.0)
    assert clock.run_s(110.0) == 10.0
    clock.pause(110.0)
    clock.pause(112.0)  # already paused: the first pause counts
    assert clock.paused and clock.run_s(130.0) == 10.0
    clock.resume(130.0)
    assert not clock.paused and clock.run_s(135.0) == 15.0
    assert clock.paused_total == 20.0


def test_the_samples_file_rotates_after_its_window(tmp_path: Path):
    history = RotatingJsonl(tmp_path, "resources", max_lines=3)
    for n in range(5):
        history.append({"seq": n + 1})
    history.close()
    assert [r["seq"] for r in read_jsonl(tmp_path / "resources.1.jsonl").records] == [1, 2, 3]
    assert [r["seq"] for r in read_jsonl(tmp_path / "resources.jsonl").records] == [4, 5]
    again = RotatingJsonl(tmp_path, "resources", max_lines=3)  # counts the lines already there
    again.append({"seq": 6})
    again.append({"seq": 7})
    again.close()
    assert [r["seq"] for r in read_jsonl(tmp_path / "resources.1.jsonl").records] == [4, 5, 6]
    assert (tmp_path / "resources.jsonl").stat().st_mode & 0o777 == 0o600


# -- the stall limit: liveness, not silence --------------------------------------------------------


def _cpu(percent: float, seconds: int, start: float = 0.0, used: float = 0.0) -> list[tuple[float, float]]:
    """One sample a second over ``seconds`` of run time, the tree using ``percent`` of a core."""
    return [(start + t, used + percent / 100 * t) for t in range(seconds + 1)]


STALL = AgentLimits(max_rss_mb=None, max_processes=None, stall_s=100, stall_cpu_percent=2.0)


def _stall(live: Liveness, limits: AgentLimits = STALL, **seen) -> list[Breach]:
    sets = {"acted": set(), "warned": set(), "overridden": set(), **seen}
    return tree_breaches(_tree(), None, limits, 0.8, live=live, **sets)


def test_cpu_over_a_window_counts_from_the_sample_at_its_start():
    cpu = [(0.0, 0.0), (50.0, 10.0), (100.0, 10.5), (150.0, 11.0)]
    assert cpu_percent_over(cpu, 100) == 100 * 1.0 / 100  # from the sample at 50 s
    assert cpu_percent_over(cpu, 150) == 100 * 11.0 / 150
    assert cpu_percent_over(cpu, 151) is None  # the samples do not span it yet
    assert cpu_percent_over([], 10) is None


def test_an_idle_run_is_stalled_and_the_reason_says_what_idle_means():
    (breach,) = _stall(Liveness(silent_s=120, written_s=None, cpu=_cpu(0.5, 120)))
    assert (breach.kind, breach.action, breach.early, breach.threshold) == ("stall", "stop", False, 100)
    assert breach.reason("opencode") == (
        "stall limit: 120.0 s > 100 s (idle: no output, no file written in its folder, CPU 0.5% <= 2%); "
        "stopping opencode"
    )


def test_a_run_busy_in_a_silent_test_suite_is_not_stalled():
    # Silent for ten minutes, its tree at 80% of a core the while: working, not hung.
    assert _stall(Liveness(silent_s=600, written_s=None, cpu=_cpu(80, 600))) == []
    # Idle for most of the window, then a burst of work near its end: still busy.
    burst = [*_cpu(0.1, 95), *_cpu(100, 5, start=95, used=0.095)[1:]]
    assert _stall(Liveness(silent_s=600, cpu=burst)) == []


def test_a_run_writing_files_in_its_folder_is_not_stalled():
    assert _stall(Liveness(silent_s=600, written_s=3, cpu=_cpu(0.0, 600))) == []
    (breach,) = _stall(Liveness(silent_s=600, written_s=300, cpu=_cpu(0.0, 600)))
    assert breach.action == "stop" and breach.observed == 300  # quiet since its last write


def test_a_trickle_of_cpu_below_the_threshold_is_still_a_stall_and_the_threshold_is_inclusive():
    assert _stall(Liveness(silent_s=120, cpu=_cpu(1.9, 120)))[0].action == "stop"
    assert _stall(Liveness(silent_s=120, cpu=_cpu(2.0, 120)))[0].action == "stop"
    assert _stall(Liveness(silent_s=120, cpu=_cpu(2.5, 120))) == []


def test_a_stall_warns_first_and_acts_once():
    (early,) = _stall(Liveness(silent_s=85, cpu=_cpu(0.0, 85)))
    assert (early.action, early.early, early.threshold) == ("warn", True, 80)
    assert _stall(Liveness(silent_s=85, cpu=_cpu(0.0, 85)), warned={"stall"}) == []
    assert _stall(Liveness(silent_s=120, cpu=_cpu(0.0, 120)), acted={"stall"}) == []
    (overridden,) = _stall(Liveness(silent_s=120, cpu=_cpu(0.0, 120)), overridden={"stall"})
    assert overridden.action == "warn" and not overridden.early


def test_output_ends_idleness_and_no_stall_before_the_samples_span_the_window():
    assert _stall(Liveness(silent_s=50, cpu=_cpu(0.0, 120))) == []  # it printed 50 s ago
    assert _stall(Liveness(silent_s=120, cpu=_cpu(0.0, 60, start=60))) == []  # samples over 60 s only
    assert _stall(Liveness(silent_s=120, cpu=_cpu(0.0, 120)), AgentLimits(stall_s=None)) == []


def test_without_any_cpu_figure_output_and_files_decide():
    idle, used = idle_over(Liveness(silent_s=120, cpu=()), 100, 2.0)
    assert idle and used is None
    (breach,) = _stall(Liveness(silent_s=120, cpu=()))
    assert "CPU" not in breach.reason("codex") and breach.action == "stop"


def test_only_the_samples_a_window_needs_are_kept():
    samples = collections.deque(_cpu(1.0, 300))
    drop_older(samples, 100)
    assert samples[0][0] == 200 and samples[-1][0] == 300  # one at the window's start stays
    assert cpu_percent_over(samples, 100) is not None


def test_the_folder_is_walked_only_when_the_run_looks_idle_and_always_before_a_stall():
    def due(silent_s: float, since_walk_s: float | None, cpu_percent: float = 0.0) -> bool:
        live = Liveness(silent_s=silent_s, cpu=_cpu(cpu_percent, int(silent_s)))
        return walk_due(live, 100, 0.8, 2.0, since_walk_s)

    assert not due(50, None)  # printing lately: no walk
    assert not due(90, None, cpu_percent=50)  # busy: no walk
    assert due(85, None) and due(85, 100 / WALKS_PER_WINDOW)  # idle past the warning: walk, then now and then
    assert not due(85, 1.0)
    assert due(100, 1.0)  # a stall is about to be decided: never on a stale walk
