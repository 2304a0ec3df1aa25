"""The wire contract: every fact in the table becomes a frame that validates, times in UTC with Z."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pykka
import pytest

from meta_orchestrator.messages.events import Event, EventPayload
from meta_orchestrator.messages.frames import FRAME, FRAME_OF, STATE_FRAMES, encode_frame, frame_for
from meta_orchestrator.messages.recovery import RecoveryPlanned
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.review import ReviewCompleted, ReviewDecision, ReviewStarted, ReviewTrigger
from meta_orchestrator.messages.sandbox import SecurityFinding, ToolCallDecided, ToolCallSummary
from meta_orchestrator.messages.session import SessionEnded
from meta_orchestrator.messages.supervision import ActorRestarted
from meta_orchestrator.messages.workspace import (
    AssignmentChanges,
    ChangesUpdated,
    FileChange,
    FileDiff,
    SessionChanges,
    WorkspaceNotOpened,
)
from tests.webui.test_gateway import resources_sampled
from tests.webui.test_gateway_ws import WsClient

_HEALTH = FileChange(path="health.py", status="added", added=2, removed=0)
CHANGES = SessionChanges(
    session_id="s1",
    branch="orchestrate/s1",
    base="a" * 40,
    tip="b" * 40,
    files=(_HEALTH,),
    assignments=(
        AssignmentChanges(
            assignment_id="implement", before="a" * 40, after="b" * 40, files=(_HEALTH,), added=2, removed=0
        ),
    ),
    diffs=(FileDiff(path="health.py", text="diff --git a/health.py b/health.py\n+<b>ok</b>\n"),),
    added=2,
    removed=0,
)

FACTS: list[Any] = [
    SessionEnded(session_id="s1", status="completed", exit_code=0, summary="done"),
    resources_sampled(cpu=12.0, taken_at=1_735_725_600.0),
    LimitExceeded(
        agent="claude", limit="rss", action="pause", observed=900, threshold=800, reason="900 MB", sampled_at=1e9
    ),
    ReviewStarted(review_id="r1", triggers=(ReviewTrigger(kind="milestone"),), reviewers=("codex",), review_dir="/r"),
    ReviewCompleted(review_id="r1", decision=ReviewDecision(decision="CONTINUE", reasoning="fine")),
    RecoveryPlanned(recovery_id="x1", agent="gemini", assignment_id="design", cause="rate_limit", action="retry_after"),
    ActorRestarted(name="reviewer", error="boom", restarts_in_window=1),
    ToolCallDecided(
        request_id="t1",
        call=ToolCallSummary(agent="claude", tool="Bash", tool_input={"command": "rm -rf /"}),
        decision="deny",
        decided_by="policy",
        rule="rm-root",
        reason="deletes everything",
    ),
    SecurityFinding(
        event=Event(type="finding", agent="claude", payload=EventPayload(text="reads ~/.ssh")),
        rule="ssh",
        action="warn",
    ),
    ChangesUpdated(changes=CHANGES),
    WorkspaceNotOpened(reason="not a git repository"),
]


def test_every_fact_of_the_table_is_covered_here() -> None:
    assert {type(f) for f in FACTS} == set(FRAME_OF)


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: type(f).__name__)
def test_each_fact_becomes_a_frame_that_validates(fact: Any) -> None:
    found = frame_for(fact)
    assert found is not None
    kind, data = found
    text = encode_frame(kind, 7, data.model_dump_json())
    frame = FRAME.validate_json(text)
    assert (frame.type, frame.seq) == (kind, 7)
    times = [v for k, v in json.loads(text)["data"].items() if k in ("at", "taken_at", "sampled_at")]
    assert times and all(t.endswith("Z") and "T" in t for t in times)


def test_a_frame_with_a_guessed_field_is_refused() -> None:
    with pytest.raises(ValueError):
        FRAME.validate_json('{"type": "worker", "seq": 1, "data": {"agent": "claude", "state": "running"}}')
    with pytest.raises(ValueError):
        FRAME.validate_json('{"type": "pong", "seq": 3, "data": {"seq": 3}}')  # replies carry seq null


def test_the_snapshot_of_a_gateway_validates(tmp_path: Path) -> None:

    from meta_orchestrator.messages.session import SessionStateChanged
    from meta_orchestrator.messages.worker import EventsRecorded, WorkerStateChanged
    from tests.webui.test_gateway import TOKEN, event, session_snapshot, start_gateway, worker_snapshot

    ref, address = start_gateway(tmp_path)
    try:
        ref.tell(SessionStateChanged(snapshot=session_snapshot()))
        ref.tell(WorkerStateChanged(snapshot=worker_snapshot("claude")))
        ref.tell(EventsRecorded(events=(event("claude", 1, "x" * 300_000),)))  # cut for the browser
        for fact in FACTS:
            ref.tell(fact)
        client = WsClient.connect(f"ws://127.0.0.1:{address.port}/ws", headers={"X-Orchestrate-Token": TOKEN})
        snapshot = FRAME.validate_json(client.receive(timeout=5))
        client.close()
        assert snapshot.type == "snapshot"
        assert snapshot.data.events[0].raw_cut is not None or snapshot.data.events[0].raw is None
        kept = [FRAME_OF[type(f)][0] for f in FACTS]
        assert [f.type for f in snapshot.data.recent] == [k for k in kept if k not in STATE_FRAMES]
        assert snapshot.data.ended is not None and snapshot.data.ended.status == "completed"
        assert snapshot.data.changes is not None and snapshot.data.changes.workspace == "in_place"  # the latest
    finally:
        pykka.ActorRegistry.stop_all(timeout=10)


def test_the_session_goes_whole_then_as_deltas_and_a_new_browser_gets_it_whole(tmp_path: Path) -> None:
    from meta_orchestrator.messages.session import SessionStateChanged
    from meta_orchestrator.messages.session_delta import WHOLE_EVERY, apply_session_delta
    from tests.webui.test_gateway import TOKEN, session_snapshot, start_gateway

    ref, address = start_gateway(tmp_path)
    try:
        live = WsClient.connect(f"ws://127.0.0.1:{address.port}/ws", headers={"X-Orchestrate-Token": TOKEN})
        assert FRAME.validate_json(live.receive(timeout=5)).type == "snapshot"
        first = session_snapshot()
        states = [first]
        for i in range(WHOLE_EVERY + 1):
            moved = tuple(a.model_copy(update={"status": "running" if i % 2 else "pending"}) for a in first.assignments)
            states.append(first.model_copy(update={"updated_at": f"2025-01-01T10:{i:02d}:00Z", "assignments": moved}))
        for state in states:
            ref.tell(SessionStateChanged(snapshot=state))
        frames = []
        while len(frames) < len(states):
            message = json.loads(live.receive(timeout=5))
            frames += message["data"] if message["type"] == "batch" else [message]
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "session" and kinds[WHOLE_EVERY] == "session"  # whole again every WHOLE_EVERY
        assert set(kinds) - {"session"} == {"session_delta"}
        seen: dict[str, Any] = {}
        for frame, state in zip(frames, states, strict=True):
            FRAME.validate_python(frame)
            seen = frame["data"] if frame["type"] == "session" else apply_session_delta(seen, frame["data"])
            assert seen == state.model_dump(mode="json")
        live.close()
        late = WsClient.connect(f"ws://127.0.0.1:{address.port}/ws", headers={"X-Orchestrate-Token": TOKEN})
        snapshot = FRAME.validate_json(late.receive(timeout=5))
        late.close()
        assert snapshot.type == "snapshot" and snapshot.data.session is not None
        assert snapshot.data.session.model_dump(mode="json") == states[-1].model_dump(mode="json")
    finally:
        pykka.ActorRegistry.stop_all(timeout=10)
