"""The Changes panel in a real browser: Debian's chromium against a gateway told what the
Workspace actor tells after each merge (``ChangesUpdated`` from a real session branch in a
real repository). The panel lists the files per file and per assignment with their counts,
shows a file's diff on click or from the keyboard, as text (a line of markup stays text), and
follows each new merge; a late joiner gets the latest from its snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.messages.session import SessionStateChanged
from meta_orchestrator.messages.workspace import ChangesUpdated, WorkspaceNotOpened
from tests.webui.test_dashboard_browser import OUTPUT, browser_page, expect  # noqa: F401 - the fixture
from tests.webui.test_gateway import session_snapshot, start_gateway
from tests.webui.test_gateway_changes import HOSTILE, SESSION_ID, branch, design_merged, implement_merged  # noqa: F401

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


def _file_rows(page: Any) -> list[str]:
    """Each listed file as the user reads it: status, path, counts."""
    return [" ".join(t.split()) for t in page.locator("#changes .change-file").all_inner_texts()]


def test_the_changes_panel_shows_each_merge_as_text(
    browser_page: Any,  # noqa: F811
    tmp_path: Path,
    branch: Any,  # noqa: F811
) -> None:
    page = browser_page
    ref, address = start_gateway(tmp_path)
    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    page.goto(address.url)
    panel = page.locator("#changes-card")
    page.locator("#session-status", has_text="Running").wait_for(timeout=10_000)
    expect(panel.locator("#changes")).to_have_text("No changes merged yet.")
    expect(panel.locator("#changes-modes")).to_be_hidden()

    # The architect's work is merged: one file, and its diff holds a line of markup.
    ref.tell(ChangesUpdated(changes=design_merged(branch)))
    panel.locator(".change-file", has_text="docs/DESIGN.md").wait_for(timeout=10_000)
    assert _file_rows(page) == ["ADDED docs/DESIGN.md +3 -0"]
    summary = " ".join(panel.locator("#changes-summary").inner_text().split())
    assert f"orchestrate/{SESSION_ID}" in summary and "1 file +3 -0" in summary
    assert "in the session's store until orchestrate apply" in summary  # not in the user's repository yet
    assert "Choose a file" in panel.locator("#changes-diff").inner_text()
    panel.locator(".change-file", has_text="docs/DESIGN.md").click()
    hostile = panel.locator("pre.diff .dl.add", has_text="onerror")
    hostile.wait_for(timeout=5_000)
    assert hostile.inner_text() == f"+{HOSTILE}"  # shown as the text it is
    assert page.locator("#changes img").count() == 0 and page.locator("img").count() == 0
    assert page.title() != "pwned"
    assert panel.locator(".change-file").get_attribute("aria-pressed") == "true"

    # The implementer's merge arrives: the list follows, the file shown stays shown.
    ref.tell(ChangesUpdated(changes=implement_merged(branch)))
    panel.locator(".change-file", has_text="health.py").wait_for(timeout=10_000)
    assert sorted(_file_rows(page)) == [
        "ADDED docs/DESIGN.md +3 -0",
        "ADDED health.py +2 -0",
        "MODIFIED README.md +1 -1",
    ]
    assert "3 files +6 -1" in " ".join(panel.locator("#changes-summary").inner_text().split())
    assert panel.locator("pre.diff .dl.add", has_text="onerror").inner_text() == f"+{HOSTILE}"
    OUTPUT.mkdir(exist_ok=True)
    panel.screenshot(path=str(OUTPUT / "dashboard-changes.png"))

    _by_assignment_from_the_keyboard(page, panel)

    # A page opened now gets the latest changes in its snapshot.
    page.reload()
    panel.locator(".change-file", has_text="health.py").wait_for(timeout=10_000)
    assert len(_file_rows(page)) == 3

    _a_file_named_as_markup_and_a_diff_past_the_cap(page, panel, ref, branch)
    assert not page.errors, page.errors  # type: ignore[attr-defined]


def _a_file_named_as_markup_and_a_diff_past_the_cap(page: Any, panel: Any, ref: Any, branch: Any) -> None:  # noqa: F811
    """A merge of an assignment the plan does not know: a path that looks like markup, and a
    file whose diff is past the per-file cap."""
    marked = "notes/<b>bold</b>.txt"
    changes = branch.merge(
        "fix", "codex", {marked: "a note\n", "data/big.txt": "a line of thirty characters..\n" * 3000}
    )
    big = next(d for d in changes.diffs if d.path == "data/big.txt")
    assert big.truncated  # the Workspace's cap, not the page's
    ref.tell(ChangesUpdated(changes=changes))
    panel.locator(".change-file", has_text="big.txt").wait_for(timeout=10_000)
    assert "ADDED notes/<b>bold</b>.txt +1 -0" in _file_rows(page)
    assert "ADDED data/big.txt +3000 -0" in _file_rows(page)
    panel.locator(".change-file", has_text="bold").click()
    expect(panel.locator(".diff-head .path")).to_have_text(marked)  # drawn after the click: wait for it
    assert panel.locator(".change-file .path *, .diff-head .path *").count() == 0  # no element made of the path
    expect(panel.locator("pre.diff .dl.add")).to_have_text(["+a note"])
    panel.locator(".change-file", has_text="big.txt").focus()
    page.keyboard.press("Enter")
    cut = panel.locator(".changes-diff .cut")
    cut.wait_for(timeout=5_000)
    whole = f"git --git-dir {changes.store} diff {changes.base[:10]} orchestrate/{SESSION_ID} -- data/big.txt"
    assert changes.store and whole in cut.inner_text()  # plain git reads the branch in the store
    assert panel.locator("pre.diff .dl.add").count() < 3000
    assert "some diffs cut" in panel.locator("#changes-summary").inner_text()
    panel.locator("#changes-by-assignment").click()
    panel.locator(".change-group").first.wait_for(timeout=5_000)  # drawn after the click
    heads = [" ".join(t.split()) for t in panel.locator(".change-group .g-head").all_inner_texts()]
    assert heads[0] == "fix 2 files +3001 -0"  # not in the plan: no agent, no title


def _by_assignment_from_the_keyboard(page: Any, panel: Any) -> None:
    """Group by assignment, walk the files and open one, with the keyboard only."""
    panel.locator("#changes-by-assignment").focus()
    page.keyboard.press("Enter")
    groups = panel.locator(".change-group")
    groups.first.wait_for(timeout=5_000)
    assert panel.locator("#changes-by-assignment").get_attribute("aria-pressed") == "true"
    heads = [" ".join(t.split()) for t in panel.locator(".change-group .g-head").all_inner_texts()]
    assert heads == [  # the latest merge first, with its agent and title from the plan
        "claude implement Implement /health 2 files +3 -1",
        "gemini design Design the endpoint 1 file +3 -0",
    ]
    page.keyboard.press("Tab")  # from the mode button into the first group's files
    focused = page.evaluate("document.activeElement.dataset.path")
    page.keyboard.press("ArrowDown")
    moved = page.evaluate("document.activeElement.dataset.path")
    assert {focused, moved} == {"README.md", "health.py"}
    readme = "README.md"
    if moved != readme:
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    panel.locator(".diff-head", has_text=readme).wait_for(timeout=5_000)
    assert panel.locator("pre.diff .dl.del").all_inner_texts() == ["-old line"]
    assert panel.locator("pre.diff .dl.add").all_inner_texts() == ["+new line"]
    assert page.evaluate("document.activeElement.dataset.path") == readme  # focus stays on the list
    panel.screenshot(path=str(OUTPUT / "dashboard-changes-by-assignment.png"))


def test_a_session_without_a_branch_says_the_agents_work_in_place(browser_page: Any, tmp_path: Path) -> None:  # noqa: F811
    page = browser_page
    ref, address = start_gateway(tmp_path)
    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    ref.tell(WorkspaceNotOpened(reason=f"IN PLACE: the agents write straight into {tmp_path}"))
    page.goto(address.url)
    page.locator("#changes .empty", has_text="In place").wait_for(timeout=10_000)
    text = page.locator("#changes").inner_text()
    assert text.startswith("In place: the agents write straight into the target") and "IN PLACE" in text
    assert page.locator("#changes .change-file").count() == 0
    assert not page.errors, page.errors  # type: ignore[attr-defined]
