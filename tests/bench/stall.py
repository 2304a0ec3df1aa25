"""Benchmark: the stall limit watches liveness, not silence. Run by hand:

    python -m tests.bench.stall                # a 10 s window
    python -m tests.bench.stall --window 5

A real worker runs a demo CLI and a real resource monitor watches it (sampling every second,
the default), with a stall window short enough for a bench; the window is printed as the
baseline each figure stands beside:

* hang -> action: a CLI blocked on a read that never returns (a dead connection), from its
  last output to the stop told and to its end; the floor is the window itself;
* busy but silent: a CLI whose child burns CPU (a silent test suite) and one that writes a
  file in its folder now and then (a silent build), each silent for three windows: how long
  each was silent, and whether the stall limit acted (it should not: left alone).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import pykka

from meta_orchestrator.config.settings import AgentLimits, LimitsSettings
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.worker import AssignmentFinished, EventsRecorded, StartAssignment
from tests.limits.rig import PROMPT, watched_demo


class _Listener(pykka.ThreadingActor):
    """Every fact told to it, with the time it came, in a queue the bench reads."""

    def __init__(self, inbox: queue.Queue[tuple[float, Any]]) -> None:
        super().__init__()
        self._inbox = inbox

    def on_receive(self, message: Any) -> None:
        self._inbox.put((time.time(), message))


def _run(scenario: str, window_s: float, silent_s: float, timeout_s: float) -> dict[str, Any]:
    """One demo run under the monitor: its last output, the stall facts, its end."""
    inbox: queue.Queue[tuple[float, Any]] = queue.Queue()
    listener = _Listener.start(inbox)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "target"
        target.mkdir()
        limits = LimitsSettings(min_free_memory_mb=None, default=AgentLimits(stall_s=window_s))
        env = {
            **os.environ,
            "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": scenario,
            "ORCHESTRATE_DEMO_SILENT_S": str(silent_s),
            "ORCHESTRATE_DEMO_PACE": "0.05",
        }
        monitor, worker = watched_demo(
            listener, Path(tmp) / "session", target, env, settings=limits, session_id="bench"
        )
        worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=listener))
        seen: dict[str, Any] = {"last_output": None, "stalls": [], "finished": None, "ended_at": None}
        deadline = time.monotonic() + timeout_s
        while seen["finished"] is None and time.monotonic() < deadline:
            try:
                at, message = inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(message, EventsRecorded) and not seen["stalls"]:  # its own, not its stop's
                seen["last_output"] = max(e.timestamp.timestamp() for e in message.events)
            elif isinstance(message, LimitExceeded) and message.limit == "stall":
                seen["stalls"].append((at, message))
            elif isinstance(message, AssignmentFinished):
                seen["finished"], seen["ended_at"] = message, at
        for ref in (worker, monitor, listener):
            ref.stop()
    return seen


def hang_to_action(window_s: float) -> str:
    seen = _run("hang", window_s, 0, timeout_s=window_s * 4 + 30)
    stops = [(at, m) for at, m in seen["stalls"] if m.action == "stop"]
    if not stops or seen["last_output"] is None or seen["ended_at"] is None:
        return f"hang -> action: not seen within {window_s * 4 + 30:.0f} s (window {window_s:g} s)"
    told_at, stop = stops[0]
    return (
        f"hang -> stop told {told_at - seen['last_output']:.1f} s after its last output, "
        f"run ended {seen['ended_at'] - seen['last_output']:.1f} s after it "
        f"(baseline: the window {window_s:g} s, sampled every 1 s; {stop.reason})"
    )


def busy_but_silent(scenario: str, window_s: float) -> str:
    silent = window_s * 3
    seen = _run(scenario, window_s, silent, timeout_s=silent + 60)
    finished = seen["finished"]
    acted = [m.action for _, m in seen["stalls"]]
    what = "a child burning CPU" if scenario == "busy_silent" else "files written in its folder"
    if finished is None:
        return f"busy but silent ({what}): did not end within {silent + 60:.0f} s"
    verdict = "left alone" if not acted else f"stall limit acted: {acted}"
    return (
        f"busy but silent ({what}): silent {silent:.0f} s = {silent / window_s:.0f} windows of {window_s:g} s, "
        f"{verdict}, run {'succeeded' if finished.outcome.success else 'failed'}"
    )


def stall_figures(window_s: float = 10.0) -> list[str]:
    rows = []
    for make in (
        lambda: hang_to_action(window_s),
        lambda: busy_but_silent("busy_silent", window_s),
        lambda: busy_but_silent("writing_silent", window_s),
    ):
        rows.append(make())
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=10.0, help="the stall window in seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the monitor's own warnings are the figures' source
    stall_figures(args.window)
    pykka.ActorRegistry.stop_all()


if __name__ == "__main__":
    main()
