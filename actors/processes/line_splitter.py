"""A pipe's bytes as whole lines, a read at a time, with memory bounded however long a line is.

Under load a read returns many lines and the handoff to the actor is paid once per read; when
the CLI is quiet a read is one line and nothing waits. A line longer than ``max_line_bytes`` is
written whole to the file ``overflow_file()`` names and only its head is kept, so memory stays
bounded and nothing is lost. A CR before a newline is taken off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from meta_orchestrator.actors.files.session_files import open_private

CHUNK = 65_536  # one read of a pipe; a Linux pipe holds 64 KiB by default

# (data, total_bytes, overflow_path): a line, or the head of an over-long line kept whole in a file
RawLine = tuple[bytes, int, "str | None"]


class LineSplitter:
    """The whole lines of one stream, fed the reads of it in order."""

    def __init__(self, max_line_bytes: int, overflow_file: Callable[[], Path]) -> None:
        self._max_line_bytes = max_line_bytes
        self._overflow_file = overflow_file
        self._partial = b""  # the start of a line whose end has not been read yet
        self._spill: IO[bytes] | None = None  # open overflow file of the current over-long line
        self._spill_path = ""
        self._spilled = 0

    def feed(self, chunk: bytes) -> list[RawLine]:
        """The lines that ``chunk`` (one read, not empty) completes."""
        batch: list[RawLine] = []
        if self._spill is not None:  # inside an over-long line: copy until its end
            end = chunk.find(b"\n")
            if end == -1:
                self._spill.write(chunk)
                self._spilled += len(chunk)
                return batch
            self._spill.write(chunk[: end + 1])
            self._spilled += end
            batch.append(self._close_spill())
            chunk = chunk[end + 1 :]
        data = self._partial + chunk if self._partial else chunk
        pieces = data.split(b"\n")  # split in C: the hot path
        self._partial = pieces.pop()
        if pieces and b"\r" not in data and max(map(len, pieces)) <= self._max_line_bytes:
            batch.extend([(piece, len(piece), None) for piece in pieces])  # a flood's usual read
        else:
            batch.extend(_lines(pieces, self._max_line_bytes, self._overflow_file))
        if len(self._partial) > self._max_line_bytes:
            self._spill_path = str(self._overflow_file())
            self._spill = open_private(Path(self._spill_path), binary=True, exclusive=True)
            self._spill.write(self._partial)
            self._spilled = len(self._partial)
            self._partial = b""
        return batch

    def end(self) -> list[RawLine]:
        """The stream ended: its last line, when it had no newline."""
        if self._spill is not None:
            return [self._close_spill()]
        line, self._partial = self._partial, b""
        if not line:
            return []
        line = line[:-1] if line.endswith(b"\r") else line
        return [(line, len(line), None)]

    def _close_spill(self) -> RawLine:
        assert self._spill is not None
        self._spill.close()
        self._spill = None
        return (_head(self._spill_path), self._spilled, self._spill_path)


def iter_line_batches(fd: int, max_line_bytes: int, overflow_file: Callable[[], Path]) -> Iterator[list[RawLine]]:
    """Yield the lines of a pipe in batches, what each read returned, until it closes."""
    splitter = LineSplitter(max_line_bytes, overflow_file)
    while chunk := os.read(fd, CHUNK):
        batch = splitter.feed(chunk)
        if batch:
            yield batch
    last = splitter.end()
    if last:
        yield last


def _lines(pieces: list[bytes], max_line_bytes: int, overflow_file: Callable[[], Path]) -> list[RawLine]:
    """Whole lines as ``RawLine``: a CR before the newline taken off, an over-long line
    written whole to its own file and its head kept."""
    found: list[RawLine] = []
    for piece in pieces:
        if len(piece) > max_line_bytes:
            path = str(overflow_file())
            with open_private(Path(path), binary=True, exclusive=True) as out:
                out.write(piece + b"\n")
            found.append((piece[:4096], len(piece), path))
        else:
            line = piece[:-1] if piece.endswith(b"\r") else piece
            found.append((line, len(line), None))
    return found


def _head(path: str, size: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


__all__ = ["CHUNK", "LineSplitter", "RawLine", "iter_line_batches"]
