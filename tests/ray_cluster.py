"""A real Ray cluster on this machine, for the tests and the benchmark, on 127.0.0.1 only.

Every node is ``ray start --block`` in its own session (so its process group and session are
ours to end, and nothing else), with its own temp dir; the head offers no agent slot. Ray
swaps a node address of 127.0.0.1 for the machine's outward one
(``ray._private.services.resolve_ip_for_localhost``) and then listens on every interface;
with the swap off, every server of every node listens on 127.0.0.1 and nothing else. Run as a
script, this file is ``ray start`` with the swap off; ``keep_loopback()`` turns it off in a
driver. Dashboard off, no usage statistics, health checks every half second so that a killed
node is declared dead within a few seconds. Token authentication on, as docs/cluster.md asks of a
real cluster: every node starts with ``RAY_AUTH_MODE=token`` and the path of one token file
(0600), kept in ``/var/tmp`` rather than ``/tmp`` so that the sandbox's private ``/tmp`` alone
would not hide it: the run's host must.

    python tests/ray_cluster.py start ...    # ray start, on 127.0.0.1
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from meta_orchestrator.actors.processes.process_groups import pids_in_session

HERE = Path(__file__).resolve()
ADDRESS = "127.0.0.1"
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB; the runs move little


def keep_loopback() -> None:
    """Let Ray use 127.0.0.1 as it is (in this process): no swap for the outward address."""
    import ray._private.services as services

    services.resolve_ip_for_localhost = lambda host: host


@dataclass
class RayNode:
    """One ``ray start --block``: its process (leader of its own session) and its folder."""

    name: str
    temp_dir: Path
    popen: subprocess.Popen[bytes]
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def sid(self) -> int:
        return self.popen.pid

    def processes(self) -> list[int]:
        return pids_in_session(self.sid)

    def kill(self) -> None:
        """SIGKILL every process of the node (its workers lead groups of their own)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


TOKEN_HOME = "/var/tmp"  # the token file's folder: outside the sandbox's private /tmp


def make_token_file() -> Path:
    """A fresh cluster token in a file of its own folder, readable by this user alone."""
    folder = Path(tempfile.mkdtemp(prefix="ray-token-", dir=TOKEN_HOME))
    token_file = folder / "auth_token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return token_file


def node_env(token_file: Path) -> dict[str, str]:
    """This process's environment for a node: Ray's test settings and its token's path only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, **RAY_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


class LocalRayCluster:
    """A head without agent slots, then the nodes a test adds; ``stop`` ends them all."""

    def __init__(self, root: Path, num_cpus: int = 1) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"{ADDRESS}:{self.port}"
        self.nodes: list[RayNode] = []
        self._num_cpus = num_cpus
        self.token_file = make_token_file()

    def start(self) -> LocalRayCluster:
        self._start_node("head", {}, ["--head", f"--port={self.port}", "--include-dashboard=false"])
        return self

    def add_node(self, name: str, resources: dict[str, float], num_cpus: int | None = None) -> RayNode:
        import json

        return self._start_node(
            name, resources, [f"--address={self.address}", f"--resources={json.dumps(resources)}"], num_cpus
        )

    def _start_node(
        self, name: str, resources: dict[str, float], args: list[str], num_cpus: int | None = None
    ) -> RayNode:
        temp_dir = self.root / name
        (temp_dir / "tmp").mkdir(parents=True)  # the node's TMPDIR: its runs' scratch folders
        log = open(temp_dir / "start.log", "wb")  # noqa: SIM115 - the node writes it as long as it lives
        popen = subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "start",
                "--block",
                f"--node-ip-address={ADDRESS}",
                f"--num-cpus={num_cpus if num_cpus is not None else self._num_cpus}",
                f"--object-store-memory={OBJECT_STORE_BYTES}",
                "--disable-usage-stats",
                f"--temp-dir={temp_dir}",
                *args,
            ],
            env={**node_env(self.token_file), "TMPDIR": str(temp_dir / "tmp")},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        node = RayNode(name=name, temp_dir=temp_dir, popen=popen, resources=resources)
        self.nodes.append(node)
        _wait_started(node)
        return node

    def node_id(self, node: RayNode) -> str:
        """Ray's id of ``node`` (the driver must be connected): the one whose raylet socket
        lives in its temp dir."""
        import ray

        for info in ray.nodes():
            if info["Alive"] and str(info["RayletSocketName"]).startswith(str(node.temp_dir)):
                return str(info["NodeID"])
        raise AssertionError(f"no live Ray node for {node.name}")

    def stop(self) -> list[str]:
        """End every node, newest first; returns what was left afterwards (nothing): a process
        of a node, a lifeline guardian of one of its runs, a run's scratch folder."""
        for node in reversed(self.nodes):
            node.kill()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self._leftovers():
            time.sleep(0.1)
        shutil.rmtree(self.token_file.parent, ignore_errors=True)
        return self._leftovers()

    def _leftovers(self) -> list[str]:
        found = [f"{n.name}: {pid} {_cmdline(pid)}" for n in self.nodes for pid in n.processes()]
        for pid in os.listdir("/proc"):
            if pid.isdigit() and "processes.lifeline" in (line := _cmdline(int(pid))) and str(self.root) in line:
                found.append(f"guardian {pid} {line}")
        found += [f"scratch {p}" for n in self.nodes for p in (n.temp_dir / "tmp").glob("orchestrate-run-*")]
        return found


def _wait_started(node: RayNode, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    log = node.temp_dir / "start.log"
    while time.monotonic() < deadline:
        if b"Ray runtime started" in log.read_bytes():
            return
        if node.popen.poll() is not None:
            break
        time.sleep(0.1)
    node.kill()
    raise RuntimeError(f"ray node {node.name} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return "?"


if __name__ == "__main__":
    keep_loopback()
    from ray.scripts.scripts import main

    sys.argv = ["ray", *sys.argv[1:]]
    sys.exit(main())


class DrivenCluster:
    """A test cluster (a head without slots, a node with ``slots`` agent slots), this process
    connected to it as the driver, and what its setup cost; its nodes' processes are spared
    by the leftover-process check until it stops."""

    def __init__(self, root: Path, slots: int, num_cpus: int | None = None) -> None:
        from meta_orchestrator.actors.cluster.cluster_host import connect
        from tests import conftest

        started = time.monotonic()
        self.local = LocalRayCluster(root)
        self._saved_env = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
        try:
            self.local.start()
            self.slots = self.local.add_node("slots", {"agent_slot": slots}, num_cpus=num_cpus)
            keep_loopback()
            connect(self.local.address, token_file=self.local.token_file)
            self.slot_node_id = self.local.node_id(self.slots)
        except BaseException:  # no fixture teardown follows a failed setup: nothing may be left
            self.restore_env()
            self.local.stop()
            raise
        self.setup_s = time.monotonic() - started
        conftest.SPARED_SESSIONS.update(n.sid for n in self.local.nodes)

    def add_node(self, name: str, resources: dict[str, float]) -> RayNode:
        from tests import conftest

        node = self.local.add_node(name, resources)
        conftest.SPARED_SESSIONS.add(node.sid)
        return node

    def restore_env(self) -> None:
        """This process's environment as before ``connect`` set Ray's token variables."""
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def scratch_left(self) -> list[Path]:
        """Runs' folders still on a node (each run removes its own when it ends)."""
        return [p for n in self.local.nodes for p in (n.temp_dir / "tmp").glob("orchestrate-run-*")]


def driven_cluster(slots: int, num_cpus: int | None = None, under: str = "/tmp") -> Iterator[DrivenCluster]:
    """The body of a module's ``cluster`` fixture: one start for the module, and at its end
    the driver disconnected, every node stopped and nothing of them left running. The nodes'
    folders go ``under`` a short path (Ray's socket paths must stay short); outside ``/tmp``,
    the sandbox's private ``/tmp`` does not hide them by itself."""
    import ray

    from tests import conftest

    root = Path(tempfile.mkdtemp(prefix="ray-", dir=under))
    try:
        made = DrivenCluster(root, slots, num_cpus)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    print(f"\ncluster: head + slot node up and the driver connected in {made.setup_s:.1f}s")
    try:
        yield made
    finally:
        ray.shutdown()
        made.restore_env()
        left = made.local.stop()
        conftest.SPARED_SESSIONS.difference_update(n.sid for n in made.local.nodes)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"left after the cluster stopped: {left}"
