"""The numbered, bounded line buffer between a remote run's pipes and its driver."""

from __future__ import annotations

import threading

from meta_orchestrator.actors.processes.line_buffer import (
    FLOOD_BYTES,
    LINE_OVERHEAD,
    LINGER_BYTES,
    SequencedLines,
    pack,
    unpack,
)
from tests.conftest import wait_for


def _lines(*texts: str) -> list[tuple[bytes, int, None]]:
    return [(t.encode(), len(t), None) for t in texts]


def test_lines_are_numbered_in_put_order_across_streams_and_kept_until_acknowledged():
    buffer = SequencedLines(max_bytes=10_000)
    assert buffer.put("stdout", _lines("a", "b"))
    assert buffer.put("stderr", _lines("oops"))
    assert buffer.put("stdout", _lines("c"))
    taken = buffer.take(0, timeout_s=0, max_bytes=10_000)
    assert [(s, first, [d for d, _, _ in unpack(n, p, x)]) for s, first, n, p, x in taken.chunks] == [
        ("stdout", 1, [b"a", b"b"]),
        ("stderr", 3, [b"oops"]),
        ("stdout", 4, [b"c"]),
    ]
    assert taken.last_seq == 4 and not taken.ended
    again = buffer.take(0, timeout_s=0, max_bytes=10_000)  # a reply lost on the way: asked again
    assert again.chunks == taken.chunks
    rest = buffer.take(2, timeout_s=0, max_bytes=10_000)  # acknowledged up to 2
    assert [first for _, first, _, _, _ in rest.chunks] == [3, 4]
    part = buffer.take(3, timeout_s=0, max_bytes=10_000)
    assert [first for _, first, _, _, _ in part.chunks] == [4]


def test_lines_travel_packed_and_come_back_as_they_were_read():
    lines = [(b"plain", 5, None), (b"", 0, None), (b"head of a long one", 3_000_000, "/tmp/spill-1"), (b"x", 1, None)]
    packed, extras = pack(lines)
    assert packed == b"plain\n\nhead of a long one\nx" and extras == ((2, 3_000_000, "/tmp/spill-1"),)
    assert unpack(len(lines), packed, extras) == lines
    assert unpack(1, *pack([(b"", 0, None)])) == [(b"", 0, None)]


def test_a_take_is_cut_at_its_size_but_never_empty_when_lines_wait():
    buffer = SequencedLines(max_bytes=10_000)
    for text in ("x" * 100, "y" * 100, "z" * 100):
        buffer.put("stdout", _lines(text))
    one = buffer.take(0, timeout_s=0, max_bytes=10)
    assert len(one.chunks) == 1 and one.last_seq == 1
    two = buffer.take(1, timeout_s=0, max_bytes=2 * (100 + LINE_OVERHEAD))
    assert [first for _, first, _, _, _ in two.chunks] == [2, 3]


def test_the_end_comes_only_with_the_last_line():
    buffer = SequencedLines(max_bytes=10_000)
    buffer.put("stdout", _lines("a"))
    buffer.put("stdout", _lines("b"))
    buffer.finish()
    first = buffer.take(0, timeout_s=0, max_bytes=1)
    assert first.last_seq == 1 and not first.ended
    last = buffer.take(1, timeout_s=0, max_bytes=1)
    assert last.last_seq == 2 and last.ended
    assert buffer.take(2, timeout_s=5, max_bytes=1).ended  # at once: nothing more will come


def test_a_full_buffer_holds_the_writer_until_the_reader_acknowledges():
    cost = 10 + LINE_OVERHEAD
    buffer = SequencedLines(max_bytes=2 * cost)
    buffer.put("stdout", _lines("0123456789"))
    buffer.put("stdout", _lines("0123456789"))
    done = threading.Event()
    writer = threading.Thread(target=lambda: (buffer.put("stdout", _lines("third line")), done.set()))
    writer.start()
    taken = buffer.take(0, timeout_s=0, max_bytes=10_000)
    assert taken.last_seq == 2 and not done.is_set()  # taken but not yet acknowledged: still held
    assert buffer.take(2, timeout_s=10, max_bytes=10_000).last_seq == 3  # acknowledging makes room
    writer.join(5)
    assert done.is_set() and buffer.peak_bytes == 2 * cost


def test_a_long_poll_returns_when_a_line_arrives():
    buffer = SequencedLines(max_bytes=10_000)
    result = []
    reader = threading.Thread(target=lambda: result.append(buffer.take(0, timeout_s=30, max_bytes=100)))
    reader.start()
    buffer.put("stdout", _lines("late"))
    reader.join(10)
    assert result and result[0].last_seq == 1


def test_closing_releases_a_waiting_writer_and_refuses_more():
    buffer = SequencedLines(max_bytes=LINE_OVERHEAD + 1)
    buffer.put("stdout", _lines("a"))
    outcome = []
    writer = threading.Thread(target=lambda: outcome.append(buffer.put("stdout", _lines("b"))))
    writer.start()
    wait_for(lambda: writer.is_alive(), message="the writer to wait")
    buffer.close()
    writer.join(5)
    assert outcome == [False] and buffer.closed and not buffer.put("stdout", _lines("c"))


def test_in_a_flood_takes_gather_more_and_still_return_what_is_there():
    buffer = SequencedLines(max_bytes=8 * LINGER_BYTES)
    big = [(b"y" * 1000, 1000, None)] * (FLOOD_BYTES // 1000 + 1)
    buffer.put("stdout", big)
    flood = buffer.take(0, timeout_s=0, max_bytes=LINGER_BYTES)  # a large take: a flood
    buffer.put("stdout", _lines("small"))
    lingered = buffer.take(flood.last_seq, timeout_s=30, max_bytes=LINGER_BYTES)
    assert lingered.last_seq == flood.last_seq + 1  # waited at most the linger, then returned it
    quiet = buffer.take(lingered.last_seq, timeout_s=0, max_bytes=LINGER_BYTES)
    assert quiet.chunks == []  # a small take ends the flood: nothing waits for more


def test_lines_handed_over_stay_until_their_reader_acknowledges_them():
    cost = 1 + LINE_OVERHEAD
    buffer = SequencedLines(max_bytes=3 * cost)
    for text in ("a", "b", "c"):
        buffer.put("stdout", _lines(text))
    first = buffer.take(0, timeout_s=0, max_bytes=10_000, ack_seq=0)
    assert first.last_seq == 3
    # Handed over, none acknowledged: a new take has nothing new, and the buffer is still full.
    assert buffer.take(3, timeout_s=0, max_bytes=10_000, ack_seq=0).chunks == []
    done = threading.Event()
    writer = threading.Thread(target=lambda: (buffer.put("stdout", _lines("d")), done.set()))
    writer.start()
    assert not done.wait(0.2)
    again = buffer.take(1, timeout_s=0, max_bytes=10_000, ack_seq=1)  # the reader lost 2 and 3: sent again
    assert [first for _, first, _, _, _ in again.chunks] == [2, 3]
    assert done.wait(5)  # acknowledging line 1 made room for d
    buffer.acknowledge(3)  # between takes: the driver recorded up to 3
    rest = buffer.take(3, timeout_s=0, max_bytes=10_000, ack_seq=3)
    assert [first for _, first, _, _, _ in rest.chunks] == [4]
    assert buffer.take(4, timeout_s=0, max_bytes=10_000, ack_seq=99).chunks == []  # never beyond what it holds
    writer.join(5)
