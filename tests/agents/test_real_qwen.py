"""The real pinned ``qwen`` (qwen-code 0.24.4) against the scripted model server, through its adapter.

qwen speaks Anthropic Messages here (``--auth-type anthropic`` with ``ANTHROPIC_BASE_URL``);
the command line comes from ``get_adapter("qwen").build_launch`` with only the test's auth
flags added, stdout goes through the adapter's parser. Every run: fresh HOME and TMPDIR, the
prompt on stdin, its own process group, a watchdog; no child is left behind.

qwen retries a 429 and a 5xx itself (7 attempts, backoff from 1.5 s up to 30 s; a 429 then
again every 60 s and more, 10 times unless ``model.generationConfig.maxRetries`` says
fewer). The 7 attempts' backoff has no setting or variable; only a ``retry-after-ms`` on a
429 or a 503 replaces it, so the scripted server's carry a short one and those runs take
seconds. The server error tested is a 503 (overloaded, as APIs say it with a wait): a 500
has no wait to give, and its run took 65-100 s of qwen's own backoff for the same parse.
"""

# ruff: noqa: F811 - the fixtures cli_bin and server come from test_real_clis
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    AdapterRun,
    Run,
    _group_members,
    cli_bin,
    no_leftover_children,
    server,
)
from tests.realcli.model_server import MARKER_TEXT, WRITE_CONTENT, ScriptedModelServer, write_done_text

pytestmark = pytest.mark.realcli

MODEL = "claude-sonnet-4-5"
# A run takes a few seconds; a 5xx without a wait would take qwen's own 7 attempts (65-100 s).
RUN_TIMEOUT_S = 240
# The test's auth flags: Anthropic Messages at the scripted server, no retries of a 429 past
# qwen's first seven attempts.
AUTH_ARGS = ("--auth-type", "anthropic")
SETTINGS = {"model": {"generationConfig": {"maxRetries": 0}}}
RETRY_AFTER_MS = 20  # what the scripted server's 429 asks qwen to wait before its next attempt


def qwen_env(home: Path, url: str) -> dict[str, str]:
    """A fresh HOME with the test's settings, pointed at the scripted server."""
    (home / ".qwen").mkdir(parents=True)
    (home / ".qwen" / "settings.json").write_text(json.dumps(SETTINGS))
    tmp = home.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-mock",
    }


def run_launch(argv: tuple[str, ...], env: dict[str, str], cwd: Path, stdin: bytes | None) -> Run:
    """Run to its end under a watchdog that kills the whole group; nothing of it may outlive it."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        run = Run(argv, proc.returncode, out, err, time.monotonic() - start)
        pytest.fail(f"no exit within {RUN_TIMEOUT_S} s; process group killed\n{run.describe()}")
    run = Run(argv, proc.returncode, out, err, time.monotonic() - start)
    if survivors := _group_members(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"processes of the run outlived it: {[p.pid for p in survivors]}\n{run.describe()}")
    return run


def run_qwen(
    cli_bin: Path, server: ScriptedModelServer, root: Path, prompt: str, mode: str = "write"
) -> tuple[AdapterRun, Path]:
    """One run of the real qwen through the adapter; (the run, its workspace)."""
    work = (root / "work").resolve()
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    adapter = get_adapter("qwen")
    launch = adapter.build_launch(
        LaunchSpec(
            executable=(str(cli_bin / "qwen"),),
            prompt=prompt,
            workdir=work,
            mode=mode,  # type: ignore[arg-type]
            model=MODEL,
            extra_args=AUTH_ARGS,
            env=qwen_env(root / "home", server.url),
        )
    )
    assert prompt.encode() not in b"\0".join(a.encode() for a in launch.argv)  # never in argv
    run = run_launch(launch.argv, launch.env, launch.cwd, launch.stdin)
    parser = adapter.new_parser()
    drafts: list[Any] = []
    for line in run.stdout.splitlines():
        drafts.extend(parser.feed_line(line))
    drafts.extend(parser.finish(run.returncode, tuple(run.stderr_text.splitlines()[-20:])))
    return AdapterRun(run, drafts, parser.outcome(writing=mode == "write")), work


def test_qwen_text_answer_with_a_marker(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> None:
    res, _ = run_qwen(cli_bin, server, tmp_path, "Report a milestone. SCRIPT:marker")
    assert res.run.returncode == 0, res.describe()
    assert [m.payload.text for m in res.of("milestone", "marker")] == [MARKER_TEXT], res.describe()
    init = res.of("status", "init")
    assert init and init[0].payload.model == MODEL, res.describe()
    assert res.outcome.success is True and res.outcome.terminal_event_seen, res.describe()
    assert MARKER_TEXT not in (res.of("review")[0].payload.text or ""), res.describe()  # markers are events
    assert res.outcome.session_id and res.outcome.total_tokens, res.describe()
    # The prompt reached the model from stdin, exactly.
    prompts = [r for r in server.recorded("anthropic") if r.answered == "marker"]
    assert prompts, [r.answered for r in server.recorded()]


def test_qwen_writes_a_file(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> None:
    res, work = run_qwen(cli_bin, server, tmp_path, "Create the file. SCRIPT:write hello-{cli}.txt")
    target = work / "hello-qwen.txt"
    assert res.run.returncode == 0, res.describe()
    assert target.read_text() == WRITE_CONTENT, res.describe()
    assert [Path(d.payload.file) for d in res.of("milestone", "file_written")] == [target], res.describe()
    assert [Path(f) for f in res.outcome.files_written] == [target]
    calls = res.of("progress", "tool_call")
    assert [(c.payload.tool, c.payload.file) for c in calls] == [("write_file", str(target))], res.describe()
    assert res.outcome.success is True
    assert res.outcome.final_text == write_done_text("hello-qwen.txt"), res.describe()


def test_qwen_review_run_cannot_write(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> None:
    """A read-only run (``--approval-mode plan``): the write is refused with qwen's denial."""
    res, work = run_qwen(cli_bin, server, tmp_path, "Create the file. SCRIPT:write hello.txt", mode="read_only")
    assert "plan" in res.run.argv
    assert not (work / "hello.txt").exists(), res.describe()
    denials = res.of("blocker", "denial")
    assert denials and denials[0].payload.tool == "write_file", res.describe()
    assert 'requires permission to use "write_file"' in (denials[0].payload.text or ""), res.describe()
    assert res.outcome.permission_denials and not res.outcome.files_written, res.describe()


@pytest.mark.parametrize(
    ("status", "cause", "retryable"), [(401, "auth", False), (429, "rate_limit", True), (503, "server", True)]
)
@pytest.mark.timeout(RUN_TIMEOUT_S + 30)  # a wait qwen ignored would back off for a minute or more
def test_qwen_api_error_classified(
    cli_bin: Path, server: ScriptedModelServer, tmp_path: Path, status: int, cause: str, retryable: bool
) -> None:
    # A 429 or 503 that asks for a wait (retry-after-ms) has qwen wait that long between its 7
    # attempts, not back off for a minute and more; other 5xx's backoff has no setting (qwen 0.24.4).
    server.retry_after_ms = RETRY_AFTER_MS
    res, _ = run_qwen(cli_bin, server, tmp_path, f"Do the thing. SCRIPT:error {status}")
    assert res.run.returncode == 1, res.describe()
    terminal = [d for d in res.of("error") if d.payload.terminal]
    assert len(terminal) == 1, res.describe()
    assert (terminal[0].payload.text or "").startswith(f"[API Error: {status} "), res.describe()
    assert terminal[0].payload.retryable is retryable, res.describe()
    assert terminal[0].payload.details and terminal[0].payload.details["cause"] == cause, res.describe()
    assert res.outcome.success is False and not res.of("review"), res.describe()
    # Recovery's table names the same class from the run's evidence.
    evidence = Evidence("qwen", (res.outcome.error or "",), res.run.returncode, terminal_event_seen=True)
    found = classify_run(evidence)
    assert found is not None and found.cause == cause, res.describe()
    # 401 is not retried; 429 and 503 are, by qwen itself, before it gives up.
    attempts = [r for r in server.recorded("anthropic") if r.answered == f"error {status}"]
    assert (len(attempts) == 1) if status == 401 else (len(attempts) >= 2), len(attempts)


def test_qwen_speaks_acp_on_stdio_with_its_acp_args(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> None:
    """``protocols`` names acp: ``qwen --acp`` answers the client's ``initialize``."""
    adapter = get_adapter("qwen")
    assert "acp" in adapter.protocols and adapter.acp_args == ("--acp",)
    env = qwen_env(tmp_path / "home", server.url)
    proc = subprocess.Popen(
        (str(cli_bin / "qwen"), *adapter.acp_args, *AUTH_ARGS, "-m", MODEL),
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    watchdog = threading.Timer(60, os.killpg, (proc.pid, signal.SIGKILL))  # a silent agent: readline ends
    watchdog.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        request = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}}
        proc.stdin.write((json.dumps(request) + "\n").encode())
        proc.stdin.flush()
        line = proc.stdout.readline()
    finally:
        watchdog.cancel()
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    answer = json.loads(line)
    assert answer["id"] == 1 and answer["result"]["protocolVersion"] == 1, answer
    assert answer["result"]["agentInfo"] == {"name": "qwen-code", "title": "Qwen Code", "version": "0.24.4"}
