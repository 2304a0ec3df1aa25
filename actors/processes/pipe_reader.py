"""One thread reads the pipes of every CLI this process runs, whichever worker runs it.

A thread per pipe made a flood of many agents cost more than its lines: at 64 agents, 128
threads took turns at the interpreter's lock, every read a switch. One thread waiting on all
the pipes at once (epoll) reads whichever has bytes, splits them into lines and offers each
read's lines to the pipe's consumer. A consumer that has enough in hand refuses: the pipe is
then left unread, with the refused lines kept, until the consumer resumes it (the CLI waits on
its full pipe meanwhile; nothing is dropped). At the end of a pipe its last lines are offered,
the pipe is closed and the consumer told. The consumer's offer runs on this thread and must
not block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from meta_orchestrator.actors.processes.line_splitter import CHUNK, LineSplitter, RawLine

log = logging.getLogger(__name__)


@dataclass(eq=False)
class FollowedPipe:
    """One pipe being read: what to do with its lines, and the lines a consumer refused."""

    name: str  # for the log: which agent's which stream
    pipe: IO[bytes]
    splitter: LineSplitter
    # Takes one read's lines; False: not now (the consumer will ``resume`` this pipe).
    offer: Callable[[list[RawLine], FollowedPipe], bool]
    ended: Callable[[], None]  # the pipe is closed and every line of it was taken
    refused: list[RawLine] = field(default_factory=list)
    at_end: bool = False  # the refused lines are its last


class PipeReader:
    """The reading thread, started at the first pipe and kept for the life of the process."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._added: list[FollowedPipe] = []  # told by other threads, taken by the reader
        self._resumed: list[FollowedPipe] = []
        self._thread: threading.Thread | None = None

    def follow(self, followed: FollowedPipe) -> None:
        """Read ``followed.pipe`` until it ends (then it is closed)."""
        with self._lock:
            self._added.append(followed)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pipe-reader", daemon=True)
                self._thread.start()
        self._wake()

    def resume(self, followed: FollowedPipe) -> None:
        """Offer a pipe's refused lines again, and read it on if they are taken."""
        with self._lock:
            self._resumed.append(followed)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: the reader has wake-ups enough waiting
            os.write(self._wake_write, b"\0")

    # -- the reading thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._take_requests()
                else:
                    self._guarded(key.data, self._read)

    def _take_requests(self) -> None:
        while True:
            try:
                if not os.read(self._wake_read, 4096):
                    break
            except BlockingIOError:
                break
        with self._lock:
            added, self._added = self._added, []
            resumed, self._resumed = self._resumed, []
        for followed in added:
            self._guarded(followed, self._start)
        for followed in resumed:
            self._guarded(followed, self._resume)

    def _guarded(self, followed: FollowedPipe, step: Callable[[FollowedPipe], None]) -> None:
        """One pipe's step; if it fails (a pipe closed under it, say), that pipe is ended, so
        that whoever waits for its end is not left waiting, and the others go on."""
        try:
            step(followed)
        except Exception:
            log.exception("%s pipe: reading it failed; it is closed", followed.name)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(followed.pipe)
            self._finish(followed)

    def _start(self, followed: FollowedPipe) -> None:
        self._selector.register(followed.pipe, selectors.EVENT_READ, followed)

    def _resume(self, followed: FollowedPipe) -> None:
        lines, followed.refused = followed.refused, []
        if not self._offered(lines, followed):
            return
        if followed.at_end:
            self._finish(followed)
        else:
            self._selector.register(followed.pipe, selectors.EVENT_READ, followed)

    def _read(self, followed: FollowedPipe) -> None:
        try:
            chunk = os.read(followed.pipe.fileno(), CHUNK)
            lines = followed.splitter.feed(chunk) if chunk else followed.splitter.end()
        except (OSError, ValueError) as exc:  # an over-long line's file cannot be written
            log.warning("%s pipe: %s", followed.name, exc)
            self._selector.unregister(followed.pipe)
            self._finish(followed)
            return
        if not self._offered(lines, followed):
            self._selector.unregister(followed.pipe)  # unread until the consumer resumes it
            followed.at_end = not chunk
            return
        if not chunk:
            self._selector.unregister(followed.pipe)
            self._finish(followed)

    def _offered(self, lines: list[RawLine], followed: FollowedPipe) -> bool:
        """True when there was nothing to offer or the consumer took it; else it is kept."""
        if not lines:
            return True
        try:
            if followed.offer(lines, followed):
                return True
        except Exception:  # a consumer's bug must not stop every other pipe's reading
            log.exception("%s pipe: its lines could not be handed over", followed.name)
            return True
        followed.refused = lines
        return False

    def _finish(self, followed: FollowedPipe) -> None:
        try:
            followed.pipe.close()
        except OSError as exc:
            log.warning("%s pipe: closing it: %s", followed.name, exc)
        followed.ended()


_shared: PipeReader | None = None
_shared_lock = threading.Lock()


def shared_reader() -> PipeReader:
    """The process's one reader (made at the first call)."""
    global _shared  # noqa: PLW0603 - one reader per process, made when a CLI first runs
    with _shared_lock:
        if _shared is None:
            _shared = PipeReader()
        return _shared


__all__ = ["FollowedPipe", "PipeReader", "shared_reader"]
