"""A whole demo session watched and steered from the dashboard in a real browser.

The launcher runs as a user starts it; Playwright drives Debian's chromium; psutil checks
that what the page does really happens to the agent's process group.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import PROJECT_ROOT, kill_tree, wait_for
from tests.test_dashboard_browser import OUTPUT, browser_page  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


def _agent_process(launcher: subprocess.Popen, agent: str, assignment: str) -> psutil.Process | None:
    try:
        for proc in psutil.Process(launcher.pid).children(recursive=True):
            try:
                line = " ".join(proc.cmdline())
                if f"actors.demo {agent}" in line and f"Assignment: {assignment}" in line:
                    return proc
            except psutil.Error:
                continue
    except psutil.NoSuchProcess:
        pass
    return None


@pytest.fixture
def demo_session(tmp_path: Path, demo_env: dict[str, str]):
    env = {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.05", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "hang"}
    launcher = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "orchestrate"), "Add a /health endpoint", "--demo",
         "--workspace", str(tmp_path / "ws"), "--port", "0"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    url = None
    try:
        for line in launcher.stderr:  # type: ignore[union-attr]
            if line.startswith("dashboard: "):
                url = line.split(" ", 1)[1].strip()
                break
        assert url, "the launcher printed no dashboard address"
        yield launcher, url
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            try:
                launcher.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_tree(launcher)


def test_pause_and_resume_from_the_page_stop_and_continue_the_agent(demo_session, browser_page: Any):  # noqa: F811
    launcher, url = demo_session
    page = browser_page
    page.goto(url)
    card = page.locator('article.worker[data-agent="claude"]')
    status = card.locator(".w-status")
    status.filter(has_text="Running").wait_for(timeout=30_000)
    agent = wait_for(lambda: _agent_process(launcher, "claude", "implement"),
                     message="the implementer's process")
    page.locator('article.worker[data-agent="gemini"]').filter(has_text="docs/DESIGN.md").wait_for(
        timeout=10_000)  # events of the finished design step arrived live

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
    wait_for(lambda: not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE,
             message="the agent to be gone")
    assert not page.errors, page.errors
