"""Starting a session for an MCP client: its own ``orchestrate`` process, exactly as the
launcher runs one from a terminal (headless: stdin closed; the dashboard up so that its
questions can be answered and its controls reached), in a process group of its own so that
it outlives the MCP server and its client.

The launcher's console output goes to a private file under ``<workspace>/.mcp/`` (the
server's stdout is the MCP channel), and the address it prints for the dashboard, with its
token, is kept there per session (``<session_id>.json``, 0600) so that any later
``orchestrate mcp`` on the same workspace can reach the session's controls.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.files.session_files import open_private, private_dir, read_json

LAUNCH_DIR = ".mcp"
START_TIMEOUT_S = 60.0
_DASHBOARD_LINE = re.compile(r"^dashboard: (http://\S+)$", re.MULTILINE)


class LaunchError(Exception):
    """The session could not be started; the message says why (the launcher's own words)."""


@dataclass(frozen=True)
class Launched:
    session_id: str
    pid: int
    dashboard_url: str | None
    token: str | None
    log: Path


def launcher_argv(options: dict[str, Any], workspace: Path, config: Path | None) -> list[str]:
    """The ``orchestrate`` command line of one new session (``options``: the tool's checked
    arguments)."""
    argv = [sys.executable, "-m", "meta_orchestrator.actors.app.launcher", options["task"]]
    argv += ["--workspace", str(workspace), "--exit-when-done", "--next-free-port"]
    if options.get("target") is not None:
        argv += ["--target", str(options["target"])]
    if config is not None:
        argv += ["--config", str(config)]
    for flag in ("demo", "include_uncommitted", "unattended"):
        if options.get(flag):
            argv.append("--" + flag.replace("_", "-"))
    return argv


def start_session_process(
    argv: list[str], workspace: Path, env: dict[str, str] | None = None, session_id: str | None = None
) -> Launched:
    """Run ``argv`` (``launcher_argv``) as its own process group; wait until its session has a
    folder (and its dashboard an address), or the launcher has exited (its message raised).
    ``session_id``: the session it resumes (its folder exists already).

    Raises:
        LaunchError: the launcher refused or died before the session began.
    """
    launches = private_dir(workspace / LAUNCH_DIR)
    before = {p.name for p in workspace.iterdir() if p.is_dir()} - {session_id}
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident()}"
    log = launches / f"launch-{stamp}.log"
    with open_private(log) as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=env,
            start_new_session=True,  # its own group: our client's Ctrl-C or exit does not reach it
        )
    # Reaped here while we live; once we are gone, init adopts it.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    found = url = None
    while time.monotonic() < deadline:
        found = found or _session_of(workspace, before, proc.pid)
        url = url or _dashboard_url(log)
        if found and url:
            break
        if proc.poll() is not None:
            if found:
                break  # ended already (a session without a dashboard, or a very short one)
            raise LaunchError(f"the session did not start (exit {proc.returncode}): {_tail(log)}")
        time.sleep(0.05)
    else:
        if found is None:
            raise LaunchError(f"no session folder after {START_TIMEOUT_S:.0f}s (launcher pid {proc.pid}): {_tail(log)}")
    assert found is not None
    token = url.split("?token=", 1)[1] if url and "?token=" in url else None
    if url:
        remember_dashboard(workspace, found, url)
    return Launched(found, proc.pid, url, token, log)


def _session_of(workspace: Path, before: set[str], pid: int) -> str | None:
    for folder in workspace.iterdir():
        if folder.name in before or folder.name == LAUNCH_DIR or not folder.is_dir():
            continue
        try:
            state = read_json(folder / "state.json")
        except (OSError, ValueError):
            continue
        if state.get("orchestrator_pid") == pid:
            return str(state.get("session_id", folder.name))
    return None


def _dashboard_url(log: Path) -> str | None:
    try:
        match = _DASHBOARD_LINE.search(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return match.group(1) if match else None


def _tail(log: Path, keep: int = 2000) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(no output)"
    return text[-keep:] or "(no output)"


def remember_dashboard(workspace: Path, session_id: str, url: str) -> None:
    """Keep the dashboard's address (with its token) for later MCP servers, readable by us alone."""
    path = workspace / LAUNCH_DIR / f"{session_id}.json"
    path.unlink(missing_ok=True)
    with open_private(path, exclusive=True) as f:
        f.write(json.dumps({"session_id": session_id, "url": url}))


def remembered_dashboard(workspace: Path, session_id: str) -> str | None:
    """The dashboard address recorded when this session was started over MCP, if any."""
    try:
        return str(read_json(workspace / LAUNCH_DIR / f"{session_id}.json")["url"])
    except (OSError, ValueError, KeyError):
        return None
