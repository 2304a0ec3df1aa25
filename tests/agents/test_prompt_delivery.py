"""A prompt never stands on a command line: every CLI reads it on stdin.

Any local user reads every process's command line (``ps``, ``/proc/<pid>/cmdline``), so a
prompt there (the task, the plan, earlier results, review diffs) is public on the machine.
Each adapter builds a command line without it and hands it as ``Launch.stdin``; the process
host writes it in a thread of its own and closes the pipe. Checked: the command lines of
every adapter, the host with a prompt larger than the pipe's buffer (plain and under
bubblewrap), and the real pinned claude, codex and gemini (claude under bubblewrap too) driven
by a worker against the scripted model server, which holds its answer while every
``/proc/*/cmdline`` is searched and the CLI's environment is read; a resumed run the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from meta_orchestrator.actors.adapters.base import Launch, LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.cli_launch import shown_command
from meta_orchestrator.actors.processes.process_host import ProcessHost
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.conftest import wait_for
from tests.parrot.adapter import ParrotAdapter
from tests.realcli.model_server import ScriptedModelServer
from tests.agents.test_real_clis import MODELS, Rig, cli_bin, server  # noqa: F401 - fixtures

ADAPTERS = {"claude": get_adapter("claude"), "codex": get_adapter("codex"), "gemini": get_adapter("gemini")}
ADAPTERS["parrot"] = ParrotAdapter()
ADAPTERS["copilot"] = get_adapter("copilot")


# -- the command lines -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize("prompt", ["Review this diff.\n--- a/x\n+++ b/x\n@@ secret-plan @@", "-rf as a prompt"])
@pytest.mark.parametrize("resume", [None, "01a20ab5-3eec-7052-8dac-4a8d4884ba65"])
def test_no_adapter_puts_the_prompt_in_its_command_line(name: str, prompt: str, resume: str | None, tmp_path):
    launch = ADAPTERS[name].build_launch(
        LaunchSpec(
            executable=(name,), prompt=prompt, workdir=tmp_path, resume_session_id=resume, extra_dirs=(tmp_path,)
        )
    )
    words = [w for w in prompt.split() if len(w) > 3]
    assert not any(word in arg for arg in launch.argv for word in words), launch.argv
    assert launch.stdin == prompt.encode("utf-8")
    if resume:
        assert resume in launch.argv


def test_the_log_shows_a_short_prompt_after_the_command():
    argv = ("claude", "-p", "--output-format", "stream-json")
    assert (
        shown_command(argv, "Add a /health endpoint")
        == "claude -p --output-format stream-json <<< 'Add a /health endpoint'"
    )
    long = "Review the change below.\n" + "x" * 500
    shown = shown_command(argv, long)
    assert shown.startswith("claude -p --output-format stream-json <<< 'Review the change below. xxx")
    assert shown.endswith(f"... ({len(long)} chars)'") and len(shown) < 160


# -- the host ------------------------------------------------------------------------------------

# Writes a lot to stdout before it reads stdin: a host writing the prompt before it reads
# stdout would wait on a full pipe forever. Then says how much came and its digest.
LATE_READER = """
import hashlib, sys
for i in range(2000):
    sys.stdout.write("x" * 200 + "\\n")
sys.stdout.flush()
data = sys.stdin.buffer.read()
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""
BIG = os.urandom(3 << 20)  # 3 MiB: far more than a pipe holds


def _run(launch: Launch, confinement: Confinement | None = None) -> tuple[int, list[bytes]]:
    """Spawn on the local host, read stdout to its end, reap."""
    proc = ProcessHost().spawn(launch, confinement)
    lines = [
        data for batch in proc.line_batches("stdout", 1 << 20, lambda: Path("/nonexistent")) for data, _, _ in batch
    ]
    proc.stderr.close()
    proc.wait_exit_unreaped()
    return proc.reap(), lines


def _stdin_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stdin-")]


def test_a_prompt_larger_than_the_pipe_arrives_whole_while_stdout_is_read(tmp_path):
    code, lines = _run(Launch(argv=(sys.executable, "-c", LATE_READER), env=dict(os.environ), cwd=tmp_path, stdin=BIG))
    assert code == 0 and len(lines) == 2001
    assert lines[-1].decode().split() == [str(len(BIG)), hashlib.sha256(BIG).hexdigest()]
    wait_for(lambda: not _stdin_threads(), message="the stdin writer to end")


def test_under_bubblewrap_the_prompt_arrives_whole_too(tmp_path, bwrap):
    confinement = Confinement(bwrap=bwrap, writable=(str(tmp_path),), chdir=str(tmp_path))
    launch = Launch(argv=(sys.executable, "-c", LATE_READER), env=dict(os.environ), cwd=tmp_path, stdin=BIG)
    code, lines = _run(launch, confinement)
    assert code == 0 and lines[-1].decode().split() == [str(len(BIG)), hashlib.sha256(BIG).hexdigest()]


def test_a_cli_that_never_reads_its_stdin_neither_hangs_nor_leaves_the_writer(tmp_path):
    launch = Launch(argv=(sys.executable, "-c", "print('done')"), env=dict(os.environ), cwd=tmp_path, stdin=BIG)
    code, lines = _run(launch)
    assert code == 0 and lines == [b"done"]
    wait_for(lambda: not _stdin_threads(), message="the stdin writer to give up on the closed pipe")


def test_without_a_prompt_stdin_is_closed_at_once(tmp_path):
    launch = Launch(
        argv=(sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"), env=dict(os.environ), cwd=tmp_path
    )
    assert _run(launch) == (0, [b"''"])


# -- the real CLIs: the prompt reaches the model, and no command line holds it --------------------

API = {"claude": "anthropic", "codex": "openai", "gemini": "gemini"}
SECRET = {
    "GITHUB_TOKEN": "ghp_prompt_test",
    "AWS_SECRET_ACCESS_KEY": "aws-prompt-test",
    "SSH_AUTH_SOCK": "/tmp/agent.sock",
    "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/0/bus",
}


def _strings(value: Any) -> list[str]:
    """Every string anywhere in a decoded JSON body."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _cmdlines_holding(marker: bytes) -> list[str]:
    """Every process whose command line holds ``marker`` (what ``ps`` would show anyone)."""
    found = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if marker in cmdline:
                found.append(f"{pid}: {cmdline[:200]!r}")
    return found


def _session_processes(session_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("ORCHESTRATE_SESSION_ID") == session_id:
                found.append(proc)
    return found


def _prompt(marker: str) -> str:
    """A review-sized prompt (more than a pipe's buffer) that makes the server hold its answer."""
    diff = "".join(f"+    line {i} of the change under review\n" for i in range(3000))
    return f"Review the change below ({marker}).\n--- a/app/main.py\n+++ b/app/main.py\n{diff}SCRIPT:hold\n"


def _held_run(
    worker: Any, probe: Any, srv: ScriptedModelServer, cli: str, resume: str | None, sandboxed: bool
) -> str | None:
    """One run whose request the server holds: while it waits, no command line holds the
    prompt and the CLI's environment holds no secret; then the model got the whole prompt."""
    marker = f"prompt-marker-{uuid.uuid4().hex}"
    prompt = _prompt(marker)
    srv.released.clear()
    before = len(srv.recorded(API[cli]))
    worker.tell(
        StartAssignment(assignment_id=f"a-{marker[-6:]}", prompt=prompt, resume_session_id=resume, reply_to=probe.ref)
    )
    try:
        held = wait_for(
            lambda: [r for r in srv.recorded(API[cli])[before:] if r.answered == "held"],
            timeout=60,
            message=f"{cli}'s request to reach the server",
        )
        running = _session_processes("prompt-test")
        assert running, "the CLI is not running while its request is held"
        assert any(p.name() == "bwrap" for p in running) == sandboxed
        assert _cmdlines_holding(marker.encode()) == []
        for proc in running:
            with contextlib.suppress(psutil.NoSuchProcess):
                assert not set(SECRET) & set(proc.environ()), proc.cmdline()
    finally:
        srv.release()
    finished = probe.expect(AssignmentFinished, timeout=90)
    assert finished.outcome.success, finished
    assert any(prompt.strip() in text for text in _strings(held[0].body)), "the model did not get the whole prompt"
    return finished.outcome.session_id


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder outside /tmp: under the OS sandbox /tmp is private, and the CLI's home must stay visible."""
    root = Path(tempfile.mkdtemp(prefix="orch-prompt-", dir="/var/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.realcli
@pytest.mark.parametrize("cli,sandboxed", [("claude", False), ("codex", False), ("gemini", False), ("claude", True)])
def test_a_real_cli_gets_the_whole_prompt_on_stdin_and_no_command_line_shows_it(
    cli,
    sandboxed,
    cli_bin,  # noqa: F811 - the fixture
    server,  # noqa: F811 - the fixture
    tmp_path,
    outside_tmp,
    probe,
    request,
):
    rig = Rig(cli, cli_bin, server, outside_tmp / "rig")
    session_dir = tmp_path / "session"
    session_dir.mkdir()
    sandbox = OsSandbox(bwrap=request.getfixturevalue("bwrap")) if sandboxed else None
    worker = Worker.start(
        agent=cli,
        adapter=get_adapter(cli),
        agent_settings=AgentSettings(
            command=rig.exe, model=MODELS[cli], extra_args=rig.extra_args, share_min=0.1, share_max=0.5
        ),
        session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
        session_id="prompt-test",
        session_dir=session_dir,
        target=rig.work,
        base_env={**rig.env, **SECRET},
        sandbox=sandbox,
    )
    try:
        session_id = _held_run(worker, probe, server, cli, None, sandboxed)
        assert session_id
        _held_run(worker, probe, server, cli, session_id, sandboxed)  # a resumed run: --resume <id> + a new prompt
    finally:
        worker.stop()
    launches = [
        json.loads(line)["payload"]["text"]
        for line in (session_dir / f"{cli}.jsonl").read_text().splitlines()
        if json.loads(line)["payload"].get("kind") == "launch"
    ]
    assert len(launches) == 2 and all("<<< 'Review the change below (prompt-marker-" in t for t in launches)
    assert session_id in launches[1].split()  # after --resume (claude, gemini) or resume (codex)
