"""The ``changes`` frame: a real session branch's change (real git, real merges) through the
wire contract, the gateway (live browsers, late joiners, ``/api/changes``, SSE) and the replay
of a recorded history."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from pydantic import ValidationError

from meta_orchestrator.actors.history.history import HISTORY_FILE, HistoryRecorder
from meta_orchestrator.actors.history.event_log import parse_time
from meta_orchestrator.actors.history.replay import Timeline, frame_data, snapshot_at
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo, open_session_repo
from meta_orchestrator.messages.base import utc_now
from meta_orchestrator.messages.frames import FRAME, FRAME_OF, STATE_FRAMES, ChangesData, encode_frame, frame_for
from meta_orchestrator.messages.session import SessionStateChanged
from meta_orchestrator.messages.workspace import ChangesUpdated, SessionChanges, WorkspaceNotOpened
from tests.conftest import wait_for
from tests.webui.test_gateway import TOKEN, http, session_snapshot, start_gateway
from tests.webui.test_gateway_ws import connect, receive, receive_until
from tests.workspaces.test_workspaces import git

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
SESSION_ID = "20260101-120000-panel1"


class Branch:
    """A real session branch in a real repository: each ``merge`` commits an assignment's
    files in its checkout, merges it and returns the session's changes as the Workspace
    actor would tell them."""

    def __init__(self, repo: SessionRepo) -> None:
        self.repo = repo

    def merge(self, assignment_id: str, agent: str, files: dict[str, str | None]) -> SessionChanges:
        checkout = self.repo.checkout(assignment_id)
        for name, text in files.items():
            path = checkout.path / name
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert self.repo.commit_assignment(assignment_id, agent, f"work of {assignment_id}") is not None
        assert self.repo.merge_assignment(assignment_id).ok
        return self.repo.session_changes()


@pytest.fixture
def branch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Branch:
    """A user's repository with two files, and a session opened on it."""
    config = tmp_path / "gitconfig"
    config.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))  # nothing of this machine's git config
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    (project / "app.py").write_text("def main():\n    return 1\n")
    (project / "README.md").write_text("# project\n\nold line\n")
    git(project, "add", "-A")
    git(project, "-c", "user.name=User", "-c", "user.email=user@example.com", "commit", "-q", "-m", "start")
    session_dir = private_dir(private_dir(tmp_path / "workspace") / SESSION_ID)
    opened = open_session_repo(project, session_dir, SESSION_ID)
    assert opened.repo is not None, opened.message
    return Branch(opened.repo)


def design_merged(branch: Branch) -> SessionChanges:
    """The architect's merge: a design document whose text holds a line of markup."""
    return branch.merge("design", "gemini", {"docs/DESIGN.md": f"# Design\n\n{HOSTILE}\n"})


def implement_merged(branch: Branch) -> SessionChanges:
    """The implementer's merge on top: a new file, a changed file, a deleted line."""
    return branch.merge(
        "implement",
        "claude",
        {"health.py": "def health():\n    return 'ok'\n", "README.md": "# project\n\nnew line\n"},
    )


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all(timeout=10)


# --- the contract ----------------------------------------------------------------------------


def test_a_merge_becomes_a_changes_frame_that_validates_with_the_diff_as_text(branch: Branch) -> None:
    changes = design_merged(branch)
    kind, data = frame_for(ChangesUpdated(changes=changes))  # type: ignore[misc]
    assert kind == "changes" and kind in STATE_FRAMES
    text = encode_frame(kind, 3, data.model_dump_json())
    frame = FRAME.validate_json(text)
    assert frame.type == "changes" and frame.data.workspace == "branch" and frame.data.changes == changes
    assert json.loads(text)["data"]["at"].endswith("Z")
    (diff,) = frame.data.changes.diffs
    assert diff.path == "docs/DESIGN.md" and f"+{HOSTILE}" in diff.text.splitlines()
    assert [(f.path, f.status, f.added, f.removed) for f in changes.files] == [("docs/DESIGN.md", "added", 3, 0)]
    assert json.loads(text)["data"]["changes"]["store"] == str(branch.repo.store)  # where plain git finds it


def test_changes_data_is_either_a_branch_or_in_place() -> None:
    kind, data = frame_for(WorkspaceNotOpened(reason="not a git repository; `git init` gives a branch"))  # type: ignore[misc]
    assert (kind, data.workspace, data.changes) == ("changes", "in_place", None)
    assert "git init" in data.reason
    with pytest.raises(ValidationError):
        ChangesData(workspace="branch", at=utc_now())  # a branch without its changes
    with pytest.raises(ValidationError):
        FRAME.validate_json('{"type":"changes","seq":1,"data":{"workspace":"elsewhere","at":"2026-01-01T00:00:00Z"}}')
    assert {FRAME_OF[ChangesUpdated][0], FRAME_OF[WorkspaceNotOpened][0]} == {"changes"}


# --- the gateway -----------------------------------------------------------------------------


def test_the_gateway_sends_each_merge_live_and_the_latest_to_late_joiners(branch: Branch, tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    ref.tell(SessionStateChanged(snapshot=session_snapshot()))
    early = connect(address)
    try:
        assert receive(early)["data"]["changes"] is None  # nothing merged yet
        first = design_merged(branch)
        ref.tell(ChangesUpdated(changes=first))
        (frame,) = [f for f in receive_until(early, lambda f: f["type"] == "changes") if f["type"] == "changes"]
        assert frame["data"]["changes"]["tip"] == first.tip and isinstance(frame["seq"], int)
        second = implement_merged(branch)
        ref.tell(ChangesUpdated(changes=second))
        frame = receive_until(early, lambda f: f["type"] == "changes")[-1]
        assert SessionChanges.model_validate(frame["data"]["changes"]) == second
    finally:
        early.close()

    late = connect(address)
    try:
        snapshot = FRAME.validate_json(json.dumps(receive(late)))
    finally:
        late.close()
    assert snapshot.type == "snapshot" and snapshot.data.changes is not None
    assert snapshot.data.changes.changes == second  # the latest only, as state
    assert "changes" not in {f.type for f in snapshot.data.recent}
    by_assignment = [(a.assignment_id, sorted(f.path for f in a.files)) for a in second.assignments]
    assert by_assignment == [("design", ["docs/DESIGN.md"]), ("implement", ["README.md", "health.py"])]
    readme = next(f for f in second.files if f.path == "README.md")
    assert (readme.status, readme.added, readme.removed) == ("modified", 1, 1)

    status, body = http(address, "GET", "/api/changes")
    assert status == 200 and SessionChanges.model_validate(body["changes"]["changes"]) == second


def test_a_session_without_a_branch_says_so_in_every_snapshot_and_the_sse_stream(tmp_path: Path) -> None:
    ref, address = start_gateway(tmp_path)
    ref.tell(WorkspaceNotOpened(reason="/tmp/x is not a git repository: `git init` and a first commit"))
    # The HTTP thread reads the view the gateway publishes: wait for the told fact to reach it.
    wait_for(
        lambda: (http(address, "GET", "/api/changes")[1]["changes"] or {}).get("workspace") == "in_place",
        message="/api/changes to say the session works in place",
    )
    client = connect(address)
    try:
        snapshot = receive(client)
    finally:
        client.close()
    assert snapshot["data"]["changes"]["workspace"] == "in_place"
    assert "git init" in snapshot["data"]["changes"]["reason"]

    request = urllib.request.Request(f"{address.base_url}/api/stream", headers={"X-Orchestrate-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=10) as stream:
        lines = []
        while not any(line.startswith("data: ") for line in lines):
            lines.append(stream.readline().decode())
    frame = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert frame["type"] == "snapshot" and frame["data"]["changes"]["workspace"] == "in_place"


# --- history and replay ------------------------------------------------------------------------


def _record(session_dir: Path, facts: list[Any]) -> None:
    recorder = HistoryRecorder.start(session_dir)
    for fact in facts:
        recorder.tell(fact)
    recorder.stop(timeout=10)


def _history(session_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (session_dir / HISTORY_FILE).read_text().splitlines()]


def test_a_replay_shows_the_changes_as_they_stood_at_each_moment(branch: Branch, tmp_path: Path) -> None:
    session_dir = private_dir(tmp_path / "recorded")
    first = ChangesUpdated(changes=design_merged(branch))
    second = ChangesUpdated(changes=implement_merged(branch))
    _record(session_dir, [SessionStateChanged(snapshot=session_snapshot()), first])
    first_at = parse_time(_history(session_dir)[-1]["timestamp"])
    wait_for(lambda: utc_now() > first_at, message="the clock to pass the first merge's record")
    _record(session_dir, [second])  # a resumed session goes on with the same file
    assert [r["fact"] for r in _history(session_dir)] == ["SessionStateChanged", "ChangesUpdated", "ChangesUpdated"]

    with Timeline(session_dir, ("claude",)) as timeline:
        start, end = timeline.bounds()  # type: ignore[misc]
        frames = [frame_data(item) for item in timeline.seek(end).items]
        assert [kind for kind, _ in frames] == ["session", "changes", "changes"]  # type: ignore[misc]
        at_end, _page, _seq = snapshot_at(timeline, end, start)
        at_first, _page, _seq = snapshot_at(timeline, first_at, start)
        at_start, _page, _seq = snapshot_at(timeline, start, start)
    assert FRAME.validate_json(at_end).data.changes.changes == second.changes  # type: ignore[union-attr]
    assert FRAME.validate_json(at_first).data.changes.changes == first.changes  # type: ignore[union-attr]
    assert FRAME.validate_json(at_start).data.changes is None
