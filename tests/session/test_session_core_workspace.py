"""The session core with a git workspace: checkouts first, merges after, conflicts as a recovery case."""

from __future__ import annotations

from meta_orchestrator.messages.session import AnswerGiven, ControlRequested, StartSession
from meta_orchestrator.messages.workspace import CheckoutFailed, MergeAssignment, PrepareCheckout
from meta_orchestrator.actors.session.core.effects import ToWorkspace
from tests.playbook import BUILD, CHECK, DESIGN, Playbook

NO_REVIEWS = {"review": {"enabled": False}}


def _workspace_asks(book: Playbook, kind: type) -> list:
    return [e.message for e in book.told(ToWorkspace, kind)]


def test_planning_runs_in_its_read_only_checkout():
    book = Playbook(workspace=True)
    book.send(StartSession())
    start = book.start_of("@plan")
    assert start.workdir == "/nowhere/s1/checkouts/plan" and start.read_only_dirs == ("/app/.git",)
    assert "working in /nowhere/s1/checkouts/plan." in start.prompt and "/app." not in start.prompt


def test_a_writing_assignment_gets_its_checkout_before_it_runs():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(CHECK)
    assert book.phases() == {"check": "preparing"} and book.started() == []
    assert [m.assignment_id for m in _workspace_asks(book, PrepareCheckout)] == ["check"]
    book.checkout_ready("check")
    start = book.start_of("check")
    assert start.workdir == "/nowhere/s1/checkouts/check" and start.read_only_dirs == ("/app/.git/objects",)
    assert book.phases() == {"check": "running"}


def test_a_run_that_succeeds_is_merged_before_its_dependents_start():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(DESIGN, BUILD, {"id": "design2", "role": "architect"})
    book.checkout_ready("design")
    book.finish("design")
    assert book.phases()["design"] == "merging" and book.record("design").status == "running"
    (merge,) = _workspace_asks(book, MergeAssignment)
    assert (merge.assignment_id, merge.agent) == ("design", "gemini")
    # gemini is free while its work is merged; build waits for the merge.
    assert [m.assignment_id for m in _workspace_asks(book, PrepareCheckout)] == ["design2"]
    book.merged("design")
    record = book.record("design")
    assert (record.phase, record.commit, record.busy_s) == ("done", "0" * 39 + "1", 2.0)
    assert [m.assignment_id for m in _workspace_asks(book, PrepareCheckout)] == ["build"]


def test_a_conflict_goes_back_to_its_agent_then_to_the_user():
    book = Playbook({"session": {"conflict_rounds": 1}, **NO_REVIEWS}, workspace=True)
    book.start_with_plan(CHECK)
    book.checkout_ready("check")
    book.finish("check", session_id="codex-1")
    book.merged("check", conflicts=("app.py",))
    record = book.record("check")
    assert (record.phase, record.conflict_rounds) == ("preparing", 1)  # relaunched at once
    book.checkout_ready("check")
    start = book.start_of("check")
    assert start.resume_session_id == "codex-1" and "conflicts in: app.py" in start.prompt
    book.finish("check")
    book.merged("check", conflicts=("app.py",), n=2)
    assert book.phases()["check"] == "conflicted"
    question = book.snapshot.questions[-1]
    assert (question.id, question.kind, question.asked_by) == ("conflict-check-1", "confirmation", "workspace")
    assert "app.py" in question.text and "/nowhere/s1/checkouts/check" in question.text
    book.send(AnswerGiven(question_id="conflict-check-1", answer="yes", approve=True))
    assert book.phases()["check"] == "preparing"  # another try, with its rounds anew
    for n in (3, 4):
        book.checkout_ready("check")
        book.finish("check")
        book.merged("check", conflicts=("app.py",), n=n)
    assert book.phases()["check"] == "conflicted" and book.snapshot.questions[-1].id == "conflict-check-2"
    book.send(AnswerGiven(question_id="conflict-check-2", answer="no", approve=False))
    assert book.phases()["check"] == "failed"
    ended = book.ended()
    assert ended.status == "failed" and "merge conflict in app.py" in ended.summary


def test_stop_while_preparing_or_merging_keeps_the_work():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(DESIGN, CHECK)
    book.checkout_ready("design")
    book.finish("design")  # merging; check still preparing
    book.send(ControlRequested(action="stop"))
    assert book.phases() == {"design": "merging", "check": "failed"} and book.ended() is None
    book.checkout_ready("check")  # late: nothing starts
    assert book.started() == []
    book.merged("design")
    assert book.phases()["design"] == "done" and book.ended().status == "stopped"


def test_stop_with_a_conflict_waiting_for_the_user():
    book = Playbook({"session": {"conflict_rounds": 0}, **NO_REVIEWS}, workspace=True)
    book.start_with_plan(CHECK)
    book.checkout_ready("check")
    book.finish("check")
    book.merged("check", conflicts=("a.py", "b.py"))
    assert book.phases()["check"] == "conflicted"
    book.send(ControlRequested(action="stop"))
    assert book.phases()["check"] == "failed" and book.snapshot.questions[-1].status == "expired"
    assert book.ended().status == "stopped"


def test_no_checkout_fails_the_assignment_and_skips_its_dependents():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(DESIGN, BUILD)
    book.send(CheckoutFailed(assignment_id="design", error="disk full"))
    assert book.phases() == {"design": "failed", "build": "skipped"}
    assert book.record("design").error == "no checkout could be made: disk full"


def test_the_summary_names_the_branch_and_the_next_commands():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(CHECK)
    book.checkout_ready("check")
    book.finish("check")
    book.merged("check")
    summary = book.ended().summary
    assert "branch orchestrate/s1" in summary and "orchestrate apply s1" in summary
    assert "orchestrate discard s1" in summary


def _waiting_on_a_conflict() -> Playbook:
    """A session that saved itself (nobody to answer) while check's conflict waits for the user."""
    book = Playbook({"session": {"conflict_rounds": 0}, **NO_REVIEWS}, workspace=True, channels=())
    book.start_with_plan(CHECK)
    book.checkout_ready("check")
    book.finish("check")
    book.merged("check", conflicts=("app.py",))
    assert book.ended().status == "waiting" and book.phases()["check"] == "conflicted"
    return book


def test_a_resumed_conflict_waits_for_its_answer_then_goes_back_to_its_agent():
    saved = _waiting_on_a_conflict().snapshot
    book = Playbook({"session": {"conflict_rounds": 0}, **NO_REVIEWS}, workspace=True, resume_from=saved)
    book.send(StartSession())
    # Not relaunched as interrupted work: its checkout holds the conflict, the user decides.
    assert book.phases()["check"] == "conflicted" and book.started() == []
    assert book.snapshot.status == "paused" and book.snapshot.questions[-1].status == "open"
    book.send(AnswerGiven(question_id="conflict-check-1", answer="yes", approve=True))
    assert book.phases()["check"] == "preparing"
    book.checkout_ready("check")
    assert "finish resolving the merge conflict" in book.start_of("check").prompt


def test_a_conflict_answered_while_nothing_ran_is_applied_on_resume():
    saved = _waiting_on_a_conflict().snapshot
    recorded = {"conflict-check-1": {"answer": "no", "approve": False}}
    book = Playbook(
        {"session": {"conflict_rounds": 0}, **NO_REVIEWS}, workspace=True, resume_from=saved, recorded_answers=recorded
    )
    book.send(StartSession())
    assert book.phases()["check"] == "failed" and book.started() == []
    assert book.ended().status == "failed"


def test_a_session_that_merged_nothing_does_not_say_the_work_is_on_its_branch():
    book = Playbook(NO_REVIEWS, workspace=True)
    book.start_with_plan(DESIGN, BUILD)
    book.send(CheckoutFailed(assignment_id="design", error="disk full"))
    summary = book.ended().summary
    assert "the work is on branch" not in summary and "orchestrate apply" not in summary
    assert "nothing was merged into branch orchestrate/s1" in summary
