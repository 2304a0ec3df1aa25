"""The remote host path beside the local one, on a real local Ray cluster. Run by hand:

    python -m tests.bench.cluster            # about 3 minutes on 2 cores
    python -m tests.bench.cluster --quick    # smaller sizes, for a smoke run
    python -m tests.bench.cluster --only bundles

A head without agent slots and one node with them (tests/ray_cluster.py: every server on
127.0.0.1), then, each beside the local ``ProcessHost`` path in the same run:

1. throughput: one CLI printing lines as fast as it can, read to the end through each path
   (from the first line received to the last, so the remote run's placement is not counted;
   placement is printed apart); the remote path as sessions use it: the node keeps each batch
   until the reader acknowledges it, as the worker does once the lines are recorded;
2. latency at 100 lines/s: each line carries the time it was printed; the reader's clock
   at receipt minus that (same machine, same clock), p50/p99/max;
3. the driver's RSS with 64 remote runs streaming at once (a Python one-liner each);
4. bundles: two runs from the same repository (a history of a few MB), one after the other on
   the same node: the bytes each start's bundle carried, beside the whole bundle of the
   second start (what it would have cost without the node's kept starts), and the time from
   the spawn to the CLI running.

Targets (issue 15): remote throughput at least half the local one; p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from tests.ray_cluster import LocalRayCluster, keep_loopback

HERE = Path(__file__).resolve().parent
AGENT = HERE / "agent.py"
MB = 1024 * 1024


def _launch(argv: list[str], cwd: Path) -> Any:
    from meta_orchestrator.actors.adapters.base import Launch

    return Launch(argv=tuple(argv), env=dict(os.environ), cwd=cwd)


def _read(proc: Any, overflow_dir: Path, timed: bool = False) -> dict[str, Any]:
    """Read both streams of ``proc`` to their end; with ``timed``, the stdout lines' receipt
    times (parsing every line: only for the latency figures)."""
    first: list[float] = []
    stamps: list[tuple[int, int]] = []  # (receipt ns, printed ns) of each timed line
    count = [0]
    spill = iter(range(1, 1 << 30))

    def overflow() -> Path:
        return overflow_dir / f"overflow-{next(spill)}.txt"

    # As the worker does: a remote run's node keeps each batch until it is recorded.
    acknowledge = getattr(proc, "acknowledge", lambda stream, count: None)

    def stdout() -> None:
        for batch in proc.line_batches("stdout", 1_048_576, overflow):
            now = time.time_ns()
            if not first:
                first.append(time.perf_counter())
            count[0] += len(batch)
            for data, _, _ in batch if timed else ():
                marker = data.find(b'"text":"')
                if marker != -1:
                    stamps.append((now, int(data[marker + 8 : data.index(b" ", marker)])))
            acknowledge("stdout", len(batch))

    def stderr() -> None:
        for batch in proc.line_batches("stderr", 1_048_576, overflow):
            acknowledge("stderr", len(batch))

    threads = [threading.Thread(target=f) for f in (stdout, stderr)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"first": first[0] if first else None, "end": time.perf_counter(), "lines": count[0], "stamps": stamps}


def run_local(argv: list[str], folder: Path, timed: bool = False) -> dict[str, Any]:
    from meta_orchestrator.actors.processes.process_host import ProcessHost

    started = time.perf_counter()
    proc = ProcessHost().spawn(_launch(argv, folder))
    result = _read(proc, folder, timed)
    proc.wait_exit_unreaped()
    assert proc.reap() == 0
    return {**result, "placed_s": 0.0, "started": started}


def run_remote(argv: list[str], folder: Path, timed: bool = False) -> dict[str, Any]:
    from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost

    started = time.perf_counter()
    proc = ClusterProcessHost(hold_until_recorded=True).spawn(_launch(argv, folder))  # as in a session
    assert proc.wait_started(120), "no slot"
    placed = time.perf_counter() - started
    result = _read(proc, folder, timed)
    assert proc.reap() == 0, proc.end
    return {**result, "placed_s": placed, "started": started, "batches": proc.batches_received}


def throughput(lines: int, folder: Path) -> list[str]:
    argv = [sys.executable, str(AGENT), str(lines)]
    rates = {}
    for name, run in (("local", run_local), ("remote", run_remote)):
        result = run(argv, folder)
        assert result["lines"] == lines + 2, result["lines"]  # the init and result lines too
        rates[name] = (result["lines"] - 1) / (result["end"] - result["first"])
        rates[name + "_placed"] = result["placed_s"]
        rates[name + "_batches"] = result.get("batches", 0)
    row = (
        f"throughput, {lines:,} lines: local {rates['local']:,.0f} lines/s, remote {rates['remote']:,.0f} "
        f"lines/s, ratio {rates['remote'] / rates['local']:.2f} (target >= 0.5); remote placement "
        f"{rates['remote_placed']:.2f}s, {rates['remote_batches']} read_batch calls"
    )
    print(row, flush=True)
    return [row]


def latency(rate: float, seconds: float, folder: Path) -> list[str]:
    argv = [sys.executable, str(AGENT), str(int(rate * seconds)), str(rate)]
    rows = []
    figures = {}
    for name, run in (("local", run_local), ("remote", run_remote)):
        result = run(argv, folder, timed=True)
        lat = sorted((got - printed) / 1e6 for got, printed in result["stamps"])
        figures[name] = lat
        rows.append(
            f"latency at {rate:g} lines/s, {name}: p50 {statistics.median(lat):.2f} ms, "
            f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms, max {lat[-1]:.2f} ms over {len(lat)} lines"
        )
        print(rows[-1], flush=True)
    p99 = {name: lat[int(len(lat) * 0.99) - 1] for name, lat in figures.items()}
    rows.append(f"latency p99 ratio remote/local {p99['remote'] / p99['local']:.2f} (target: remote p99 < 20 ms)")
    print(rows[-1], flush=True)
    return rows


ONE_LINER = "import sys, time\nfor i in range({n}):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n"


def driver_rss(runs: int, folder: Path) -> list[str]:
    from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost

    me = psutil.Process()
    gc.collect()
    before = me.memory_info().rss
    host = ClusterProcessHost(hold_until_recorded=True)
    argv = [sys.executable, "-c", ONE_LINER.format(n=100_000)]
    started = time.perf_counter()
    procs = [host.spawn(_launch(argv, folder)) for _ in range(runs)]
    readers = []
    for proc in procs:
        thread = threading.Thread(target=_read, args=(proc, folder), daemon=True)
        thread.start()
        readers.append(thread)
    for proc in procs:
        assert proc.wait_started(600), proc.phase
    placed = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # every run streaming for a while
        time.sleep(0.5)
    streaming = me.memory_info().rss
    lines = sum(p.lines_received for p in procs)
    for proc in procs:
        proc.terminate(grace_s=2.0)
    for proc in procs:
        proc.reap()
    for thread in readers:
        thread.join(60)
    row = (
        f"driver RSS with {runs} remote runs streaming: {streaming / MB:.0f} MB against {before / MB:.0f} MB "
        f"connected and idle in the same run (ratio {streaming / before:.2f}; "
        f"{(streaming - before) / runs / 1024:.0f} KiB per run); {runs} placed in {placed:.1f}s; "
        f"{lines:,} lines received"
    )
    print(row, flush=True)
    return [row]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b"}
    env["GIT_COMMITTER_EMAIL"] = "b@x"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def bundles(history_mb: int, folder: Path) -> list[str]:
    from meta_orchestrator.actors.cluster import remote_workdir
    from meta_orchestrator.actors.cluster.bundles import make_bundle
    from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost

    repo = folder / "bundled-app"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    for n in range(history_mb):  # a commit of 1 MB of incompressible data each
        (repo / f"blob-{n}.bin").write_bytes(os.urandom(MB))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"history {n}")
    launch = _launch([sys.executable, "-c", "import pathlib; pathlib.Path('out.txt').write_text('done')"], repo)
    host = ClusterProcessHost()
    rows = []
    for run in range(2):
        (repo / "note.txt").write_text(f"run {run}\n")  # a start of its own each time
        started = time.perf_counter()
        proc, sent = remote_workdir.spawn(host, launch, None, folder=repo, writing=True, subject=f"bench {run}")
        assert sent is not None and proc.wait_started(120), proc.end
        placed = time.perf_counter() - started
        result = _read(proc, folder)
        assert proc.reap() == 0, proc.end
        whole = len(make_bundle(sent.git_dir, sent.start_ref))  # the baseline, before finish forgets the ref
        end = remote_workdir.finish(proc, sent)
        assert end.error is None, end.error
        (repo / "out.txt").unlink()
        kind = f"thin against {proc.bundle_bases} kept start(s)" if proc.bundle_bases else "whole (the node kept none)"
        rows.append(
            f"bundle, run {run + 1} ({history_mb} MB of history): {proc.bundle_bytes:,} bytes sent, {kind}; "
            f"the whole bundle of the same start {whole:,} bytes (ratio {proc.bundle_bytes / whole:.4f}); "
            f"spawn to running {placed:.2f}s; {result['lines']} line(s)"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["throughput", "latency", "rss", "bundles"])
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    unconnected = psutil.Process().memory_info().rss
    root = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    runs = 8 if args.quick else 64
    started = time.perf_counter()
    cluster = LocalRayCluster(root).start()
    import ray

    from meta_orchestrator.actors.cluster.cluster_host import connect

    try:
        cluster.add_node("slots", {"agent_slot": runs + 2}, num_cpus=2)
        keep_loopback()
        connect(cluster.address, token_file=cluster.token_file)
        print(
            f"cluster up and driver connected in {time.perf_counter() - started:.1f}s; driver RSS "
            f"{unconnected / MB:.0f} MB before connecting, {psutil.Process().memory_info().rss / MB:.0f} MB after",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if args.only in (None, "throughput"):
                throughput(100_000 if args.quick else 500_000, folder)
            if args.only in (None, "latency"):
                latency(100.0, 3.0 if args.quick else 10.0, folder)
            if args.only in (None, "rss"):
                driver_rss(runs, folder)
            if args.only in (None, "bundles"):
                bundles(2 if args.quick else 8, folder)
    finally:
        ray.shutdown()
        left = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        if left:
            print(f"left running: {left}", flush=True)


if __name__ == "__main__":
    main()
