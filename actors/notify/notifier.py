"""Notifier actor: tells the user's webhooks and desktop when a question waits on them, when
the session ends, and when a limit paused or stopped work.

It only listens, as the console does: it turns facts into notices (``notices``) and hands
them to ``delivery``, whose threads do the sending; nothing here waits on a network or a child.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

from meta_orchestrator.actors.notify.delivery import Deliveries
from meta_orchestrator.actors.notify.notices import NoticeRules
from meta_orchestrator.messages.notify import DashboardAddressKnown
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.session import SessionEnded, SessionStateChanged

log = logging.getLogger(__name__)


class Notifier(pykka.ThreadingActor):
    """Hands each notice worth sending to every channel's outbox."""

    def __init__(self, rules: NoticeRules, deliveries: Deliveries) -> None:
        super().__init__()
        self._rules = rules
        self._deliveries = deliveries

    def on_receive(self, message: Any) -> Any:
        match message:
            case DashboardAddressKnown():
                self._rules.dashboard_url = message.base_url
                return None
            case SessionStateChanged():
                notices = self._rules.on_snapshot(message.snapshot)
            case SessionEnded():
                notices = self._rules.on_ended(message)
            case LimitExceeded():
                notices = self._rules.on_limit(message)
            case _:
                return None
        for notice in notices:
            self._deliveries.offer(notice)
        return None

    def on_stop(self) -> None:
        # The session has ended: its last notices get a bounded grace, then the program goes on.
        self._deliveries.close()

    def on_failure(self, *_exc: Any) -> None:
        self._deliveries.close()
