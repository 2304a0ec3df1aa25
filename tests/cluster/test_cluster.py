"""The remote process host on a real local Ray cluster: a head without agent slots and a node
with two, every server on 127.0.0.1, started once for the module (see tests/ray_cluster.py).

The CLIs run on the slot node as children of its Ray workers, in process groups of their own;
the tests read them through the driver's ``RemoteProcess`` exactly as a worker would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

try:
    import ray  # noqa: F401 - is Ray installed? (the tests skip, or fail in CI, without it)
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs the cluster extra: its absence is a failure there
    pytest.skip("ray is not installed (pip install -e '.[cluster]')", allow_module_level=True)

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost, RemoteProcess
from meta_orchestrator.actors.processes.line_splitter import RawLine
from meta_orchestrator.actors.processes.process_host import SESSION_MARKER_ENV, describe_spawn_error
from meta_orchestrator.actors.cluster.remote_host import HostOptions
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.sandbox.bwrap import Confinement, under_private_tmp
from meta_orchestrator.config.settings import AgentLimits, LimitsSettings
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.cluster import RemoteRunChanged
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.conftest import DEMO, PROJECT_ROOT, wait_for
from tests.limits.rig import demo_worker, watched_demo
from tests.ray_cluster import DrivenCluster, driven_cluster

PROMPT = (
    "You are one agent of a team.\nSession: s-1\nAssignment: a-1\nRole: implementer\nKind: work\n"
    "Task: Add a greeting helper\n\nFollow the reporting protocol."
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[DrivenCluster]:
    """One cluster for the whole tier (this module), stopped when its last test is done so
    that the rest of the suite does not share two cores with it."""
    yield from driven_cluster(2)


def _script(tmp_path: Path, body: str, name: str = "cli.py") -> Launch:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    env = {**os.environ, SESSION_MARKER_ENV: "test-cluster", "ORCHESTRATE_DEMO_PACE": "0"}
    return Launch(argv=(sys.executable, str(path)), env=env, cwd=tmp_path)


class Reading:
    """Both streams of a remote run, read to their end in threads, as a worker's pumps do."""

    def __init__(self, proc: RemoteProcess, overflow_dir: Path | None = None) -> None:
        self.lines: dict[str, list[RawLine]] = {"stdout": [], "stderr": []}
        self._count = 0
        self._dir = overflow_dir
        self._threads = [threading.Thread(target=self._read, args=(proc, s), daemon=True) for s in self.lines]
        for thread in self._threads:
            thread.start()

    def _overflow_file(self) -> Path:
        assert self._dir is not None
        self._count += 1
        return self._dir / f"overflow-{self._count}.txt"

    def _read(self, proc: RemoteProcess, stream: str) -> None:
        for batch in proc.line_batches(stream, 1_048_576, self._overflow_file):
            self.lines[stream].extend(batch)

    def text(self, stream: str = "stdout") -> list[str]:
        return [data.decode() for data, _, _ in self.lines[stream]]

    def join(self, timeout: float = 60) -> Reading:
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a stream was not read to its end"
        return self


def _changes() -> tuple[list[RemoteRunChanged], Any]:
    seen: list[RemoteRunChanged] = []
    return seen, seen.append


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_demo_agent_runs_on_the_slot_node_and_every_line_comes_back(cluster, tmp_path, demo_env):
    argv = (*DEMO, "claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose")
    argv += ("--permission-mode", "acceptEdits")
    launch = Launch(argv=argv, env={**demo_env, SESSION_MARKER_ENV: "test-cluster"}, cwd=tmp_path)
    seen, note = _changes()
    proc = ClusterProcessHost(on_change=note).spawn(launch)
    reading = Reading(proc)
    assert proc.reap() == 0
    reading.join()
    objects = [json.loads(line) for line in reading.text()]
    assert objects[0]["type"] == "system" and objects[-1]["type"] == "result" and not objects[-1]["is_error"]
    assert proc.node_id == cluster.slot_node_id
    assert [c.phase for c in seen] == ["running", "ended"] and seen[0].node_id == cluster.slot_node_id
    assert seen[0].pid == proc.pid and seen[1].end == proc.end
    assert proc.end is not None and proc.end.kind == "exited"
    assert any(tmp_path.rglob("*.py"))  # it wrote its work where it was told, on the node's disk


def test_lines_arrive_in_order_and_a_full_buffer_holds_the_cli_back(cluster, tmp_path):
    launch = _script(
        tmp_path,
        """
        import sys
        for i in range(200_000):
            print("out", i)
            if i % 1000 == 0:
                print("err", i, file=sys.stderr)
        """,
    )
    bound = 256 * 1024
    host = ClusterProcessHost(options=HostOptions(buffer_bytes=bound, batch_bytes=64 * 1024), queue_bytes=bound)
    proc = host.spawn(launch)
    assert proc.wait_started(60)
    # Nobody reads yet: the driver's queue and the node's buffer fill, then the CLI waits on
    # its pipe (nothing is dropped, nothing grows).
    wait_for(lambda: "pipe_write" in _wchan(proc.pid), timeout=30, message="the CLI to block on its full pipe")
    reading = Reading(proc)
    assert proc.reap() == 0
    reading.join()
    assert reading.text() == [f"out {i}" for i in range(200_000)]
    assert reading.text("stderr") == [f"err {i}" for i in range(0, 200_000, 1000)]
    assert proc.lines_received == 200_200
    assert bound / 2 < proc.buffered_peak <= bound + 512 * 1024  # bounded: at most one read over


def test_held_lines_stay_on_the_node_until_the_consumer_says_they_are_recorded(cluster, tmp_path):
    launch = _script(tmp_path, "for i in range(100_000):\n    print('line', i)\n")
    bound = 128 * 1024
    host = ClusterProcessHost(options=HostOptions(buffer_bytes=bound, batch_bytes=32 * 1024), hold_until_recorded=True)
    proc = host.spawn(launch)
    recorded = threading.Event()
    got: list[RawLine] = []

    def consume(stream: str) -> None:
        for batch in proc.line_batches(stream, 1_048_576, lambda: tmp_path / "overflow"):
            if stream == "stdout":
                got.extend(batch)
            recorded.wait()  # as a worker that has not yet written them
            proc.acknowledge(stream, len(batch))

    readers = [threading.Thread(target=consume, args=(s,), daemon=True) for s in ("stdout", "stderr")]
    for reader in readers:
        reader.start()
    assert proc.wait_started(60)
    # The driver has room for far more, but the node keeps what is not recorded: the CLI waits.
    wait_for(lambda: "pipe_write" in _wchan(proc.pid), timeout=30, message="the CLI to block on its full pipe")
    # (128 KiB at 22 bytes or more a line, and one pipe read beyond it: under 10,000 of 100,000.)
    assert proc.lines_received < 10_000 and proc.ack_seq == 0
    recorded.set()
    assert proc.reap() == 0
    for reader in readers:
        reader.join(60)
    assert [data for data, _, _ in got] == [f"line {i}".encode() for i in range(100_000)]
    assert proc.ack_seq == 100_000 and proc.buffered_peak <= bound + 64 * 1024


def _wchan(pid: int | None) -> str:
    """The kernel function a process sleeps in ("pipe_write", "anon_pipe_write": a full pipe)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def test_pause_resume_and_stop_act_on_the_whole_remote_group(cluster, tmp_path):
    launch = _script(
        tmp_path,
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("child", child.pid, flush=True)
        time.sleep(60)
        """,
    )
    proc = ClusterProcessHost().spawn(launch)
    reading = Reading(proc)
    wait_for(lambda: reading.lines["stdout"], timeout=60, message="the child's pid")
    leader = psutil.Process(proc.pid)
    child = psutil.Process(int(reading.text()[0].split()[1]))
    # It runs there: its parent is a Ray worker of the slot node (a process of that node's session).
    assert os.getsid(leader.ppid()) == cluster.slots.sid and proc.node_id == cluster.slot_node_id
    assert os.getpgid(child.pid) == proc.pgid == leader.pid
    assert proc.signal_group(signal.SIGSTOP)
    wait_for(lambda: {leader.status(), child.status()} == {psutil.STATUS_STOPPED}, message="both stopped")
    assert proc.signal_group(signal.SIGCONT)
    wait_for(lambda: psutil.STATUS_STOPPED not in {leader.status(), child.status()}, message="both running")
    wait_for(
        lambda: proc.latest_sample and set(proc.latest_sample.figures.pids) == {leader.pid, child.pid},
        message="a sample of both processes",
    )
    proc.signal_group(signal.SIGSTOP)  # a paused group is stopped too: SIGCONT comes first
    proc.terminate(grace_s=2.0)
    assert proc.reap() == -signal.SIGTERM
    reading.join()
    wait_for(lambda: _gone(child.pid), message="the child to be gone too")
    assert not proc.signal_group(signal.SIGCONT)  # ended: nothing left to signal


def test_the_remote_cli_runs_in_the_same_sandbox_as_a_local_one(cluster, tmp_path, bwrap):
    target = tmp_path / "target"
    target.mkdir()
    outside = Path(tempfile.mkdtemp(prefix="orch-outside-", dir="/var/tmp"))
    try:
        launch = _script(
            target,
            f"""
            import pathlib, signal, subprocess, sys, time
            def on_term(*_):
                pathlib.Path("terminated-cleanly").write_text("yes")
                sys.exit(0)
            signal.signal(signal.SIGTERM, on_term)
            try:
                pathlib.Path({str(outside / "escaped.txt")!r}).write_text("no")
                print("wrote outside", flush=True)
            except OSError as exc:
                print("refused", type(exc).__name__, flush=True)
            pathlib.Path("work.txt").write_text("done")
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            print("ready", flush=True)
            time.sleep(60)
            """,
        )
        # The interpreter and this checkout may live in /tmp, which is private inside: bind
        # them back read-only, as the worker does for a CLI's own files (cli_launch).
        own = under_private_tmp([sys.executable, sys.prefix, sys.base_prefix, *sys.path])
        confinement = Confinement(bwrap=bwrap, writable=(str(target),), readable=own, chdir=str(target))
        proc = ClusterProcessHost().spawn(launch, confinement)
        reading = Reading(proc)
        wait_for(lambda: "ready" in reading.text(), timeout=60, message="the CLI inside its sandbox")
        leader = psutil.Process(proc.pid)
        assert leader.name() == "bwrap" and proc.sandboxed
        assert reading.text()[0].startswith("refused")  # the filesystem outside is read-only
        assert not (outside / "escaped.txt").exists() and (target / "work.txt").read_text() == "done"
        [init] = leader.children()
        inside = init.children(recursive=True)
        assert len(inside) == 2
        assert proc.signal_group(signal.SIGSTOP)
        wait_for(lambda: all(p.status() == psutil.STATUS_STOPPED for p in inside), message="all stopped")
        assert proc.signal_group(signal.SIGCONT)
        proc.terminate(grace_s=5.0)
        assert proc.reap() == 0
        assert (target / "terminated-cleanly").read_text() == "yes"  # SIGTERM reached the CLI itself
        reading.join()
        wait_for(lambda: not any(p.is_running() for p in inside), message="every process of the run gone")
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_a_sample_of_the_tree_comes_with_the_batches(cluster, tmp_path):
    launch = _script(
        tmp_path,
        """
        import time
        hold = bytearray(96 * 1024 * 1024)
        for i in range(0, len(hold), 4096):
            hold[i] = 1  # touched: resident
        print("ready", flush=True)
        with open("progress.txt", "w") as out:
            out.write("written in its folder")  # the stall limit's sign of life a node sends
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass  # busy: the sample shows the CPU it takes
        """,
    )
    long_ago = time.time() - 86_400
    for path in (tmp_path / "cli.py", tmp_path):
        os.utime(path, (long_ago, long_ago))
    proc = ClusterProcessHost(options=HostOptions(sample_interval_s=0.2)).spawn(launch)
    reading = Reading(proc)
    wait_for(
        lambda: (s := proc.latest_sample) and s.figures.rss_bytes > 96 * 1024 * 1024 and s.figures.cpu_percent > 20,
        timeout=60,
        message="a sample with the CLI's memory and CPU",
    )
    sample = proc.latest_sample
    assert sample is not None and sample.figures.processes == 1 and sample.figures.open_files >= 3
    # The stall limit's figures: the CPU seconds used so far, and the age of the newest write
    # in its folder (the node walks it every few seconds: a day old until it sees the file).
    written = wait_for(
        lambda: (s := proc.latest_sample) and s.written_s is not None and s.written_s < 3600 and s,
        timeout=30,
        message="a sample that saw the file written in the run's folder",
    )
    assert written.figures.cpu_time_s >= sample.figures.cpu_time_s > 0
    proc.terminate(grace_s=2.0)
    proc.reap()
    reading.join()


def test_a_run_waits_for_a_free_slot_and_starts_when_one_frees(cluster, tmp_path):
    launch = _script(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    host = ClusterProcessHost(notice_s=0.5)
    first, second = host.spawn(launch), host.spawn(launch)
    readings = [Reading(first), Reading(second)]
    assert first.wait_started(60) and second.wait_started(60)
    seen, note = _changes()
    third = host.spawn(launch, on_change=note)
    wait_for(lambda: [c for c in seen if c.phase == "waiting_for_slot"], timeout=30, message="the waiting notice")
    waiting = next(c for c in seen if c.phase == "waiting_for_slot")
    assert "busy" in waiting.detail and third.phase == "waiting_for_slot" and third.pid is None
    assert not third.signal_group(signal.SIGSTOP)  # nothing to signal yet
    readings.append(Reading(third))
    first.terminate(grace_s=2.0)
    assert first.reap() == -signal.SIGTERM
    assert third.wait_started(60) and third.phase == "running" and third.node_id == cluster.slot_node_id
    assert [c.phase for c in seen] == ["waiting_for_slot", "running"]
    for proc in (second, third):
        proc.terminate(grace_s=2.0)
        proc.reap()
    for reading in readings:
        reading.join()


def test_a_waiting_run_can_be_cancelled(cluster, tmp_path):
    launch = _script(tmp_path, "print('never')\n")
    proc = ClusterProcessHost(resources={"agent_slot": 1, "no_such_node": 1}, notice_s=0.3).spawn(launch)
    reading = Reading(proc)
    wait_for(lambda: proc.phase == "waiting_for_slot", timeout=30, message="the waiting notice")
    proc.terminate(grace_s=1.0)
    assert proc.wait_exited(30) and proc.end is not None and proc.end.kind == "cancelled"
    assert reading.join().lines["stdout"] == []


def test_kill_all_kills_the_running_and_cancels_the_waiting(cluster, tmp_path):
    launch = _script(tmp_path, "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n")
    host = ClusterProcessHost()
    running = host.spawn(launch)
    waiting = ClusterProcessHost(resources={"agent_slot": 1, "no_such_node": 1})
    pending = waiting.spawn(launch)
    readings = [Reading(running), Reading(pending)]
    assert running.wait_started(60)
    assert host.kill_all() == 1 and waiting.kill_all() == 1  # no grace: SIGTERM is ignored anyway
    assert running.reap() == -signal.SIGKILL and running.end is not None and running.end.kind == "exited"
    assert pending.wait_exited(30) and pending.end is not None and pending.end.kind == "cancelled"
    for reading in readings:
        reading.join()


def test_a_cli_the_node_cannot_start_is_a_spawn_failure(cluster, tmp_path):
    launch = Launch(argv=(str(tmp_path / "no-such-cli"),), env=dict(os.environ), cwd=tmp_path)
    proc = ClusterProcessHost().spawn(launch)
    Reading(proc).join()
    assert proc.end is not None and proc.end.kind == "spawn_failed"
    assert isinstance(proc.spawn_error, FileNotFoundError)
    assert "not found" in describe_spawn_error(proc.spawn_error, launch)


def test_an_over_long_line_is_copied_whole_from_the_node(cluster, tmp_path):
    launch = _script(tmp_path, "import sys\nsys.stdout.write('x' * 3_000_000 + '\\n')\nprint('after')\n")
    proc = ClusterProcessHost(options=HostOptions(max_line_bytes=65_536)).spawn(launch)
    (tmp_path / "driver").mkdir()
    reading = Reading(proc, overflow_dir=tmp_path / "driver")
    assert proc.reap() == 0
    (head, total, path), after = reading.join().lines["stdout"]
    assert total == 3_000_000 and head == b"x" * 4096 and after == (b"after", 5, None)
    assert path is not None and Path(path).read_bytes() == b"x" * 3_000_000 + b"\n"


def _git_target(tmp_path: Path) -> Path:
    """A git work tree: a remote run's folder travels to its node by git."""
    target = tmp_path / "target"
    target.mkdir()
    (target / "README.md").write_text("# target\n")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "start"],
    ):
        subprocess.run(["git", *args], cwd=target, check=True, capture_output=True)
    return target


def test_a_worker_runs_its_cli_through_the_cluster_host(cluster, tmp_path, probe, demo_env):
    target = _git_target(tmp_path)
    worker = demo_worker(
        (probe.ref,),
        tmp_path / "session",
        target,
        demo_env,
        session_id="test-session",
        host=ClusterProcessHost(hold_until_recorded=True),
    )
    worker.tell(StartAssignment(assignment_id="a-1", prompt=PROMPT, reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=90)
    assert finished.returncode == 0 and finished.outcome.success, finished
    records = read_jsonl(tmp_path / "session" / "claude.jsonl").records
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert finished.outcome.final_text
    # It ran in a checkout on its node; what it wrote there is in the target now, uncommitted.
    placed = next(r for r in records if r["payload"].get("kind") == "placed")
    assert cluster.slot_node_id in placed["payload"]["details"]["node_id"]
    assert any(target.rglob("*.py")) and "orchestrate-run-" not in str(next(target.rglob("*.py")))
    assert any(r["payload"].get("kind") == "remote_work" for r in records)


def test_a_remote_cli_hung_on_a_read_is_ended_by_the_stall_limit(cluster, tmp_path, probe, demo_env):
    """The monitor judges a remote run on its node's samples: its CPU seconds (the reason
    names the CPU over the window) and the age of the newest write in its folder there."""
    demo_env["ORCHESTRATE_DEMO_SCENARIO_CLAUDE"] = "hang"
    limits = LimitsSettings(interval_s=0.25, min_free_memory_mb=None, default=AgentLimits(stall_s=3.0))
    monitor, worker = watched_demo(
        probe.ref,
        tmp_path / "session",
        _git_target(tmp_path),
        demo_env,
        settings=limits,
        session_id="test-session",
        host=ClusterProcessHost(options=HostOptions(sample_interval_s=0.2)),
    )
    worker.tell(StartAssignment(assignment_id="a-1", prompt=PROMPT, reply_to=probe.ref))
    stop = probe.expect(LimitExceeded, timeout=90, where=lambda m: m.action == "stop")
    assert stop.limit == "stall" and "CPU" in stop.reason, stop.reason
    finished = probe.expect(AssignmentFinished, timeout=60)
    assert "stall limit" in (finished.stopped_by or "") and not finished.outcome.success
    monitor.stop()


# A CLI with a child of its own in its group: Ray ends an exiting worker's direct children
# itself; the rest of the group is the lifeline's to end.
WITH_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("child", child.pid, flush=True)
time.sleep(120)
"""


def test_a_killed_node_ends_the_run_as_node_lost_and_its_cli_with_it(cluster, tmp_path):
    doomed = cluster.add_node("doomed", {"agent_slot": 1, "doomed": 1})
    launch = _script(tmp_path, WITH_CHILD)
    proc = ClusterProcessHost(resources={"agent_slot": 1, "doomed": 1}).spawn(launch)
    reading = Reading(proc)
    wait_for(lambda: reading.lines["stdout"], timeout=60, message="the first line")
    cli, child = proc.pid, int(reading.text()[0].split()[1])
    assert cli is not None and proc.node_id == cluster.local.node_id(doomed)
    started = time.monotonic()
    doomed.kill()
    assert proc.wait_exited(60), "the run did not end after its node was killed"
    lost_after = time.monotonic() - started
    assert proc.end is not None and proc.end.kind == "node_lost", proc.end
    assert proc.reap() == -signal.SIGKILL
    assert reading.join().text() == [f"child {child}"]  # what came before the loss is kept
    wait_for(lambda: _gone(cli) and _gone(child), timeout=15, message="the lifeline to end the orphaned group")
    print(f"node loss seen by the driver after {lost_after:.1f}s")


DRIVER = f"""
import os, sys, time
from pathlib import Path
from tests.ray_cluster import keep_loopback
keep_loopback()
from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost, connect
connect(sys.argv[1], token_file=Path(sys.argv[3]))
launch = Launch(argv=(sys.executable, "-c", {WITH_CHILD!r}), env=dict(os.environ), cwd=Path(sys.argv[2]))
proc = ClusterProcessHost().spawn(launch)
for batch in proc.line_batches("stdout", 65536, lambda: Path(sys.argv[2], "overflow")):
    print(proc.pid, batch[0][0].decode().split()[1], flush=True)
    break
time.sleep(120)
"""


def test_the_remote_group_ends_when_the_driver_goes_away(cluster, tmp_path):
    env = {**os.environ, SESSION_MARKER_ENV: "test-cluster"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, cluster.local.address, str(tmp_path), str(cluster.local.token_file)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None
        cli, child = map(int, driver.stdout.readline().split())
        assert not _gone(cli) and os.getsid(psutil.Process(cli).ppid()) == cluster.slots.sid
        assert os.getpgid(child) == cli
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the orchestrator dies without a word
        driver.wait()
    wait_for(lambda: _gone(cli) and _gone(child), timeout=30, message="the remote group to end with its driver")


def test_a_second_run_from_the_same_repository_gets_a_thin_bundle_and_the_same_result(cluster, tmp_path):
    """The node keeps each start it received: the next run's bundle leaves out what it holds
    (the repository's history), and the run works on the same files as with a whole one."""
    from meta_orchestrator.actors.cluster import remote_workdir

    repo = tmp_path / "app"
    repo.mkdir()
    env = {"PATH": "/usr/bin:/bin", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout

    git("init", "-q", "-b", "main")
    (repo / "data.bin").write_bytes(os.urandom(300_000))  # history worth leaving out
    (repo / "note.txt").write_text("first\n")
    git("add", "-A")
    git("commit", "-q", "-m", "base")
    body = """
        import hashlib, pathlib
        digest = hashlib.sha256(pathlib.Path("data.bin").read_bytes()).hexdigest()
        pathlib.Path("result.txt").write_text(digest + " " + pathlib.Path("note.txt").read_text())
        print("done", flush=True)
    """
    script = tmp_path / "cli.py"
    script.write_text(textwrap.dedent(body))
    launch = Launch(
        argv=(sys.executable, str(script)), env={**os.environ, SESSION_MARKER_ENV: "test-cluster"}, cwd=repo
    )
    host = ClusterProcessHost()
    results, sizes = [], []
    for run in range(2):
        proc, sent = remote_workdir.spawn(host, launch, None, folder=repo, writing=True, subject=f"run {run}")
        reading = Reading(proc)
        assert proc.reap() == 0, proc.end
        reading.join()
        end = remote_workdir.finish(proc, sent)
        assert end.error is None and end.changes and "1 changed file(s) brought back" in end.changes
        assert reading.text() == ["done"] and proc.node_id == cluster.slot_node_id
        results.append((repo / "result.txt").read_text())
        sizes.append((proc.bundle_bytes, proc.bundle_bases))
        (repo / "result.txt").unlink()  # the folder as it was: the second run starts from the same files
    first, second = sizes
    assert first[0] is not None and second[0] is not None
    assert second[1] >= 1 and second[0] * 10 < first[0], sizes  # thin: the 300 kB of history stayed out
    assert results[0] == results[1]  # the same work on the same files
    assert results[0].endswith(" first\n") and len(results[0].split()[0]) == 64
