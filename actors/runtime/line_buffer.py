"""A bounded buffer of one CLI run's lines, numbered, between its pipes and a distant reader.

The pump threads put what each read of a pipe returned (a chunk of lines); the reader's
long-poll takes the chunks after the last sequence number it holds, and naming that number
acknowledges everything up to it: only then is a line dropped, so a reply lost on the way is
simply asked for again. A full buffer blocks the pump (the CLI then waits on its pipe)
rather than drop a line. Threads and a condition only; the remote host wraps it.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass

from meta_orchestrator.actors.runtime.process_host import RawLine

# What a buffered line costs beyond its bytes (the tuple, the bytes object, the list slot),
# so that a flood of empty lines is bounded too.
LINE_OVERHEAD = 64

# (stream, sequence number of its first line, its lines)
Chunk = tuple[str, int, list[RawLine]]


@dataclass(frozen=True)
class Taken:
    """What one take returns: whole chunks in sequence order, the last number they reach
    (``after_seq`` when there are none), and whether that was the very last line."""

    chunks: list[Chunk]
    last_seq: int
    ended: bool


def _cost(lines: list[RawLine]) -> int:
    return sum(len(data) for data, _, _ in lines) + LINE_OVERHEAD * len(lines)


class SequencedLines:
    """Lines numbered from 1 in the order the pumps put them, kept until acknowledged."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: collections.deque[tuple[str, int, list[RawLine], int]] = collections.deque()
        self._bytes = 0
        self._peak = 0
        self._next_seq = 1
        self._finished = False
        self._closed = False
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
        cost = _cost(lines)
        with self._changed:
            while not self._closed and self._bytes and self._bytes + cost > self._max_bytes:
                self._changed.wait()
            if self._closed:
                return False
            self._chunks.append((stream, self._next_seq, lines, cost))
            self._next_seq += len(lines)
            self._bytes += cost
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
            self._bytes = 0
            self._changed.notify_all()

    def take(self, after_seq: int, timeout_s: float, max_bytes: int) -> Taken:
        """Acknowledge every line up to ``after_seq``, then return the chunks after it: at
        once when there are some, else when one arrives, the end comes or ``timeout_s``
        passes. At most about ``max_bytes`` (always at least one chunk)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            self._acknowledge(after_seq)
            while not self._closed:
                if self._next_seq - 1 > after_seq or self._finished:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            chunks: list[Chunk] = []
            size = 0
            last = after_seq
            for stream, first, lines, cost in self._chunks:
                if first + len(lines) - 1 <= after_seq:
                    continue
                if chunks and size + cost > max_bytes:
                    break
                if first <= after_seq:  # acknowledged part-way (a reader that split a chunk)
                    lines = lines[after_seq - first + 1 :]
                    first = after_seq + 1
                chunks.append((stream, first, lines))
                size += cost
                last = first + len(lines) - 1
            ended = self._finished and last == self._next_seq - 1
            return Taken(chunks=chunks, last_seq=last, ended=ended)

    def _acknowledge(self, seq: int) -> None:
        """Drop the chunks every line of which is at or before ``seq`` (lock held)."""
        dropped = False
        while self._chunks:
            _, first, lines, cost = self._chunks[0]
            if first + len(lines) - 1 > seq:
                break
            self._chunks.popleft()
            self._bytes -= cost
            dropped = True
        if dropped:
            self._changed.notify_all()
