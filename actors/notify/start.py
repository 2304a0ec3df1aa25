"""How notifications start: the channels the settings ask for, and the notifier among the listeners."""

from __future__ import annotations

import logging
import os
import shutil
from typing import TYPE_CHECKING, Any

import pykka
from meta_orchestrator.actors.supervision.starting import start_actor
from meta_orchestrator.config.settings import NotifySettings

if TYPE_CHECKING:
    from meta_orchestrator.actors.notify.delivery import Channel

log = logging.getLogger(__name__)


def notify_channels(settings: NotifySettings, path: str | None = None) -> list[Channel]:
    """A webhook per address, and the desktop where ``notify-send`` is on ``path`` (default:
    this program's PATH); without it, one log line says desktop notifications are off."""
    from meta_orchestrator.actors.notify.delivery import Desktop, Webhook  # see start_notifier

    channels: list[Channel] = [Webhook(url, settings.timeout_s) for url in settings.webhook_urls]
    if settings.desktop:
        found = shutil.which("notify-send", path=path if path is not None else os.environ.get("PATH"))
        if found:
            channels.append(Desktop(found, settings.timeout_s))
        else:
            log.warning("notify: desktop = true, but notify-send is not on PATH; no desktop notifications")
    return channels


def start_notifier(started: list[Any], settings: NotifySettings, session_id: str) -> pykka.ActorRef[Any] | None:
    """The notifier, when anything is to be told somewhere (None: nothing is)."""
    if not (settings.webhook_urls or settings.desktop) or not settings.events:
        return None  # the default: nothing of delivery (urllib.request, ...) is imported at start
    from meta_orchestrator.actors.notify.delivery import Deliveries
    from meta_orchestrator.actors.notify.notices import NoticeRules
    from meta_orchestrator.actors.notify.notifier import Notifier

    channels = notify_channels(settings)
    if not channels:
        return None
    rules = NoticeRules(session_id, settings.events)
    return start_actor(started, Notifier, rules=rules, deliveries=Deliveries(channels, settings))
