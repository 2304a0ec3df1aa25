"""How the console starts: its view among the listeners, and a reader of the answers typed there."""

from __future__ import annotations

import threading
from typing import Any

import pykka
from meta_orchestrator.actors.console.console import ConsoleView
from meta_orchestrator.actors.console.console_answers import read_console_answers
from meta_orchestrator.actors.supervision.starting import start_actor


def start_console(started: list[Any], demo: bool, bell: bool) -> pykka.ActorRef[Any]:
    return start_actor(started, ConsoleView, demo=demo, bell=bell)


def read_answers(coordinator: pykka.ActorRef[Any], answer_stream: Any) -> None:
    """Answers typed on the console go to the coordinator, read on a thread of their own."""
    threading.Thread(
        target=read_console_answers, args=(coordinator, answer_stream), name="console-answers", daemon=True
    ).start()
