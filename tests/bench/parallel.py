"""Several writers per CLI (``[agents.<name>] max_parallel``): a plan of 12 independent
implementer assignments of the demo agents, run at max_parallel 1, 2 and 4, here and on a
2-node local Ray cluster (a head without agent slots, two nodes with 2 each, all on
127.0.0.1). Run by hand:

    python -m tests.bench.parallel             # about 5 minutes on 2 cores
    python -m tests.bench.parallel --quick     # 6 assignments, no cluster, for a smoke run

Each session's wall time (from the launch to its end: planning, checkouts, the runs, their
merges) is printed beside max_parallel 1's of the same place, in the same run. On the
cluster, the nodes each run went to are counted from the runs' ``placed`` events.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.agents.demo.common import PLAN_PARTS_ENV
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import event_files, read_jsonl
from meta_orchestrator.config.settings import load_settings

TASK = "Add a /health endpoint"
PACE_S = "0.2"  # the demo agents' step: each run takes about two seconds of its own


def _session(root: Path, parallel: int, parts: int, cluster: Any = None) -> tuple[float, dict[str, Any], Path]:
    overrides: dict[str, Any] = {
        "workspace": str(root / f"ws-{parallel}"),
        "agents.claude.max_parallel": parallel,
        "session.max_concurrent": max(parallel, 1),
        "review.enabled": False,  # the runs and their merges, not the peers' reviews
    }
    if cluster is not None:
        overrides |= {
            "cluster.address": cluster.local.address,
            "cluster.token_file": str(cluster.local.token_file),
            "cluster.agents": ["claude"],  # the parts go to the nodes; planning stays here
        }
    env = {**os.environ, "ORCHESTRATE_DEMO_PACE": PACE_S, PLAN_PARTS_ENV: str(parts)}
    env = {k: v for k, v in env.items() if not k.startswith("ORCHESTRATE_DEMO_SCENARIO")}
    request = LaunchRequest(task=TASK, target=None, demo=True, dashboard=False, console=False, env=env)
    started = time.perf_counter()
    code = run(load_settings(None, overrides), request)
    took = time.perf_counter() - started
    (folder,) = [p for p in (root / f"ws-{parallel}").iterdir() if p.is_dir()]
    state = json.loads((folder / "state.json").read_text())
    if code != 0:
        raise SystemExit(f"max_parallel {parallel}: the session ended {state['status']}: {state.get('summary')}")
    return took, state, folder


def _nodes(folder: Path) -> Counter[str]:
    """How many of claude's runs each node took (its placed events)."""
    placed = Counter()
    for path in event_files(folder, "claude"):
        for record in read_jsonl(path).records:
            if record["payload"].get("kind") == "placed":
                placed[record["payload"]["details"]["node_id"][:8]] += 1
    return placed


def _series(where: str, root: Path, parts: int, cluster: Any = None) -> list[str]:
    rows: list[str] = []
    baseline = None
    for parallel in (1, 2, 4):
        took, state, folder = _session(root / where, parallel, parts, cluster)
        baseline = baseline or took
        slots = sorted({p.name for p in event_files(folder, "claude") if p.exists() and p.stat().st_size})
        nodes = f"; runs per node {dict(_nodes(folder))}" if cluster is not None else ""
        rows.append(
            f"{where}: {parts} assignments at max_parallel {parallel}: {took:.1f}s "
            f"({baseline / took:.2f}x max_parallel 1's {baseline:.1f}s); event files {', '.join(slots)}{nodes}"
        )
        print(rows[-1], flush=True)
        assert len(state["assignments"]) == parts
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    parts = 6 if args.quick else 12
    root = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    rows = []
    try:
        rows += _series("local", root, parts)
        if not args.quick:
            rows += _on_cluster(root, parts)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(["", "summary:", *rows]))


def _on_cluster(root: Path, parts: int) -> list[str]:
    from tests.ray_cluster import driven_cluster

    fixture = driven_cluster(2, num_cpus=1)
    cluster = next(fixture)
    try:
        cluster.add_node("slots2", {"agent_slot": 2})
        return _series("cluster (2 nodes x 2 slots)", root, parts, cluster)
    finally:
        fixture.close()  # the driver leaves, every node stops


if __name__ == "__main__":
    main()
