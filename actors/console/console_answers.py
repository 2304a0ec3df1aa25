"""Answers typed on the console: a reader thread, and how one line answers an open question."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

import pykka
from meta_orchestrator.actors.history.resume import APPROVE_WORDS, DENY_WORDS
from meta_orchestrator.messages.session import AnswerChannelChanged, AnswerGiven, GetSessionState, SessionSnapshot

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 2.0


def parse_console_answer(line: str, snapshot: SessionSnapshot) -> AnswerGiven | str:
    """Turn a console line into an answer to an open question, or say why it is not one.

    ``<question id> <answer>`` answers that question; a bare answer goes to the only open one.
    For confirmations, yes/no words approve or deny.
    """
    open_questions = [q for q in snapshot.questions if q.status == "open"]
    if not open_questions:
        return "no question is waiting for an answer"
    text = line.strip()
    first, _, rest = text.partition(" ")
    chosen = next((q for q in open_questions if q.id == first), None)
    if chosen is not None:
        text = rest.strip()
    elif len(open_questions) == 1:
        chosen = open_questions[0]
    else:
        ids = ", ".join(q.id for q in open_questions)
        return f"several questions are open ({ids}): start the line with the question id"
    if not text:
        return f"empty answer to {chosen.id}"
    approve = None
    if chosen.kind == "confirmation":
        word = text.lower()
        if word in APPROVE_WORDS:
            approve = True
        elif word in DENY_WORDS:
            approve = False
        else:
            return f"{chosen.id} needs yes or no"
    return AnswerGiven(question_id=chosen.id, answer=text, approve=approve, source="console")


def read_console_answers(coordinator: pykka.ActorRef[Any], stream: Any) -> None:
    """Reader thread: lines typed on the console answer the session's open questions.

    End of file (stdin closed, ``< /dev/null``, the writer of a pipe gone) tells the
    coordinator the console can no longer answer, so no question waits on it.
    """
    try:
        for line in iter(stream.readline, ""):
            if not line.strip():
                continue
            try:
                snapshot = coordinator.ask(GetSessionState(), block=True, timeout=ASK_TIMEOUT_S)
            except (pykka.ActorDeadError, pykka.Timeout):
                return
            answer = parse_console_answer(line, snapshot)
            if isinstance(answer, str):
                print(f"orchestrate: {answer}", file=sys.stderr, flush=True)
            else:
                coordinator.tell(answer)
    except (OSError, ValueError) as exc:
        log.info("console input ended: %s", exc)
    with contextlib.suppress(pykka.ActorDeadError):
        coordinator.tell(AnswerChannelChanged(channel="console", open=False))


__all__ = ["parse_console_answer", "read_console_answers"]
