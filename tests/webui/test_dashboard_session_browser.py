"""A whole demo session watched and steered from the dashboard in a real browser.

The launcher runs as a user starts it; Playwright drives Debian's chromium; psutil checks
that what the page does really happens to the agent's process group.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from meta_orchestrator.messages.frames import FRAME, STATE_FRAMES
from tests.conftest import kill_tree, start_orchestrate, wait_for
from tests.webui.test_dashboard_browser import OUTPUT, browser_page  # noqa: F401 - the fixture

pytestmark = [pytest.mark.session, pytest.mark.browser]


def _agent_process(launcher: subprocess.Popen, agent: str, assignment: str) -> psutil.Process | None:
    try:
        for proc in psutil.Process(launcher.pid).children(recursive=True):
            try:
                line = " ".join(proc.cmdline())
                # The prompt is on stdin, never on the command line: the run's folder says which.
                folder = proc.environ().get("ORCHESTRATE_WORKDIR", "") if f"actors.agents.demo {agent}" in line else ""
                if folder.rstrip("/").endswith(f"/checkouts/{assignment}"):
                    return proc
            except psutil.Error:
                continue
    except psutil.NoSuchProcess:
        pass
    return None


def _start_launcher(tmp_path: Path, env: dict[str, str], more: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    args = ["Add a /health endpoint", "--demo", "--workspace", str(tmp_path / "ws"), "--port", "0", *more]
    return start_orchestrate(args, env, "dashboard: ")


def _record_frames(page: Any) -> list[str]:
    """Every message the page's WebSockets receive, as sent."""
    frames: list[str] = []

    def on_socket(ws: Any) -> None:
        ws.on("framereceived", lambda payload: frames.append(payload if isinstance(payload, str) else payload.decode()))

    page.on("websocket", on_socket)
    return frames


def _assert_contract(frames: list[str]) -> set[str]:
    """Each received message validates against the wire contract; the frame types seen."""
    assert frames, "the page received nothing"
    kinds: set[str] = set()
    for text in frames:
        frame = FRAME.validate_json(text)
        for one in frame.data if frame.type == "batch" else (frame,):
            kinds.add(one.type)
    return kinds


def _end_launcher(launcher: subprocess.Popen) -> None:
    if launcher.poll() is None:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(launcher)


@pytest.fixture
def demo_session(tmp_path: Path, demo_env: dict[str, str]):
    env = {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.05", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"}
    launcher, url = _start_launcher(tmp_path, env)
    try:
        yield launcher, url
    finally:
        _end_launcher(launcher)


def test_pause_and_resume_from_the_page_stop_and_continue_the_agent(demo_session, browser_page: Any):  # noqa: F811
    launcher, url = demo_session
    page = browser_page
    frames = _record_frames(page)
    page.goto(url)
    card = page.locator('article.worker[data-agent="claude"]')
    status = card.locator(".w-status")
    status.filter(has_text="Running").wait_for(timeout=30_000)
    agent = wait_for(lambda: _agent_process(launcher, "claude", "implement"), message="the implementer's process")
    page.locator('article.worker[data-agent="gemini"]').filter(has_text="docs/DESIGN.md").wait_for(
        timeout=10_000
    )  # events of the finished design step arrived live

    card.locator('[data-action="pause"]').click()
    wait_for(lambda: agent.status() == psutil.STATUS_STOPPED, message="SIGSTOP on the agent")
    status.filter(has_text="Paused").wait_for(timeout=10_000)
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "dashboard-session.png"), full_page=True)

    card.locator('[data-action="resume"]').click()
    wait_for(lambda: agent.status() != psutil.STATUS_STOPPED, message="SIGCONT on the agent")
    status.filter(has_text="Running").wait_for(timeout=10_000)

    stop = page.locator('#session-controls [data-action="stop"]')
    stop.click()
    stop.click()  # the page asks for a second click before stopping the session
    page.locator("#session-status").filter(has_text="Stopped").wait_for(timeout=30_000)
    wait_for(lambda: not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE, message="the agent to be gone")
    assert not page.errors, page.errors
    kinds = _assert_contract(frames)
    # snapshot, event, worker, session_delta (changes come with a merge, session_ended with the
    # end; the whole session came in the snapshot, and goes again only every WHOLE_EVERY changes)
    assert set(STATE_FRAMES) - {"session_ended", "changes", "session"} <= kinds, kinds
    assert "resources" in kinds, kinds


def test_a_confirmation_approved_in_the_inbox_lets_the_agent_go_on(tmp_path: Path, demo_env, browser_page: Any):  # noqa: F811
    # claude is refused a write outside the target; Recovery asks before granting the folder.
    env = {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.02", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "permission_error"}
    launcher, url = _start_launcher(tmp_path, env)
    try:
        page = browser_page
        frames = _record_frames(page)
        page.goto(url)
        question = page.locator('#inbox .question[data-kind="confirmation"]')
        question.wait_for(timeout=60_000)
        assert "refused access" in question.inner_text()
        wait_for(lambda: page.title().startswith("(1) needs you"), message="the title to say so", timeout=5)
        question.locator('[data-answer="approve"]').click()
        page.locator("#session-status").filter(has_text="Completed").wait_for(timeout=60_000)
        state = json.loads(next((tmp_path / "ws").glob("*/state.json")).read_text())
        grant = next(q for q in state["questions"] if q["id"].startswith("grant-"))
        assert grant["status"] == "answered" and grant["approve"] is True
        implement = next(a for a in state["assignments"] if a["id"] == "implement")
        outside = Path(implement["workdir"] + "-outside")  # beside its checkout
        assert (outside / "NOTES.md").is_file()  # the agent went on and did the refused write
        assert "needs you" not in page.title()
        assert not page.errors, page.errors
        _assert_contract(frames)
    finally:
        _end_launcher(launcher)
