"""What a run can reach from inside the OS sandbox: no host sockets, memory counted, no other workspace.

Each run is a real one: a fake CLI printing claude's stream format (or the real claude against
the scripted model server) started by the real ``Worker`` and process host inside bwrap, with the
sandboxes the session wiring builds (``start_order.os_sandboxes``) from the user's workspace registry.
Stand-ins for the host's services are started here, outside: a daemon on a named Unix socket
in the user's runtime folder, one on an abstract socket, a TCP listener on 127.0.0.1 (the
dashboard's and Ray's ports), and the model endpoint the CLI is configured for.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.app.start_order import os_sandboxes
from meta_orchestrator.actors.limits.resource_monitor import ResourceMonitor
from meta_orchestrator.actors.recovery.preflight import check_host_isolation
from meta_orchestrator.actors.workspaces.workspace_registry import register_workspace, registry_path
from meta_orchestrator.actors.sandbox import landlock
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox, bwrap_argv, dns_files
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import (
    AgentLimits,
    AgentSettings,
    LimitsSettings,
    SandboxSettings,
    SessionSettings,
    Settings,
)
from meta_orchestrator.messages.resources import LimitExceeded, WatchWorkers
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures

CLAUDE_RESULT = json.dumps(
    {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s-1"}
)
MB = 1024 * 1024


def _require_landlock() -> None:
    if landlock.abi() >= landlock.SCOPE_ABI:
        return
    reason = f"Landlock ABI {landlock.abi()} < {landlock.SCOPE_ABI} on this kernel"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class Listener:
    """A stand-in service outside the sandbox: accepts, answers "hello", counts who came."""

    def __init__(self, family: int, address: Any) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.accepted = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="stand-in", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(b"hello")

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (the run's /tmp is private: a path there would prove nothing)."""
    folder = Path(tempfile.mkdtemp(prefix="orch-reach-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Rig:
    """The user's state (workspace registry), this workspace with a session, a target, a home."""

    def __init__(self, root: Path, bwrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.bwrap = bwrap
        self.state = root / "state"
        monkeypatch.setenv("XDG_STATE_HOME", str(self.state))
        self.runtime = root / "run-user"  # the user's $XDG_RUNTIME_DIR: its sockets must be hidden
        self.runtime.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(self.runtime))
        self.workspace = root / "workspace"
        self.session_dir = self.workspace / "session"
        self.target = root / "target"
        self.home = root / "home"
        for folder in (self.session_dir, self.target, self.home):
            folder.mkdir(parents=True)

    def sandbox(self, agent: str = "claude", **sandbox: Any) -> OsSandbox:
        """The sandbox a session gives ``agent``: built by the session's own wiring."""
        settings = Settings(
            sandbox=SandboxSettings(**sandbox),
            limits=LimitsSettings(default=AgentLimits(max_rss_mb=100)),
        )
        workspaces = register_workspace(self.workspace)
        return os_sandboxes(self.bwrap, settings, workspaces, {})[agent]

    def script(self, body: str) -> str:
        path = self.target / "fake_cli.py"
        path.write_text(textwrap.dedent(body))
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"

    def worker(self, probe: Any, command: str, sandbox: OsSandbox, env: dict[str, str], listeners: tuple = ()) -> Any:
        return Worker.start(
            agent="claude",
            adapter=get_adapter("claude"),
            agent_settings=AgentSettings(command=command, share_min=0.4, share_max=0.5),
            session_settings=SessionSettings(stop_grace_s=1.0),
            session_id="reach",
            session_dir=self.session_dir,
            target=self.target,
            listeners=(probe.ref, *listeners),
            base_env={**os.environ, "HOME": str(self.home), **env},
            sandbox=sandbox,
        )

    def run(self, probe: Any, body: str, sandbox: OsSandbox, env: dict[str, str] | None = None) -> dict[str, Any]:
        worker = self.worker(probe, self.script(body), sandbox, env or {})
        worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
        finished = probe.expect(AssignmentFinished, timeout=60)
        assert finished.returncode == 0, finished
        worker.stop()
        return json.loads((self.target / "result.json").read_text())


ATTEMPTS = """
    import json, os, pathlib, socket
    results = {}
    def attempt(name, family, address):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(address)
            results[name] = s.recv(5).decode()
        except OSError as exc:
            results[name] = exc.strerror
        finally:
            s.close()
"""


def test_host_sockets_and_loopback_services_are_out_of_reach_and_the_model_endpoint_is_not(
    tmp_path, probe, bwrap, monkeypatch, caplog
):
    _require_landlock()
    rig = Rig(tmp_path, bwrap, monkeypatch)
    named = rig.runtime / "bus"
    abstract = f"\0orch-reach-{uuid.uuid4().hex}"
    services = {
        "named": Listener(socket.AF_UNIX, str(named)),
        "abstract": Listener(socket.AF_UNIX, abstract),
        "dashboard": Listener(socket.AF_INET, ("127.0.0.1", 0)),
        "model": Listener(socket.AF_INET, ("127.0.0.1", 0)),
    }
    try:
        # Reachable from here, so the refusals below are the sandbox's doing.
        for name, family, address in (
            ("named", socket.AF_UNIX, str(named)),
            ("abstract", socket.AF_UNIX, abstract),
            ("dashboard", socket.AF_INET, ("127.0.0.1", services["dashboard"].port)),
        ):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.connect(address)
                assert s.recv(5) == b"hello", name
        before = {name: s.accepted for name, s in services.items()}
        body = (
            ATTEMPTS
            + f"""
    attempt("named", socket.AF_UNIX, {str(named)!r})
    attempt("abstract", socket.AF_UNIX, {abstract!r})
    attempt("dashboard", socket.AF_INET, ("127.0.0.1", {services["dashboard"].port}))
    attempt("model", socket.AF_INET, ("127.0.0.1", {services["model"].port}))
    results["run_listing"] = sorted(os.listdir("/run"))
    results["resolv_conf"] = pathlib.Path("/etc/resolv.conf").read_text() != ""
    pathlib.Path("result.json").write_text(json.dumps(results))
    print({CLAUDE_RESULT!r})
    """
        )
        # The model endpoint's port comes from the CLI's configured base URL.
        env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{services['model'].port}"}
        results = rig.run(probe, body, rig.sandbox(), env)
        assert results == {
            "named": "No such file or directory",  # $XDG_RUNTIME_DIR is an empty tmpfs inside
            "abstract": "Operation not permitted",  # Landlock: no abstract socket made outside
            "dashboard": "Permission denied",  # Landlock: no TCP port the CLI was not given
            "model": "hello",
            "run_listing": [],  # /run (D-Bus, docker.sock, systemd) hidden
            "resolv_conf": True,  # DNS still configured
        }
        after = {name: s.accepted for name, s in services.items()}
        assert after == {**before, "model": before["model"] + 1}  # nobody else was reached
        # Only the thread that started the run was restricted: this process still connects.
        with socket.create_connection(("127.0.0.1", services["dashboard"].port), timeout=5) as s:
            assert s.recv(5) == b"hello"

        # An explicit allow_connect opens the dashboard's port (and only by configuration).
        opened = rig.sandbox(allow_connect=(f"127.0.0.1:{services['dashboard'].port}",))
        assert rig.run(probe, body, opened, env)["dashboard"] == "hello"
        # Switched off, the loopback is reachable again: the preflight says so at start.
        assert rig.run(probe, body, rig.sandbox(isolate_host_services=False), env)["dashboard"] == "hello"
        with caplog.at_level(logging.WARNING):
            assert check_host_isolation(SandboxSettings(isolate_host_services=False)) != []
        assert "NOT isolated from TCP services on the host's loopback" in caplog.text  # said at start
        assert check_host_isolation(SandboxSettings()) == []  # this kernel: nothing left open
        assert check_host_isolation(SandboxSettings(), version=5) == [
            "abstract Unix sockets of the host (D-Bus session bus, X11)"
        ]
    finally:
        for service in services.values():
            service.close()


def test_dns_files_under_a_hidden_folder_are_bound_back_read_only(outside, bwrap):
    run = outside / "run"  # outside /tmp: the private /tmp would hide it anyway
    (run / "systemd" / "resolve").mkdir(parents=True)
    (run / "systemd" / "resolve" / "stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (run / "dbus-socket-stand-in").write_text("")
    etc = outside / "etc"
    etc.mkdir()
    (etc / "resolv.conf").symlink_to(run / "systemd" / "resolve" / "stub-resolv.conf")
    shown = dns_files((str(run),), files=(str(etc / "resolv.conf"), str(etc / "missing.conf")))
    assert shown == (str(run / "systemd" / "resolve"),)
    confinement = Confinement(bwrap=bwrap, writable=(), hidden=(str(run),), readable=shown)
    read = f"import os; print(open({str(etc / 'resolv.conf')!r}).read().strip(), sorted(os.listdir({str(run)!r})))"
    done = subprocess.run(bwrap_argv(confinement, [sys.executable, "-c", read]), capture_output=True, timeout=60)
    assert done.stdout.decode().strip() == "nameserver 127.0.0.53 ['systemd']"  # the rest of /run hidden


def test_allow_connect_takes_ports_and_ranges_and_refuses_what_names_none():
    allowed = SandboxSettings(allow_connect=("127.0.0.1:8080", "9000", "[::1]:22", "32768-32770"))
    assert allowed.allowed_ports() == (8080, 9000, 22, 32768, 32769, 32770)
    for bad in ("localhost", "127.0.0.1", "9-3", "70000"):
        with pytest.raises(ValueError, match="names no TCP port"):
            SandboxSettings(allow_connect=(bad,))


FILLER = """
    import pathlib, time
    for folder in ("/tmp", "/dev/shm"):
        with open(folder + "/fill", "wb") as out:
            for _ in range({chunks}):
                out.write(b"x" * (10 * 1024 * 1024))
                out.flush()
                time.sleep(0.02)
    print({result!r}, flush=True)
    time.sleep(60)
"""


def test_what_a_run_writes_in_its_private_tmp_and_shm_is_memory_and_is_stopped_like_rss(
    tmp_path, probe, bwrap, monkeypatch
):
    rig = Rig(tmp_path, bwrap, monkeypatch)
    monitor = ResourceMonitor.start(
        settings=LimitsSettings(
            interval_s=0.25, min_free_memory_mb=None, default=AgentLimits(max_rss_mb=100, stall_s=None)
        ),
        session_dir=rig.session_dir,
        listeners=(probe.ref,),
    )
    # Sized above what is written, so only the monitor stands in the way: 300 MB each.
    sandbox = rig.sandbox(private_tmp_mb=400)
    worker = rig.worker(
        probe, rig.script(FILLER.format(chunks=30, result=CLAUDE_RESULT)), sandbox, {}, listeners=(monitor,)
    )
    monitor.tell(WatchWorkers(workers=(("claude", worker),)))
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    stopped = probe.expect(LimitExceeded, timeout=60, where=lambda m: m.action == "stop")
    assert stopped.limit == "rss" and stopped.observed > 100
    assert "memory limit" in stopped.reason and "private /tmp and /dev/shm" in stopped.reason
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert not finished.outcome.success and "memory limit" in (finished.stopped_by or "")
    worker.stop()
    monitor.stop()


def test_the_private_tmp_and_shm_have_the_configured_size(tmp_path, bwrap):
    size = SandboxSettings(private_tmp_fraction=0.2).private_tmp_bytes(100)  # 20 MB of a 100 MB limit
    assert size == 20 * MB
    confinement = Confinement(bwrap=bwrap, writable=(str(tmp_path),), tmpfs_bytes=size)
    write = (
        "import sys\nfor folder in ('/tmp', '/dev/shm'):\n"
        "    try:\n"
        "        open(folder + '/fill', 'wb').write(b'x' * (30 * 1024 * 1024))\n"
        "        print(folder, 'written')\n"
        "    except OSError as exc:\n"
        "        print(folder, exc.strerror)\n"
    )
    done = subprocess.run(bwrap_argv(confinement, [sys.executable, "-c", write]), capture_output=True, timeout=60)
    assert done.stdout.decode().splitlines() == ["/tmp No space left on device", "/dev/shm No space left on device"]


def test_every_workspace_this_user_has_used_is_hidden(tmp_path, probe, bwrap, monkeypatch, outside):
    rig = Rig(tmp_path, bwrap, monkeypatch)
    other = outside / "other-project-workspace"  # another project's sessions, outside /tmp
    (other / "s0").mkdir(parents=True)
    (other / "s0" / "claude.jsonl").write_text('{"transcript": "secret plans"}\n')
    (other / "s0" / "hook-secret").write_text("s3cr3t")
    register_workspace(other)  # its session started earlier
    gone = outside / "removed-workspace"
    gone.mkdir()
    register_workspace(gone)
    gone.rmdir()  # vanished since: pruned at the next start

    sandbox = rig.sandbox()
    registry = registry_path()
    assert stat.S_IMODE(registry.stat().st_mode) == 0o600
    assert json.loads(registry.read_text())["workspaces"] == [str(other), str(rig.workspace.resolve())]
    body = f"""
    import json, pathlib
    results = {{}}
    for name in ("claude.jsonl", "hook-secret"):
        try:
            results[name] = pathlib.Path({str(other / "s0")!r}, name).read_text()
        except OSError as exc:
            results[name] = exc.strerror
    results["listing"] = sorted(p.name for p in pathlib.Path({str(other)!r}).iterdir())
    pathlib.Path("result.json").write_text(json.dumps(results))
    print({CLAUDE_RESULT!r})
    """
    results = rig.run(probe, body, sandbox)
    assert results == {
        "claude.jsonl": "No such file or directory",
        "hook-secret": "No such file or directory",
        "listing": [],
    }
    assert (other / "s0" / "hook-secret").read_text() == "s3cr3t"  # hidden, not touched


@pytest.mark.realcli
def test_real_claude_reaches_its_model_not_the_host(cli_bin, server, tmp_path, probe, bwrap, monkeypatch):  # noqa: F811
    _require_landlock()
    rig = Rig(tmp_path, bwrap, monkeypatch)
    dashboard = Listener(socket.AF_INET, ("127.0.0.1", 0))
    abstract = f"\0orch-reach-{uuid.uuid4().hex}"
    bus = Listener(socket.AF_UNIX, abstract)
    probe_file = rig.target / "reach.py"
    probe_file.write_text(
        "import socket, sys\n"
        "targets = ((socket.AF_INET, ('127.0.0.1', int(sys.argv[1]))), (socket.AF_UNIX, '\\0' + sys.argv[2]))\n"
        "for family, address in targets:\n"
        "    s = socket.socket(family)\n"
        "    try:\n"
        "        s.connect(address); print('REACHED', family)\n"
        "    except OSError as exc:\n"
        "        print('REFUSED', exc.strerror)\n"
    )
    command = f"python3 {probe_file} {dashboard.port} {abstract[1:]} > {rig.target}/reach.txt"
    env = {
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "sk-ant-mock",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",  # claude refuses bypass as root otherwise; tests run as root
    }
    worker = Worker.start(
        agent="claude",
        adapter=get_adapter("claude"),
        agent_settings=AgentSettings(
            command=str(cli_bin / "claude"),
            extra_args=("--dangerously-skip-permissions",),
            share_min=0.4,
            share_max=0.5,
            allow_bypass=True,
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=60),
        session_id="reach",
        session_dir=rig.session_dir,
        target=rig.target,
        listeners=(probe.ref,),
        base_env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(rig.home), "LANG": "C.UTF-8", **env},
        sandbox=rig.sandbox(),
    )
    try:
        worker.tell(StartAssignment(assignment_id="a1", prompt=f"SCRIPT:bash {command}", reply_to=probe.ref))
        finished = probe.expect(AssignmentFinished, timeout=90)
    finally:
        worker.stop()
        dashboard.close()
        bus.close()
    assert finished.outcome.success, finished  # the model endpoint was reached through Landlock
    assert (rig.target / "reach.txt").read_text().splitlines() == [
        "REFUSED Permission denied",
        "REFUSED Operation not permitted",
    ]
    assert dashboard.accepted == 0 and bus.accepted == 0
