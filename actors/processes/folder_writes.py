"""When a file was last written in a run's folder: one of the stall limit's signs of life.

A bounded walk with ``os.scandir`` (breadth first, symlinks not followed, ``.git`` skipped:
git's own bookkeeping is no work of the run's) reading each entry's mtime; a folder's own
mtime counts, so a file created, renamed or deleted shows too. The monitor walks only when
output and CPU say a run is idle, so a busy run costs no walk and an idle one a walk per
sample until it is ended or found writing (the newest write found then holds for a window).
inotify would see every write as it happens, but needs a watch per folder (a big checkout
runs into ``max_user_watches``) and a thread per run; a walk on demand needs neither.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

ENTRIES_WALKED = 20_000  # at most this many entries per walk (a few tens of ms)
SKIPPED = frozenset({".git"})


def newest_write(folder: str | Path, until: float, limit: int = ENTRIES_WALKED) -> float | None:
    """The newest mtime (``time.time()`` scale) of ``folder`` and what is under it, walking at
    most ``limit`` entries (the nearest first); ``None`` when the folder cannot be read. An
    mtime after ``until`` (now) is left out: a file dated in the future is no sign of life; one
    written while the walk runs (after ``until`` was read) is checked against the clock again."""
    try:
        root = os.stat(folder).st_mtime
    except OSError:
        return None
    if root > until:  # written since the caller read the clock is not the future
        until = max(until, time.time())
    newest = root if root <= until else 0.0
    pending = collections.deque([os.fspath(folder)])
    walked = 0
    while pending and walked < limit:
        try:
            entries = os.scandir(pending.popleft())
        except OSError:
            continue  # gone meanwhile, or not ours to read
        with entries:
            for entry in entries:
                walked += 1
                if walked > limit:
                    break
                if entry.name in SKIPPED:
                    continue
                try:
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    if mtime > until:  # written while we walk is not the future: look at the clock again
                        until = max(until, time.time())
                    if newest < mtime <= until:
                        newest = mtime
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                except OSError:
                    continue
    return newest


__all__ = ["ENTRIES_WALKED", "newest_write"]
