"""Benchmark: opening and seeking a long session history. Run by hand:

    python -m tests.bench.history               # 1,000,000 events over three agents
    python -m tests.bench.history --events 100000

It writes a synthetic session (three ``<agent>.jsonl`` files with records shaped like the
workers' and a ``state.json``) under a temporary folder, then times, in the same run:

* the baseline: a plain read of every line of the three files (what any full scan costs);
* opening: the last 200 records of every agent and each file's last seq, as a page opens;
* seeking: 200 seeks to random moments, each followed by a read of 200 records;
* the page through ``orchestrate serve`` over HTTP on 127.0.0.1: opening the session (the
  snapshot at its end, as the page asks first), a seek to a random moment, the next 500 frames.

Figures are medians of repeated runs, quoted beside the baseline as ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meta_orchestrator.actors.history.event_log import EventLog
from meta_orchestrator.actors.files.session_files import last_seq
from meta_orchestrator.webui.serve import SessionsServer

AGENTS = ("gemini", "codex", "claude")
START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def write_history(folder: Path, events: int) -> int:
    """Three agents' files with ``events`` records in all; returns the bytes written."""
    rng = random.Random(42)
    total = 0
    per_agent = events // len(AGENTS)
    for agent in AGENTS:
        moment = START
        lines = []
        for seq in range(1, per_agent + 1):
            moment += timedelta(milliseconds=rng.randrange(1, 40))
            raw = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "w" * 80}]}})
            lines.append(
                json.dumps(
                    {
                        "type": "status",
                        "agent": agent,
                        "timestamp": moment.isoformat().replace("+00:00", "Z"),
                        "payload": {"text": f"step {seq} of the work " + "t" * rng.randrange(20, 120)},
                        "seq": seq,
                        "assignment_id": "implement",
                        "raw": raw,
                    }
                )
            )
        data = "\n".join(lines) + "\n"
        (folder / f"{agent}.jsonl").write_text(data, encoding="utf-8")
        total += len(data)
    (folder / "state.json").write_text(
        json.dumps({"session_id": folder.name, "task": "bench", "status": "completed", "created_at": START.isoformat()})
    )
    return total


def _median(run, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def plain_read(folder: Path) -> None:
    for agent in AGENTS:
        with open(folder / f"{agent}.jsonl", "rb") as f:
            for _line in f:
                pass


def open_page(folder: Path) -> None:
    json.loads((folder / "state.json").read_text())
    for agent in AGENTS:
        path = folder / f"{agent}.jsonl"
        last_seq(path)
        with EventLog(path) as log:
            log.tail(200)


def seeks(folder: Path, count: int, span: timedelta) -> None:
    rng = random.Random(1)
    logs = [EventLog(folder / f"{agent}.jsonl") for agent in AGENTS]
    try:
        for _ in range(count):
            moment = START + span * rng.random()
            for log in logs:
                log.read_from(log.offset_of_time(moment), 200 // len(AGENTS))
    finally:
        for log in logs:
            log.close()


def _get(server: SessionsServer, path: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", headers={"X-Orchestrate-Token": server.token}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def over_http(workspace: Path, session: str, span: timedelta) -> tuple[float, float, float]:
    server = SessionsServer(workspace, port=0).start()
    try:
        rng = random.Random(2)
        base = f"/api/sessions/{session}"
        opening = _median(lambda: _get(server, base + "/snapshot?at=end"), 5)
        moments = [(START + span * rng.random()).isoformat().replace("+00:00", "Z") for _ in range(20)]
        seek = _median(lambda: _get(server, base + "/snapshot?at=" + moments.pop()), 9)
        cursor = _get(server, base + "/snapshot?at=start")["cursor"]
        frames = _median(lambda: _get(server, base + "/frames?limit=500&cursor=" + cursor), 5)
        return opening, seek, frames
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seeks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="history-bench-") as tmp:
        folder = Path(tmp) / "20261201-120000-bench"
        folder.mkdir()
        began = time.perf_counter()
        size = write_history(folder, args.events)
        print(f"wrote {args.events:,} events ({size / 1e6:.0f} MB) in {time.perf_counter() - began:.1f}s")
        with EventLog(folder / "claude.jsonl") as log:
            first = log.read_from(0, 1).records[0]["timestamp"]
            last = log.tail(1).records[0]["timestamp"]
        span = datetime.fromisoformat(last) - datetime.fromisoformat(first)
        base = _median(lambda: plain_read(folder), 3)
        opening = _median(lambda: open_page(folder), 7)
        seeking = _median(lambda: seeks(folder, args.seeks, span), 3) / args.seeks
        print(f"plain read of every line (baseline): {base * 1000:.0f} ms")
        print(
            f"open (state + last seq + last 200 records per agent): {opening * 1000:.2f} ms "
            f"= {opening / base:.4f} x the plain read"
        )
        print(
            f"seek to a moment + read 200 records: {seeking * 1000:.2f} ms each = {seeking / base:.4f} x the plain read"
        )
        opening, seek, frames = over_http(Path(tmp), folder.name, span)
        print(f"serve, open the session page (snapshot at the end): {opening * 1000:.1f} ms = {opening / base:.3f} x")
        print(f"serve, seek to a random moment (snapshot there): {seek * 1000:.1f} ms = {seek / base:.3f} x")
        print(f"serve, the next 500 frames: {frames * 1000:.1f} ms = {frames / base:.3f} x")


if __name__ == "__main__":
    main()
