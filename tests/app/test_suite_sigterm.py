"""A SIGTERM to a pytest run of this suite ends it, and everything it started, even when it comes
while a test runs a session in-process (the launcher then has its own SIGTERM handler).

The run below is a pytest in its own process group over two tests: a demo session run in-process,
then a test that holds a server in a session of its own (ended by its fixture's teardown) and
waits five minutes. tests/conftest.py turns SIGTERM into KeyboardInterrupt so that teardown runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import PROJECT_ROOT, _agents_of_this_run, wait_for

pytestmark = pytest.mark.session

INNER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, threading, time
    from pathlib import Path

    import pytest

    from meta_orchestrator.actors.app.system import LaunchRequest, run
    from meta_orchestrator.config.settings import load_settings

    MARKS = Path(os.environ["SIGTERM_TEST_MARKS"])


    def test_a_session_in_process(tmp_path, demo_env):
        ours = signal.getsignal(signal.SIGTERM)

        def mark():  # the launcher's handler is in place: the session handles SIGTERM now
            while signal.getsignal(signal.SIGTERM) is ours:
                time.sleep(0.01)
            (MARKS / "session").write_text("")

        threading.Thread(target=mark, daemon=True).start()
        settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
        env = {**demo_env, "ORCHESTRATE_DEMO_PACE": os.environ["SIGTERM_TEST_PACE"]}
        request = LaunchRequest(task="Add a /health endpoint", target=None, demo=True, dashboard=False,
                                console=False, env=env)
        assert run(settings, request) == 0


    @pytest.fixture
    def server():
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        (MARKS / "server").write_text(str(proc.pid))
        yield proc
        proc.kill()
        proc.wait()


    def test_a_long_wait(server):
        (MARKS / "second").write_text("")
        threading.Event().wait(300)
    """
)


@pytest.mark.parametrize(
    ("when", "pace", "sig"),
    [
        ("second", "0", signal.SIGTERM),  # the session has ended and put back the handlers it replaced
        ("session", "0.25", signal.SIGTERM),  # the session's handler stops it in order: the run still ends
        ("session", "0.25", signal.SIGINT),  # Ctrl-C in a terminal: the same
    ],
)
def test_a_signal_ends_a_pytest_run_and_all_it_started(
    tmp_path: Path, when: str, pace: str, sig: signal.Signals
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    inner = tmp_path / "inner" / "test_inner.py"
    inner.parent.mkdir()
    inner.write_text(INNER)
    basetemp = tmp_path / "basetemp"
    env = {**os.environ, "SIGTERM_TEST_MARKS": str(marks), "SIGTERM_TEST_PACE": pace}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-c", str(PROJECT_ROOT / "pyproject.toml")]
    argv += ["--rootdir", str(PROJECT_ROOT), "--basetemp", str(basetemp), str(inner)]
    output = tmp_path / "output.txt"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: (marks / when).exists() or proc.poll() is not None, timeout=90, message=f"mark {when!r}")
        assert proc.poll() is None, output.read_text()[-3000:]
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pytest still ran 30 s after {sig.name}:\n{output.read_text()[-3000:]}")
        text = output.read_text()
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, text[-3000:]
        assert f"KeyboardInterrupt: signal {int(sig)}" in text
        assert not (marks / "second").exists() or when == "second"  # the run ended: no test after
        # Nothing left: not in its process group, not the server of a session of its own, no agent.
        # A member may still be running its exit a moment after pytest was reaped.
        wait_for(lambda: not _group_alive(proc.pid), timeout=10, message="pytest's process group empty")
        if (marks / "server").exists():
            server = int((marks / "server").read_text())
            wait_for(lambda: not _alive(server), timeout=10, message="the inner test's server ended")
        assert not _agents_of_this_run(basetemp)
    finally:
        _end(proc, marks, basetemp)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _end(proc: subprocess.Popen[bytes], marks: Path, basetemp: Path) -> None:
    """After a failure: the run's group, its agents, and the server it started in a session of its own."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for agent in _agents_of_this_run(basetemp):
        agent.kill()
    server = marks / "server"
    if server.exists() and _alive(pid := int(server.read_text())):
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
