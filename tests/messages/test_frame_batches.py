"""What a socket sends for the outbox items it took at once: one frame as it is, more as one
``batch`` frame that a browser reads back frame by frame, in order, never nested."""

from __future__ import annotations

import json

from meta_orchestrator.messages.frames import batch, encode_frame, one_message


def _event(seq: int) -> str:
    return encode_frame("event", seq, json.dumps({"seq": seq, "text": f"line {seq}, with a comma"}))


def _read(message: str) -> list[tuple[str, int | None]]:
    frame = json.loads(message)
    frames = frame["data"] if frame["type"] == "batch" else [frame]
    assert all(f["type"] != "batch" for f in frames)
    return [(f["type"], f["seq"]) for f in frames]


def test_a_lone_frame_goes_as_it_is() -> None:
    assert one_message([_event(1)]) == _event(1)
    assert one_message([(_event(2),)]) == _event(2)


def test_an_agents_batch_of_event_frames_and_single_frames_keep_their_order() -> None:
    items = [(_event(1), _event(2), _event(3)), encode_frame("resources", 4, "{}"), (_event(5), _event(6))]
    assert _read(one_message(items)) == [
        ("event", 1),
        ("event", 2),
        ("event", 3),
        ("resources", 4),
        ("event", 5),
        ("event", 6),
    ]


def test_a_batch_among_the_items_is_spliced_in_not_nested() -> None:
    earlier = batch([_event(1), _event(2)])
    items = [earlier, (_event(3), _event(4)), batch([(_event(5),)])]
    assert _read(one_message(items)) == [("event", n) for n in range(1, 6)]
