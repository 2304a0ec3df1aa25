"""The cluster's trust boundaries, on a real local Ray cluster with token authentication
(tests/ray_cluster.py: every server on 127.0.0.1, the token in a 0600 file in /var/tmp).

* A CLI in its sandbox on a node finds nothing of Ray (no ``RAY_*`` variable, no token file,
  no Ray folder) and cannot join the cluster, though it is told the GCS address; the same
  probe outside the sandbox, with the node's token, can (so the refusal is the sandbox's doing).
* A client without the token, or with a wrong one, is refused.
* A node's reply is read as plain bytes: a crafted host whose replies are pickles that write a
  marker when loaded runs nothing in the driver (``ray.get`` of the same reply would).
* The driver's token: a clear refusal when it is missing or kept where others can read it.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

import ray  # noqa: E402

from meta_orchestrator.actors.adapters.base import Launch  # noqa: E402
from meta_orchestrator.actors.cluster import cluster_wiring  # noqa: E402
from meta_orchestrator.actors.app import start_order  # noqa: E402
from meta_orchestrator.actors.cluster import cluster_host, node_wire  # noqa: E402
from meta_orchestrator.actors.cluster.cluster_auth import ClusterTokenError, token_source, without_ray  # noqa: E402
from meta_orchestrator.actors.cluster.cluster_host import (  # noqa: E402
    ClusterProcessHost,
    HostCallFailed,
    NodeReplyRefused,
    RemoteProcess,
    plain_get,
)
from meta_orchestrator.actors.recovery.preflight import PreflightError  # noqa: E402
from meta_orchestrator.actors.processes.process_host import SESSION_MARKER_ENV  # noqa: E402
from meta_orchestrator.actors.cluster.remote_checkout import WorkBack  # noqa: E402
from meta_orchestrator.actors.cluster.remote_host import HostOptions, RunHost  # noqa: E402
from meta_orchestrator.actors.sandbox.bwrap import Confinement, bwrap_argv, under_private_tmp  # noqa: E402
from meta_orchestrator.config.settings import Settings  # noqa: E402
from tests.conftest import PROJECT_ROOT, wait_for  # noqa: E402
from tests.ray_cluster import DrivenCluster, driven_cluster, make_token_file  # noqa: E402
from tests.cluster.test_cluster import Reading  # noqa: E402

# What an agent would try from inside its run: read Ray's token wherever Ray keeps it, look
# for the node's Ray folder, then join the cluster (its address found by a port scan: given
# here) and run a task outside the sandbox. One JSON line says what it found and did.
PROBE = textwrap.dedent(
    """
    import json, os, sys
    gcs, token_path, ray_dir, marker = sys.argv[1:5]
    found = {"ray_env": sorted(k for k in os.environ if k.startswith("RAY_"))}
    for name, path in (("token", token_path), ("home_token", os.path.expanduser("~/.ray/auth_token"))):
        try:
            found[name] = open(path).read()
        except OSError as exc:
            found[name] = type(exc).__name__
    found["ray_dir"] = sorted(os.listdir(ray_dir)) if os.path.isdir(ray_dir) else None
    seen = []  # processes whose environment names Ray's token (the node's Ray workers have it)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"RAY_AUTH_TOKEN" in open(f"/proc/{pid}/environ", "rb").read():
                seen.append(pid)
        except OSError:
            pass
    found["ray_processes"] = seen
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path, RAY_USAGE_STATS_ENABLED="0")
    os.environ.update(RAY_gcs_server_port_wait_time_s="1", RAY_NUM_REDIS_GET_RETRIES="1")
    import ray, ray._private.services as services
    services.resolve_ip_for_localhost = lambda host: host
    try:
        ray.init(address=gcs, log_to_driver=False, logging_level="ERROR")
        @ray.remote(num_cpus=0)
        def plant(path):
            open(path, "w").write("ran outside the sandbox")
            return True
        found["task_ran"] = ray.get(plant.remote(marker), timeout=60)
    except Exception as exc:
        found["refused"] = f"{type(exc).__name__}: {exc}"[:300]
    print(json.dumps(found), flush=True)
    """
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[DrivenCluster]:
    """The nodes' Ray folders in /var/tmp: the run's host must hide them, /tmp's privacy won't."""
    yield from driven_cluster(1, under="/var/tmp")


def _node_temp_dir(cluster: DrivenCluster) -> Path:
    return cluster.slots.temp_dir


def test_a_cli_in_its_sandbox_on_a_node_finds_nothing_of_ray_and_cannot_join(cluster, tmp_path, bwrap):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    marker = tmp_path / "marker-sandboxed"
    token = cluster.local.token_file
    argv = (sys.executable, str(probe), cluster.local.address, str(token), str(_node_temp_dir(cluster)), str(marker))
    # The environment as this process has it: connect() put Ray's token variables in it.
    env = {**os.environ, SESSION_MARKER_ENV: "test-cluster-auth"}
    assert env["RAY_AUTH_TOKEN_PATH"] == str(token) and env["RAY_AUTH_MODE"] == "token"
    own = under_private_tmp([sys.executable, sys.prefix, sys.base_prefix, *sys.path])
    confinement = Confinement(bwrap=bwrap, writable=(str(tmp_path),), readable=own, chdir=str(tmp_path))
    proc = ClusterProcessHost().spawn(Launch(argv=argv, env=env, cwd=tmp_path), confinement)
    reading = Reading(proc).join(timeout=120)
    assert proc.reap() == 0, reading.text("stderr")[-20:]
    found = json.loads(reading.text()[-1])
    assert found["ray_env"] == []  # the node's host dropped every RAY_* variable
    # /dev/null is bound over the token file, on the read-only root's nodev mount: no open.
    assert found["token"] == "PermissionError"
    assert token.read_text() not in "\n".join(reading.text() + reading.text("stderr"))
    assert found["home_token"] == "FileNotFoundError"
    assert not found["ray_dir"]  # the node's Ray folder (sessions, sockets, logs): empty inside
    assert found["ray_processes"] == []  # its own PID namespace: no Ray worker's environment to read
    assert any(p.name.startswith("session_") for p in _node_temp_dir(cluster).iterdir())  # not outside
    assert "task_ran" not in found and "refused" in found, found
    assert not marker.exists()


def test_the_same_probe_outside_the_sandbox_with_the_token_joins(cluster, tmp_path):
    """The control: the probe does join where the token is readable, so the refusal above is
    the sandbox's and the token's doing, not a broken probe."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    marker = tmp_path / "marker-outside"
    found = _run_probe(cluster, probe, marker, str(cluster.local.token_file))
    assert found.get("task_ran") is True, found
    assert found["ray_processes"]  # outside, the node's processes show their token's path
    assert marker.read_text() == "ran outside the sandbox"


@pytest.mark.parametrize("token", ["none", "wrong"])
def test_a_client_without_the_clusters_token_is_refused(cluster, tmp_path, token):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    marker = tmp_path / "marker"
    if token == "wrong":
        path = make_token_file()  # a token, but not the cluster's
        try:
            found = _run_probe(cluster, probe, marker, str(path))
        finally:
            path.unlink()
            path.parent.rmdir()
    else:
        found = _run_probe(cluster, probe, marker, str(tmp_path / "no-token-here"))
    assert "task_ran" not in found and "refused" in found, found
    assert not marker.exists()


def _run_probe(cluster: DrivenCluster, probe: Path, marker: Path, token_path: str) -> dict:
    env = {**without_ray(os.environ), "HOME": str(probe.parent)}  # no ~/.ray/auth_token either
    done = subprocess.run(
        [sys.executable, str(probe), cluster.local.address, token_path, "/nonexistent", str(marker)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=110,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return json.loads(done.stdout.decode().splitlines()[-1])


# -- a node that replies with pickles ---------------------------------------------------------------


class Planted:
    """Loading this object writes the marker: what a crafted reply would do in the driver."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran in the driver"))


class PlantedError(Exception):
    def __init__(self, marker: str) -> None:
        super().__init__(marker)
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran in the driver"))


class CraftedHost(RunHost):
    """A run host taken over on its node: every reply is an object that runs code on load."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def start(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return Planted(self.marker)

    def read_batch(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return Planted(self.marker)

    def raising(self):  # noqa: ANN201
        raise PlantedError(self.marker)

    def ping(self) -> bytes:
        return b"pong"


def _crafted(marker: Path):  # noqa: ANN202
    return ray.remote(num_cpus=0, max_restarts=0)(CraftedHost).options(resources={"agent_slot": 1}).remote(str(marker))


def test_a_crafted_reply_runs_nothing_in_the_driver(cluster, tmp_path):
    marker = tmp_path / "driver-marker"
    host = _crafted(marker)
    try:
        with pytest.raises(NodeReplyRefused, match="PYTHON"):
            plain_get(host.start.remote(), 60)
        with pytest.raises(HostCallFailed):
            plain_get(host.raising.remote(), 60)
        assert not marker.exists()
        # The control: Ray's own get of the very same reply loads it, and the marker appears.
        ray.get(host.start.remote(), timeout=60)
        assert marker.read_text() == "code ran in the driver"
    finally:
        ray.kill(host)


def test_an_error_reply_nobody_reads_is_not_unpickled_either(cluster, tmp_path):
    """Ray reports an error result that was never read when its last reference goes, and its
    report unpickles the error: a crafted one would run in the driver (it did before connect
    replaced the report)."""
    marker = tmp_path / "driver-marker"
    host = _crafted(marker)
    try:
        before = cluster_host.unread_error_count
        ref = host.raising.remote()
        assert plain_get(host.ping.remote(), 60) == b"pong"  # one call at a time: the error is in
        del ref  # dropped unread, as the driver drops its acknowledge calls
        gc.collect()
        wait_for(lambda: cluster_host.unread_error_count > before, timeout=30, message="Ray's unread-error report")
        assert not marker.exists()
    finally:
        ray.kill(host)


def test_a_run_whose_host_replies_with_a_pickle_ends_as_node_lost(cluster, tmp_path):
    marker = tmp_path / "driver-marker"
    launch = Launch(argv=("true",), env={}, cwd=tmp_path)
    proc = RemoteProcess(_crafted(marker), launch, None, HostOptions(), {"agent_slot": 1}, 1.0, 1.0, 65536, None)
    Reading(proc).join()
    assert proc.end is not None and proc.end.kind == "node_lost", proc.end
    assert "not plain bytes" in proc.end.detail
    assert not marker.exists()


# -- the wire format, without a cluster --------------------------------------------------------------


def test_a_batch_round_trips_and_every_malformed_reply_is_refused():
    batch = node_wire.LineBatch(
        chunks=[("stdout", 1, 2, b"a\nbc", ((1, 9, "/scratch/line-1.txt"),)), ("stderr", 3, 0, b"", ())],
        last_seq=3,
        end=node_wire.HostEnd(returncode=0, stragglers=1, work=WorkBack(bundle=b"PK\0", commit="a" * 40)),
        sample=None,
        buffered_peak=12,
    )
    assert node_wire.read_batch(node_wire.batch(batch)) == batch
    good = node_wire.batch(batch)
    for broken in (
        good[:-1],  # the bundle one byte short
        good + b"x",  # a byte nobody accounts for
        b"\0\0\0\x05{bad}",
        b"\0\0\0\x02{}",
        b"\xff\xff\xff\xff" + good[4:],
        b"",
    ):
        with pytest.raises(node_wire.NodeReplyError):
            node_wire.read_batch(broken)
    lying = node_wire.LineBatch(
        chunks=[("stdout", 1, 3, b"a\nb", ())], last_seq=3, end=None, sample=None, buffered_peak=0
    )
    with pytest.raises(node_wire.NodeReplyError, match="says 3 lines"):
        node_wire.read_batch(node_wire.batch(lying))
    with pytest.raises(node_wire.NodeFailure) as failed:
        node_wire.read_started(node_wire.failure(FileNotFoundError(2, "No such file or directory", "/x/cli")))
    assert isinstance(failed.value.as_os_error(), FileNotFoundError) and failed.value.filename == "/x/cli"


# -- the driver's token ----------------------------------------------------------------------------------


def test_the_driver_refuses_a_missing_or_unsafe_token(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(ClusterTokenError, match="token_file"):
        token_source(None, {}, home)
    token = tmp_path / "token"
    with pytest.raises(ClusterTokenError, match="does not exist"):
        token_source(token, {}, home)
    token.write_text("s3cret\n")
    token.chmod(0o644)  # as `ray get-auth-token --generate` leaves its file
    with pytest.raises(ClusterTokenError, match="chmod 600"):
        token_source(token, {}, home)
    token.chmod(0o600)
    assert token_source(token, {"RAY_AUTH_TOKEN": "ignored"}, home) == token
    link = tmp_path / "link"
    link.symlink_to(token)
    with pytest.raises(ClusterTokenError, match="cannot be read"):
        token_source(link, {}, home)
    assert token_source(None, {"RAY_AUTH_TOKEN": "from-env"}, home) is None
    with pytest.raises(ClusterTokenError, match="RAY_AUTH_TOKEN holds no token"):
        token_source(None, {"RAY_AUTH_TOKEN": "two words"}, home)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("default")
    with pytest.raises(ClusterTokenError, match="chmod 600"):  # Ray's own file, as Ray writes it
        token_source(None, {}, home)
    (home / ".ray" / "auth_token").chmod(0o600)
    assert token_source(None, {}, home) == home / ".ray" / "auth_token"
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    settings = Settings.model_validate({"cluster": {"address": "127.0.0.1:1", "token_file": str(tmp_path / "nope")}})
    with pytest.raises(PreflightError, match="--cluster: the cluster's token file .* does not exist"):
        cluster_wiring._token_file(settings)


def test_no_ray_variable_reaches_an_agent_environment():
    env = {"PATH": "/bin", "RAY_AUTH_TOKEN": "t", "RAY_AUTH_TOKEN_PATH": "/p", "ray_address": "x", "HOME": "/h"}
    assert without_ray(env) == {"PATH": "/bin", "HOME": "/h"}


@pytest.mark.parametrize("kept", ["open to others", "nowhere"])
def test_orchestrate_with_a_cluster_and_no_safe_token_stops_with_a_clear_error(tmp_path, kept):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o644)
    flags = ["--cluster-token-file", str(token)] if kept == "open to others" else []
    home = tmp_path / "home"  # no ~/.ray/auth_token to fall back on
    home.mkdir()
    code = (
        "import sys\n"
        "from meta_orchestrator.actors.app.launcher import main\n"
        "sys.exit(main(['Add a greeting helper', '--demo', '--no-dashboard', '--cluster', '127.0.0.1:1', "
        f"'--workspace', {str(tmp_path / 'ws')!r}, *{flags!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env={**without_ray(os.environ), "HOME": str(home)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    expected = "chmod 600" if kept == "open to others" else "the cluster needs its token"
    assert expected in done.stderr, done.stderr


def test_a_local_clis_sandbox_hides_the_clusters_token_file_too(tmp_path, bwrap):
    """Agents that stay on the driver's machine ([cluster] agents) share it with the token file."""
    token = make_token_file()
    try:
        settings = Settings.model_validate({"cluster": {"address": "127.0.0.1:1", "token_file": str(token)}})
        sandboxes = start_order.os_sandboxes(bwrap, settings, (tmp_path / "ws",), {})
        for sandbox in sandboxes.values():
            confinement = Confinement(bwrap=bwrap, writable=(str(tmp_path),), hidden=sandbox.hidden)
            argv = bwrap_argv(confinement, ["cat", str(token)])
            done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
            assert done.returncode != 0 and b"Permission denied" in done.stderr, done
            assert token.read_bytes() not in done.stdout
        outside = subprocess.run(["cat", str(token)], capture_output=True, timeout=30)
        assert outside.stdout == token.read_bytes()  # the control: readable outside the sandbox
    finally:
        token.unlink()
        token.parent.rmdir()
