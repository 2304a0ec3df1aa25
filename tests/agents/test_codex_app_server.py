"""The real pinned codex driven through ``codex app-server`` and the orchestrator's bridge.

The command line comes from ``CodexAdapter.build_launch`` with ``protocol="app-server"`` (only
the test-only provider flags added), stdout goes through ``parser_for("app-server")``: the same
drafts and ``RunOutcome`` as the ``exec --json`` path. Runs against the scripted model server,
each with a fresh HOME/CODEX_HOME, in its own process group, nothing left running after.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    MODELS,
    AdapterRun,
    Rig,
    cli_bin,
    no_leftover_children,
    run_process,
    server,
)
from tests.conftest import wait_for
from tests.realcli.model_server import MARKER_TEXT, TEXT_ANSWER, WRITE_CONTENT, write_done_text

pytestmark = pytest.mark.realcli


@pytest.fixture
def rig(cli_bin: Path, server, tmp_path: Path) -> Rig:  # noqa: F811
    return Rig("codex", cli_bin, server, tmp_path)


def app_launch(rig: Rig, prompt: str, resume: str | None = None, env: dict[str, str] | None = None) -> Any:
    return get_adapter("codex").build_launch(
        LaunchSpec(
            executable=(rig.exe,),
            prompt=prompt,
            workdir=rig.work,
            model=MODELS["codex"],
            resume_session_id=resume,
            extra_args=rig.extra_args,
            env={**rig.env, **(env or {})},
            protocol="app-server",
        )
    )


def run_app_server(rig: Rig, prompt: str, resume: str | None = None, env: dict[str, str] | None = None) -> AdapterRun:
    launch = app_launch(rig, prompt, resume, env)
    run = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
    parser = get_adapter("codex").parser_for("app-server")
    drafts = [d for line in run.stdout.splitlines() for d in parser.feed_line(line)]
    drafts.extend(parser.finish(run.returncode, tuple(run.stderr_text.splitlines()[-20:])))
    return AdapterRun(run, drafts, parser.outcome(writing=True))


def test_the_command_line_runs_the_bridge_around_app_server(rig: Rig) -> None:
    launch = app_launch(rig, "SCRIPT:text")
    cut = launch.argv.index("--")
    bridge, codex = launch.argv[:cut], launch.argv[cut + 1 :]
    assert bridge[:4] == (sys.executable, "-I", "-m", "meta_orchestrator.actors.agents.codex_app_bridge")
    assert codex[:2] == (rig.exe, "app-server") and "SCRIPT:text" not in " ".join(launch.argv)
    assert launch.stdin == b"SCRIPT:text"
    assert bridge[bridge.index("--cwd") + 1] == str(rig.work)
    assert bridge[bridge.index("--sandbox") + 1] == "workspace-write"


def test_text_answer_with_a_marker(rig: Rig) -> None:
    result = run_app_server(rig, "Report as you go. SCRIPT:marker")
    assert result.run.returncode == 0, result.describe()
    assert result.outcome.success and result.outcome.session_id, result.describe()
    assert [d.payload.text for d in result.of("milestone", "marker")] == [MARKER_TEXT], result.describe()
    [review] = result.of("review", "result")
    assert "ORCHESTRATE_EVENT" not in review.payload.text and "All scripted work is done." in review.payload.text
    assert result.of("status", "init")[0].payload.session_id == result.outcome.session_id
    assert result.outcome.usage and result.outcome.usage["input_tokens"] > 0
    # Every line of stdout was one JSON object, codex's notifications and the bridge's own.
    objects = [json.loads(line) for line in result.run.lines]
    assert objects[-1] == {"bridge": "end", "status": "completed", "error": None}
    methods = {o.get("method") for o in objects}
    assert {"turn/started", "item/completed", "turn/completed"} <= methods
    assert "account/rateLimits/updated" not in methods  # opted out of at initialize


def test_a_written_file_and_the_resumed_thread(rig: Rig) -> None:
    result = run_app_server(rig, "SCRIPT:write hello.txt")
    assert result.run.returncode == 0, result.describe()
    assert (rig.work / "hello.txt").read_text() == WRITE_CONTENT
    assert result.outcome.success and result.outcome.final_text == write_done_text("hello.txt")
    assert result.outcome.files_written == (str(rig.work / "hello.txt"),), result.describe()
    assert result.of("status", "approval") == []  # no sandbox guard: nothing asked
    # The same thread goes on in a new process (the worker's resume).
    again = run_app_server(rig, "SCRIPT:text", resume=result.outcome.session_id)
    assert again.run.returncode == 0, again.describe()
    assert again.outcome.session_id == result.outcome.session_id
    assert again.outcome.final_text == TEXT_ANSWER
    assert [d.payload.text for d in again.of("status", "init")] == ["thread resumed"]


def test_an_unknown_thread_is_session_not_found(rig: Rig) -> None:
    result = run_app_server(rig, "SCRIPT:text", resume="01a24e5c-0000-7000-8000-000000000000")
    assert result.run.returncode == 1
    [failed] = result.of("error", "turn_failed")
    assert failed.payload.terminal and failed.payload.details["cause"] == "session_not_found", result.describe()
    assert "no rollout found for thread id" in (result.outcome.error or "")


def test_an_api_error_is_classified_like_exec(rig: Rig) -> None:
    result = run_app_server(rig, "SCRIPT:error 401")
    assert result.run.returncode == 1, result.describe()
    [failed] = result.of("error", "turn_failed")
    assert failed.payload.details["cause"] == "auth" and "401 Unauthorized" in failed.payload.text
    assert not result.outcome.success


def test_no_policy_asks_nothing_and_codex_sandbox_decides(rig: Rig) -> None:
    """No sandbox guard: codex is told never to ask (approvalPolicy "never"); workspace-write
    lets a command write in its folder and refuses a patch outside it, as exec does."""
    result = run_app_server(rig, "SCRIPT:bash touch ran.txt")
    assert result.run.returncode == 0, result.describe()
    assert (rig.work / "ran.txt").exists()
    [call] = [d for d in result.of("progress", "tool_call") if d.payload.tool == "shell"]
    assert "touch ran.txt" in call.payload.text
    assert result.of("status", "approval") == []  # nothing was asked
    folder = Path(tempfile.mkdtemp(prefix="orch-outside-", dir="/var/tmp"))  # /tmp is writable in workspace-write
    try:
        outside = folder / "outside.txt"
        refused = run_app_server(rig, f"SCRIPT:write {outside}")
        assert not outside.exists(), refused.describe()
        assert refused.of("status", "approval") == []
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- codex breaking off: the run ends with a clear error, nothing left running -------------------


def _fake_codex(tmp_path: Path, body: str) -> Path:
    """A stand-in ``codex`` that answers initialize and then does ``body`` (Python)."""
    script = tmp_path / "fake-codex"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "line = sys.stdin.readline()\n"
        'print(json.dumps({"id": json.loads(line)["id"], "result": {"userAgent": "fake"}}), flush=True)\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(
    "body,said",
    [
        ("print('this is not json', flush=True); time.sleep(60)", "not JSON"),
        ("os._exit(3)", "exited (exit 3) before the turn ended"),
    ],
)
def test_garbage_or_codex_dying_ends_the_run(rig: Rig, tmp_path: Path, body: str, said: str) -> None:
    fake = _fake_codex(tmp_path, body)
    launch = app_launch(rig, "SCRIPT:text")
    argv = tuple(str(fake) if a == rig.exe else a for a in launch.argv)
    run = run_process(argv, launch.env, launch.cwd, launch.stdin)
    assert run.returncode == 1, run.describe()
    parser = get_adapter("codex").parser_for("app-server")
    drafts = [d for line in run.stdout.splitlines() for d in parser.feed_line(line)]
    drafts.extend(parser.finish(run.returncode, ()))
    [failed] = [d for d in drafts if d.type == "error" and d.payload.terminal]
    assert said in failed.payload.text
    assert not parser.outcome().success


def test_codex_dying_mid_turn_ends_the_run(rig: Rig) -> None:
    """The real codex killed while its turn waits on the model: the bridge says so, exit 1."""
    launch = app_launch(rig, "SCRIPT:hold")
    proc = subprocess.Popen(
        launch.argv,
        env=launch.env,
        cwd=launch.cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.communicate(launch.stdin, timeout=60)[0]))
    reader.start()
    try:
        wait_for(lambda: any(r.answered == "held" for r in rig.server.requests), 30, message="the held request")
        codex = [p for p in psutil.Process(proc.pid).children(recursive=True) if "app-server" in _cmdline(p)]
        assert codex, "codex app-server is not the bridge's child"
        for member in codex:
            member.kill()
        reader.join(30)
    finally:
        rig.server.release()
        reader.join(30)
    assert proc.returncode == 1
    last = json.loads(out[0].splitlines()[-1])
    assert last["bridge"] == "end" and "exited" in last["error"] and "before the turn ended" in last["error"], out


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone, or a zombie: not the server
        return []
