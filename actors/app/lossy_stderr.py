"""The launcher's stderr once nobody reads it: a pipe whose reader is gone, a terminal that
hung up. What it would say there is lost, never the session: a failed write must not end a
run, turn a Ctrl-C's 130 into 1, or fail the interpreter's last flush (its exit code 120)."""

from __future__ import annotations

import errno
import os
from typing import Any, TextIO

# A reader gone: a closed pipe (EPIPE) or a hung-up terminal (EIO).
_GONE = (errno.EPIPE, errno.EIO)


class LossyStderr:
    """Writes through to ``stream``; at the first write or flush that finds its reader gone,
    its file descriptor is pointed at /dev/null, so that write, whatever the stream still
    holds, and every later write (by any holder of the stream or the descriptor) go nowhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self._lost(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self._lost(exc)

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty...: the stream's own
        return getattr(self.stream, name)

    def _lost(self, exc: OSError) -> None:
        if exc.errno not in _GONE:
            raise exc
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.stream.fileno())
        finally:
            os.close(devnull)
        self.stream.flush()  # what it still held goes to /dev/null now, not to the last flush


__all__ = ["LossyStderr"]
