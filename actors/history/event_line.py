"""Events as their lines in ``<agent>.jsonl``: ``Event.model_dump_json(exclude_none=True)``,
byte for byte, a batch at a time, without pydantic's serializer.

Every line an agent prints becomes one such line, so the serializer was the largest single
cost of a flood. msgspec writes the same JSON for what events hold (strings, whole numbers
of any size, booleans, None, lists and string-keyed dicts of those, aware or naive
datetimes), in the same order, leaving out the same empty fields; a batch is encoded in one
call. Floats are the exception (msgspec writes ``1e16`` where pydantic writes ``1e+16``), so
a batch with one anywhere in a payload, or anything else unusual, goes through pydantic
event by event, as before. ``tests/history/test_event_line.py`` holds the two to each other.

A string with a lone surrogate (a CLI's JSON may escape one: ``"\\ud800"``) cannot be UTF-8:
it is written with U+FFFD in its place, where pydantic refused the whole event (and the
worker crashed); the ``raw`` line keeps the escape as the CLI wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from meta_orchestrator.messages.events import Event, EventPayload

_to_json = Event.__pydantic_serializer__.to_json
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOTHING_DEEP = (None, None, None)


class _Payload(msgspec.Struct, omit_defaults=True, gc=False):
    """``EventPayload``'s fields in its order; None ones are left out, as exclude_none does.
    Untracked by the garbage collector: it lives for one encoding and refers to no struct."""

    text: Any = None
    progress: Any = None
    file: Any = None
    kind: Any = None
    tool: Any = None
    tool_input: Any = None
    session_id: Any = None
    model: Any = None
    files: Any = None
    usage: Any = None
    cost_usd: Any = None
    retryable: Any = None
    terminal: Any = None
    exit_code: Any = None
    severity: Any = None
    line: Any = None
    details: Any = None


class _Record(msgspec.Struct, omit_defaults=True, gc=False):
    """``Event``'s fields in its order (the payload is turned into a ``_Payload`` on the way)."""

    type: str
    agent: str
    timestamp: datetime
    payload: Any
    seq: Any = None
    slot: Any = None
    assignment_id: Any = None
    raw: Any = None
    raw_file: Any = None


class _Unusual(Exception):
    """A payload msgspec would write differently from pydantic: the batch goes through pydantic."""


def _payload(value: Any) -> _Payload:
    if type(value) is not EventPayload:
        raise _Unusual
    fields = value.__dict__
    # The typed fields are what their types say (validated, or built from strings); only
    # these can hold a float, or anything else, deep inside. Most payloads have none of them.
    deep = (fields["tool_input"], fields["usage"], fields["details"])
    if fields["cost_usd"] is not None or (deep != _NOTHING_DEEP and not _same_in_both(deep)):
        raise _Unusual
    return _Payload(*fields.values())


_encoder = msgspec.json.Encoder(enc_hook=_payload)


def event_lines(events: Sequence[Event]) -> list[str]:
    """Each event's ``.jsonl`` line (without its newline), in order."""
    try:
        blob = _encoder.encode_lines([_Record(*event.__dict__.values()) for event in events])
    except (_Unusual, UnicodeEncodeError):
        return [event_line(event) for event in events]
    lines = blob.decode().split("\n")  # JSON escapes every newline inside a string
    lines.pop()  # after the last newline
    return lines


def event_line(event: Event) -> str:
    """One event's ``.jsonl`` line (without its newline)."""
    try:
        return _encoder.encode(_Record(*event.__dict__.values())).decode()
    except _Unusual:
        pass
    except UnicodeEncodeError:  # a lone surrogate in a string
        event = _scrubbed_event(event)
        return event_line(event)
    try:
        return _to_json(event, exclude_none=True).decode()
    except ValueError:  # pydantic's serialisation error: a lone surrogate in a string
        return _to_json(_scrubbed_event(event), exclude_none=True).decode()


def _same_in_both(value: Any) -> bool:
    """Whether msgspec writes ``value`` as pydantic does (no float, nothing unusual)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        return all(type(key) is str and _same_in_both(item) for key, item in value.items())
    if kind is tuple or kind is list:
        return all(_same_in_both(item) for item in value)
    return False


def _scrubbed_event(event: Event) -> Event:
    """The event with U+FFFD for every lone surrogate in its strings (none is left after)."""
    fields = {name: _scrubbed(value) for name, value in event.__dict__.items() if name != "payload"}
    payload = EventPayload.model_validate(_scrubbed(event.payload.__dict__))
    return event.model_copy(update={**fields, "payload": payload})


def _scrubbed(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrubbed(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrubbed(item) for item in value)
    return value


__all__ = ["event_line", "event_lines"]
