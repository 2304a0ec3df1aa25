"""Sending notices, away from the actors: one thread and one bounded queue per address.

An address that hangs or refuses holds up only its own queue; each attempt has a time limit,
a failure is retried after a doubling wait, and every failure is logged (the session's log).
A full queue drops the newest notice with a log line. Nothing here raises to its caller.
At the end (``Deliveries.close``) what is still queued gets one try each, no more waits,
within a grace period; the rest is logged and dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Protocol
from urllib.parse import urlsplit

from meta_orchestrator.actors.notify.notices import Notice
from meta_orchestrator.config.settings import NotifySettings

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """One attempt failed; the message says how."""


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` or raise DeliveryError, within the attempt's time limit."""


def shown_address(url: str) -> str:
    """A webhook's address as logged: its path is often its secret (Slack's is)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


class Webhook:
    """A JSON POST of the notice's body; any 2xx answer is delivered."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.name = f"webhook {shown_address(url)}"

    def send(self, notice: Notice) -> None:
        data = json.dumps(notice.body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(
            self.url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "orchestrate-notify"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310 - http(s) only (settings)
                answer.read(65536)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DeliveryError(f"{type(exc).__name__}: {reason}") from None


class Desktop:
    """``notify-send`` as a child in its own process group, waited for; killed with its group
    when it takes longer than an attempt may."""

    name = "desktop (notify-send)"

    def __init__(self, executable: str, timeout_s: float) -> None:
        self.executable, self.timeout_s = executable, timeout_s

    def send(self, notice: Notice) -> None:
        argv = [self.executable, "--app-name=orchestrate", notice.title, notice.body["text"]]
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise DeliveryError(f"cannot start {self.executable}: {exc.strerror or exc}") from None
        try:
            _, err = child.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise DeliveryError(f"no exit within {self.timeout_s:g}s; its process group was killed") from None
        if child.returncode:
            said = err.decode("utf-8", "replace").strip()[:200]
            raise DeliveryError(f"exit {child.returncode}{': ' + said if said else ''}")


class Outbox:
    """One channel's queue and the thread that empties it, in order."""

    def __init__(self, channel: Channel, settings: NotifySettings) -> None:
        self.channel = channel
        self._settings = settings
        self._pending: deque[Notice] = deque()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name=f"notify {channel.name}", daemon=True)
        self._thread.start()

    def offer(self, notice: Notice) -> None:
        with self._changed:
            if self._closing.is_set():
                return
            if len(self._pending) >= self._settings.queue_size:
                log.warning(
                    "notify: %s is %d notices behind; the %s notice is dropped",
                    self.channel.name,
                    len(self._pending),
                    notice.event,
                )
                return
            self._pending.append(notice)
            self._changed.notify()

    def close(self, deadline: float) -> None:
        """From now: one try each for what is queued, until ``deadline`` (time.monotonic)."""
        with self._changed:
            self._deadline = deadline
            self._closing.set()
            self._changed.notify()

    def join(self, deadline: float) -> bool:
        """Wait for the queue to empty until ``deadline``; True when it did."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return True
        with self._changed:
            left = len(self._pending)
        log.warning(
            "notify: %s: the program ends with one notice still being sent and %d more queued; they are dropped",
            self.channel.name,
            left,
        )
        return False

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing.is_set():
                    self._changed.wait()
                if not self._pending:
                    return
                notice = self._pending.popleft()
            if self._closing.is_set() and time.monotonic() >= self._deadline:
                continue  # past the grace: join() says how many were left
            self._deliver(notice)

    def _deliver(self, notice: Notice) -> None:
        tries = self._settings.retries + 1
        for attempt in range(1, tries + 1):
            try:
                self.channel.send(notice)
                log.debug("notify: %s notice sent to %s", notice.event, self.channel.name)
                return
            except DeliveryError as exc:
                failure = (
                    f"notify: {notice.event} notice to {self.channel.name} failed (attempt {attempt} of {tries}): {exc}"
                )
            except Exception as exc:  # noqa: BLE001 - a bug in a send must not end the thread
                failure = f"notify: {notice.event} notice to {self.channel.name} failed unexpectedly: {exc!r}"
            wait = self._settings.backoff_s * 2 ** (attempt - 1)
            if attempt == tries or self._closing.is_set():
                log.warning("%s; given up", failure)
                return
            log.warning("%s; retrying in %gs", failure, wait)
            if self._closing.wait(wait):
                log.warning("notify: %s notice to %s given up: the session ended", notice.event, self.channel.name)
                return


class Deliveries:
    """Every channel's outbox: ``offer`` hands a notice to each, ``close`` ends them within a grace."""

    def __init__(self, channels: list[Channel], settings: NotifySettings) -> None:
        self._settings = settings
        self._outboxes = [Outbox(channel, settings) for channel in channels]

    def offer(self, notice: Notice) -> None:
        for outbox in self._outboxes:
            outbox.offer(notice)

    def close(self) -> None:
        deadline = time.monotonic() + self._settings.end_grace_s
        for outbox in self._outboxes:
            outbox.close(deadline)
        for outbox in self._outboxes:
            outbox.join(deadline)
