"""The OS sandbox: real CLIs' stand-ins run inside bubblewrap through the real worker and host.

Each test starts real processes under bwrap and looks at them from outside with psutil
(host PIDs): what they can write, and that pause, resume, stop, straggler clean-up and the
resource monitor's sampling reach through the PID namespace.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import psutil
import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.recovery.preflight import PreflightError, check_os_sandbox
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox, bwrap_argv, mounts, socket_dirs
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, LimitsSettings, SandboxSettings, SessionSettings
from meta_orchestrator.messages.resources import ResourcesSampled
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    PauseWorker,
    ResumeWorker,
    StartAssignment,
    StopWorker,
    WorkerStateChanged,
)
from tests.conftest import RecordedEvent, wait_for
from tests.limits.rig import PROMPT, watched_demo
from tests.agents.test_real_clis import cli_bin, server  # noqa: F401 - fixtures
import contextlib

CLAUDE_INIT = json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "m", "cwd": "/x"})
CLAUDE_RESULT = json.dumps(
    {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s-1"}
)


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside /tmp (inside the sandbox /tmp is private, so it would prove nothing)."""
    folder = Path(tempfile.mkdtemp(prefix="orch-outside-", dir="/var/tmp"))
    (folder / "precious.txt").write_text("keep me\n")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Rig:
    """A workspace with a session folder, a target holding the fake CLI, a home with state."""

    def __init__(self, root: Path, bwrap: str, home: Path | None = None) -> None:
        self.workspace = root / "workspace"
        self.session_dir = self.workspace / "session"
        self.target = root / "target"
        self.home = home or root / "home"
        for folder in (self.session_dir, self.target, self.home):
            folder.mkdir(parents=True)
        self.sandbox = OsSandbox(bwrap=bwrap, hidden=(str(self.workspace),))

    def script(self, body: str) -> str:
        path = self.target / "fake_cli.py"  # the target is visible inside; /tmp is not
        path.write_text(textwrap.dedent(body))
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"

    def worker(self, probe: Any, command: str, agent: str = "claude", **session: Any) -> Any:
        return Worker.start(
            agent=agent,
            adapter=get_adapter(agent),
            agent_settings=AgentSettings(command=command, share_min=0.4, share_max=0.5),
            session_settings=SessionSettings(**{"stop_grace_s": 1.0, **session}),
            session_id="test-session",
            session_dir=self.session_dir,
            target=self.target,
            listeners=(probe.ref,),
            base_env={**os.environ, "HOME": str(self.home)},
            sandbox=self.sandbox,
        )


def _inside(leader_pid: int) -> list[psutil.Process]:
    """The processes of a run inside its namespace (below bwrap and its init), host PIDs."""
    [init] = psutil.Process(leader_pid).children()
    return init.children(recursive=True)


def _running_leader(probe: Any) -> psutil.Process:
    state = probe.expect(WorkerStateChanged, where=lambda m: m.snapshot.status == "running")
    leader = psutil.Process(state.snapshot.pid)
    assert leader.name() == "bwrap"
    return leader


def test_mounts_go_parent_first_so_the_deeper_rule_wins(tmp_path):
    workspace, target = tmp_path / "ws", tmp_path / "ws" / "s1" / "demo-app"
    sandbox_dir = tmp_path / "ws" / "s1" / "sandbox"
    for folder in (target, sandbox_dir):
        folder.mkdir(parents=True)
    confinement = Confinement(
        bwrap="bwrap",
        writable=(str(target), str(tmp_path / "missing")),
        hidden=(str(workspace),),
        readable=(str(sandbox_dir),),
        chdir=str(target),
    )
    assert mounts(confinement) == [
        ("hidden", "/tmp"),
        ("hidden", str(workspace)),
        ("writable", str(target)),
        ("readable", str(sandbox_dir)),
    ]
    argv = bwrap_argv(confinement, ["claude", "-p", "hi"])
    assert argv[:8] == ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    assert "--new-session" not in argv  # the CLI must stay in the group the worker signals
    for flag in ("--unshare-pid", "--die-with-parent", "--cap-drop"):
        assert flag in argv
    assert argv[-4:] == ["--", "claude", "-p", "hi"]


def test_the_cli_writes_only_its_folders_and_sees_no_session_files(tmp_path, probe, bwrap, outside):
    rig = Rig(tmp_path, bwrap, home=outside / "home")  # a home outside /tmp, like a real one
    (rig.session_dir / "state.json").write_text('{"secret": 1}')
    probe_script = f"""
        import json, os, pathlib
        results = {{}}
        def attempt(name, action):
            try:
                action()
                results[name] = "ok"
            except OSError as exc:
                results[name] = exc.strerror
        outside = pathlib.Path({str(outside)!r})
        attempt("write_outside", lambda: (outside / "new.txt").write_text("x"))
        attempt("rewrite_outside", lambda: (outside / "precious.txt").write_text("gone"))
        attempt("delete_outside", lambda: (outside / "precious.txt").unlink())
        attempt("read_session", lambda: pathlib.Path({str(rig.session_dir / "state.json")!r}).read_text())
        attempt("write_home_dotfile", lambda: pathlib.Path({str(rig.home / ".bashrc")!r}).write_text("x"))
        attempt("write_state", lambda: pathlib.Path({str(rig.home / ".claude" / "s.json")!r}).write_text("x"))
        attempt("write_tmp", lambda: pathlib.Path("/tmp/private.txt").write_text("x"))
        results["remount"] = "refused" if os.system("mount -o remount,rw / 2>/dev/null") else "remounted"
        results["tmpdir"] = os.environ.get("TMPDIR")
        pathlib.Path("result.json").write_text(json.dumps(results))
        print({CLAUDE_RESULT!r})
    """
    worker = rig.worker(probe, rig.script(probe_script))
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert finished.returncode == 0, finished
    results = json.loads((rig.target / "result.json").read_text())
    assert results == {
        "write_outside": "Read-only file system",
        "rewrite_outside": "Read-only file system",
        "delete_outside": "Read-only file system",
        "read_session": "No such file or directory",
        "write_home_dotfile": "Read-only file system",
        "write_state": "ok",
        "write_tmp": "ok",
        "remount": "refused",  # no capabilities inside, even as root
        "tmpdir": "/tmp",
    }
    assert (outside / "precious.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in outside.iterdir()) == ["home", "precious.txt"]
    assert not (rig.home / ".bashrc").exists()
    # The CLI's state is a private copy of the session: the user's own folder is untouched.
    assert not (rig.home / ".claude" / "s.json").exists()
    assert (rig.session_dir / "cli-state" / "claude" / "claude-dir" / "s.json").is_file()
    assert not Path("/tmp/private.txt").exists()


def test_pause_resume_and_a_polite_stop_reach_every_process_inside(tmp_path, probe, bwrap):
    rig = Rig(tmp_path, bwrap)
    command = rig.script(
        f"""
        import pathlib, signal, subprocess, sys, time
        def on_term(*_):
            pathlib.Path("terminated-cleanly").write_text("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        # one child leaves the process group: the namespace still holds it
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        print({CLAUDE_INIT!r}, flush=True)
        time.sleep(60)
    """
    )
    worker = rig.worker(probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    leader = _running_leader(probe)
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    inside = _inside(leader.pid)
    assert len(inside) == 3
    assert len({os.getpgid(p.pid) for p in inside}) == 2  # one escaped the group

    assert worker.ask(PauseWorker(reason="t"), timeout=5)
    wait_for(lambda: all(p.status() == psutil.STATUS_STOPPED for p in inside), message="all stopped")
    assert worker.ask(ResumeWorker(reason="t"), timeout=5)
    wait_for(lambda: all(p.status() != psutil.STATUS_STOPPED for p in inside), message="all running again")

    assert worker.ask(StopWorker(reason="test"), timeout=5)
    finished = probe.expect(AssignmentFinished, timeout=15)
    assert finished.stopped_by == "test" and finished.returncode == 0
    assert (rig.target / "terminated-cleanly").read_text() == "yes"  # SIGTERM reached the CLI itself
    wait_for(lambda: not any(p.is_running() for p in inside), message="every process of the run gone")


def test_an_unhandled_sigterm_reports_the_signal_and_a_stubborn_cli_is_killed(tmp_path, probe, bwrap):
    rig = Rig(tmp_path, bwrap)
    polite = rig.worker(probe, rig.script(f"import time\nprint({CLAUDE_INIT!r}, flush=True)\ntime.sleep(60)\n"))
    polite.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    polite.tell(StopWorker(reason="test"))
    assert probe.expect(AssignmentFinished, timeout=15).returncode == -signal.SIGTERM  # not bwrap's 143
    polite.stop()

    stubborn = rig.worker(
        probe,
        rig.script(
            f"import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"print({CLAUDE_INIT!r}, flush=True)\ntime.sleep(60)\n"
        ),
        stop_grace_s=0.5,
    )
    stubborn.tell(StartAssignment(assignment_id="a2", prompt="go", reply_to=probe.ref))
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    stubborn.tell(StopWorker(reason="test"))
    assert probe.expect(AssignmentFinished, timeout=15).returncode == -signal.SIGKILL


def test_what_a_finished_cli_leaves_running_inside_is_ended(tmp_path, probe, bwrap):
    rig = Rig(tmp_path, bwrap)
    command = rig.script(
        f"""
        import pathlib, subprocess, sys, time
        for new_session in (False, True):  # a plain child and a daemon that left the group
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                             start_new_session=new_session, stdout=subprocess.DEVNULL)
        print({CLAUDE_INIT!r}, flush=True)
        while not pathlib.Path("go").exists():
            time.sleep(0.05)
        print({CLAUDE_RESULT!r}, flush=True)
    """
    )
    worker = rig.worker(probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    leader = _running_leader(probe)
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    inside = _inside(leader.pid)
    assert len(inside) == 3
    (rig.target / "go").write_text("")
    finished = probe.expect(AssignmentFinished, timeout=15)
    assert finished.returncode == 0 and finished.outcome.success
    wait_for(lambda: not any(p.is_running() for p in inside), message="the leftovers to be gone")


def test_a_missing_cli_is_a_clear_spawn_error_under_the_sandbox(tmp_path, probe, bwrap):
    rig = Rig(tmp_path, bwrap)
    worker = rig.worker(probe, str(tmp_path / "no-such-cli"))
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished)
    assert finished.returncode is None and "not found" in finished.spawn_error


def test_the_monitor_samples_the_whole_tree_through_the_namespace(tmp_path, probe, bwrap, demo_env):
    rig = Rig(tmp_path, bwrap)
    demo_env.update(
        ORCHESTRATE_DEMO_SCENARIO_CLAUDE="fork_bomb_lite", ORCHESTRATE_DEMO_CHILDREN="5", ORCHESTRATE_DEMO_PACE="0.2"
    )
    _monitor, worker = watched_demo(
        probe.ref,
        rig.session_dir,
        rig.target,
        {**demo_env, "HOME": str(rig.home)},
        settings=LimitsSettings(interval_s=0.25, min_free_memory_mb=None),
        sandbox=rig.sandbox,
    )
    worker.tell(StartAssignment(assignment_id="a1", prompt=PROMPT, reply_to=probe.ref))
    # bwrap, its init, the demo CLI and its 5 children
    sample = probe.expect(ResourcesSampled, timeout=15, where=lambda m: any(a.processes >= 8 for a in m.agents))
    tree = sample.agents[0]
    assert tree.rss_bytes and tree.rss_bytes > 5_000_000  # the Python CLI's memory, not just bwrap's
    assert probe.expect(AssignmentFinished, timeout=30).outcome.success


def test_preflight_refuses_real_clis_without_bubblewrap_and_names_the_package(tmp_path, caplog):
    no_bwrap = {"PATH": str(tmp_path)}  # an empty folder: no bwrap on this PATH
    with pytest.raises(PreflightError) as refused:
        check_os_sandbox(SandboxSettings(), demo=False, env=no_bwrap, platform="linux")
    assert "bubblewrap" in str(refused.value) and 'sandbox.os = "off"' in str(refused.value)
    with caplog.at_level(logging.WARNING):
        assert check_os_sandbox(SandboxSettings(), demo=True, env=no_bwrap, platform="linux") is None
        assert check_os_sandbox(SandboxSettings(os="off"), demo=False, env=no_bwrap, platform="linux") is None
    assert "demo agents run without the OS sandbox" in caplog.text
    assert 'sandbox.os = "off"' in caplog.text


def test_preflight_proves_bwrap_works_here(bwrap):
    assert check_os_sandbox(SandboxSettings(), demo=False, env={"PATH": os.path.dirname(bwrap)}) == bwrap


def test_preflight_names_a_bwrap_that_cannot_build_namespaces(tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(PreflightError, match="cannot create its namespaces here .*No permissions"):
        check_os_sandbox(SandboxSettings(), demo=False, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, platform="linux")


def test_the_agents_die_with_a_killed_orchestrator(tmp_path, bwrap, demo_env):
    from tests.history.test_resume import _demo_pids, _orchestrate

    ws = tmp_path / "ws"
    orchestrator = _orchestrate(
        ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(ws)],
        {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"},
    )
    agents: list[int] = []
    try:

        def implementer() -> list[int]:
            sessions = [p for p in ws.glob("*") if p.is_dir()] if ws.is_dir() else []
            return _demo_pids("claude", sessions[0].name) if sessions else []

        def names_of(pids: list[int]) -> dict[str, str]:
            with contextlib.suppress(psutil.Error):
                return {psutil.Process(p).name(): psutil.Process(p).parent().name() for p in pids}
            return {}

        def inside_bwrap() -> tuple[list[int], dict[str, str]] | None:
            # bwrap is there a moment before the CLI it starts, and claude may first run a short
            # review: the pids and their names come from one read, never two.
            pids = implementer()
            names = names_of(pids)
            return (pids, names) if names.get("bwrap") and names.get("python") == "bwrap" else None

        agents, names = wait_for(inside_bwrap, timeout=60, message="the demo implementer to run inside bwrap")
        orchestrator.kill()
        orchestrator.wait(timeout=10)

        def alive(pids: list[int]) -> bool:
            return any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)

        # Those seen, and any run of the session started since: all gone with the orchestrator.
        wait_for(
            lambda: not alive(agents) and not alive(implementer()),
            timeout=30,
            message=f"the sandboxed agent {names} to die with its orchestrator (--die-with-parent)",
        )
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
        orchestrator.communicate(timeout=10)
        for pid in agents:  # started by this test: ours to clean up should it fail
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


@pytest.mark.realcli
# As root too (CI): codex runs with its own sandbox off inside ours (its bwrap cannot map its
# uid here), so its writes work; test_real_clis_sandboxed.py shows what happened before.
@pytest.mark.parametrize("cli", ["claude", "codex", "gemini"])
def test_every_real_cli_does_its_work_inside_the_sandbox(cli, cli_bin, server, tmp_path, probe, bwrap):  # noqa: F811
    from tests.realcli.model_server import WRITE_CONTENT
    from tests.agents.test_real_clis import MODELS, Rig as CliRig

    rig = CliRig(cli, cli_bin, server, tmp_path / "cli")
    workspace = tmp_path / "ws"
    worker = Worker.start(
        agent=cli,
        adapter=get_adapter(cli),
        agent_settings=AgentSettings(
            command=rig.exe,
            model=MODELS[cli],
            extra_args=rig.extra_args,
            share_min=0.1,
            share_max=0.5,
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=60),
        session_id="s",
        session_dir=workspace / "s",
        target=rig.work,
        listeners=(probe.ref,),
        base_env=rig.env,
        # As a session confines it: host sockets hidden, Landlock (the model server's port comes
        # from the CLI's configured endpoint), a sized private /tmp.
        sandbox=OsSandbox(
            bwrap=bwrap, hidden=(str(workspace), *socket_dirs()), tmpfs_bytes=256 * 1024 * 1024, allow_connect=()
        ),
    )
    worker.tell(StartAssignment(assignment_id="a1", prompt="Create it. SCRIPT:write made.txt", reply_to=probe.ref))
    leader = _running_leader(probe)
    finished = probe.expect(AssignmentFinished, timeout=90)
    assert finished.returncode == 0 and finished.outcome.success, (finished, (workspace / "s" / f"{cli}.stderr.log"))
    assert (rig.work / "made.txt").read_text() == WRITE_CONTENT
    assert not leader.is_running() or leader.status() == psutil.STATUS_ZOMBIE
