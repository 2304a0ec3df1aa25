"""`orchestrate serve` in a real browser: the session list, and a finished demo session replayed
into the dashboard's page, compared with what the same page showed live."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT, kill_tree, start_orchestrate, wait_for
from tests.webui.test_dashboard_browser import OUTPUT, browser_page  # noqa: F401 - the fixture, used by name

pytestmark = [pytest.mark.session, pytest.mark.browser]

# What a person reads off the page, and the state behind it (times excluded: they tick).
VIEW = """() => {
  const s = window.orchestrator.state;
  const text = (id) => document.getElementById(id).innerText.trim();
  return {
    status: text("session-status"), assignments: text("assignment-count"), events: text("event-count"),
    task: text("task"), plan: text("plan"), decision: text("decision"), reviews: text("reviews"),
    session_status: s.session && s.session.status,
    assignment_states: s.session ? s.session.assignments.map((a) => [a.id, a.agent, a.status]) : [],
    decisions: s.session ? s.session.decisions.length : 0,
    workers: Object.values(s.workers).map((w) => [w.agent, w.status]).sort(),
    ended: s.ended && [s.ended.status, s.ended.exit_code],
    events_seen: s.eventsSeen,
    last_events: s.events.slice(-5).map((e) => [e.agent, e.seq, e.type]),
    // Samples go on after the end, while the dashboard stays open: count those taken before it.
    facts: Object.fromEntries(Object.entries(s.facts).map(([k, v]) => [k, k !== "resources" ? v.length
      : v.filter((f) => !s.ended || Date.parse(f.taken_at) <= Date.parse(s.ended.at)).length]).sort()),
  };
}"""


def _interrupt(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(proc)


def _recorded_events(workspace: Path) -> int:
    """The events the session's agents recorded: one whole line each in ``<session>/<agent>.jsonl``
    and, for the peer reviews, ``<session>/reviews/<id>/<agent>.jsonl``."""
    session = next(workspace.glob("*/state.json")).parent  # not a walk: temp files come and go in it
    listed = [*session.glob("*.jsonl"), *session.glob("reviews/*/*.jsonl")]
    files = [p for p in listed if p.stem in ("claude", "codex", "gemini")]
    return sum(p.read_bytes().count(b"\n") for p in files)


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ws"


def test_a_replayed_session_shows_what_it_showed_live(browser_page: Any, workspace: Path, demo_env: dict):  # noqa: F811
    page = browser_page
    env = {**demo_env, "ORCHESTRATE_DEMO_PACE": "0.05"}
    launcher, url = start_orchestrate(
        ["Add a /health endpoint", "--demo", "--workspace", str(workspace), "--port", "0"], env, "dashboard: "
    )
    server = None
    try:
        page.goto(url)
        page.wait_for_function("() => window.orchestrator.state.ended !== null", timeout=60_000)
        # The launcher writes the last lines as it ends the session: let the page settle on them.
        wait_for(
            lambda: json.loads(next(workspace.glob("*/state.json")).read_text())["status"] == "completed",
            timeout=30,
            message="state.json completed",
        )
        # Events recorded just before the end reach the page after it: wait for every one.
        wait_for(
            lambda: page.evaluate("() => window.orchestrator.state.eventsSeen") == _recorded_events(workspace),
            timeout=30,
            message="the live page to show every recorded event",
        )
        live = page.evaluate(VIEW)
        _interrupt(launcher)
        assert live["ended"] == ["completed", 0] and live["events_seen"] > 20

        server, serve_url = start_orchestrate(
            ["serve", "--workspace", str(workspace), "--port", "0"], env, "sessions: "
        )
        page.goto(serve_url)
        page.errors.clear()  # type: ignore[attr-defined] - the live page's reconnects to the ended dashboard
        row = page.locator("tr.session-row")
        row.first.wait_for(timeout=15_000)
        assert row.count() == 1 and "Completed" in row.first.inner_text()
        assert "?token=" not in page.url  # kept in sessionStorage, gone from the address bar
        row.first.click()
        page.wait_for_function(
            "() => window.orchestratorReplay && window.orchestratorReplay.end > 0 "
            "&& window.orchestrator.state.ended !== null",
            timeout=15_000,
        )
        opened = page.evaluate(VIEW)
        assert opened == live, "opened at its end, the page differs from the live one"
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "serve-replay.png"), full_page=False)
        assert page.locator("#session-controls [data-action='stop']").is_hidden()  # read-only

        # Back to the start, then play at 50x to the end: the same final page.
        page.click("#replay-start")
        page.wait_for_function(
            "() => !window.orchestrator.state.session || window.orchestrator.state.session.status === 'planning'",
            timeout=10_000,
        )
        page.select_option("#replay-speed", "50")
        page.click("#replay-play")
        page.wait_for_function(
            "() => window.orchestrator.state.ended !== null && !window.orchestratorReplay.playing", timeout=60_000
        )
        assert page.evaluate(VIEW) == live, "replayed to the end, the page differs from the live one"

        # Jump to the first decision: the page shows that decision as the latest.
        marks = page.locator("#replay-marks option[data-kind='decision']")
        assert marks.count() >= 2
        first_mark = marks.first.get_attribute("value")
        page.select_option("#replay-marks", first_mark)
        page.wait_for_function(
            "() => (window.orchestrator.state.session || {decisions: []}).decisions.length === 1", timeout=10_000
        )
        assert page.evaluate("() => window.orchestrator.state.ended") is None
        assert not page.errors, page.errors  # type: ignore[attr-defined]

        # A session started while serve runs appears in the list.
        page.goto(serve_url.split("/?")[0] + "/")
        second = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "orchestrate"),
                "Add a /version endpoint",
                "--demo",
                "--no-dashboard",
                "--workspace",
                str(workspace),
            ],
            env={**demo_env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert second.returncode == 0, second.stderr[-2000:]
        page.wait_for_function("() => document.querySelectorAll('tr.session-row').length === 2", timeout=10_000)
        assert "Add a /version endpoint" in page.locator("tr.session-row").first.inner_text()  # newest first
        page.screenshot(path=str(OUTPUT / "serve-sessions.png"))
    finally:
        _interrupt(launcher)
        if server is not None:
            _interrupt(server)
