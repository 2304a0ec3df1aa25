"""The resource monitor's rules, without processes: figures and settings in, breaches out."""

from __future__ import annotations

from pathlib import Path

from meta_orchestrator.actors.limits.limit_rules import (
    MB,
    Breach,
    beyond_concurrency,
    cpu_average,
    exhausted,
    memory_victim,
    tokens_of,
    tree_breaches,
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
