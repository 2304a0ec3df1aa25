"""The dashboard in a real browser: Playwright drives Debian's chromium against a gateway
fed by the test (snapshots, events, resource samples), with a probe as the coordinator.

The full demo-session browser test (real workers, SIGSTOP seen with psutil) lives beside the
wiring function; this one checks the page itself.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.messages.resources import MachineSample, ResourcesSampled, TreeSample
from meta_orchestrator.messages.review import (
    Finding,
    ReviewAnswer,
    ReviewCompleted,
    ReviewDecision,
    ReviewTrigger,
)
from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, SessionStateChanged
from meta_orchestrator.messages.worker import EventsRecorded, WorkerStateChanged
from tests.conftest import ProbeHandle, wait_for
from tests.webui.test_gateway import event, session_snapshot, start_gateway, worker_snapshot


def expect(locator: Any) -> Any:
    """Playwright's assertion that polls its locator until it holds (5 s deadline)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


def _chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def browser_page() -> Iterator[Any]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.errors = errors  # type: ignore[attr-defined]
        try:
            yield page
        finally:
            context.close()
            browser.close()


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


def _feed(ref: pykka.ActorRef[Any], session_dir: Path) -> None:
    """A plausible mid-session state."""
    design_review = ReviewCompleted(
        review_id="r1",
        author="gemini",
        triggers=(ReviewTrigger.model_validate({"kind": "milestone"}),),
        answers=(
            ReviewAnswer(agent="codex", verdict="approve", summary="The design is sound."),
            ReviewAnswer(agent="claude", verdict="approve"),
        ),
        decision=ReviewDecision(decision="CONTINUE", reasoning="Both reviewers approved the design."),
    )
    code_review = ReviewCompleted(
        review_id="r2",
        author="claude",
        triggers=(ReviewTrigger.model_validate({"kind": "milestone"}),),
        answers=(
            ReviewAnswer(
                agent="codex",
                verdict="concern",
                summary="Misses the database check.",
                findings=(
                    Finding(
                        severity="medium", file="app/health.py", line=12, text="No check of the database connection"
                    ),
                ),
            ),
            ReviewAnswer(agent="gemini", verdict="approve"),
        ),
        decision=ReviewDecision(
            decision="LOG_WARNING",
            reasoning="codex raised one concern: the endpoint "
            "does not check the database connection; logged, work continues.",
        ),
    )
    decisions = [design_review.record(), code_review.record()]
    questions = [
        {
            "id": "q1",
            "kind": "confirmation",
            "asked_by": "sandbox",
            "agent": "claude",
            "text": "claude wants to run `rm -rf build/` in the target. Allow it?",
            "subject": {
                "type": "sandbox_call",
                "tool": "Bash",
                "tool_input": {"command": "rm -rf build/"},
                "cwd": "/home/dev/billing",
            },
            "asked_at": "2025-01-01T10:06:30Z",
        },
        {
            "id": "q2",
            "kind": "clarification",
            "asked_by": "coordinator",
            "agent": "gemini",
            "text": "Should /health report the version string?",
            "asked_at": "2025-01-01T10:06:40Z",
            "options": ["yes", "no"],
        },
    ]
    ref.tell(SessionStateChanged(snapshot=session_snapshot(decisions=decisions, questions=questions)))
    ref.tell(
        WorkerStateChanged(
            snapshot=worker_snapshot(
                "gemini",
                "exited",
                last_activity="Plan ready: 3 assignments",
                last_progress=100,
                assignment_id="design",
                events_recorded=41,
            )
        )
    )
    ref.tell(
        WorkerStateChanged(
            snapshot=worker_snapshot(
                "claude", "running", last_progress=45, last_activity="Edit app/health.py", events_recorded=128
            )
        )
    )
    ref.tell(
        WorkerStateChanged(
            snapshot=worker_snapshot(
                "codex", "idle", pid=None, assignment_id=None, last_activity=None, last_progress=None, events_recorded=9
            )
        )
    )
    lines = [
        ("gemini", "status", "Reading the repository layout"),
        ("gemini", "milestone", "Plan ready"),
        ("claude", "task", "Implement /health"),
        ("claude", "progress", "Writing the handler"),
        ("codex", "review", "Reviewing the design"),
        ("claude", "finding", "app/main.py has no router"),
        ("claude", "error", "pytest: 1 failed (test_health_status)"),
        ("claude", "status", "Fixing the test"),
    ]
    seqs = {"gemini": 0, "codex": 0, "claude": 0}
    for n in range(60):
        agent, kind, text = lines[n % len(lines)]
        seqs[agent] += 1
        ref.tell(
            EventsRecorded(
                events=(
                    event(
                        agent,
                        seqs[agent],
                        f"{text} ({n})",
                        kind,
                        at=n * 2,
                        progress=min(100, n * 2) if kind == "progress" else None,
                    ),
                )
            )
        )
    for i in range(40):
        trees = []
        for agent, base in (("gemini", 3), ("codex", 8), ("claude", 35)):
            wave = (i * 7 + len(agent) * 5) % 23
            trees.append(
                TreeSample(
                    agent=agent,
                    pid=4242,
                    status="running",
                    processes=3,
                    cpu_percent=base + wave,
                    rss_bytes=(120 + base * 4 + wave) * 2**20,
                )
            )
        ref.tell(
            ResourcesSampled(
                taken_at=1e9 + i,
                agents=tuple(trees),
                machine=MachineSample(
                    cpu_percent=20, cpu_count=8, memory_available_bytes=8 * 2**30, memory_total_bytes=16 * 2**30
                ),
            )
        )


def test_dashboard_shows_the_session_live_and_sends_controls(
    browser_page: Any, tmp_path: Path, probe: ProbeHandle
) -> None:
    page = browser_page
    ref, address = start_gateway(tmp_path, probe.ref)
    _feed(ref, tmp_path)

    page.goto(address.url)
    claude = page.locator('.worker[data-agent="claude"]')
    _shows_the_fed_state(page, claude)
    _follows_live_events(page, ref)
    OUTPUT.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
    _sends_controls_and_answers(page, probe, claude)

    # A worker paused by the coordinator shows it in colour and text.
    ref.tell(WorkerStateChanged(snapshot=worker_snapshot("claude", "paused", last_progress=45)))
    claude.locator(".w-status", has_text="Paused").wait_for(timeout=5_000)
    expect(claude.locator(".w-status")).to_have_class(re.compile(r"\bstatus-paused\b"))

    _shows_each_parallel_run(page, ref)
    _says_when_the_connection_drops_and_returns(page, ref, address.port, tmp_path, probe)
    # The only console errors allowed: the reconnects that found the gateway stopped on purpose.
    unexpected = [e for e in page.errors if "ERR_CONNECTION_REFUSED" not in e]  # type: ignore[attr-defined]
    assert not unexpected, unexpected


def _shows_each_parallel_run(page: Any, ref: Any) -> None:
    """claude's second run at once ([agents.claude] max_parallel) has a card of its own, with
    its own status, assignment and activity (its events say slot 2); its buttons act on claude."""
    second = worker_snapshot("claude", "running", slot=2, assignment_id="impl2", last_activity=None)
    ref.tell(WorkerStateChanged(snapshot=second))
    own = event("claude", 1, "Edit app/part2.py").model_copy(update={"slot": 2})
    ref.tell(EventsRecorded(events=(own,)))
    card = page.locator('.worker[data-agent="claude#2"]')
    card.locator(".w-status", has_text="Running").wait_for(timeout=5_000)
    expect(card.locator("h3")).to_have_text("claude#2")
    expect(card.locator(".ids")).to_contain_text("impl2")
    expect(card.locator(".activity")).to_contain_text("Edit app/part2.py")
    expect(page.locator(".worker")).to_have_count(4)
    expect(page.locator('.worker[data-agent="claude"] .w-status')).to_have_text("Paused")  # the first, as it was
    expect(card.locator('[data-action="pause"]')).to_have_attribute("data-agent", "claude")


def _chart_xs(card: Any) -> list[float]:
    points = card.locator(".spark-cpu svg polyline").get_attribute("points") or ""
    return [float(point.split(",")[0]) for point in points.split()]


def _shows_the_fed_state(page: Any, claude: Any) -> None:
    claude.locator(".w-status", has_text="Running").wait_for(timeout=10_000)
    # Each panel draws on its own frame: wait for each (Playwright's expect polls, with a deadline).
    expect(page.locator(".worker")).to_have_count(3)
    expect(page.locator('.worker[data-agent="gemini"] .w-status')).to_have_text("Exited")
    expect(claude.locator(".activity")).to_contain_text("Edit app/health.py")
    expect(claude.locator(".p-value")).to_have_text("45%")
    expect(claude.locator(".s-value")).to_have_text("42%")
    expect(claude.locator(".share-note")).to_contain_text("on target")
    claude.locator(".spark-cpu svg polyline").wait_for(timeout=5_000)
    # The chart places each sample at its time: 40 samples a second apart fill the right part of
    # its 90 s (from 51 s in), each held until the next (a step: two points per sample but the first).
    xs = wait_for(
        lambda: len(found := _chart_xs(claude)) == 2 * 40 - 1 and found, timeout=5, message="all 40 samples drawn"
    )
    assert xs[0] == pytest.approx(51 / 90 * 100, abs=0.01) and xs[-1] == 100 and xs == sorted(xs), xs
    expect(page.locator("#session-status")).to_have_text("Running")
    expect(page.locator("#decision")).to_contain_text("LOG WARNING")
    page.locator("#reviews .review", has_text="r2").wait_for(timeout=5_000)
    reviews = page.locator("#reviews").inner_text()
    assert "No check of the database connection" in reviews and "Concern" in reviews
    expect(page.locator("#inbox .question")).to_have_count(2)


def _follows_live_events(page: Any, ref: Any) -> None:
    # Events arrive live; the log is windowed, not one DOM row per event.
    ref.tell(EventsRecorded(events=(event("codex", 500, "a fresh event from codex", "milestone", at=500),)))
    page.locator("#log .row", has_text="a fresh event from codex").wait_for(timeout=5_000)
    assert page.locator("#log .row").count() < 60
    page.select_option("#filter-agent", "codex")
    # The page redraws the log after the change event: wait for it, with a deadline.
    wait_for(
        lambda: set(page.locator("#log .row .ag").all_inner_texts()) == {"codex"}, timeout=5, message="only codex rows"
    )
    page.select_option("#filter-agent", "")
    page.locator("#log .row", has_text="a fresh event from codex").click()
    expect(page.locator("#detail-body")).to_contain_text("Raw line")

    # Thousands of events: the page keeps up and the DOM holds only the visible window.
    for i in range(1, 3001):
        ref.tell(EventsRecorded(events=(event("gemini", 1000 + i, f"bulk event {i}", at=600 + i),)))
        if i % 500 == 0:  # in bursts the page can follow (a faster flood gets a snapshot)
            page.locator("#log .row", has_text=f"bulk event {i}").wait_for(timeout=15_000)
    assert page.locator("#log .row").count() < 80
    expect(page.locator("#event-count")).to_have_text("3,061")
    expect(page.locator("#log-count")).to_contain_text("3,061 events")  # none lost by a resync


def _sends_controls_and_answers(page: Any, probe: ProbeHandle, claude: Any) -> None:
    # A control click reaches the coordinator.
    claude.locator('button[data-action="pause"]').click()
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent, told.source) == ("pause", "claude", "dashboard")
    page.locator('#session-controls button[data-action="review"]').click()
    told = probe.expect(ControlRequested)
    assert (told.action, told.agent) == ("review", None)

    # Approving the confirmation in the inbox sends AnswerGiven(approve=True).
    page.locator('.question[data-id="q1"] button[data-answer="approve"]').click()
    told = probe.expect(AnswerGiven)
    assert (told.question_id, told.approve) == ("q1", True)
    page.locator('.question[data-id="q2"] textarea').fill("Yes, include the version")
    page.locator('.question[data-id="q2"] button[data-answer="send"]').click()
    told = probe.expect(AnswerGiven)
    assert (told.question_id, told.answer, told.approve) == ("q2", "Yes, include the version", None)


def _says_when_the_connection_drops_and_returns(
    page: Any, ref: Any, port: int, tmp_path: Path, probe: ProbeHandle
) -> None:
    # The connection drops: a clear banner; the gateway comes back: it says so.
    ref.stop(timeout=10)
    page.locator('#banner[data-kind="lost"]').wait_for(timeout=10_000)
    expect(page.locator("#banner")).to_contain_text("lost", ignore_case=True)
    expect(page.locator("#conn-text")).to_have_text("Disconnected")
    page.screenshot(path=str(OUTPUT / "dashboard-disconnected.png"))
    from meta_orchestrator.webui.gateway import Gateway
    from meta_orchestrator.config.settings import WebSettings
    from tests.webui.test_gateway import TOKEN

    back = Gateway.start(WebSettings(port=port), tmp_path, TOKEN, probe.ref)
    back.tell(SessionStateChanged(snapshot=session_snapshot(status="completed", ended_at="2025-01-01T10:20:00Z")))
    page.locator('#banner[data-kind="back"], #banner[data-kind="ended"]').wait_for(timeout=15_000)
    page.locator("#session-status", has_text="Completed").wait_for(timeout=10_000)
    wait_for(lambda: page.locator("#conn-text").inner_text() == "Live", timeout=10, message="live again")


def test_open_questions_show_in_the_tab_title(browser_page: Any, tmp_path: Path, probe: ProbeHandle) -> None:
    page = browser_page
    ref, address = start_gateway(tmp_path, probe.ref)

    def ask(*statuses: str) -> None:
        questions = [
            {"id": f"q{n}", "kind": "clarification", "text": f"Question {n}?", "asked_by": "coordinator", "status": s}
            for n, s in enumerate(statuses, 1)
        ]
        ref.tell(SessionStateChanged(snapshot=session_snapshot(questions=questions)))

    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    page.goto(address.url)
    page.locator("#session-status", has_text="Running").wait_for(timeout=10_000)
    assert not page.title().startswith("(")
    ask("open", "open")
    wait_for(lambda: page.title().startswith("(2) needs you · Running"), message="two waiting", timeout=5)
    expect(page.locator("#inbox .question")).to_have_count(2)
    expect(page.locator("#inbox-count")).to_have_text("2")
    ask("answered", "open")
    wait_for(lambda: page.title().startswith("(1) needs you"), message="one waiting", timeout=5)
    ask("answered", "expired")
    wait_for(lambda: "needs you" not in page.title(), message="none waiting", timeout=5)
    expect(page.locator("#inbox .empty")).to_have_text("Nothing waits on you.")
    assert not page.errors, page.errors  # type: ignore[attr-defined]
