"""The session's rules, driven message by message through the pure core (no process, no actor)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from meta_orchestrator.actors.session.core import IllegalTransition
from meta_orchestrator.actors.session.core.effects import Announce, Persist, Publish, StartTimer, ToWorker
from meta_orchestrator.actors.session.core.phases import (
    ASSIGNMENT_MOVES,
    SESSION_MOVES,
    check_assignment_move,
    check_session_move,
)
from meta_orchestrator.messages.recovery import RelaunchDue
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.session import (
    STATUS_OF_PHASE,
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    AssignmentRecord,
    ControlRequested,
    ExpireQuestion,
    Question,
    SandboxCallSubject,
    RoleFallbackRecord,
    SessionSnapshot,
    StartSession,
)
from meta_orchestrator.messages.supervision import ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from tests.playbook import BUILD, CHECK, DESIGN, Playbook, finished

ROOT = Path(__file__).resolve().parents[2]
NO_REVIEWS = {"review": {"enabled": False}}


def _question(qid: str = "q1", kind: str = "confirmation", **extra) -> Question:
    return Question(id=qid, kind=kind, text=f"may I {qid}?", asked_by="sandbox", agent="claude", **extra)


# -- planning and scheduling ---------------------------------------------------------------


def test_planning_asks_the_architect_then_runs_what_is_ready():
    book = Playbook()
    book.send(StartSession())
    assert book.started() == [("gemini", "@plan")]
    assert book.start_of("@plan").mode == "read_only"
    assert book.snapshot.status == "planning" and book.writes() == 1
    book.send(finished("gemini", "@plan", text=_plan(DESIGN, BUILD, CHECK)))
    assert book.started() == [("gemini", "design"), ("codex", "check")]
    assert book.phases() == {"design": "running", "build": "pending", "check": "running"}
    assert book.snapshot.status == "running" and book.snapshot.plan_source == "architect"


def test_a_rejected_plan_is_asked_again_then_the_default_breakdown_is_used():
    book = Playbook({"session": {"plan_retries": 1}})
    book.send(StartSession())
    book.send(finished("gemini", "@plan", text="no json here"))
    assert book.started() == [("gemini", "@plan-2")]
    book.send(finished("gemini", "@plan-2", text="still none"))
    assert book.snapshot.plan_source == "fallback" and len(book.snapshot.plan_errors) == 3
    assert [r.role for r in book.snapshot.assignments] == ["architect", "implementer", "reviewer"]


def test_max_concurrent_and_one_run_per_agent():
    book = Playbook({"session": {"max_concurrent": 2}, **NO_REVIEWS})
    book.start_with_plan(DESIGN, {"id": "design2", "role": "architect"}, CHECK, {"id": "impl", "role": "implementer"})
    # gemini has two ready assignments but runs one; the cap of two leaves claude waiting.
    assert book.started() == [("gemini", "design"), ("codex", "check")]
    book.finish("check")
    assert book.started() == [("claude", "impl")]
    book.finish("design")
    assert book.started() == [("gemini", "design2")]


def test_a_failed_dependency_skips_its_dependents_and_the_session_fails():
    book = Playbook({"recovery": {"enabled": False}, **NO_REVIEWS})
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.finish("design", success=False)
    assert book.phases()["build"] == "skipped" and book.ended() is None
    book.finish("check")
    ended = book.ended()
    assert ended is not None and (ended.status, ended.exit_code) == ("failed", 1)
    assert "design [gemini] failed - it broke" in ended.summary


def test_a_session_completes_and_says_so_after_saving():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.finish("design")
    book.finish("check")
    book.finish("build")
    ended = book.ended()
    assert (ended.status, ended.exit_code) == ("completed", 0)
    assert isinstance(book.effects[0], Persist) and book.effects[0].snapshot.status == "completed"
    assert [type(e) for e in book.effects[:2]] == [Persist, Publish]
    shares = {s.agent: s for s in book.snapshot.shares}
    assert shares["gemini"].planned == pytest.approx(1 / 3, abs=1e-3) and shares["claude"].busy_s == 2.0


# -- reviews ----------------------------------------------------------------------------------


def test_a_phase_end_review_gates_the_dependents():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    assert book.phases() == {"design": "gated", "build": "pending"}
    assert book.record("design").status == "completed" and book.snapshot.status == "reviewing"
    (request,) = book.reviews_requested()
    assert request.gate and request.trigger.assignment_id == "design"
    book.review("design", "LOG_WARNING")
    assert book.phases()["design"] == "done" and book.started() == [("claude", "build")]
    assert book.snapshot.status == "running"
    assert book.snapshot.decisions[-1].applied == "warning logged; continued"


def test_a_blocking_review_pauses_asks_and_the_answer_becomes_a_note():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.finish("design")
    book.review("design", "STOP_AND_ESCALATE")
    assert book.signals() == [("codex", "pause")]
    assert book.snapshot.status == "paused" and book.phases()["check"] == "paused"
    question = book.snapshot.questions[-1]
    assert (question.id, question.kind, question.options) == ("q-r1", "escalation", ("continue", "stop"))
    book.send(AnswerGiven(question_id="q-r1", answer="continue, but keep the API stable", source="dashboard"))
    assert book.reply() is True
    assert book.signals() == [("codex", "resume")]
    assert book.snapshot.notes == (
        "The user answered the reviewers' blocker about design: continue, but keep the API stable",
    )
    assert book.started() == [("claude", "build")]
    assert "keep the API stable" in book.start_of("build").prompt


def test_stop_as_the_answer_to_an_escalation_ends_the_session():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.review("design", "STOP_AND_ESCALATE")
    book.send(AnswerGiven(question_id="q-r1", answer="stop"))
    assert book.ended().status == "stopped" and book.phases()["build"] == "skipped"
    assert book.snapshot.decisions[-1].applied == "stopped by the user's answer"


def test_an_answer_about_a_running_assignment_resumes_its_agent_session_with_it():
    book = Playbook()
    book.start_with_plan(CHECK)
    book.send(ControlRequested(action="review", source="dashboard"))
    (request,) = book.reviews_requested()
    assert request.trigger.assignment_id == "check" and not request.gate
    book.review("check", "PAUSE_AND_CLARIFY", gate=False)
    book.send(AnswerGiven(question_id="q-r1", answer="use the v2 endpoint"))
    assert ("codex", "stop") in book.signals() and book.record("check").relaunch_on_stop
    book.finish("check", stopped_by="relaunching with the user's clarification", session_id="codex-7")
    start = book.start_of("check")
    assert start.resume_session_id == "codex-7" and "use the v2 endpoint" in start.prompt


def test_lost_reviews_release_their_gates_when_the_reviewer_restarts():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.send(ActorRestarted(name="reviewer", error="boom", restarts_in_window=1))
    assert book.phases()["design"] == "done" and book.started() == [("claude", "build")]


# -- recovery ---------------------------------------------------------------------------------


def test_a_failure_is_recovered_with_corrected_flags_and_the_recovery_is_settled():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK, {"id": "check2", "role": "reviewer"})
    book.finish("check", success=False, denials=("Write",))
    assert book.phases()["check"] == "recovering" and book.started() == []  # codex stays reserved
    (request,) = book.recoveries_requested()
    assert request.finished.assignment_id == "check"
    book.recover("check", extra_args=("--full-auto",))
    start = book.start_of("check")
    assert start.extra_args == ("--full-auto",) and book.record("check").attempts == 2
    assert book.snapshot.recoveries[-1].outcome == "pending"
    book.finish("check")
    assert book.snapshot.recoveries[-1].outcome == "recovered"
    assert book.started() == [("codex", "check2")]


def test_a_back_off_holds_the_agent_until_its_timer():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    book.recover("check", action="retry_after", cause="rate_limit", delay_s=30)
    assert book.phases()["check"] == "backing_off"
    (timer,) = book.timers()
    assert timer.delay_s == 30 and isinstance(timer.message, RelaunchDue) and timer.message.assignment_id == "check"
    book.send(RelaunchDue(assignment_id="check"))
    assert book.started() == [("codex", "check")]
    book.send(RelaunchDue(assignment_id="check"))  # a stale timer changes nothing
    assert book.effects == []


def test_a_new_directory_waits_for_the_users_yes():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    book.recover("check", extra_dirs=("/data",), evidence="EACCES /data/x")
    assert book.phases()["check"] == "awaiting_grant" and book.started() == []
    assert book.snapshot.questions[-1].id == "grant-rec-1"
    book.send(AnswerGiven(question_id="grant-rec-1", answer="yes", approve=True))
    assert book.start_of("check").extra_dirs == ("/data",)


def test_a_refused_directory_fails_the_assignment_with_the_advice():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    book.recover("check", extra_dirs=("/data",))
    book.send(AnswerGiven(question_id="grant-rec-1", answer="no", approve=False))
    record = book.record("check")
    assert record.phase == "failed" and "was not granted" in record.error
    assert book.snapshot.recoveries[-1].outcome == "escalated" and book.ended().status == "failed"


def test_a_late_duplicate_finish_changes_nothing():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    before = book.state
    book.finish("check", success=False)
    assert book.state.snapshot is before.snapshot and book.writes() == 0


def test_recovery_crashing_before_it_decides_ends_the_run_as_failed():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    book.send(ActorRestarted(name="recovery", error="boom", restarts_in_window=1))
    assert book.phases()["check"] == "failed"
    assert book.record("check").error.endswith("the recovery engine crashed before deciding")


# -- pause, resume and stop in every phase -----------------------------------------------------


def _into(phase: str) -> Playbook:
    """A session whose 'check' assignment (codex) is in ``phase``; 'build' is pending behind design."""
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD, CHECK)
    match phase:
        case "paused":
            book.send(ControlRequested(action="pause", agent="codex"))
        case "recovering":
            book.finish("check", success=False)
        case "backing_off":
            book.finish("check", success=False)
            book.recover("check", action="retry_after", delay_s=10)
        case "awaiting_grant":
            book.finish("check", success=False)
            book.recover("check", extra_dirs=("/data",))
        case "gated":
            book.send(finished("codex", "check"))
            book.finish("design")
    return book


@pytest.mark.parametrize("phase", ["running", "paused", "recovering", "backing_off", "awaiting_grant", "gated"])
def test_stop_in_every_phase_ends_the_session_stopped(phase):
    book = _into(phase)
    subject = "design" if phase == "gated" else "check"
    assert book.phases()[subject] == phase
    book.send(ControlRequested(action="stop", source="dashboard"))
    with_process = {agent for agent, signal in book.signals() if signal == "stop"}
    assert "gemini" in with_process or phase == "gated"
    assert book.phases()["build"] == "skipped"
    for agent in sorted(with_process):
        run = next(r.id for r in book.snapshot.assignments if r.agent == agent and r.phase in ("running", "paused"))
        book.finish(run, stopped_by="requested by dashboard")
    ended = book.ended()
    assert ended is not None and (ended.status, ended.exit_code) == ("stopped", 130)
    if phase in ("recovering", "backing_off", "awaiting_grant"):
        assert book.record("check").error == "session stopped during recovery"
    if phase == "awaiting_grant":
        assert book.snapshot.questions[-1].status == "expired"


def test_stop_while_planning():
    book = Playbook()
    book.send(StartSession())
    book.send(ControlRequested(action="stop"))
    assert book.signals() == [("gemini", "stop")] and book.ended() is None
    book.send(finished("gemini", "@plan", stopped_by="requested by user"))
    assert book.ended().summary == "stopped during planning: requested by user"


@pytest.mark.parametrize("phase", ["running", "recovering", "backing_off", "awaiting_grant"])
def test_pause_and_resume_in_every_phase(phase):
    book = _into(phase)
    book.send(ControlRequested(action="pause"))
    assert book.snapshot.status == "paused"
    assert book.phases()["check"] == ("paused" if phase == "running" else phase)
    if phase == "backing_off":
        book.send(RelaunchDue(assignment_id="check"))
        assert book.phases()["check"] == "pending" and book.started() == []  # nothing starts while paused
    book.send(ControlRequested(action="resume"))
    assert book.snapshot.status == "running" and book.phases()["design"] == "running"
    if phase == "backing_off":
        assert book.started() == [("codex", "check")]


def test_per_agent_pause_leaves_the_session_running():
    book = _into("running")
    book.send(ControlRequested(action="pause", agent="codex"))
    assert book.signals() == [("codex", "pause")] and book.snapshot.status == "running"
    book.send(ControlRequested(action="resume", agent="codex"))
    assert book.phases()["check"] == "running"
    book.send(ControlRequested(action="pause", agent="nobody"))
    assert book.reply() is False


def test_an_exhausted_budget_pauses_the_session():
    book = _into("running")
    book.send(
        LimitExceeded(
            limit="cost_budget", action="pause_session", observed=3.0, threshold=2.0, reason="budget", sampled_at=1.0
        )
    )
    assert book.snapshot.status == "paused" and book.snapshot.decisions[-1].kind == "limit_exceeded"


# -- questions -------------------------------------------------------------------------------


def test_a_question_expires_to_its_default_on_its_timer():
    book = Playbook({"questions": {"timeout_s": {"confirmation": 30}}})
    book.send(AskQuestion(question=_question()))
    (timer,) = book.timers()
    assert timer.delay_s == 30 and isinstance(timer.message, ExpireQuestion) and timer.message.question_id == "q1"
    book.send(ExpireQuestion(question_id="q1"))
    (answer,) = book.answers_to_askers()
    assert (answer.answer, answer.approve, answer.expired, answer.answered_by) == ("no", False, True, "timeout")
    book.send(AnswerGiven(question_id="q1", answer="yes", approve=True))
    assert book.reply() is False


def test_nobody_to_answer_saves_the_session_and_waits():
    book = Playbook(channels=())
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.send(AskQuestion(question=_question()))
    assert sorted(book.signals()) == [("codex", "stop"), ("gemini", "stop")]
    book.finish("design", stopped_by="nobody can answer", session_id="g-1")
    book.finish("check", stopped_by="nobody can answer")
    ended = book.ended()
    assert (ended.status, ended.exit_code) == ("waiting", 3)
    assert "orchestrate answer s1 q1 yes|no --workspace /nowhere" in ended.summary
    design = book.record("design")
    assert (design.phase, design.status, design.agent_session_id) == ("interrupted", "running", "g-1")


def test_unattended_defaults_answer_without_waiting():
    book = Playbook({"questions": {"unattended": "defaults"}}, channels=())
    book.send(AskQuestion(question=_question(kind="clarification")))
    (answer,) = book.answers_to_askers()
    assert (answer.answer, answer.answered_by) == ("continue", "unattended")


def test_unknown_and_repeated_answers_are_refused():
    book = Playbook()
    book.send(AskQuestion(question=_question()))
    book.send(AnswerGiven(question_id="nope", answer="x"))
    assert book.reply() is False and book.writes() == 0
    book.send(AnswerGiven(question_id="q1", answer="no", approve=False))
    assert book.reply() is True and book.snapshot.questions[0].status == "answered"
    book.send(AnswerGiven(question_id="q1", answer="yes", approve=True))
    assert book.reply() is False and book.snapshot.questions[0].answer == "no"


def test_the_last_channel_closing_with_a_question_open_means_nobody_answers():
    book = Playbook(channels=("console", "dashboard"))
    book.start_with_plan(CHECK)
    book.send(AskQuestion(question=_question(kind="clarification")))
    book.send(AnswerChannelChanged(channel="dashboard", open=False))
    assert book.state.ending.wait is None  # the console is still there
    book.send(AnswerChannelChanged(channel="console", open=False))
    assert book.state.ending.wait == "the console went away while questions were open"
    book.finish("check", stopped_by="nobody can answer")
    ended = book.ended()
    assert (ended.status, ended.exit_code) == ("waiting", 3)
    assert "orchestrate answer s1 q1" in ended.summary and "orchestrate resume s1" in ended.summary


def test_unattended_defaults_stop_at_an_escalation():
    book = Playbook({"questions": {"unattended": "defaults"}}, channels=())
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.review("design", "STOP_AND_ESCALATE")
    question = book.snapshot.questions[-1]
    assert (question.status, question.answer, question.answered_by) == ("expired", "stop", "unattended")
    ended = book.ended()
    assert (ended.status, ended.exit_code) == ("stopped", 130) and book.phases()["build"] == "skipped"
    assert book.snapshot.decisions[0].applied == "expired: stopped by the default answer"


def test_unattended_defaults_continue_a_clarification_with_an_unanswered_note():
    book = Playbook({"questions": {"unattended": "defaults"}}, channels=())
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.review("design", "PAUSE_AND_CLARIFY")
    assert book.snapshot.status == "running" and book.started() == [("claude", "build")]
    assert "(unanswered)" in book.snapshot.notes[0] and "(unanswered)" in book.start_of("build").prompt


# -- resume ----------------------------------------------------------------------------------


def _saved(**questions) -> SessionSnapshot:
    def rec(aid, role, agent, status, **more):
        return AssignmentRecord(id=aid, role=role, agent=agent, title=aid, instructions=aid, status=status, **more)

    return SessionSnapshot(
        session_id="s1",
        task="t",
        target="/app",
        workspace="/nowhere/s1",
        status="running",
        created_at="2026-12-01T11:00:00.000Z",
        updated_at="2026-12-01T11:30:00.000Z",
        assignments=(
            rec("design", "architect", "gemini", "completed"),
            rec("build", "implementer", "claude", "running", depends_on=("design",), attempts=1),
            rec("check", "reviewer", "codex", "failed", error="it broke"),
        ),
        notes=("an earlier answer",),
        questions=tuple(questions.values()),
    )


def test_resume_continues_interrupted_work_in_its_cli_session():
    book = Playbook(resume_from=_saved(), resume_ids={"build": "claude-42"})
    book.send(StartSession())
    assert book.started() == [("claude", "build"), ("codex", "check")]
    build = book.start_of("build")
    assert build.resume_session_id == "claude-42" and "You were interrupted" in build.prompt
    assert "an earlier answer" in build.prompt
    assert book.start_of("check").resume_session_id is None
    assert book.phases() == {"design": "done", "build": "running", "check": "running"}


def test_resume_waits_for_questions_still_open_then_goes_on():
    open_question = _question("q9", asked_at="x", subject=SandboxCallSubject(tool="Bash", assignment_id="build"))
    book = Playbook(resume_from=_saved(q=open_question))
    book.send(StartSession())
    assert book.snapshot.status == "paused" and book.started() == []
    book.send(AnswerGiven(question_id="q9", answer="yes", approve=True))
    assert book.snapshot.status == "running"
    assert "The user allowed this request of yours" in book.start_of("build").prompt


def test_an_answer_recorded_while_nothing_ran_is_applied_on_resume():
    open_question = _question("q9", subject=SandboxCallSubject(tool="Bash", assignment_id="build"))
    book = Playbook(resume_from=_saved(q=open_question), recorded_answers={"q9": {"answer": "no", "approve": False}})
    book.send(StartSession())
    assert book.snapshot.questions[-1].answered_by == "command"
    assert "The user refused this request of yours" in book.start_of("build").prompt


# -- agents that cannot serve -------------------------------------------------------------------


def test_an_agent_refused_for_its_account_hands_its_work_over():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK, {"id": "check2", "role": "reviewer", "depends_on": ["check"]})
    book.finish("check", success=False)
    book.recover("check", action="escalate", cause="auth", advice="log in again")
    assert book.snapshot.agents_out == {"codex": "auth: log in again"}
    assert book.started() == [("claude", "check")]
    assert {r.id: r.agent for r in book.snapshot.assignments} == {"check": "claude", "check2": "claude"}
    fallback = book.snapshot.decisions[-1]
    assert isinstance(fallback, RoleFallbackRecord) and fallback.moved == {"check": "claude", "check2": "claude"}


def test_with_no_agent_left_the_session_fails_with_the_reasons():
    book = Playbook(NO_REVIEWS, agents=("codex",))
    book.start_with_plan(CHECK)
    book.finish("check", success=False)
    book.recover("check", action="escalate", cause="auth", advice="log in")
    assert book.phases()["check"] == "failed"
    assert book.ended().summary.startswith("failed: no agent is left to do the work (codex: auth: log in)")


def test_an_agent_out_from_the_start_never_plans():
    book = Playbook(agents_out={"gemini": "not_installed: gemini is not on PATH"})
    book.send(StartSession())
    assert book.started() == [("claude", "@plan")]
    assert isinstance(book.snapshot.decisions[0], RoleFallbackRecord)


def test_a_planner_crashing_past_its_restarts_hands_planning_over():
    book = Playbook()
    book.send(StartSession())
    book.send(SupervisionFailed(name="worker:gemini", error="segfault", restarts_in_window=3))
    assert book.started() == [("claude", "@plan-2")] and "gemini" in book.snapshot.agents_out


# -- the tables and the shape of a step ---------------------------------------------------------


def test_the_phase_tables_are_complete_and_ends_are_final():
    assert set(ASSIGNMENT_MOVES) == set(STATUS_OF_PHASE)
    assert all(targets <= set(ASSIGNMENT_MOVES) for targets in ASSIGNMENT_MOVES.values())
    for end in ("done", "failed", "skipped"):
        assert not ASSIGNMENT_MOVES[end]
    for end in ("completed", "failed", "stopped", "waiting"):
        assert not SESSION_MOVES[end]


@pytest.mark.parametrize(
    ("old", "new"), [("done", "running"), ("pending", "done"), ("backing_off", "running"), ("gated", "failed")]
)
def test_illegal_assignment_moves_raise(old, new):
    with pytest.raises(IllegalTransition, match=f"{old} -> {new}"):
        check_assignment_move(AssignmentFinished, "a", old, new)


@pytest.mark.parametrize(("old", "new"), [("completed", "running"), ("planning", "reviewing"), ("stopped", "paused")])
def test_illegal_session_moves_raise(old, new):
    with pytest.raises(IllegalTransition):
        check_session_move(old, new)


def test_a_rule_that_breaks_the_table_raises_instead_of_saving():
    book = Playbook(NO_REVIEWS)
    book.start_with_plan(CHECK)
    book.finish("check")
    from meta_orchestrator.actors.session.core.core import SessionStep

    step = SessionStep(book.state, book.clock)
    with pytest.raises(IllegalTransition, match="check: done -> running"):
        step.put("check", "running")


def test_every_step_writes_and_publishes_at_most_once_before_telling_anyone():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.finish("design")
    book.review("design")
    book.finish("check", success=False)
    book.recover("check")
    book.finish("check")
    book.finish("build")
    book.review("build", n=2)
    assert book.ended().status == "completed"
    for message, effects in book.history:
        kinds = [type(e) for e in effects]
        assert kinds.count(Persist) <= 1 and kinds.count(Publish) <= 1, message
        if Persist in kinds:
            assert kinds[:2] == [Persist, Publish], message
        told = [e for e in effects if isinstance(e, ToWorker | Announce | StartTimer)]
        assert not told or Persist in kinds or type(message).__name__ == "ControlRequested", message


def test_the_core_imports_no_actor_thread_or_process():
    package = ROOT / "actors" / "session" / "core"
    forbidden = {"pykka", "threading", "subprocess", "os"}
    seen, todo = set(), [p for p in package.glob("*.py")]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.relative_to(ROOT)} imports {name}"
                if name.startswith("meta_orchestrator."):
                    parts = name.split(".")[1:]
                    candidate = ROOT.joinpath(*parts).with_suffix(".py")
                    if candidate.exists():
                        todo.append(candidate)
    assert len(seen) > 10  # the walk followed the core into messages/ and config/
    probe = (
        "import sys, meta_orchestrator.actors.session.core; print(sorted({'pykka', 'subprocess'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def _plan(*items):
    from tests.playbook import plan_text

    return plan_text(*items)


def test_start_assignment_carries_no_actor():
    book = Playbook()
    book.send(StartSession())
    assert all(e.message.reply_to is None for e in book.told(ToWorker, StartAssignment))


def test_a_run_placed_on_a_cluster_node_names_it_in_the_state_until_a_retry_moves_it():
    from meta_orchestrator.messages.cluster import RunNode, RunPlaced

    book = Playbook(NO_REVIEWS)
    book.start_with_plan(DESIGN, CHECK)
    first, other = RunNode(node_id="a" * 56, node_ip="10.0.0.1", hostname="n1"), RunNode(node_id="b" * 56)
    book.send(RunPlaced(agent="gemini", assignment_id="design", node=first, pid=7))
    assert book.record("design").node == first and book.writes() == 1  # state.json has it at once
    book.send(RunPlaced(agent="claude", assignment_id="check", node=other))  # not its agent's run: ignored
    assert book.record("check").node is None
    book.finish("design")
    book.send(RunPlaced(agent="gemini", assignment_id="design", node=other))  # late: it already ended
    assert book.record("design").node == first and book.record("design").phase == "done"
    assert book.snapshot.model_dump(mode="json")["assignments"][0]["node"]["hostname"] == "n1"
