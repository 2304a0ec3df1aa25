"""Messages are frozen, and a bad one fails at construction with an error naming the field."""

from __future__ import annotations

import pydantic
import pytest

from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.session import Plan
from meta_orchestrator.messages.worker import StartAssignment


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


def test_a_plan_with_a_cycle_or_a_missing_dependency_is_refused():
    item = {"role": "architect", "title": "t", "instructions": "i"}
    with pytest.raises(pydantic.ValidationError, match="cycle"):
        Plan(assignments=({**item, "id": "a", "depends_on": ["b"]}, {**item, "id": "b", "depends_on": ["a"]}))
    with pytest.raises(pydantic.ValidationError, match="unknown"):
        Plan(assignments=({**item, "id": "a", "depends_on": ["zz"]},))
    with pytest.raises(pydantic.ValidationError, match="unique"):
        Plan(assignments=({**item, "id": "a"}, {**item, "id": "a"}))
