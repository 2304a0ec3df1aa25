"""Wiring -> Notifier: what a notification needs beyond the session's own facts."""

from __future__ import annotations

from pydantic import Field

from meta_orchestrator.messages.base import Message


class DashboardAddressKnown(Message):
    """The dashboard's address, told once it listens and before the session begins."""

    base_url: str = Field(description="without the token: a notification may travel through other hands")
