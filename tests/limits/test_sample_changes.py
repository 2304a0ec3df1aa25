"""Which monitor samples are told to the listeners: changed past the thresholds, or the heartbeat."""

from __future__ import annotations

from typing import Any

import pytest
from meta_orchestrator.actors.limits.sample_changes import changed, worth_telling
from meta_orchestrator.messages.resources import MachineSample, ResourcesSampled, TreeSample

MIB = 2**20


def _sample(*trees: TreeSample, machine_cpu: float = 10.0, **spend: Any) -> ResourcesSampled:
    machine = MachineSample(
        cpu_percent=machine_cpu, cpu_count=2, memory_available_bytes=2**30, memory_total_bytes=2**31
    )
    return ResourcesSampled(taken_at=1e9, machine=machine, agents=trees, **spend)


def _tree(**fields: Any) -> TreeSample:
    base: dict[str, Any] = {
        "agent": "claude",
        "pid": 10,
        "status": "running",
        "processes": 3,
        "cpu_percent": 5.0,
        "rss_bytes": 100 * MIB,
    }
    return TreeSample(**{**base, **fields})


def test_figures_within_the_thresholds_are_no_change():
    # What moves every sample without telling anything new: time, and the machine's own load.
    later = _tree(cpu_percent=5.9, rss_bytes=101 * MIB, run_s=30.0, silent_s=30.0, open_files=12)
    assert not changed(_sample(_tree()), _sample(later, machine_cpu=90.0))


@pytest.mark.parametrize(
    "update",
    [
        {"cpu_percent": 6.1},
        {"cpu_percent": 3.9},
        {"rss_bytes": 101 * MIB + 1},
        {"tmpfs_bytes": MIB + 1},  # what its private /tmp holds counts as its memory
        {"rss_bytes": None},  # no longer readable
        {"cpu_percent": None},
        {"processes": 4},
        {"status": "paused"},
    ],
)
def test_a_run_whose_figures_moved_past_a_threshold_is_a_change(update):
    assert changed(_sample(_tree()), _sample(_tree(**update)))


def test_a_run_started_or_ended_or_spend_reported_is_a_change():
    one = _sample(_tree())
    assert changed(one, _sample())
    assert changed(_sample(), one)
    assert changed(one, _sample(_tree(), _tree(slot=2, pid=11)))
    assert changed(one, _sample(_tree(pid=12)))  # the agent's next run
    assert changed(one, _sample(_tree(), cost_usd=0.01))
    assert changed(one, _sample(_tree(), tokens=5))


def test_the_first_sample_and_the_heartbeat_are_told_unchanged():
    same = _sample(_tree())
    assert worth_telling(None, same, None, heartbeat_s=10)
    assert not worth_telling(same, same, 9.9, heartbeat_s=10)
    assert worth_telling(same, same, 10.0, heartbeat_s=10)
    assert worth_telling(same, same, 0.0, heartbeat_s=0)  # 0: every sample
    assert worth_telling(same, _sample(_tree(processes=9)), 0.5, heartbeat_s=10)
