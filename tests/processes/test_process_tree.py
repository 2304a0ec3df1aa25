"""One process-tree reader: a tree counts the same on this machine and on a cluster node.

The resource monitor reads a local run's tree itself and a remote run's tree from the samples
its node sends over the wire; both come from ``process_tree.TreeReader``. The case where
readers used to differ is a member whose figures this process may not read: here a real
process of another user (``nobody``), read by a root without capabilities (``setpriv``), for
whom its ``/proc/<pid>/fd`` is closed (``AccessDenied``) while its memory stays readable.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from meta_orchestrator.actors.processes.process_tree import tmpfs_used

NOBODY = 65534

# The tree: this leader (root) and a `sleep` run as nobody below it; it prints the sleep's
# pid and lives until its stdin closes.
LEADER = f"""
import subprocess, sys
child = subprocess.Popen(["sleep", "600"], user={NOBODY}, group={NOBODY}, extra_groups=[])
print(child.pid, flush=True)
sys.stdin.read()
child.kill()
child.wait()
"""

# Run without capabilities: the local path (what the monitor builds for a run here) and the
# remote path (the node's reading, through the wire's bytes, read back as the monitor does).
READER = """
import dataclasses, json, sys
import psutil
from meta_orchestrator.actors.cluster import node_wire
from meta_orchestrator.actors.processes.process_tree import TreeReader
from meta_orchestrator.actors.limits.tree_sampler import tree_reader

root, hidden = int(sys.argv[1]), int(sys.argv[2])
try:
    psutil.Process(hidden).num_fds()
    denied = False
except psutil.AccessDenied:
    denied = True
local = tree_reader(root).read()
node_figures = TreeReader(root).read()
sample = node_wire.NodeSample(taken_at=1.0, figures=node_figures)
wire = node_wire.batch(node_wire.LineBatch(chunks=[], last_seq=0, end=None, sample=sample, buffered_peak=0))
received = node_wire.read_batch(wire).sample
remote = tree_reader(root, remote_sample=lambda: received, node="n1").read()
print(json.dumps({"denied": denied, "local": dataclasses.asdict(local), "remote": dataclasses.asdict(remote)}))
"""


def _setpriv() -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user")
    path = shutil.which("setpriv")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("setpriv (util-linux) is not installed")
        pytest.skip("setpriv (util-linux) is not installed")
    return path


def test_a_tree_with_a_member_it_may_not_read_counts_the_same_here_and_through_a_node():
    setpriv = _setpriv()
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        hidden = int(leader.stdout.readline())
        done = subprocess.run(
            [setpriv, "--bounding-set", "-all", "--inh-caps", "-all", "--no-new-privs", sys.executable, "-c", READER]
            + [str(leader.pid), str(hidden)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        leader.stdin.close()  # the leader ends its child and itself
        try:
            leader.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["denied"], "the reader could read the other user's file descriptors: the case is not exercised"
    local, remote = found["local"], found["remote"]
    # Every member counts as a process, readable or not; its memory is readable and counted;
    # the tree's open files are unknown (one member's are closed to us), not undercounted.
    assert local["processes"] == 2 and sorted(local["pids"]) == sorted([leader.pid, hidden])
    assert isinstance(local["rss_bytes"], int) and local["rss_bytes"] > 0
    assert local["open_files"] is None
    counts = ("processes", "pids", "rss_bytes", "open_files", "tmpfs_bytes")
    assert {k: remote[k] for k in counts} == {k: local[k] for k in counts}


def test_a_tmpfs_is_measured_only_while_the_path_is_that_tmpfs(tmp_path: Path) -> None:
    # The sandbox's mounts move while bwrap sets them up: a point read from mountinfo may name the
    # host's disk a moment later, whose usage (gigabytes) once ended an agent for "memory".
    shm = os.stat("/dev/shm").st_dev
    shm_device = f"{os.major(shm)}:{os.minor(shm)}"
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as held:
        held.write(b"x" * 1_000_000)
        held.flush()
        assert tmpfs_used("/dev/shm", shm_device) >= 1_000_000
    disk = os.stat(tmp_path).st_dev
    assert f"{os.major(disk)}:{os.minor(disk)}" != shm_device
    assert tmpfs_used(str(tmp_path), shm_device) == 0  # another file system there now: nothing
    assert tmpfs_used(str(tmp_path / "gone"), shm_device) == 0


# A shell that, each time a line comes in, runs a child burning 0.3 s of CPU that ends before
# the next reading; the shell itself waits (idle) and reaps it.
SHORT_LIVED = f"""
import subprocess, sys
burn = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.3: pass"
for _ in sys.stdin:
    subprocess.run([{sys.executable!r}, "-c", burn], check=True)
    print("done", flush=True)
"""


def test_cpu_time_counts_children_that_ended_between_two_readings():
    """The stall limit's CPU figure: a test suite of short processes is busy, not idle, though
    no reading ever saw one of them alive."""
    from meta_orchestrator.actors.processes.process_tree import TreeReader

    proc = subprocess.Popen(
        [sys.executable, "-c", SHORT_LIVED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        reader = TreeReader(proc.pid)
        first = reader.read()
        assert first is not None
        assert proc.stdin is not None and proc.stdout is not None
        for _ in range(3):
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "done\n"
        after = reader.read()
        assert after is not None and after.processes == 1  # every child is gone
        assert after.cpu_time_s - first.cpu_time_s >= 0.8  # 3 x 0.3 s, at clock-tick resolution
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=10)


def test_a_tree_is_read_from_its_own_children_lists_and_finds_every_descendant():
    """Grandchildren, a child of another thread than the main one, and an exited branch: the
    tree's own /proc lists give what psutil finds by reading every process of the machine."""
    import psutil

    from meta_orchestrator.actors.processes.process_tree import TreeReader, descendants

    script = (
        "import subprocess, sys, threading\n"
        "kids = [subprocess.Popen(['sh', '-c', 'sleep 600 & sleep 600; wait'])]\n"
        "t = threading.Thread(target=lambda: kids.append(subprocess.Popen(['sleep', '600'])))\n"
        "t.start(); t.join()\n"
        "subprocess.run(['true'])\n"  # a branch that ended: not a member
        "print(len(kids), flush=True); sys.stdin.read()\n"
        "for k in kids: k.kill()\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None and leader.stdout.readline().strip() == "2"
        expected = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the shell starts its two sleeps
            expected = {p.pid for p in psutil.Process(leader.pid).children(recursive=True)}
            if len(expected) == 4:
                break
            time.sleep(0.01)
        assert len(expected) == 4  # the shell, its two sleeps, the thread's sleep
        found = descendants(leader.pid)
        assert found is not None and set(found) == expected
        assert set(TreeReader(leader.pid).read().pids) == {leader.pid, *expected}  # type: ignore[union-attr]
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
    with pytest.raises(psutil.NoSuchProcess):
        descendants(leader.pid)
