"""The dashboard answers before the CLIs' version probes return (issue 25): a real launcher, a
fake gemini whose ``--version`` blocks on a FIFO the test writes, the demo agents otherwise;
and a probe that fails still ends the launcher with the preflight's error and exit 2."""

from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.registry import get_adapter
from tests.conftest import kill_tree, popen_orchestrate

URL_DEADLINE_S = 15.0  # under the probe's own 20 s timeout: a start that waits for it misses this


def _repository(folder: Path) -> Path:
    folder.mkdir()
    (folder / "README.md").write_text("# app\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@x"
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "first"]):
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)
    return folder


def _config(tmp_path: Path, gemini: str) -> Path:
    """gemini's command is ``gemini``; codex and claude are the demo agents; no OS sandbox."""
    demo = {name: shlex.join(get_adapter(name).demo_argv()) for name in ("codex", "claude")}
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[sandbox]\nos = 'off'\n"
        f"[agents.gemini]\ncommand = {json.dumps(gemini)}\n"
        f"[agents.codex]\ncommand = {json.dumps(demo['codex'])}\n"
        f"[agents.claude]\ncommand = {json.dumps(demo['claude'])}\n"
    )
    return cfg


def _lines(proc: subprocess.Popen) -> queue.Queue[str | None]:
    """The launcher's stderr, line by line (None at its end), read on a thread of its own."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _get(url: str, token: str = "") -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"X-Orchestrate-Token": token} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


@pytest.mark.session
def test_dashboard_answers_while_a_version_probe_still_runs(tmp_path, demo_env):
    fifo = tmp_path / "version-gate"
    os.mkfifo(fifo)
    fake = tmp_path / "slow_gemini.py"
    fake.write_text(
        "import os, sys\n"
        "if '--version' in sys.argv or '-v' in sys.argv:\n"
        f"    with open({str(fifo)!r}) as gate:\n"  # blocks until the test opens it for writing
        "        gate.read()\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'meta_orchestrator.actors.agents.demo', 'gemini',"
        " *sys.argv[1:]])\n"
    )
    cfg = _config(tmp_path, f"{sys.executable} {fake}")
    ws = tmp_path / "ws"
    args = ["Add a /health endpoint", "--target", str(_repository(tmp_path / "app")), "--workspace", str(ws)]
    proc = popen_orchestrate([*args, "--config", str(cfg), "--port", "0", "--exit-when-done"], demo_env)
    released = False
    try:
        lines = _lines(proc)
        seen: list[str] = []
        while not any(line.startswith("dashboard: ") for line in seen):
            line = lines.get(timeout=URL_DEADLINE_S)  # queue.Empty: no address while the probe blocks
            assert line is not None, "".join(seen)[-3000:]
            seen.append(line)
        url = next(line.split(" ", 1)[1].strip() for line in seen if line.startswith("dashboard: "))
        base, token = url.split("/?token=", 1) if "/?token=" in url else url.split("?token=", 1)
        # The probe cannot have returned: nobody has written its FIFO yet.
        assert _get(f"{base}/api/health")[1]["ok"] is True
        status, body = _get(f"{base}/api/session", token)
        assert status == 200 and body["session"] is None  # the page shows it starting
        (folder,) = ws.iterdir()
        assert not (folder / "launch.json").exists()  # written once the probes are taken
        with open(fifo, "w") as gate:
            gate.write("go\n")
        released = True
        out, err = proc.communicate(timeout=120)
    finally:
        if not released:
            with open(fifo, "w") as gate:  # let the probe end, so no process is left waiting
                gate.write("go\n")
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 0, "".join(seen) + err[-3000:]
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "completed" and state["agents_out"] in ({}, None)
    assert (folder / "launch.json").is_file()


@pytest.mark.session
def test_a_failing_probe_still_ends_the_launcher_with_the_preflight_error(tmp_path, demo_env):
    fake = tmp_path / "broken_cli.py"
    fake.write_text("import sys\nprint('Segmentation fault (core dumped)', file=sys.stderr)\nsys.exit(139)\n")
    cfg = tmp_path / "config.toml"  # every agent broken: none can run, the start ends as before
    cfg.write_text(
        "[sandbox]\nos = 'off'\n"
        + "".join(
            f"[agents.{name}]\ncommand = {json.dumps(f'{sys.executable} {fake}')}\n"
            for name in ("gemini", "codex", "claude")
        )
    )
    ws = tmp_path / "ws"
    args = ["Add a /health endpoint", "--target", str(_repository(tmp_path / "app")), "--workspace", str(ws)]
    proc = popen_orchestrate([*args, "--config", str(cfg), "--port", "0"], demo_env)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 2, err
    assert "orchestrate: none of the agent CLIs can run:" in err
    assert err.count("--version failed with exit 139: Segmentation fault (core dumped)") == 3, err
    assert "Install them" in err  # the conftest fixture checks nothing is left running
