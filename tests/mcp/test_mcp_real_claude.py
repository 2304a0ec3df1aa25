"""The real pinned claude starts a session through ``orchestrate mcp``: claude reads the
server from ``--mcp-config``, the scripted model server makes it call ``start_session``, and
the session runs in the workspace (its own process, outliving claude and the server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for
from tests.realcli.install import BIN_ENV, RealCliUnavailable, ensure_real_clis
from tests.realcli.model_server import MCP_DONE_TEXT, ScriptedModelServer

pytestmark = [pytest.mark.realcli, pytest.mark.session]

TOOL = "mcp__orchestrate__start_session"
RUN_TIMEOUT_S = 120


@pytest.fixture
def claude() -> Path:
    try:
        return ensure_real_clis() / "claude"
    except RealCliUnavailable as exc:
        if os.environ.get("CI") or os.environ.get(BIN_ENV):
            pytest.fail(f"real CLIs unavailable: {exc}")
        pytest.skip(f"real CLIs unavailable: {exc}")


def test_real_claude_starts_a_session_over_mcp(tmp_path, claude):
    home, work, ws = tmp_path / "home", tmp_path / "work", tmp_path / "ws"
    for folder in (home, work):
        folder.mkdir()
    server_env = {
        "ORCHESTRATE_DEMO_PACE": "0",
        "XDG_STATE_HOME": os.environ.get("XDG_STATE_HOME", str(tmp_path / "state")),
    }
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "orchestrate": {
                        "command": sys.executable,
                        "args": ["-m", "meta_orchestrator.actors.app.launcher", "mcp", "--workspace", str(ws)],
                        "env": server_env,
                    }
                }
            }
        )
    )
    arguments = json.dumps({"task": "Add a /health endpoint", "demo": True})
    with ScriptedModelServer() as model:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(tmp_path),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-ant-mock",
            "CLAUDE_CODE_MAX_RETRIES": "0",
        }
        argv = [
            str(claude),
            "-p",
            f"Start an orchestrate session. SCRIPT:mcp {TOOL} {arguments}",
            "--output-format",
            "stream-json",
            "--verbose",
            "--mcp-config",
            str(config),
            "--strict-mcp-config",
            "--allowedTools",
            TOOL,
        ]
        run = subprocess.run(
            argv,
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            start_new_session=True,
        )
        said = f"exit {run.returncode}\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}"
        assert run.returncode == 0, said
        called = [r for r in model.recorded("anthropic") if r.answered == "tool_call"]
        assert called, said
    objects = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    [init] = [o for o in objects if o.get("type") == "system" and o.get("subtype") == "init"]
    # claude -p does not wait for its MCP servers: still connecting at its start, the server's
    # tools come once the model calls WaitForMcpServers (the scripted model does, as a model would).
    assert init["mcp_servers"][0]["name"] == "orchestrate", said
    assert init["mcp_servers"][0]["status"] in ("connected", "pending"), said
    [result] = [o for o in objects if o.get("type") == "result"]
    assert MCP_DONE_TEXT in result["result"], said
    [folder] = [p for p in ws.iterdir() if (p / "state.json").is_file()]
    assert folder.name in result["result"]  # the tool's answer (the session id) reached claude

    def ended() -> dict | None:
        state = json.loads((folder / "state.json").read_text())
        pid = state.get("orchestrator_pid")
        gone = not pid or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        return state if state["status"] == "completed" and gone else None

    state = wait_for(ended, timeout=RUN_TIMEOUT_S, interval=0.2, message="the session started by claude to complete")
    assert state["task"] == "Add a /health endpoint" and state["demo"]
