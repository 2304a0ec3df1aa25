"""state.json written before questions had a typed subject still loads and resumes.

The two files in old_state/ are the state.json of real demo sessions (`orchestrate ... --demo
--no-dashboard`, stdin closed) that ended 'waiting' on a question, written by the code of the
time: a review's clarification (two peers' concerns) and a security finding (the demo claude's
`suspicious_call` scenario). Their questions carry ``details`` and no ``subject``.
"""

from __future__ import annotations

import json
from pathlib import Path

from meta_orchestrator.messages.session import (
    AnswerGiven,
    ReviewDecisionSubject,
    SecurityFindingSubject,
    SessionSnapshot,
    StartSession,
)
from tests.playbook import Playbook

OLD = Path(__file__).parent / "old_state"


def _saved(name: str) -> SessionSnapshot:
    return SessionSnapshot.model_validate_json((OLD / f"{name}.json").read_text())


def test_the_old_files_have_details_and_no_subject():
    for name in ("review_question", "finding_question"):
        [question] = json.loads((OLD / f"{name}.json").read_text())["questions"]
        assert "details" in question and "subject" not in question


def test_an_old_review_question_reads_as_a_review_decision():
    [question] = _saved("review_question").questions
    assert question.subject == ReviewDecisionSubject(
        review_id="rev-001-design",
        decision="PAUSE_AND_CLARIFY",
        assignment_id="design",
        gate=True,
        reasoning=question.subject.reasoning,
    )
    assert question.subject.reasoning.startswith("2 concerns")
    # Written again, it has the new form only, and reads back the same.
    again = SessionSnapshot.model_validate_json(_saved("review_question").model_dump_json())
    assert again.questions == (question,) and "details" not in again.questions[0].model_dump()


def test_an_old_finding_question_reads_as_a_security_finding():
    [question] = _saved("finding_question").questions
    assert question.subject == SecurityFindingSubject(rules=("chmod_777",), event_seq=4)


def test_resuming_an_old_review_question_applies_the_answer_as_a_decision():
    saved = _saved("review_question")
    book = Playbook(resume_from=saved, agents=("gemini", "codex"))
    book.send(StartSession())
    assert book.snapshot.status == "paused" and book.started() == []  # it waits for the answer first
    book.send(AnswerGiven(question_id="q-rev-001-design", answer="Validate input with a regex.", approve=None))
    assert book.reply() is True
    assert book.snapshot.notes == (
        "The user answered the reviewers' concerns about design: Validate input with a regex.",
    )
    [decision] = [d for d in book.snapshot.decisions if getattr(d, "review_id", None) == "rev-001-design"]
    assert decision.answer == "Validate input with a regex." and decision.applied == "resumed by the user's answer"
    assert book.snapshot.status == "running" and book.started() == [("gemini", "implement")]
    assert "Validate input with a regex." in book.start_of("implement").prompt


def test_resuming_an_old_finding_question_answered_no_fails_the_agents_assignment():
    book = Playbook(resume_from=_saved("finding_question"), agents=("gemini", "claude", "codex"))
    book.send(StartSession())
    assert book.snapshot.status == "paused" and book.phases()["implement"] == "pending"
    book.send(AnswerGiven(question_id="sbx-finding-e24a966e", answer="no", approve=False))
    record = book.record("implement")
    assert record.phase == "failed" and record.error == "stopped by the user after a security finding (no)"
    assert book.phases()["review"] == "skipped"  # it depended on the stopped work


def test_resuming_an_old_finding_question_answered_yes_goes_on_with_a_note():
    book = Playbook(resume_from=_saved("finding_question"), agents=("gemini", "claude", "codex"))
    book.send(StartSession())
    book.send(AnswerGiven(question_id="sbx-finding-e24a966e", answer="yes", approve=True))
    assert book.started() == [("claude", "implement")]
    assert "The user allowed this request of yours" in book.start_of("implement").prompt
