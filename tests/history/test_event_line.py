"""An event's ``.jsonl`` line written without pydantic is pydantic's line, byte for byte.

The recorder writes every event with ``event_lines`` (msgspec); what was written before, and
what every reader expects, is ``Event.model_dump_json(exclude_none=True)``. Each case here
is compared with that, one event at a time and as one batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import pytest

from meta_orchestrator.actors.history import event_line as module
from meta_orchestrator.actors.history.event_line import event_line, event_lines
from meta_orchestrator.actors.history.event_recorder import EventRecorder
from meta_orchestrator.actors.adapters.base import Draft
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.messages.base import trusted
from meta_orchestrator.messages.events import Event, EventPayload, EventType, text_payload

NOW = datetime(2026, 12, 7, 15, 3, 16, 123456, tzinfo=UTC)
# Every character that can be UTF-8 (the surrogates cannot), in one string.
EVERY_CHARACTER = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
ODD_TEXT = (
    '\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f "quoted" \\back\\slash / \x7f \x80 \u00e9 \u2028\u2029 \ufeff \U0001f600 \uffff'
)
NESTED: dict[str, Any] = {
    "none": None,
    "list": [1, None, "two", [True, False, None], {"deep": {"deeper": [None, {"x": None}]}}],
    "big": 2**70,
    "small": -(2**100),
    "huge": 10**400,
    "int64": 2**63 - 1,
    "uint64": 2**64 - 1,
    ODD_TEXT: ODD_TEXT,
    "": "",
}
FLOATS: dict[str, Any] = {"f": 1e16, "g": 0.1, "h": 1e-7, "i": -0.0, "j": 1.7976931348623157e308, "k": 5e-324}


def _payloads() -> list[EventPayload]:
    return [
        EventPayload(),
        text_payload("text", "plain"),
        text_payload(None, None),
        text_payload("text", ""),
        text_payload("text", ODD_TEXT),
        EventPayload(
            text=ODD_TEXT,
            progress=0,
            file="src/\u00e9t\u00e9.py",
            kind="tool_call",
            tool="Bash",
            tool_input=NESTED,
            session_id="s-1",
            model="m",
            files=("a", ODD_TEXT),
            usage={"input_tokens": 2**80, "cache": None},
            retryable=False,
            terminal=True,
            exit_code=-9,
            severity="high",
            line=2**65,
            details={"nested": NESTED, "empty": {}, "list": []},
        ),
        EventPayload(progress=100, exit_code=0, line=0, retryable=True, terminal=False),
        # Floats: pydantic's own line (msgspec writes 1e16, pydantic 1e+16).
        EventPayload(cost_usd=1e16, text="float"),
        EventPayload(cost_usd=0.25),
        EventPayload(usage={"cost": 1e-7, "n": 1}),
        EventPayload(tool_input={"deep": [{"x": 1e22}]}),
        EventPayload(details=FLOATS),
    ]


def _events() -> list[Event]:
    stamps = [
        NOW,
        NOW.replace(microsecond=0),
        NOW.replace(microsecond=120000),
        NOW.astimezone(timezone(timedelta(hours=5, minutes=30))),
        NOW.astimezone(timezone(timedelta(hours=-8))),
        NOW.replace(tzinfo=None),
    ]
    events = []
    for i, (kind, payload) in enumerate((k, p) for k in get_args(EventType) for p in _payloads()):
        events.append(
            Event(
                type=kind,
                agent="claude",
                timestamp=stamps[i % len(stamps)],
                payload=payload,
                seq=i if i % 5 else None,
                slot=None if i % 3 else 2,
                assignment_id=None if i % 4 == 0 else f"a-{i}",
                raw=None if i % 6 == 0 else ODD_TEXT + json.dumps({"type": "assistant", "i": i}),
                raw_file=None if i % 7 else f"overflow/claude-run1-{i}.txt",
            )
        )
    return events


def _pydantic(event: Event) -> str:
    return event.model_dump_json(exclude_none=True)


def test_every_event_kind_and_odd_value_is_written_as_pydantic_writes_it():
    events = _events()
    assert len(events) == len(get_args(EventType)) * len(_payloads())
    expected = [_pydantic(event) for event in events]
    assert [event_line(event) for event in events] == expected
    assert event_lines(events) == expected
    plain = [e for e in events if "float" not in (e.payload.text or "") and e.payload.cost_usd is None]
    assert event_lines(plain) == [_pydantic(event) for event in plain]  # the batch path, floats or not


def test_every_character_is_escaped_as_pydantic_escapes_it():
    event = Event(type="progress", agent="claude", timestamp=NOW, payload=text_payload("text", EVERY_CHARACTER))
    raw = Event(
        type="progress", agent="claude", timestamp=NOW, raw=EVERY_CHARACTER, payload={"details": {"k": EVERY_CHARACTER}}
    )
    for one in (event, raw):
        assert event_line(one) == _pydantic(one)
        assert event_lines([one, one]) == [_pydantic(one)] * 2


def test_events_built_without_validation_are_written_as_validated_ones():
    # The recorder's events are built field by field (``trusted``); the line must not depend on it.
    fields = {
        "type": "progress",
        "agent": "claude",
        "timestamp": NOW,
        "payload": text_payload("text", ODD_TEXT),
        "seq": 7,
        "slot": None,
        "assignment_id": "a1",
        "raw": ODD_TEXT,
        "raw_file": None,
    }
    built = trusted(Event, dict(fields))
    validated = Event(**fields)
    assert event_lines([built]) == [_pydantic(validated)] == [_pydantic(built)]


def test_the_encoder_knows_every_field_in_pydantics_order():
    # The structs are filled positionally from the models' dicts: a field added to a model
    # must be added to its struct, in the same place.
    assert module._Payload.__struct_fields__ == tuple(EventPayload.model_fields)
    assert module._Record.__struct_fields__ == tuple(Event.model_fields)


@pytest.mark.parametrize("where", ["text", "tool_input", "float"])
def test_a_lone_surrogate_is_written_as_a_replacement_character(where):
    # A CLI's JSON may escape half a surrogate pair; such a string cannot be UTF-8. Pydantic
    # refused the whole event (the worker crashed); the line now has U+FFFD in its place.
    bad = "half \ud83d of a pair"
    payload = {
        "text": EventPayload(text=bad),
        "tool_input": EventPayload(tool_input={bad: [bad]}),
        "float": EventPayload(text=bad, cost_usd=1e16),
    }[where]
    event = Event(type="progress", agent="claude", timestamp=NOW, payload=payload, raw='{"text":"half \\ud83d"}')
    fixed = "half \ufffd of a pair"
    expected = event.model_copy(
        update={
            "payload": EventPayload.model_validate(
                json.loads(json.dumps(payload.__dict__).replace("\\ud83d", "\\ufffd"))
            )
        }
    )
    assert fixed in _pydantic(expected)
    assert event_line(event) == _pydantic(expected)
    assert event_lines([event, Event(type="status", agent="claude", timestamp=NOW)])[0] == _pydantic(expected)


def test_the_recorder_writes_a_lone_surrogate_line_and_keeps_the_raw_line(tmp_path: Path):
    parser = get_adapter("claude").new_parser()
    line = b'{"type":"assistant","message":{"content":[{"type":"text","text":"half \\ud83d"}]}}'
    drafts = parser.feed_line(line)
    assert drafts and drafts[0].payload.text == "half \ud83d"

    class Listener:
        told: list[Any] = []

        def tell(self, message: Any) -> None:
            self.told.append(message)

    recorder = EventRecorder("claude", tmp_path / "claude.jsonl", (Listener(),))  # type: ignore[arg-type]
    recorder.open()
    recorder.add(drafts, "a1", line.decode(), None)
    recorder.add([Draft("status", text_payload("text", "after"))], "a1", None, None)
    assert recorder.flush() is None
    recorder.close()
    records = [json.loads(text) for text in (tmp_path / "claude.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["payload"]["text"] for r in records] == ["half \ufffd", "after"]
    assert records[0]["raw"] == line.decode() and [r["seq"] for r in records] == [1, 2]
    assert Listener.told[0].lines == tuple((tmp_path / "claude.jsonl").read_text(encoding="utf-8").splitlines())
