"""How long a CLI run has run, its paused time left out (the wall-clock limits count this)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunClock:
    """Started at ``started`` (a monotonic time); pauses are subtracted as they end or while open."""

    started: float
    paused_since: float | None = None
    paused_total: float = 0.0

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.paused_since = now

    def resume(self, now: float) -> None:
        if self.paused_since is not None:
            self.paused_total += now - self.paused_since
            self.paused_since = None

    def run_s(self, now: float) -> float:
        """Seconds run by ``now``: a pause still open does not count either."""
        open_pause = now - self.paused_since if self.paused_since is not None else 0.0
        return max(0.0, now - self.started - self.paused_total - open_pause)


__all__ = ["RunClock"]
