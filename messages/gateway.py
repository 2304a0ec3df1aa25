"""Gateway conversations: browser sockets <-> Gateway, and what the browser may ask for.

The gateway is a listener: it is *told* ``EventsRecorded``, ``WorkerStateChanged``,
``SessionStateChanged``, ``SessionEnded`` and the facts listed in ``messages.frames.FRAME_OF``.
Its own vocabulary is here:

* ``ClientConnected`` / ``ClientDisconnected`` / ``ControlReceived``: a WebSocket handler
  thread -> Gateway. The handler thread owns the socket; the gateway only fills its outbox.
* ``GetGatewayAddress`` / ``GetGatewayStats``: questions (ask, with a timeout) from the
  launcher or a test.
* ``ControlRequest``, ``AnswerRequest``, ``PingRequest``, ``ResyncRequest``: what the browser
  sends over the socket, validated by ``BROWSER_REQUEST`` (a discriminated ``TypeAdapter``).
  ``ControlBody`` and ``AnswerBody`` are the JSON bodies of the HTTP control endpoints.
What the gateway sends to browsers is the wire contract in ``messages.frames``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator

from meta_orchestrator.messages.base import AgentName, Frozen, Message
from meta_orchestrator.messages.ids import check_question_id

ControlAction = Literal["pause", "resume", "stop", "review"]
CONTROL_ACTIONS: tuple[str, ...] = ("pause", "resume", "stop", "review")


class ClientConnected(Message):
    """WebSocket handler thread -> Gateway: a browser is connected and authorised.

    ``outbox`` is a bounded ``queue.Queue[str | None]`` that only the gateway fills and only
    the handler thread drains; ``None`` tells the handler to close the socket. ``since`` is
    the last delta sequence number the browser saw (reconnect), or ``None`` for a snapshot.
    ``hangup`` (optional, no arguments) tears the socket down when its writer is stuck.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: str
    outbox: Any = Field(exclude=True)
    since: int | None = None
    remote: str | None = None
    hangup: Any = Field(default=None, exclude=True)


class ClientDisconnected(Message):
    """WebSocket handler thread -> Gateway: the socket is closed; forget its outbox."""

    client: str
    reason: str = "closed"


class ControlReceived(Message):
    """WebSocket handler thread -> Gateway: one text message the browser sent, unparsed."""

    client: str
    raw: str


class GetGatewayAddress(Message):
    """Question (ask, with a timeout): answered with a ``GatewayAddress``."""


class GatewayAddress(Frozen):
    """Where the dashboard listens; ``url`` carries the token, so print it only to the user."""

    host: str
    port: int
    base_url: str
    url: str


class GetGatewayStats(Message):
    """Question (ask, with a timeout): answered with ``GatewayStats`` (tests, diagnostics)."""


class ClientStats(Frozen):
    """One connected browser as the gateway sees it."""

    client: str
    remote: str | None = None
    queued: int
    capacity: int
    frames_queued: int = Field(description="frames put in the outbox since it connected")
    resyncs: int = Field(description="times the outbox was full and replaced by a snapshot")


class GatewayStats(Frozen):
    """The gateway's counters."""

    seq: int = Field(description="the last delta sequence number")
    events_seen: int
    events_kept: int
    frames_kept: int
    clients: tuple[ClientStats, ...] = ()
    clients_dropped: int = 0


# --- what the browser sends over the WebSocket ---------------------------------------------


class ControlBody(Frozen):
    """JSON body of ``POST /api/control/<action>`` (may be empty): whom the action is for."""

    agent: AgentName | None = Field(default=None, description="None: the whole session")


class AnswerBody(Frozen):
    """JSON body of ``POST /api/answer``: the user's answer to a waiting question."""

    question_id: str = Field(min_length=1, max_length=200)
    answer: str = Field(default="", max_length=20_000)
    approve: bool | None = Field(default=None, description="confirmations: approve or deny")

    @field_validator("question_id")
    @classmethod
    def _one_component(cls, value: str) -> str:
        return check_question_id(value)


class ControlRequest(ControlBody):
    """Browser -> Gateway (WebSocket): pause, resume, stop or review, for one agent or all."""

    type: Literal["control"]
    action: ControlAction


class AnswerRequest(AnswerBody):
    """Browser -> Gateway (WebSocket): answer a question from the inbox."""

    type: Literal["answer"]


class PingRequest(Frozen):
    """Browser -> Gateway (WebSocket): are you there? Answered with a ``pong`` frame."""

    type: Literal["ping"]


class ResyncRequest(Frozen):
    """Browser -> Gateway (WebSocket): send me a fresh snapshot."""

    type: Literal["resync"]


BrowserRequest = Annotated[
    ControlRequest | AnswerRequest | PingRequest | ResyncRequest,
    Field(discriminator="type"),
]
BROWSER_REQUEST: TypeAdapter[BrowserRequest] = TypeAdapter(BrowserRequest)
