"""Every browser's outbox, as the gateway actor fills them; only the actor thread calls this.

Each WebSocket (or SSE) request thread is the only writer of its socket and drains a bounded
outbox that only the actor fills. A browser that falls behind never blocks the actor: when
its outbox is full it is emptied and a fresh snapshot put in instead. A browser whose writer
made no progress for ``stall_timeout_s`` is hung up on and dropped.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from meta_orchestrator.messages.gateway import ClientConnected, ClientStats

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 1.0

# What an outbox holds: a frame, the frames of one batch of events (kept apart, so that each
# writer sends them its way without parsing them again), or None: close.
OutboxItem = str | tuple[str, ...] | None


def frame_list(item: str | tuple[str, ...]) -> tuple[str, ...]:
    """The frames of one outbox item, in order."""
    return item if isinstance(item, tuple) else (item,)


@dataclass
class Outbox:
    """One browser's outbox and what the actor counts of it."""

    client: str
    queue: queue.Queue[OutboxItem]
    remote: str | None
    hangup: Callable[[], None] | None
    frames_queued: int = 0
    resyncs: int = 0
    offered_since_resync: int = 0
    stuck_since: float | None = None

    def stats(self) -> ClientStats:
        return ClientStats(
            client=self.client,
            remote=self.remote,
            queued=self.queue.qsize(),
            capacity=self.queue.maxsize,
            frames_queued=self.frames_queued,
            resyncs=self.resyncs,
        )


class Outboxes:
    """The connected browsers; ``snapshot`` gives the frame a browser that fell behind gets."""

    def __init__(self, snapshot: Callable[[], str], stall_timeout_s: float) -> None:
        self.dropped = 0
        self._snapshot = snapshot
        self._stall_timeout_s = stall_timeout_s
        self._boxes: dict[str, Outbox] = {}

    def __iter__(self) -> Iterator[Outbox]:
        return iter(list(self._boxes.values()))

    def get(self, client: str) -> Outbox | None:
        return self._boxes.get(client)

    def add(self, message: ClientConnected) -> Outbox:
        box = Outbox(client=message.client, queue=message.outbox, remote=message.remote, hangup=message.hangup)
        self._boxes[message.client] = box
        return box

    def remove(self, client: str) -> bool:
        return self._boxes.pop(client, None) is not None

    def offer_all(self, item: str | tuple[str, ...]) -> None:
        for box in self:
            self.offer(box, item)

    def offer(self, box: Outbox, item: str | tuple[str, ...]) -> None:
        try:
            box.queue.put_nowait(item)
        except queue.Full:
            self._resync(box)
        else:
            box.frames_queued += 1
            box.offered_since_resync += 1

    def replace_by_snapshot(self, box: Outbox) -> None:
        """What the browser has not read yet gives way to one fresh snapshot (it asked)."""
        drain(box.queue)
        self.offer(box, self._snapshot())

    def _resync(self, box: Outbox) -> None:
        """The browser fell behind: replace what it has not read by one fresh snapshot."""
        capacity = box.queue.maxsize
        # After the last resync the outbox held one frame; if it filled up with exactly the
        # frames offered since, the writer took nothing: it is stuck in a send.
        stuck = box.resyncs > 0 and box.offered_since_resync <= capacity - 1
        now = time.monotonic()
        if stuck:
            box.stuck_since = box.stuck_since or now
            if now - box.stuck_since >= self._stall_timeout_s:
                self._drop(box, f"no progress for {self._stall_timeout_s:.0f}s")
                return
        else:
            box.stuck_since = None
        drain(box.queue)
        box.queue.put_nowait(self._snapshot())
        box.resyncs += 1
        box.frames_queued += 1
        box.offered_since_resync = 0
        if box.resyncs in (1, 10, 100) or box.resyncs % 1000 == 0:
            logger.info("browser %s fell behind (%d times); sent a fresh snapshot", box.client, box.resyncs)

    def _drop(self, box: Outbox, reason: str) -> None:
        logger.warning("dropping browser %s (%s): %s", box.client, box.remote, reason)
        self._boxes.pop(box.client, None)
        self.dropped += 1
        drain(box.queue)
        box.queue.put_nowait(None)
        if box.hangup is not None:
            box.hangup()

    def close_all(self) -> None:
        """Tell every writer to close its socket (what it had not sent is dropped)."""
        for box in self:
            drain(box.queue)
            box.queue.put_nowait(None)

    def hang_up_stuck(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """After ``close_all``: give the writers ``wait_s`` to take their close; a writer stuck
        in a send is unblocked by hanging up its socket. Then none is left."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(not box.queue.empty() for box in self):
            time.sleep(0.02)
        for box in self:
            if not box.queue.empty() and box.hangup is not None:
                box.hangup()
        self._boxes.clear()


def drain(outbox: queue.Queue[Any]) -> None:
    while True:
        try:
            outbox.get_nowait()
        except queue.Empty:
            return


__all__ = ["Outbox", "OutboxItem", "Outboxes", "drain", "frame_list"]
