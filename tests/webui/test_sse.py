"""The dashboard's SSE stream, read with curl -N as a script would, across a reconnect."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from meta_orchestrator.messages.frames import FRAME
from tests.conftest import kill_tree, start_orchestrate

pytestmark = pytest.mark.session  # every test here starts a whole session


def _curl() -> str:
    found = shutil.which("curl")
    if found is None:
        pytest.fail("curl is needed for the SSE test (Debian package curl; .ci/run installs it)")
    return found


def _launch(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    args = ["Add a /health endpoint", "--demo", "--workspace", str(tmp_path / "ws"), "--port", "0", "--exit-when-done"]
    return start_orchestrate(args, env, "dashboard: ")


def _messages(proc: subprocess.Popen, stop_after: int | None = None) -> list[dict]:
    """SSE messages as {"id": int | None, "frame": dict}, until the stream ends (or enough)."""
    found: list[dict] = []
    current: dict = {"id": None}
    for line in proc.stdout:  # type: ignore[union-attr]
        line = line.rstrip("\n")
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("data: "):
            current["frame"] = json.loads(line[6:])
        elif line == "" and "frame" in current:
            found.append(current)
            current = {"id": None}
            if stop_after is not None and sum(1 for m in found if m["id"] is not None) >= stop_after:
                break
    return found


def test_curl_reads_every_frame_with_ids_and_a_reconnect_loses_none(tmp_path: Path, demo_env: dict[str, str]):
    curl = _curl()
    launcher, url = _launch(tmp_path, {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.1"})
    base, token = url.split("/?token=")
    readers: list[subprocess.Popen] = []
    try:
        first = subprocess.Popen(
            [curl, "-sN", f"{base}/api/stream?token={token}"], stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        readers.append(first)
        before = _messages(first, stop_after=15)
        kill_tree(first)  # the reader goes away mid-session
        last = [m["id"] for m in before if m["id"] is not None][-1]
        second = subprocess.Popen(
            [curl, "-sN", "-H", f"Last-Event-ID: {last}", f"{base}/api/stream?token={token}"],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        readers.append(second)
        after = _messages(second)  # ends when the session ends and the dashboard closes
        second.wait(timeout=60)
        assert launcher.wait(timeout=60) == 0
    finally:
        for proc in (*readers, launcher):
            if proc.poll() is None:
                kill_tree(proc)

    for message in before + after:
        FRAME.validate_python(message["frame"])  # the same contract as the WebSocket's frames
    assert before[0]["frame"]["type"] == "snapshot" and before[0]["id"] == before[0]["frame"]["seq"]
    hello = after[0]["frame"]
    assert hello["type"] == "hello" and hello["data"]["since"] == last and after[0]["id"] is None
    ids = [m["id"] for m in before + after if m["id"] is not None]
    assert ids == list(range(ids[0], ids[-1] + 1)), "a frame was lost or repeated across the reconnect"
    assert all(m["id"] == m["frame"]["seq"] for m in before + after if m["id"] is not None)
    kinds = [m["frame"]["type"] for m in after]
    assert "event" in kinds and "session_ended" in kinds  # resource samples may follow the end


def test_bad_requests_to_the_stream_are_plain_errors(tmp_path: Path, demo_env: dict[str, str]):
    curl = _curl()
    launcher, url = _launch(tmp_path, {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"})
    base, token = url.split("/?token=")

    def status(*args: str) -> tuple[str, str]:
        done = subprocess.run(
            [curl, "-s", "--max-time", "5", "-w", "\n%{http_code}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        body, _, code = done.stdout.rpartition("\n")
        return code, body

    try:
        assert status(f"{base}/api/stream")[0] == "401"
        assert status(f"{base}/api/stream?token=wrong")[0] == "401"
        code, body = status(f"{base}/api/stream?token={token}&since=" + "9" * 5000)
        assert code == "400" and "whole number" in body
        assert status("-H", "Last-Event-ID: x1", f"{base}/api/stream?token={token}")[0] == "400"
        # Another local page's EventSource carries its own Origin: refused even with the token.
        assert status("-H", "Origin: http://127.0.0.1:1", f"{base}/api/stream?token={token}")[0] == "403"
    finally:
        kill_tree(launcher)
