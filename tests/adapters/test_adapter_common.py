"""What all three stream parsers share: bad lines become errors, the run always ends once."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.base import Draft, StreamParser
from meta_orchestrator.actors.adapters.registry import ADAPTERS, get_adapter

TRANSCRIPTS = Path(__file__).parent.parent / "transcripts"

GOOD_LINE = {
    "claude": b'{"type":"system","subtype":"init","session_id":"s-1","model":"m"}',
    "codex": b'{"type":"thread.started","thread_id":"s-1"}',
    "gemini": b'{"type":"init","timestamp":"2026-11-23T23:32:58.937Z","session_id":"s-1","model":"m"}',
    "copilot": b'{"type":"session.start","data":{"sessionId":"s-1","version":1,"selectedModel":"m"},"id":"e-1"}',
    "qwen": b'{"type":"system","subtype":"init","session_id":"s-1","model":"m","qwen_code_version":"0.24.4"}',
    "opencode": b'{"type":"step_start","timestamp":1796610949770,"sessionID":"s-1","part":{"type":"step-start"}}',
}
# Known types whose structural fields have the wrong JSON type.
WRONG_TYPES = {
    "claude": b'{"type":"assistant","message":"not an object","session_id":"s-1"}',
    "codex": b'{"type":"item.completed","item":["not","an","object"]}',
    "gemini": b'{"type":"tool_result","tool_id":{"x":1},"status":["success"],"error":"oops"}',
    "copilot": b'{"type":"tool.execution_complete","data":["not","an","object"]}',
    "qwen": b'{"type":"user","message":"not an object","session_id":"s-1"}',
    "opencode": b'{"type":"tool_use","sessionID":"s-1","part":{"tool":"write","state":["completed"]}}',
}


def replay(
    name: str, transcript: str, returncode: int | None = 0, stderr_tail: tuple[str, ...] = ()
) -> tuple[list[Draft], StreamParser]:
    """Feed a stored transcript line by line, then finish; the drafts and the parser."""
    parser = get_adapter(name).new_parser()
    drafts: list[Draft] = []
    for line in (TRANSCRIPTS / transcript).read_bytes().splitlines():
        drafts.extend(parser.feed_line(line))
    drafts.extend(parser.finish(returncode, stderr_tail))
    return drafts, parser


def kinds(drafts: list[Draft]) -> list[tuple[str, str | None]]:
    """(type, kind) of each draft, for compact assertions."""
    return [(d.type, d.payload.kind) for d in drafts]


def test_registry_knows_the_three_clis() -> None:
    assert {"claude", "codex", "gemini", "copilot", "qwen", "opencode"} <= set(ADAPTERS)
    for name, adapter in ADAPTERS.items():
        assert adapter.name == name and adapter.default_executable == name
    with pytest.raises(KeyError, match="unknown agent"):
        get_adapter("no-such-cli")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("data", "total", "needle"),
    [
        (b"Warning: not json at all", None, "not JSON"),
        (b'{"type":"system","subtype":"ini', None, "cut short"),
        (b'{"type":"init","text":"\xff\xfe"}', None, "not valid UTF-8"),
        (b'[{"type":"init"}]', None, "not an object"),
        (b'{"type":"init"', 10_000_000, "longer than the parser accepts"),
    ],
)
def test_bad_line_is_an_error_and_parsing_goes_on(name: str, data: bytes, total: int | None, needle: str) -> None:
    parser = get_adapter(name).new_parser()
    [bad] = parser.feed_line(data, total)
    assert (bad.type, bad.payload.kind, bad.payload.terminal) == ("error", "parse_error", False)
    assert needle in (bad.payload.text or "")
    [good] = parser.feed_line(GOOD_LINE[name])
    assert (good.type, good.payload.kind, good.payload.session_id) == ("status", "init", "s-1")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_wrong_typed_fields_give_an_error_not_an_exception(name: str) -> None:
    parser = get_adapter(name).new_parser()
    drafts = parser.feed_line(WRONG_TYPES[name])
    [bad] = drafts
    assert (bad.type, bad.payload.kind, bad.payload.terminal) == ("error", "parse_error", False)
    assert "unexpected shape" in (bad.payload.text or "")
    [good] = parser.feed_line(GOOD_LINE[name])
    assert good.payload.kind == "init"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize(
    "line",
    [
        b'{"no_type": 1}',
        b'{"type": {"nested": true}}',
        b'{"type": 42}',
        b'{"type": "brand_new"}',
    ],
)
def test_unknown_or_untyped_objects_are_status_unknown(name: str, line: bytes) -> None:
    [only] = get_adapter(name).new_parser().feed_line(line)
    assert (only.type, only.payload.kind) == ("status", "unknown")


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_missing_fields_never_raise(name: str) -> None:
    parser = get_adapter(name).new_parser()
    types = [
        "system",
        "assistant",
        "user",
        "result",
        "thread.started",
        "turn.started",
        "item.started",
        "item.updated",
        "item.completed",
        "turn.completed",
        "turn.failed",
        "error",
        "item.plan.delta",
        "request_user_input",
        "init",
        "message",
        "tool_use",
        "tool_result",
    ]
    for type_ in types:
        drafts = parser.feed_object({"type": type_})
        assert drafts, type_  # every line becomes at least one event
        assert all(d.payload.kind != "parse_error" for d in drafts), (type_, drafts)


def test_unexpected_exception_becomes_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = get_adapter("claude").new_parser()

    def boom(obj: dict) -> list[Draft]:
        raise RuntimeError("surprise")

    monkeypatch.setattr(parser, "_on_system", boom)
    [only] = parser.feed_object({"type": "system", "subtype": "init"})
    assert (only.type, only.payload.kind) == ("error", "parse_error")
    assert "surprise" in (only.payload.text or "")


@pytest.mark.parametrize(
    ("name", "returncode", "meaning"),
    [
        ("claude", 1, "exit code 1: error result"),
        ("claude", -9, "killed by signal 9 (SIGKILL)"),
        ("codex", 2, "CLI usage error"),
        ("codex", -15, "killed by signal 15 (SIGTERM)"),
        ("gemini", 41, "authentication error"),
        ("gemini", 144, "HTTP 400"),
        ("gemini", 145, "HTTP 401"),
        ("gemini", 147, "HTTP 403"),
        ("gemini", 173, "HTTP 429"),
        ("gemini", 244, "HTTP 500"),
        ("gemini", 53, "turn limit"),
        ("gemini", 0, "exit code 0"),
        ("codex", None, "exit status unknown"),
    ],
)
def test_finish_without_terminal_event_synthesises_the_end(name: str, returncode: int | None, meaning: str) -> None:
    parser = get_adapter(name).new_parser()
    parser.feed_line(GOOD_LINE[name])
    drafts = parser.finish(returncode, ("noise", "", "Error: the last words"))
    [end] = [d for d in drafts if d.payload.kind == "exit"]
    assert (end.type, end.payload.terminal, end.payload.exit_code) == ("error", True, returncode)
    assert meaning in (end.payload.text or "")
    assert "Error: the last words" in (end.payload.text or "")
    outcome = parser.outcome()
    assert not outcome.success and not outcome.terminal_event_seen
    assert outcome.session_id == "s-1"
    assert outcome.error and meaning in outcome.error


def test_killed_by_signal_is_retryable() -> None:
    parser = get_adapter("gemini").new_parser()
    [end] = parser.finish(-9, ())
    assert end.payload.retryable is True


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"type": "x", "n": NaN}', "nan"),  # orjson refuses NaN; the standard library reads it
        (b'{"type": "x", "n": 123456789012345678901234567890}', 123456789012345678901234567890),
        (b'{"type": "x", "n": "\\ud800"}', "\ud800"),  # a lone surrogate
        (b'{"type": "x", "n": "\xc3\xa9"}', "\u00e9"),
    ],
)
def test_lines_are_decoded_as_the_json_module_decodes_them(line: bytes, expected: object) -> None:
    seen: list[dict[str, object]] = []

    class Recording(StreamParser):
        def feed_object(self, obj: dict[str, object]) -> list[Draft]:
            seen.append(obj)
            return []

        def finish(self, returncode: int | None, stderr_tail: tuple[str, ...]) -> list[Draft]:
            return []

    Recording().feed_line(line)
    value = seen[0]["n"]
    assert (str(value) == "nan") if expected == "nan" else value == expected


def test_a_bad_line_is_described_as_the_json_module_says() -> None:
    drafts = get_adapter("claude").new_parser().feed_line(b'{"type": "assistant", "message": ')
    assert drafts[0].payload.kind == "parse_error"
    assert drafts[0].payload.text == "line is not JSON (cut short?): Expecting value at column 33"
