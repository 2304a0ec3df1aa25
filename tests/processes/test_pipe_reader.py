"""The one thread that reads every local CLI's pipes: every line in order, and a pipe left
unread (the writer waiting) while its consumer has enough, never a line dropped."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from meta_orchestrator.actors.processes.line_splitter import LineSplitter, RawLine
from meta_orchestrator.actors.processes.pipe_reader import FollowedPipe, PipeReader
from tests.conftest import pipe_nearly_full, wait_for

PRINTER = "import sys\nfor i in range(int(sys.argv[1])): print(sys.argv[2], i)\n"


class Consumer:
    """Collects a pipe's lines; refuses them while ``refusing`` is set."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.refusing = threading.Event()
        self.refused = threading.Event()
        self.ended = threading.Event()
        self.ends = 0

    def offer(self, lines: list[RawLine], _followed: FollowedPipe) -> bool:
        if self.refusing.is_set():
            self.refused.set()
            return False
        self.lines.extend(data for data, _, _ in lines)
        return True

    def end(self) -> None:
        self.ends += 1
        self.ended.set()


def _follow(reader: PipeReader, proc: subprocess.Popen[bytes], consumer: Consumer, tmp_path: Path) -> FollowedPipe:
    assert proc.stdout is not None
    followed = FollowedPipe(
        name="test stdout",
        pipe=proc.stdout,
        splitter=LineSplitter(1 << 20, lambda: tmp_path / "overflow"),
        offer=consumer.offer,
        ended=consumer.end,
    )
    reader.follow(followed)
    return followed


def _printer(count: int, tag: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", PRINTER, str(count), tag], stdout=subprocess.PIPE, start_new_session=True
    )


def test_every_pipe_is_read_to_its_end_in_order_and_closed(tmp_path: Path):
    reader = PipeReader()
    procs = [_printer(20_000, f"p{n}") for n in range(8)]
    consumers = [Consumer() for _ in procs]
    followed = [_follow(reader, p, c, tmp_path) for p, c in zip(procs, consumers, strict=True)]
    for proc, consumer, pipe in zip(procs, consumers, followed, strict=True):
        assert consumer.ended.wait(60)
        assert proc.wait(30) == 0
        assert consumer.lines == [f"p{procs.index(proc)} {i}".encode() for i in range(20_000)]
        assert consumer.ends == 1 and pipe.pipe.closed


def test_a_refused_pipe_is_left_unread_until_resumed_and_loses_nothing(tmp_path: Path):
    reader = PipeReader()
    consumer = Consumer()
    consumer.refusing.set()
    proc = _printer(200_000, "flood")  # ~2.5 MB: far more than a pipe holds
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    followed = _follow(reader, proc, consumer, tmp_path)
    assert consumer.refused.wait(30)
    # Not read on: the pipe fills up, and the CLI waits on it.
    wait_for(lambda: pipe_nearly_full(fd), 30, message="the refused pipe to fill up")
    assert proc.poll() is None and not consumer.lines
    consumer.refusing.clear()
    reader.resume(followed)
    assert consumer.ended.wait(60)
    assert proc.wait(30) == 0
    assert consumer.lines == [f"flood {i}".encode() for i in range(200_000)]


def test_the_last_lines_refused_end_the_pipe_only_once_taken(tmp_path: Path):
    """The consumer takes the first lines and refuses the last, which come at the pipe's end:
    the end is told only once they are taken."""
    reader = PipeReader()
    consumer = Consumer()

    def offer(lines: list[RawLine], followed: FollowedPipe) -> bool:
        if any(data == b"short 2" for data, _, _ in lines) and not consumer.refused.is_set():
            consumer.refusing.set()  # the first time only
        return Consumer.offer(consumer, lines, followed)

    consumer.offer = offer  # type: ignore[method-assign]
    # One write (atomic: under PIPE_BUF) and no newline at the end: the last line is known
    # only at the end of the pipe.
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os; os.write(1, b'short 0\\nshort 1\\nshort 2')"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    followed = _follow(reader, proc, consumer, tmp_path)
    assert proc.wait(30) == 0
    wait_for(lambda: followed.at_end, 30, message="the last line refused at the end")
    assert followed.refused == [(b"short 2", 7, None)] and not consumer.ended.is_set()
    assert not followed.pipe.closed
    consumer.refusing.clear()
    reader.resume(followed)
    assert consumer.ended.wait(30)
    assert consumer.lines == [b"short 0", b"short 1", b"short 2"] and consumer.ends == 1
    assert followed.pipe.closed


def test_a_consumer_that_raises_does_not_stop_the_other_pipes(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    reader = PipeReader()
    broken, sound = Consumer(), Consumer()

    def explode(_lines: list[RawLine], _followed: FollowedPipe) -> bool:
        raise RuntimeError("a consumer's bug")

    broken.offer = explode  # type: ignore[method-assign]
    first, second = _printer(1000, "broken"), _printer(1000, "sound")
    _follow(reader, first, broken, tmp_path)
    _follow(reader, second, sound, tmp_path)
    assert sound.ended.wait(30) and broken.ended.wait(30)
    assert sound.lines == [f"sound {i}".encode() for i in range(1000)]
    assert "a consumer's bug" in caplog.text
    assert first.wait(30) == 0 and second.wait(30) == 0


def test_a_pipe_whose_over_long_line_cannot_be_kept_is_ended_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    reader = PipeReader()
    consumer = Consumer()
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write('x' * 100_000 + '\\nafter\\n')"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    followed = FollowedPipe(
        name="claude stdout",
        pipe=proc.stdout,
        splitter=LineSplitter(1000, lambda: tmp_path / "missing" / "overflow"),  # no such folder
        offer=consumer.offer,
        ended=consumer.end,
    )
    reader.follow(followed)
    assert consumer.ended.wait(30)
    assert "claude stdout pipe" in caplog.text and followed.pipe.closed
    proc.wait(30)
    assert not os.path.exists(tmp_path / "missing")


def test_a_pipe_that_cannot_be_watched_is_ended_and_the_others_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    reader = PipeReader()
    closed, sound = Consumer(), Consumer()
    gone = _printer(10, "gone")
    assert gone.stdout is not None
    gone.stdout.close()  # closed before the reader could watch it
    _follow(reader, gone, closed, tmp_path)
    other = _printer(1000, "other")
    _follow(reader, other, sound, tmp_path)
    assert closed.ended.wait(30) and sound.ended.wait(30)
    assert sound.lines == [f"other {i}".encode() for i in range(1000)]
    assert "test stdout pipe: reading it failed" in caplog.text
    gone.wait(30)
    other.wait(30)
