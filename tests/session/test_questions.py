"""Questions for the user: asked by any actor, answered from the console or the dashboard."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_orchestrator.actors.console.console_answers import parse_console_answer
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import (
    AnswerGiven,
    AskQuestion,
    GetSessionState,
    Question,
    QuestionAnswered,
    SessionStateChanged,
)
from tests.conftest import wait_for


@pytest.fixture
def coordinator(tmp_path: Path, probe):
    settings = load_settings(None, {"workspace": str(tmp_path)})
    ref = Coordinator.start(
        settings=settings,
        session_id="s1",
        session_dir=tmp_path,
        task="t",
        target=tmp_path,
        workers={},
        listeners=(probe.ref,),
    )
    return ref


def _question(qid: str, kind: str = "confirmation", **extra) -> Question:
    return Question(id=qid, kind=kind, text=f"may I {qid}?", asked_by="test", **extra)


def test_answer_reaches_the_asker_and_is_persisted(coordinator, probe, tmp_path):
    coordinator.tell(AskQuestion(question=_question("q1"), reply_to=probe.ref))
    probe.expect(SessionStateChanged, where=lambda m: any(q.id == "q1" for q in m.snapshot.questions))
    assert coordinator.ask(AnswerGiven(question_id="q1", answer="yes", approve=True), timeout=5)
    answered = probe.expect(QuestionAnswered)
    assert (answered.question_id, answered.approve, answered.expired) == ("q1", True, False)
    state = coordinator.ask(GetSessionState(), timeout=5)
    assert state.questions[0].status == "answered"
    assert '"status": "answered"' in (tmp_path / "state.json").read_text()


def test_console_answer_parsing(coordinator, probe):
    coordinator.tell(AskQuestion(question=_question("q1")))
    snapshot = wait_for(lambda: (s := coordinator.ask(GetSessionState(), timeout=5)).questions and s)
    answer = parse_console_answer("yes\n", snapshot)
    assert isinstance(answer, AnswerGiven) and answer.approve is True
    assert "needs yes or no" in parse_console_answer("maybe", snapshot)
    coordinator.tell(AskQuestion(question=_question("q2", kind="clarification")))
    snapshot = wait_for(lambda: len((s := coordinator.ask(GetSessionState(), timeout=5)).questions) == 2 and s)
    assert "several questions" in parse_console_answer("yes", snapshot)
    answer = parse_console_answer("q2 use sqlite", snapshot)
    assert isinstance(answer, AnswerGiven) and (answer.question_id, answer.answer) == ("q2", "use sqlite")
    assert answer.approve is None
