"""Benchmark: what notifications cost a session. Run by hand:

    python -m tests.bench.notify              # 3 rounds
    python -m tests.bench.notify --rounds 5

The same demo session (it asks a question, which times out, and completes) runs in-process,
the three ways interleaved in each round so the machine's load falls on all alike:

* the baseline: no ``[notify]``;
* a receiver on 127.0.0.1 that answers 200;
* a dead port and a receiver that never answers (``timeout_s`` 5, ``end_grace_s`` 2).

It prints each way's medians beside the baseline's: the session's own time (``state.json``
``created_at`` to ``ended_at``), and the program's (``run()`` called to returned; the end
grace for a hanging receiver falls there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.notify.test_notify import Receiver, _dead_port, _run_demo


def _one(notify: dict[str, Any], env: dict[str, str]) -> tuple[float, float]:
    """The session's own seconds, and the program's."""
    with tempfile.TemporaryDirectory() as folder:
        began = time.monotonic()
        code, state = _run_demo(Path(folder), env, notify)
        took = time.monotonic() - began
    assert code == 0 and state["status"] == "completed", state["status"]
    own = datetime.fromisoformat(state["ended_at"]) - datetime.fromisoformat(state["created_at"])
    return own.total_seconds(), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATE_DEMO_SCENARIO")}
    env["ORCHESTRATE_DEMO_PACE"] = "0"
    good, hanging = Receiver(), Receiver(hang=True)
    ways = {
        "no [notify] (baseline)": {},
        "a receiver answering 200": {"webhook_urls": [good.url]},
        "a dead port and a hanging receiver": {
            "webhook_urls": [f"http://127.0.0.1:{_dead_port()}/hook", hanging.url],
            "timeout_s": 5,
            "end_grace_s": 2,
        },
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(args.rounds):
            for name, notify in ways.items():
                times[name].append(_one(notify, env))
    finally:
        good.close()
        hanging.close()
    base = [statistics.median(t[i] for t in times["no [notify] (baseline)"]) for i in (0, 1)]
    print(f"machine: {os.cpu_count()} cores; demo session, medians of {args.rounds} rounds", flush=True)
    for name, taken in times.items():
        own, program = (statistics.median(t[i] for t in taken) for i in (0, 1))
        print(
            f"  {name:<36} session {own:6.2f} s ({own / base[0]:4.2f}x)"
            f"   program {program:6.2f} s ({program / base[1]:4.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    main()
