"""Who may touch a session's branch and checkouts: one exclusive lock on ``launcher.lock`` in
its folder (``flock``).

The launcher holds it from before its session begins until its end work is done: every agent
actor stopped, the merged checkouts removed, the store settled. ``state.json`` turns final a
moment before that, so ``orchestrate apply``, ``discard`` and ``answer`` (and the MCP tools,
which call them) take the same lock, waiting with a deadline, and ``orchestrate resume`` takes
it before it reads the saved state: they run on a finished session only, never beside its end
work. A launcher that keeps its dashboard up after the end releases the lock before it
lingers, so its session is appliable then. The kernel releases the lock of a process that
dies; what the launcher last wrote into the file (``phase``) then tells whether its end work
was done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

LOCK_FILE = "launcher.lock"
END_WAIT_S = 60.0
_POLL_S = 0.02
RUNNING, ENDED = "running", "ended"


class SessionBusy(Exception):
    """The lock was not free before the deadline: the message says who holds it and why."""


class SessionLock:
    """A held lock on one session folder; ``release`` (or the ``with`` block's end) frees it.
    ``previous``: what the file said when it was taken (``pid`` and ``phase`` of the last
    launcher; empty for a session made before the lock existed)."""

    def __init__(self, fd: int, path: Path, previous: dict[str, Any]) -> None:
        self._fd: int | None = fd
        self.path = path
        self.previous = previous

    def mark(self, phase: str) -> None:
        """Record this process as the launcher, in ``phase`` (running, then ended)."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), "phase": phase}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def unfinished_end(self) -> str | None:
        """Why the last launcher's end work may be incomplete (it died before it marked its
        end), or None: it finished, or no launcher ever held this lock."""
        pid, phase = self.previous.get("pid"), self.previous.get("phase")
        if phase is None or phase == ENDED:
            return None
        return (
            f"the session's launcher (pid {pid}) ended before its end work was done (killed?): "
            "checkouts whose work is on the branch may be left (discard removes them); the branch "
            "holds every assignment merged before it ended"
        )

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor frees the flock

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(session_dir: Path) -> dict[str, Any]:
    """What the lock file says (the last launcher's pid and phase); empty if none or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((session_dir / LOCK_FILE).read_text(encoding="utf-8") or "{}")
        if isinstance(data, dict):
            return data
    return {}


def take(session_dir: Path, wait_s: float = END_WAIT_S, what: str = "this") -> SessionLock:
    """The session's lock, waiting up to ``wait_s`` for its holder to release it.

    Raises:
        SessionBusy: still held at the deadline (nothing was done).
        OSError: the lock file cannot be opened.
    """
    path = session_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise SessionBusy(_busy(session_dir, wait_s, what)) from None
                time.sleep(_POLL_S)  # flock has no timeout: poll the condition up to the deadline
    except BaseException:
        os.close(fd)
        raise
    return SessionLock(fd, path, read_holder(session_dir))


def _busy(session_dir: Path, wait_s: float, what: str) -> str:
    holder = read_holder(session_dir)
    who = f"its launcher (pid {holder['pid']})" if holder.get("pid") else "its launcher"
    return (
        f"session {session_dir.name} is busy: {who} is still finishing its end work (stopping its agents, "
        f"removing merged checkouts), or another apply, discard, answer or resume runs on it; waited {wait_s:.0f}s, "
        f"{what} did nothing; try again in a moment"
    )


__all__ = ["END_WAIT_S", "ENDED", "LOCK_FILE", "RUNNING", "SessionBusy", "SessionLock", "read_holder", "take"]
