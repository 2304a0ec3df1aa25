"""Messages are frozen, and a bad one fails at construction with an error naming the field."""

from __future__ import annotations

import pydantic
import pytest
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.session import Plan
from meta_orchestrator.messages.worker import EventsRecorded, StartAssignment


def test_a_bad_event_names_the_bad_fields():
    with pytest.raises(pydantic.ValidationError) as err:
        Event(type="done", agent="Copilot!", payload={"progress": 140})
    text = str(err.value)
    assert "type" in text and "agent" in text and "payload.progress" in text


def test_messages_are_frozen_and_reject_unknown_fields():
    event = Event(type="milestone", agent="claude")
    with pytest.raises(pydantic.ValidationError):
        event.type = "error"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra_field"):
        StartAssignment(assignment_id="a", prompt="p", extra_field=1)


def test_events_recorded_is_one_or_more_events_with_their_lines_or_none():
    one, two = Event(type="milestone", agent="claude", seq=1), Event(type="progress", agent="claude", seq=2)
    with pytest.raises(pydantic.ValidationError, match="at least 1"):
        EventsRecorded(events=())
    with pytest.raises(pydantic.ValidationError, match="1 lines for 2 events"):
        EventsRecorded(events=(one, two), lines=("{}",))
    # Without its lines (read back from disk), each event's .jsonl line is serialised on demand.
    batch = EventsRecorded(events=(one, two))
    assert [Event.model_validate_json(line) for line in batch.jsonl_lines()] == [one, two]
    assert EventsRecorded(events=(one,), lines=("as written",)).jsonl_lines() == ("as written",)


def test_a_plan_with_a_cycle_or_a_missing_dependency_is_refused():
    item = {"role": "architect", "title": "t", "instructions": "i"}
    with pytest.raises(pydantic.ValidationError, match="cycle"):
        Plan(assignments=({**item, "id": "a", "depends_on": ["b"]}, {**item, "id": "b", "depends_on": ["a"]}))
    with pytest.raises(pydantic.ValidationError, match="unknown"):
        Plan(assignments=({**item, "id": "a", "depends_on": ["zz"]},))
    with pytest.raises(pydantic.ValidationError, match="unique"):
        Plan(assignments=({**item, "id": "a"}, {**item, "id": "a"}))


# -- state.json records: typed, and the files written before they were still load -------------

_LEGACY_STATE = {
    "session_id": "20250101-100000-a1b2",
    "task": "t",
    "target": "/srv/app",
    "workspace": "/srv/ws/20250101-100000-a1b2",
    "status": "completed",
    "created_at": "2025-01-01T10:00:00.000Z",
    "updated_at": "2025-01-01T10:09:00.000Z",
    # As the coordinator wrote them before records were typed: a review had no "kind".
    "decisions": [
        {
            "review_id": "r-001",
            "assignment_id": "design",
            "author": "gemini",
            "triggers": [{"kind": "phase_end", "agent": "gemini", "assignment_id": "design", "text": "done"}],
            "answers": [{"agent": "codex", "verdict": "concern", "summary": "one gap"}],
            "decision": {"decision": "LOG_WARNING", "reasoning": "one concern", "counts": {"concern": 1}},
            "gate": True,
            "skipped": None,
            "review_dir": "/srv/ws/reviews/r-001",
            "round": 0,
            "sent_at": "2025-01-01T10:02:00.123456Z",
            "decided_at": "2025-01-01T10:02:00.200Z",
            "applied": "warning logged; continued",
        },
        {
            "source": "resource_monitor",
            "at": "2025-01-01T10:03:00.000Z",
            "kind": "limit_exceeded",
            "limit": "rss",
            "action": "stop",
            "agent": "claude",
            "assignment_id": "implement",
            "observed": 640.0,
            "threshold": 200.0,
            "unit": "MB",
            "reason": "rss 640 MB > 200 MB",
        },
        {
            "source": "sandbox",
            "at": "2025-01-01T10:04:00.000Z",
            "kind": "tool_call_denied",
            "agent": "claude",
            "rule": "git_push",
            "decided_by": "timeout",
            "tool": "Bash",
            "reason": "no answer within 120s",
        },
    ],
    # A recovery and a preflight check, neither with a "kind".
    "recoveries": [
        {
            "recovery_id": "pre-01",
            "agent": "codex",
            "assignment_id": None,
            "cause": "repo_trust",
            "action": "verified: every codex command line carries --skip-git-repo-check",
            "evidence": "/srv/app: a git repository",
            "advice": "verified: every codex command line carries --skip-git-repo-check",
            "outcome": "checked",
        },
        {
            "recovery_id": "rec-001",
            "agent": "gemini",
            "assignment_id": "design",
            "cause": "outside_path",
            "action": "relaunch",
            "evidence": 'Path not in workspace: Attempted path "/srv/shared/x"',
            "extra_args": [],
            "extra_dirs": ["/srv/shared"],
            "delay_s": 0.0,
            "resume_session_id": "s-1",
            "note": "granted",
            "advice": "relaunching gemini with --include-directories /srv/shared",
            "attempt": 1,
            "run_succeeded": True,
            "sent_at": "2025-01-01T10:01:00.000001Z",
            "outcome": "recovered",
            "planned_at": "2025-01-01T10:01:00.010Z",
            "settled_at": "2025-01-01T10:01:30.000Z",
        },
    ],
}


def test_an_old_state_file_loads_into_typed_records_and_keeps_its_shape():
    from meta_orchestrator.messages.recovery import PreflightRecord, RecoveryRecord
    from meta_orchestrator.messages.resources import LimitExceededRecord
    from meta_orchestrator.messages.review import ReviewDecisionRecord
    from meta_orchestrator.messages.sandbox import ToolCallRecord
    from meta_orchestrator.messages.session import SessionSnapshot

    state = SessionSnapshot.model_validate(_LEGACY_STATE)
    assert [type(d) for d in state.decisions] == [ReviewDecisionRecord, LimitExceededRecord, ToolCallRecord]
    assert [type(r) for r in state.recoveries] == [PreflightRecord, RecoveryRecord]
    review = state.decisions[0]
    assert review.decision.decision == "LOG_WARNING" and review.answers[0].verdict == "concern"
    assert review.decided_at.tzinfo is not None and state.recoveries[1].settled_at.minute == 1
    # Written again, every entry names its kind and keeps every field it had (times to the
    # millisecond, the one form records write).
    dumped = state.model_dump(mode="json")
    for old, new in zip(
        [*_LEGACY_STATE["decisions"], *_LEGACY_STATE["recoveries"]],
        [*dumped["decisions"], *dumped["recoveries"]],
        strict=True,
    ):
        assert new["kind"] == old.get("kind", new["kind"])
        for key, value in old.items():
            if key == "sent_at":
                assert new[key] == value[:23] + "Z"
            elif not isinstance(value, (dict, list)):
                assert new[key] == value, key
    assert SessionSnapshot.model_validate(dumped).model_dump(mode="json") == dumped


def test_a_decision_of_an_unknown_kind_is_refused_with_its_tag():
    from meta_orchestrator.messages.session import SessionSnapshot

    bad = {**_LEGACY_STATE, "decisions": [{"kind": "vibes", "at": "2025-01-01T10:00:00Z"}]}
    with pytest.raises(pydantic.ValidationError, match="vibes"):
        SessionSnapshot.model_validate(bad)


def test_records_write_one_time_form():
    from datetime import UTC, datetime

    from meta_orchestrator.messages.supervision import ActorRestarted

    record = ActorRestarted(name="monitor", error="boom", restarts_in_window=1).record()
    text = record.model_dump(mode="json")["at"]
    assert text.endswith("Z") and len(text) == len("2025-01-01T10:00:00.000Z")
    assert datetime.fromisoformat(text) == record.at.replace(microsecond=record.at.microsecond // 1000 * 1000)
    assert record.at.tzinfo == UTC


def test_a_trusted_event_equals_and_serialises_as_a_validated_one():
    from meta_orchestrator.actors.adapters.base import draft
    from meta_orchestrator.messages.base import trusted, utc_now
    from meta_orchestrator.messages.events import EventPayload

    moment = utc_now()
    for item in (draft("progress", kind="text", text="héllo"), draft("milestone", text="m", progress=40)):
        fields = {
            "type": item.type,
            "agent": "claude",
            "timestamp": moment,
            "payload": item.payload,
            "seq": 7,
            "slot": None,
            "assignment_id": None,
            "raw": '{"x": 1}',
            "raw_file": None,
        }
        fast, checked = trusted(Event, dict(fields)), Event(**fields)
        assert fast == checked
        assert fast.model_dump_json(exclude_none=True) == checked.model_dump_json(exclude_none=True)
        assert list(fields) == list(Event.model_fields)  # trusted() needs every field, in order
        assert fast.model_fields_set == checked.model_fields_set | {"slot", "assignment_id", "raw_file"}
        assert fast.model_copy(update={"seq": 8}).seq == 8 and fast.seq == 7
    # The unvalidated text payload is the validated one, field for field.
    assert draft("status", kind="k", text=None).payload == EventPayload(kind="k")
    with pytest.raises(pydantic.ValidationError):
        draft("progress", kind="text", text="t", progress=140)  # anything more than text and kind is validated


def test_a_session_delta_applied_gives_the_session_after_and_says_only_what_changed():
    from meta_orchestrator.messages.session_delta import apply_session_delta, session_delta

    one = {"id": "design", "status": "running", "instructions": "x" * 5000}
    two = {"id": "implement", "status": "pending", "instructions": "y" * 5000}
    before = {"status": "running", "assignments": [one, two], "decisions": [{"d": 1}], "summary": ""}
    after = {
        "status": "running",
        "assignments": [{**one, "status": "completed"}, two, {"id": "review", "status": "pending"}],
        "decisions": [{"d": 1}, {"d": 2}],
        "summary": "done",
    }
    delta = session_delta(before, after)
    assert delta is not None
    assert delta.fields == {"summary": "done"} and delta.appended == {"decisions": [{"d": 2}]}
    assert [a["id"] for a in delta.assignments] == ["design", "review"]  # "implement" did not change
    assert apply_session_delta(before, delta.model_dump(mode="json")) == after
    assert apply_session_delta(after, session_delta(after, after).model_dump(mode="json")) == after
    # What a delta cannot say goes whole: an assignment removed or moved, a field gone.
    assert session_delta(before, {**before, "assignments": [one]}) is None
    assert session_delta(before, {**before, "assignments": [two, one]}) is None
    assert session_delta(before, {k: v for k, v in before.items() if k != "summary"}) is None
