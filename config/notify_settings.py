"""The ``[notify]`` section: which events are told, where, and how hard sending tries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    """As ``settings.Section`` (which imports this module): frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


NotifyEvent = Literal["question_opened", "session_ended", "limit"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = ("question_opened", "session_ended", "limit")


class NotifySettings(_Section):
    """Hearing from a session anywhere: a JSON POST to each webhook (a valid Slack incoming-webhook
    body) and a desktop notification, per event. Sending never blocks, slows or fails the session."""

    webhook_urls: tuple[str, ...] = Field(
        default=(), description="http:// or https:// addresses, each sent a JSON POST per event"
    )
    desktop: bool = Field(default=False, description="a desktop notification per event (notify-send, where present)")
    events: tuple[NotifyEvent, ...] = Field(
        default=NOTIFY_EVENTS,
        description="which: question_opened (a question waits on you), session_ended (completed, failed, "
        "waiting, stopped), limit (a budget or resource limit paused or stopped work)",
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="one attempt's limit (connect, send, answer)")
    retries: int = Field(default=3, ge=0, le=10, description="more attempts after a failed one")
    backoff_s: float = Field(default=1.0, gt=0, le=600, description="wait before the first retry; doubled each time")
    queue_size: int = Field(
        default=100, ge=1, le=10_000, description="notifications waiting per address; past it the newest is dropped"
    )
    end_grace_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="once the session has ended, how long the program may still spend on its last "
        "notifications (one try each, no more waits); what is left then is logged and dropped",
    )

    @field_validator("webhook_urls")
    @classmethod
    def _web_addresses(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            scheme, _, rest = url.partition("://")
            host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
            if scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
                raise ValueError(f"{url[:80]!r} is not an http:// or https:// address")
        return urls
