"""The newest write in a run's folder, read from real files: what counts and what does not."""

from __future__ import annotations

import os
import time
from pathlib import Path

from meta_orchestrator.actors.processes.folder_writes import newest_write

OLD = 1_000_000_000.0  # 2001: long before any window


def _age(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.utime(os.path.join(folder, name), (OLD, OLD), follow_symlinks=False)
    os.utime(root, (OLD, OLD))


def _tree(root: Path) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "src" / "deep" / "a.py").write_text("a\n")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "index").write_text("index\n")
    _age(root)
    return root


def test_a_write_anywhere_in_the_folder_counts(tmp_path: Path):
    root = _tree(tmp_path / "run")
    assert newest_write(root, until=time.time()) == OLD
    (root / "src" / "deep" / "a.py").write_text("changed\n")
    assert newest_write(root, until=time.time()) > OLD + 1000


def test_a_deleted_file_counts_through_its_folder(tmp_path: Path):
    root = _tree(tmp_path / "run")
    (root / "src" / "deep" / "a.py").unlink()
    assert newest_write(root, until=time.time()) > OLD + 1000


def test_git_internals_and_future_dates_do_not_count(tmp_path: Path):
    root = _tree(tmp_path / "run")
    (root / ".git" / "index").write_text("git status rewrote it\n")
    (root / ".git" / "objects" / "ab").write_text("an object\n")
    assert newest_write(root, until=time.time()) == OLD
    future = time.time() + 86_400
    os.utime(root / "src" / "deep" / "a.py", (future, future))
    assert newest_write(root, until=time.time()) == OLD


def test_a_write_after_the_clock_was_read_counts(tmp_path: Path):
    """The monitor reads the clock, then walks: a file a silent build writes meanwhile is dated
    after that reading. It is the newest write, not a future date (a stall test once stopped a
    writing run under load this way)."""
    root = _tree(tmp_path / "run")
    read_before = time.time() - 0.5  # the clock as read before the walk began
    (root / "src" / "deep" / "a.py").write_text("written during the walk\n")
    written = (root / "src" / "deep" / "a.py").stat().st_mtime
    assert written > read_before
    assert newest_write(root, until=read_before) == written


def test_the_walk_is_bounded_nearest_first(tmp_path: Path):
    root = tmp_path / "run"
    (root / "a" / "b").mkdir(parents=True)
    for n in range(5):
        (root / f"top{n}.txt").write_text("x")
    (root / "a" / "b" / "deep.txt").write_text("x")
    _age(root)
    os.utime(root / "a" / "b" / "deep.txt")  # now
    assert newest_write(root, until=time.time(), limit=4) == OLD  # the deep file is past the bound
    assert newest_write(root, until=time.time()) > OLD + 1000


def test_a_folder_that_is_gone_is_not_known(tmp_path: Path):
    assert newest_write(tmp_path / "missing", until=time.time()) is None
