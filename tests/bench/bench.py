"""Benchmarks of the orchestrator's event path and its own cost. Run by hand:

    python -m tests.bench.bench            # everything (about 3 minutes on 2 cores)
    python -m tests.bench.bench --quick    # smaller sizes, for a smoke run

Each figure is printed with the baseline it is measured against in the same run, since
this machine's speed varies. Nothing here is a pass/fail test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pykka

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.system import collect_less_often
from meta_orchestrator.actors.supervision.supervision import ReplyInbox
from meta_orchestrator.webui.gateway import Gateway
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings, WebSettings
from meta_orchestrator.messages.gateway import GetGatewayAddress
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.bench.stall import stall_figures

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
AGENT = HERE / "agent.py"
TOKEN = "bench-token"


def _agent_command(lines: int, rate: float = 0.0) -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(AGENT))} {lines} {rate}"


# -- 1. throughput ---------------------------------------------------------------------------------


def baseline(k: int, n: int, folder: Path) -> tuple[float, int, float]:
    """A bare loop per agent: read the subprocess's lines, parse them, append the same JSONL.
    Returns the seconds it took, the lines and the CPU seconds this process spent."""
    counts = [0] * k

    def one(i: int) -> None:
        proc = subprocess.Popen(
            shlex.split(_agent_command(n)), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True
        )
        with open(folder / f"base-{i}.jsonl", "w", encoding="utf-8") as out:
            for seq, line in enumerate(proc.stdout, 1):  # type: ignore[union-attr]
                obj = json.loads(line)
                out.write(
                    json.dumps(
                        {
                            "seq": seq,
                            "type": "progress",
                            "agent": "claude",
                            "payload": {"text": str(obj.get("type"))},
                            "raw": line.decode("utf-8", "replace"),
                        }
                    )
                    + "\n"
                )
                out.flush()
                counts[i] += 1
        proc.wait()

    start, cpu = time.perf_counter(), _cpu_s()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, sum(counts), _cpu_s() - cpu


def _cpu_s() -> float:
    """CPU seconds this process (every thread, not the agents or the client) used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class WsCounter:
    """The browser stand-in, in its own process (a real browser is not the orchestrator's cost);
    or with ``sse_client.py``, a script reading the Server-Sent Events stream."""

    def __init__(self, url: str, expected: int, script: str = "ws_client.py", extra: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), url, "10", str(expected), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self._said = b""  # what it printed and no line was taken of yet
        if self._line(60) != "ready":
            raise RuntimeError("the client did not start: see its error above")

    def received_all(self, timeout: float) -> bool:
        """Wait until the client has every event frame; False when it has not within
        ``timeout`` seconds (it fell behind, and got snapshots instead of some)."""
        return self._line(timeout) == "all"

    def _line(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._said:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                return None
            self._said += chunk
        line, self._said = self._said.split(b"\n", 1)
        return line.decode().strip()

    def close(self) -> dict[str, Any]:
        said, _ = self.proc.communicate(b"", timeout=60)
        out = (self._said + said).decode()
        if not out.strip():
            raise RuntimeError(f"the client ended ({self.proc.returncode}) without its summary: see its error above")
        return json.loads(out.strip().splitlines()[-1])


def pipeline(
    k: int, n: int, folder: Path, rate: float = 0.0, sse: bool = False, deflate: bool = False
) -> dict[str, Any]:
    """The whole real path: subprocess, worker actor, parse, JSONL append, gateway, one client
    (a WebSocket, offering permessage-deflate with ``deflate``; or with ``sse`` a reader of
    ``/api/stream``)."""
    gateway = Gateway.start(settings=WebSettings(port=0), session_dir=folder, token=TOKEN)
    address = gateway.ask(GetGatewayAddress(), timeout=5)
    if sse:
        ws = WsCounter(f"http://127.0.0.1:{address.port}/api/stream?token={TOKEN}", k * n, "sse_client.py")
    else:
        extra = ("--deflate",) if deflate else ()
        ws = WsCounter(f"ws://127.0.0.1:{address.port}/ws?token={TOKEN}", k * n, extra=extra)
    inbox = ReplyInbox()
    workers = []
    try:  # a failure (the client lost its socket) must not leave the actors running
        for i in range(k):
            workers.append(
                Worker.start(
                    agent="claude",
                    adapter=get_adapter("claude"),
                    agent_settings=AgentSettings(command=_agent_command(n, rate), share_min=0, share_max=1),
                    session_settings=SessionSettings(),
                    session_id="bench",
                    session_dir=folder,
                    target=folder,
                    listeners=(gateway,),
                    base_env=dict(os.environ),
                    events_path=folder / f"agent-{i}.jsonl",
                )
            )
        start, cpu = time.perf_counter(), _cpu_s()
        for w in workers:
            w.tell(StartAssignment(assignment_id="bench", prompt="bench", reply_to=inbox))
        finished = [inbox.queue.get(timeout=600) for _ in workers]
        elapsed = time.perf_counter() - start
        # The CPU of the whole path: until the client has every event (or fell behind).
        ws.received_all(timeout=10)
        cpu = _cpu_s() - cpu
        assert all(isinstance(f, AssignmentFinished) and f.returncode == 0 for f in finished), finished
        text_events = 0
        for i in range(k):
            with open(folder / f"agent-{i}.jsonl", "rb") as f:
                text_events += sum(1 for line in f if json.loads(line).get("payload", {}).get("kind") == "text")
        seen = ws.close()
    finally:
        for w in workers:
            w.stop()
        gateway.stop()
    return {
        "elapsed": elapsed,
        "cpu_s": cpu,
        "events_on_disk": text_events,
        "ws_events": seen["events"],
        "ws_snapshots": seen["snapshots"],
        "latencies_ms": seen["latencies_ms"],
        "extensions": seen.get("extensions", []),
    }


def throughput(sizes: list[int], n: int) -> list[str]:
    rows = []
    for k in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            base_s, base_events, base_cpu = baseline(k, n, Path(tmp))
        with tempfile.TemporaryDirectory() as tmp:
            result = pipeline(k, n, Path(tmp))
        expected = k * n
        base_rate = base_events / base_s
        rate = result["events_on_disk"] / result["elapsed"]
        lost = expected - result["events_on_disk"]
        rows.append(
            f"K={k:<3} N={n}: pipeline {rate:>9,.0f} ev/s, baseline {base_rate:>9,.0f} "
            f"lines/s, ratio {rate / base_rate:.2f}; on disk {result['events_on_disk']:,}"
            f"/{expected:,} (lost {lost}); websocket client got {result['ws_events']:,} "
            f"event frames + {result['ws_snapshots']} snapshot(s); CPU per 200,000 lines: pipeline "
            f"{result['cpu_s'] / expected * 200_000:.2f} s, baseline {base_cpu / base_events * 200_000:.2f} s"
        )
        print(rows[-1], flush=True)
    return rows


def deflate_cost(k: int, n: int, rounds: int) -> str:
    """The gateway's process CPU with a client offering permessage-deflate (as a browser does)
    against one offering nothing, alternated ``rounds`` times: what zlib on every frame costs."""
    cpu: dict[bool, list[float]] = {False: [], True: []}
    negotiated: dict[bool, list[str]] = {}
    for _ in range(rounds):
        for deflate in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                result = pipeline(k, n, Path(tmp), deflate=deflate)
            cpu[deflate].append(result["cpu_s"] / result["events_on_disk"] * 100_000)
            negotiated[deflate] = result["extensions"]
    plain, packed = statistics.median(cpu[False]), statistics.median(cpu[True])
    line = (
        f"deflate, K={k} N={n}, median of {rounds} (load {os.getloadavg()[0]:.1f}): CPU-s per 100,000 events "
        f"{packed:.2f} offering permessage-deflate (negotiated: {negotiated[True] or 'none'}), "
        f"{plain:.2f} offering nothing; ratio {packed / plain:.2f} (each: "
        f"{', '.join(f'{a:.2f}' for a in cpu[True])} / {', '.join(f'{b:.2f}' for b in cpu[False])})"
    )
    print(line, flush=True)
    return line


def stream_reader(n: int) -> str:
    """One agent's flood read by a script through ``/api/stream`` (SSE) instead of a WebSocket:
    how many lines reach it as frames; the rest it gets as snapshots (it fell behind)."""
    with tempfile.TemporaryDirectory() as tmp:
        base_s, base_events, _ = baseline(1, n, Path(tmp))
    with tempfile.TemporaryDirectory() as tmp:
        result = pipeline(1, n, Path(tmp), sse=True)
    rate = result["events_on_disk"] / result["elapsed"]
    line = (
        f"SSE reader, K=1 N={n}: pipeline {rate:,.0f} ev/s (baseline {base_events / base_s:,.0f} lines/s, "
        f"ratio {rate / (base_events / base_s):.2f}); the reader got {result['ws_events']:,} of "
        f"{n:,} lines as event frames ({result['ws_events'] / n:.0%}) + {result['ws_snapshots']} snapshot(s)"
    )
    print(line, flush=True)
    return line


# -- 2. latency ---------------------------------------------------------------------------------


def bare_latencies(rate: float, seconds: float) -> list[float]:
    """The baseline: print-to-read latency of a bare reader of the same agent's pipe, which
    is what the machine's scheduling costs before the orchestrator does anything."""
    proc = subprocess.Popen(
        shlex.split(_agent_command(int(rate * seconds), rate)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    found = []
    for line in proc.stdout:  # type: ignore[union-attr]
        now = time.time_ns()
        text = json.loads(line).get("message", {}).get("content", [{}])[0].get("text", "")
        head = text.split(" ", 1)[0]
        if head.isdigit() and len(head) > 15:
            found.append((now - int(head)) / 1e6)
    proc.wait()
    return found


def _percentiles(found: list[float]) -> tuple[float, float, float]:
    lat = sorted(found)
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]


def latency(rate: float, seconds: float) -> str:
    bare = bare_latencies(rate, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        result = pipeline(1, int(rate * seconds), Path(tmp), rate=rate)
    if not result["latencies_ms"] or not bare:
        return f"{rate:g} ev/s: no latency samples"
    p50, p99, most = _percentiles(result["latencies_ms"])
    b50, b99, bmost = _percentiles(bare)
    line = (
        f"{rate:>6g} ev/s for {seconds:g}s: print->websocket p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {most:.2f} ms ({len(result['latencies_ms'])} samples); baseline print->bare reader "
        f"p50 {b50:.2f} ms, p99 {b99:.2f} ms, max {bmost:.2f} ms"
    )
    print(line, flush=True)
    return line


# -- 3-5. the launcher as a user runs it -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(
    workspace: Path, port: int, env_extra: dict[str, str], extra: tuple[str, ...] = (), demo: bool = True
) -> subprocess.Popen[str]:
    env = {**os.environ, "ORCHESTRATE_DEMO_PACE": "0", **env_extra}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "orchestrate"),
            "bench task",
            *(["--demo"] if demo else []),
            "--workspace",
            str(workspace),
            "--port",
            str(port),
            "--exit-when-done",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        text=True,
    )
    proc.console = _Console(proc)  # type: ignore[attr-defined]
    return proc


class _Console:
    """Reads a launcher's console (so it never blocks on a full pipe) and keeps its token."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.token: str | None = None
        self.seen = threading.Event()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if line.startswith("dashboard: ") and self.token is None:
                self.token = line.split("token=", 1)[1].strip()
                self.seen.set()
        self.seen.set()


def _dashboard_token(proc: subprocess.Popen[str]) -> str:
    """The token from the address the launcher printed."""
    console: _Console = proc.console  # type: ignore[attr-defined]
    console.seen.wait(30)
    if console.token is None:
        raise RuntimeError("the launcher printed no dashboard address")
    return console.token


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=0.5) as r:
            return r.status == 200
    except OSError:
        return False


def _wait(cond: Any, timeout: float) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if cond():
            return time.perf_counter() - start
        time.sleep(0.002)
    return None


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def startup(rounds: int = 3, probe_s: float | None = None) -> str:
    """Launcher start to the dashboard answering, the median of ``rounds`` starts; baseline:
    a bare ``python -c pass``. Without written bytecode (PYTHONDONTWRITEBYTECODE) every start
    compiles the project's modules again: the line says which. With ``probe_s``, gemini's
    ``--version`` takes that long, as a real CLI's does (opencode 1.9 s, gemini 1.7-4 s): the
    demo agents by their commands, not --demo, on a git target, no OS sandbox."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t0
    took, cpu = [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            port = _free_port()
            extra = () if probe_s is None else _slow_probe_run(Path(tmp), probe_s)
            proc = _launch(Path(tmp), port, {"ORCHESTRATE_DEMO_SCENARIO": "hang"}, extra, demo=probe_s is None)
            answered = _wait(lambda port=port: _health(port), 30)
            with contextlib.suppress(psutil.Error):  # its own CPU by then: what a busy machine does not stretch
                used = psutil.Process(proc.pid).cpu_times()
                cpu.append(used.user + used.system)
            _end(proc)
        if answered is not None:
            took.append(answered)
    bytecode = "not written (PYTHONDONTWRITEBYTECODE)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "cached"
    slow = "" if probe_s is None else f" with a {probe_s:g} s version probe"
    line = (
        f"start-up{slow}: launcher to dashboard answering {statistics.median(took):.3f} s, median of {len(took)} "
        f"(fastest {min(took):.3f} s; bare python start {bare:.3f} s, ratio {statistics.median(took) / bare:.1f}x; "
        f"the launcher's own CPU by then {statistics.median(cpu) if cpu else float('nan'):.3f} s; bytecode {bytecode})"
        if took
        else f"start-up{slow}: dashboard never answered"
    )
    print(line, flush=True)
    return line


def _slow_probe_run(folder: Path, probe_s: float) -> tuple[str, ...]:
    """The flags of a run whose gemini answers ``--version`` after ``probe_s`` (then is the demo
    gemini), the other agents the demo ones, on a fresh git repository in ``folder``."""
    slow = folder / "slow_gemini.py"
    slow.write_text(
        "import os, sys, time\n"
        f"if '--version' in sys.argv or '-v' in sys.argv:\n    time.sleep({probe_s!r})  # a CLI's own start\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'meta_orchestrator.actors.agents.demo', 'gemini',"
        " *sys.argv[1:]])\n"
    )
    commands = {"gemini": f"{sys.executable} {slow}"}
    commands.update({name: shlex.join(get_adapter(name).demo_argv()) for name in ("codex", "claude")})
    config = folder / "slow-probe.toml"
    config.write_text(
        "[sandbox]\nos = 'off'\n" + "".join(f"[agents.{n}]\ncommand = {json.dumps(c)}\n" for n, c in commands.items())
    )
    target = folder / "app"
    target.mkdir()
    (target / "README.md").write_text("# app\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "first"]):
        subprocess.run([*git, *cmd], cwd=target, check=True, capture_output=True)
    return ("--config", str(config), "--target", str(target))


def own_cost(idle_s: float, flood_lines: int) -> list[str]:
    """The launcher's own CPU and RSS: three silent agents, then a flood through claude."""
    return [idle_cost(idle_s), flood_cost(flood_lines)]


def idle_cost(idle_s: float) -> str:
    """The launcher's own CPU and RSS while three agent runs print nothing (``--only idle``:
    this figure alone, without the flood): the plan is three parts for claude, three runs at
    once, each of which starts and then hangs silent."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        silent = {"ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang", "ORCHESTRATE_DEMO_PLAN_PARTS": "3"}
        proc = _launch(Path(tmp), port, silent, ("--config", str(_three_at_once(Path(tmp)))))
        me = psutil.Process(proc.pid)
        _wait(lambda: _health(port), 30)
        if _wait(lambda: _running_assignments(Path(tmp)) == 3, 60) is None:
            raise RuntimeError("three runs never ran at once")
        time.sleep(2)  # let their start settle; they print nothing from here on
        cpu0 = me.cpu_times()
        t0 = time.perf_counter()
        time.sleep(idle_s)
        cpu1 = me.cpu_times()
        busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        rss = me.memory_info().rss
        _end(proc)
    idle_cpu = busy / (time.perf_counter() - t0) * 100
    line = (
        f"idle: orchestrator CPU {idle_cpu:.2f}% of a core over {idle_s:g}s with three silent "
        f"agent runs, RSS {rss / 2**20:.1f} MiB"
    )
    print(line, flush=True)
    return line


def flood_cost(flood_lines: int) -> str:
    """The launcher's RSS while the architect floods it with ``flood_lines`` lines."""
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = _launch(
            Path(tmp),
            port,
            {"ORCHESTRATE_DEMO_SCENARIO_GEMINI_WORK": "flood", "ORCHESTRATE_DEMO_FLOOD_LINES": str(flood_lines)},
        )
        me = psutil.Process(proc.pid)
        samples = []
        start = time.perf_counter()
        while proc.poll() is None and time.perf_counter() - start < 900:
            try:
                samples.append(me.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.25)
        took = time.perf_counter() - start
        _end(proc)
        events = sum(f.read_bytes().count(b"\n") for f in Path(tmp).glob("*/*.jsonl"))
    quarters = (
        " / ".join(f"{samples[min(len(samples) - 1, len(samples) * q // 4)] / 2**20:.0f}" for q in (1, 2, 3, 4))
        if samples
        else "-"
    )
    line = (
        f"flood: {flood_lines:,} lines from the architect in {took:.1f}s, {events:,} events "
        f"on disk; orchestrator RSS at 1/4, 1/2, 3/4 and the end of the run: {quarters} "
        f"MiB (peak {max(samples) / 2**20:.0f} MiB; idle baseline above)"
    )
    print(line, flush=True)
    return line


def _three_at_once(folder: Path) -> Path:
    cfg = folder / "bench.toml"
    cfg.write_text("[session]\nmax_concurrent = 3\n[agents.claude]\nmax_parallel = 3\n")
    return cfg


def _running_assignments(workspace: Path) -> int:
    """How many assignments the session in ``workspace`` says are running now."""
    for state in workspace.glob("*/state.json"):
        with contextlib.suppress(OSError, ValueError):
            return sum(a.get("status") == "running" for a in json.loads(state.read_text()).get("assignments", []))
    return 0


def _demo_agent(proc: subprocess.Popen[Any], agent: str, assignment: str) -> psutil.Process | None:
    """The demo ``agent``'s process working on ``assignment`` (its prompt is on its stdin: it
    is known by its command and its checkout), not the bwrap in front of it."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if (
                child.name() != "bwrap"
                and f"meta_orchestrator.actors.agents.demo {agent}" in " ".join(child.cmdline())
                and Path(child.cwd()).name == assignment
            ):
                return child
        except psutil.Error:
            continue
    return None


def reactions() -> list[str]:
    """Dashboard pause to SIGSTOP; Ctrl-C to every process gone."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = _launch(Path(tmp), port, {"ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"})
        token = _dashboard_token(proc)
        _wait(lambda: _health(port), 30)

        _wait(lambda: _demo_agent(proc, "claude", "implement"), 60)
        agent = _demo_agent(proc, "claude", "implement")
        assert agent is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/control/pause",
            data=b"{}",
            method="POST",
            headers={"X-Orchestrate-Token": token, "Content-Type": "application/json"},
        )
        start = time.perf_counter()
        urllib.request.urlopen(request, timeout=5).read()
        seen = _wait(lambda: agent.status() == psutil.STATUS_STOPPED, 10)
        stopped = time.perf_counter() - start if seen is not None else None
        rows.append(
            f"dashboard pause (HTTP request sent) -> SIGSTOP seen: {stopped * 1000:.1f} ms"
            if stopped is not None
            else "dashboard pause -> SIGSTOP: not seen within 10 s"
        )
        print(rows[-1], flush=True)
        tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        gone = _wait(
            lambda: (
                not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in tree[1:])
                and proc.poll() is not None
            ),
            30,
        )
        rows.append(
            f"Ctrl-C -> every process gone: {gone * 1000:.0f} ms ({len(tree)} processes)"
            if gone
            else "Ctrl-C -> processes still running after 30 s"
        )
        print(rows[-1], flush=True)
        _end(proc)
    return rows


def limit_reaction(interval_s: float = 1.0, limit_mb: int = 150) -> str:
    """From an agent's RSS crossing its limit (seen by polling every 2 ms) to its process
    group being gone; target: within one sampling interval plus 200 ms."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "limits.toml"
        cfg.write_text(f"[limits]\ninterval_s = {interval_s}\n[limits.agents.claude]\nmax_rss_mb = {limit_mb}\n")
        env = {
            **os.environ,
            "ORCHESTRATE_DEMO_PACE": "0.05",
            "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "memory_hog",
            "ORCHESTRATE_DEMO_HOG_MB": "2048",
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "orchestrate"),
                "bench task",
                "--demo",
                "--no-dashboard",
                "--workspace",
                tmp,
                "--config",
                str(cfg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        hog = None
        deadline = time.monotonic() + 60
        while hog is None and time.monotonic() < deadline:
            hog = _demo_agent(proc, "claude", "implement")
            time.sleep(0.01)
        crossed = gone = None
        gone_wall = 0.0
        while hog is not None and time.monotonic() < deadline:
            try:
                rss = hog.memory_info().rss
                alive = hog.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
            except psutil.NoSuchProcess:
                alive = False
                rss = 0
            now = time.perf_counter()
            if crossed is None and rss > limit_mb * 2**20:
                crossed = now
            if not alive:
                gone, gone_wall = now, time.time()
                break
            time.sleep(0.002)
        _end(proc)
        seen_at = _first_sample_over(Path(tmp), "claude", limit_mb * 2**20)
    if crossed is None or gone is None:
        line = "limit breach -> process gone: not measured (the hog was not seen crossing)"
    else:
        took = gone - crossed
        # Where the crossing falls in the interval is chance (the hog's start against the
        # ticks): the sample that showed it to the end is the monitor's own reaction.
        reaction = f"{(gone_wall - seen_at) * 1000:.0f} ms" if seen_at is not None else "not recorded"
        line = (
            f"limit breach -> agent ended: {took * 1000:.0f} ms after its RSS crossed "
            f"{limit_mb} MiB (sampling interval {interval_s * 1000:.0f} ms; target "
            f"<= {(interval_s + 0.2) * 1000:.0f} ms); from the sample that showed it: {reaction}"
        )
    print(line, flush=True)
    return line


def _first_sample_over(workspace: Path, agent: str, rss_bytes: int) -> float | None:
    """When the resource monitor first sampled ``agent`` over ``rss_bytes`` (its wall clock)."""
    for history in workspace.glob("*/resources.jsonl"):
        for line in history.read_text().splitlines():
            sample = json.loads(line)
            for tree in sample.get("agents", []):
                if tree.get("agent") == agent and (tree.get("rss_bytes") or 0) > rss_bytes:
                    return float(sample["taken_at"])
    return None


def _timed_health(port: int, token: str, rounds: int) -> tuple[float, int]:
    """The median time of an authorised ``GET /api/health`` (seconds) and how many answered 200."""
    times, answered = [], 0
    for _ in range(rounds):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/health", headers={"X-Orchestrate-Token": token})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=10) as r:
            answered += r.status == 200
            r.read()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), answered


def idle_connections(count: int = 1000, rounds: int = 20) -> str:
    """The dashboard's answer with ``count`` idle connections held open (half of them with a
    half-sent request), against none, and the launcher's threads meanwhile."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    idle: list[socket.socket] = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = _launch(Path(tmp), port, {"ORCHESTRATE_DEMO_SCENARIO": "hang"})
        try:
            token = _dashboard_token(proc)
            _wait(lambda: _health(port), 30)
            quiet, _ = _timed_health(port, token, rounds)
            threads_quiet = psutil.Process(proc.pid).num_threads()
            for i in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                idle.append(sock)
                if i % 2:
                    sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            busy, answered = _timed_health(port, token, rounds)
            threads_busy = psutil.Process(proc.pid).num_threads()
        finally:
            for sock in idle:
                sock.close()
            _end(proc)
    line = (
        f"idle connections: GET /api/health median {busy * 1000:.1f} ms with {count} idle connections open "
        f"({answered}/{rounds} answered), {quiet * 1000:.1f} ms with none; launcher threads {threads_busy} "
        f"(with none: {threads_quiet})"
    )
    print(line, flush=True)
    return line


def main() -> None:
    collect_less_often()  # as the launcher does before it starts a session
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    # The idle figure is a few hundredths of a CPU second over 30 s, counted in clock ticks
    # (10 ms): a longer window reads a change of a tenth of it.
    parser.add_argument("--idle-s", type=float, help="seconds the idle figure is measured over (30; --quick: 5)")
    parser.add_argument(
        "--only",
        choices=[
            *("throughput", "deflate", "stream", "latency", "cost", "idle", "reactions", "stall"),
            *("startup", "startup-probe", "connections"),
        ],
    )
    args = parser.parse_args()
    n = 5_000 if args.quick else 20_000
    idle_s = args.idle_s or (5 if args.quick else 30)
    sizes = [1, 4, 16] if args.quick else [1, 4, 16, 64]
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}", flush=True)
    sections = {
        "throughput": lambda: throughput(sizes, n if not args.quick else 5_000),
        "deflate": lambda: deflate_cost(4, 25_000 if not args.quick else 5_000, 5 if not args.quick else 1),
        "stream": lambda: stream_reader(n * 5),
        "latency": lambda: [latency(100, 5 if args.quick else 10), latency(1000, 5 if args.quick else 10)],
        "cost": lambda: own_cost(idle_s, 100_000 if args.quick else 1_000_000),
        "idle": lambda: idle_cost(idle_s),
        "reactions": lambda: [*reactions(), limit_reaction()],
        "stall": lambda: stall_figures(5.0 if args.quick else 10.0),
        "startup": startup,
        "startup-probe": lambda: startup(probe_s=2.0),
        "connections": idle_connections,
    }
    for name, fn in sections.items():
        if args.only and name != args.only:
            continue
        print(f"== {name}", flush=True)
        fn()
    pykka.ActorRegistry.stop_all()


if __name__ == "__main__":
    main()
