"""How the dashboard starts: the gateway, supervised; a restarted one comes back on the same port."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.supervision.supervision import SupervisedRef
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.gateway import GetGatewayAddress
from meta_orchestrator.webui.gateway import Gateway


def start_dashboard(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    settings: WebSettings,
    session_dir: Path,
    token: str,
    coordinator: Any,
    next_free_port: bool,
    closed: threading.Event,
) -> SupervisedRef:
    """The gateway, supervised; it hears every fact from here on.

    Raises:
        GatewayError: its address cannot be bound.
    """
    web = {"settings": settings, "next_free_port": next_free_port}

    def start_gateway(_ref: SupervisedRef) -> pykka.ActorRef[Any]:
        return Gateway.start(
            settings=web["settings"],
            session_dir=session_dir,
            token=token,
            coordinator=coordinator,
            next_free_port=web["next_free_port"],
            close_requested=closed,
        )

    gateway = SupervisedRef("gateway", start_gateway, supervisor).start()
    # A restarted dashboard comes back where the browser already is.
    port = gateway.ask(GetGatewayAddress(), timeout=5).port
    web.update(settings=settings.model_copy(update={"port": port}), next_free_port=False)
    supervisor.proxy().supervise(gateway).get(timeout=5)
    started.append(gateway)
    return gateway
