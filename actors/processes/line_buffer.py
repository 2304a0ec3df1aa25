"""A bounded buffer of one CLI run's lines, numbered, between its pipes and a distant reader.

The pump threads put what each read of a pipe returned (a chunk of lines); the reader's
long-poll takes the chunks after the last sequence number it holds (``after_seq``), and a
separate number (``ack_seq``, by default the same) acknowledges the lines the reader has
made safe: the driver advances it only once the lines are written to its event files. Only
an acknowledged line is dropped, so a line handed over but not yet recorded is still here
if its reader is lost, and a reply lost on the way is simply asked for again. A full buffer
(taken and untaken lines alike) blocks the pump (the CLI then waits on its pipe) rather
than drop a line. Threads and a condition only; the remote host wraps it.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from meta_orchestrator.actors.processes.line_splitter import RawLine

# What a buffered line costs beyond its bytes, so that a flood of empty lines is bounded too
# (and a handoff of a buffer's worth stays a bounded number of line objects).
LINE_OVERHEAD = 16

# In a flood (the last take was large) a take waits up to LINGER_S for LINGER_BYTES to gather:
# every take costs the reader a round trip, so a flood is better moved in few large ones. A
# quiet stream (small takes) is answered the moment a line arrives.
FLOOD_BYTES = 16_384
LINGER_S = 0.02
LINGER_BYTES = 1_048_576

# Lines travel packed: their bytes joined by newlines (a line never holds one), one string per
# pipe read, so that a batch costs a few objects to move and not a few per line; the rare line
# that is not its bytes alone (the head of an over-long line, kept whole in a file) rides
# beside it as (index, total bytes, file).
Extras = tuple[tuple[int, int, str], ...]
# (stream, sequence number of its first line, number of lines, packed lines, extras)
Chunk = tuple[str, int, int, bytes, Extras]


def pack(lines: list[RawLine]) -> tuple[bytes, Extras]:
    """``lines`` as one string and the few lines that need more than their bytes."""
    extras = tuple((i, total, path) for i, (_, total, path) in enumerate(lines) if path is not None)
    return b"\n".join([data for data, _, _ in lines]), extras


def unpack(count: int, packed: bytes, extras: Extras) -> list[RawLine]:
    """The lines of a chunk, as ``iter_line_batches`` gave them."""
    lines: list[RawLine] = [(data, len(data), None) for data in packed.split(b"\n")] if count else []
    for i, total, path in extras:
        lines[i] = (lines[i][0], total, path)
    return lines


# A chunk as the buffer holds it: the chunk and what it counts against the bound.
_Held = tuple[str, int, int, bytes, Extras, int]


@dataclass(frozen=True)
class Taken:
    """What one take returns: whole chunks in sequence order, the last number they reach
    (``after_seq`` when there are none), and whether that was the very last line."""

    chunks: list[Chunk]
    last_seq: int
    ended: bool


class SequencedLines:
    """Lines numbered from 1 in the order the pumps put them, kept until acknowledged."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # Not yet handed over, and handed over but not yet acknowledged, each in seq order.
        self._chunks: collections.deque[_Held] = collections.deque()
        self._sent: collections.deque[_Held] = collections.deque()
        self._bytes = 0  # both queues: what the bound counts
        self._new_bytes = 0  # ``_chunks`` alone: what a lingering take waits for
        self._peak = 0
        self._next_seq = 1
        self._finished = False
        self._closed = False
        self._last_take_bytes = 0
        self._changed = threading.Condition()

    @property
    def closed(self) -> bool:
        """True once the buffer was closed (abandoned)."""
        return self._closed

    @property
    def peak_bytes(self) -> int:
        """The most the buffer ever held, as it counts (bytes plus a per-line overhead)."""
        return self._peak

    def put(self, stream: str, lines: list[RawLine]) -> bool:
        """Append one read's lines, waiting while the buffer is full (a chunk larger than the
        whole buffer still goes in once it is empty). False once the buffer is closed."""
        if not lines:
            return not self._closed
        packed, extras = pack(lines)  # outside the lock: the reader need not wait for it
        return self.put_packed(stream, len(lines), packed, extras)

    def put_packed(self, stream: str, count: int, packed: bytes, extras: Extras) -> bool:
        """``put`` for lines packed already (a chunk passed on as it came)."""
        cost = len(packed) + LINE_OVERHEAD * count
        with self._changed:
            while not self._closed and self._bytes and self._bytes + cost > self._max_bytes:
                self._changed.wait()
            if self._closed:
                return False
            self._chunks.append((stream, self._next_seq, count, packed, extras, cost))
            self._next_seq += count
            self._bytes += cost
            self._new_bytes += cost
            self._peak = max(self._peak, self._bytes)
            self._changed.notify_all()
            return True

    def finish(self) -> None:
        """No line will be put any more (the pumps have reached the end of both pipes)."""
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def close(self) -> None:
        """The run is abandoned: drop everything and release any pump waiting for room."""
        with self._changed:
            self._closed = True
            self._chunks.clear()
            self._sent.clear()
            self._bytes = self._new_bytes = 0
            self._changed.notify_all()

    def take(self, after_seq: int, timeout_s: float, max_bytes: int, ack_seq: int | None = None) -> Taken:
        """Acknowledge every line up to ``ack_seq`` (``after_seq`` when not given; never
        beyond it), then return the chunks after ``after_seq``: when there are some, else when
        one arrives, the end comes or ``timeout_s`` passes. At most about ``max_bytes`` (always
        at least one chunk). Chunks are whole: a chunk is dropped once all of it is
        acknowledged, and one the reader holds only part of is returned again from its start
        (the reader skips the numbers it has).

        After a take of ``FLOOD_BYTES`` or more (a flood) it waits up to ``LINGER_S`` for
        ``LINGER_BYTES`` (or ``max_bytes``) of new lines to gather, so that a flood costs a few
        large takes and not one per pipe read; a quiet stream is answered at once."""
        deadline = time.monotonic() + timeout_s
        flood = self._last_take_bytes >= FLOOD_BYTES
        with self._changed:
            self._handed_over(after_seq)
            self._acknowledge(after_seq if ack_seq is None else min(ack_seq, after_seq))
            linger_until: float | None = None
            while not self._closed and not self._finished:
                now = time.monotonic()
                if self._next_seq - 1 > after_seq:  # lines are there
                    if not flood or self._new_bytes >= min(LINGER_BYTES, max_bytes):
                        break
                    if linger_until is None:
                        linger_until = min(deadline, now + LINGER_S)
                    if now >= linger_until:
                        break
                    self._changed.wait(linger_until - now)
                    continue
                if now >= deadline:
                    break
                self._changed.wait(deadline - now)
            chunks: list[Chunk] = []
            size = 0
            last = after_seq
            for stream, first, count, packed, extras, cost in self._chunks:
                if chunks and size + cost > max_bytes:
                    break
                chunks.append((stream, first, count, packed, extras))
                size += cost
                last = first + count - 1
            ended = self._finished and last == self._next_seq - 1
            self._last_take_bytes = size
            return Taken(chunks=chunks, last_seq=last, ended=ended)

    def _handed_over(self, after_seq: int) -> None:
        """The reader holds every line up to ``after_seq`` (lock held): those chunks wait for
        their acknowledgement apart; sent ones it says it lacks (a lost reply) go out again."""
        while self._chunks and self._chunks[0][1] + self._chunks[0][2] - 1 <= after_seq:
            held = self._chunks.popleft()
            self._sent.append(held)
            self._new_bytes -= held[5]
        while self._sent and self._sent[-1][1] + self._sent[-1][2] - 1 > after_seq:
            held = self._sent.pop()
            self._chunks.appendleft(held)
            self._new_bytes += held[5]

    def acknowledge(self, seq: int) -> None:
        """The reader has made every line up to ``seq`` safe: drop them (between takes)."""
        with self._changed:
            self._acknowledge(seq)

    def _acknowledge(self, seq: int) -> None:
        """Drop the handed-over chunks every line of which is at or before ``seq`` (lock held)."""
        dropped = False
        while self._sent:
            _, first, count, _, _, cost = self._sent[0]
            if first + count - 1 > seq:
                break
            self._sent.popleft()
            self._bytes -= cost
            dropped = True
        if dropped:
            self._changed.notify_all()
