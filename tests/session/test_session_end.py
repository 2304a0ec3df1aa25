"""The session's end never races its reviews: once the end is decided (completed, failed,
stopped, waiting, or a stop or save under way), the core starts nothing: no run, no review,
no retry, no checkout, no question.

The pure core, driven by a small world that answers each effect as the actors would
(a started run finishes, a stopped one finishes stopped, a review decides, Recovery plans,
a timer fires), with the messages in flight delivered in a random order: every interleaving
of a session's end with its reviews, runs, recoveries and questions, seeded and repeatable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from meta_orchestrator.actors.session.core.effects import (
    AnswerAsker,
    Effect,
    Persist,
    StartTimer,
    ToRecovery,
    ToReviewer,
    ToWorker,
    ToWorkspace,
)
from meta_orchestrator.actors.session.core.state import PLAN_ID, CoreState
from meta_orchestrator.messages.recovery import RecoveryPlanned, RecoveryRequested
from meta_orchestrator.messages.review import (
    RequestReview,
    ReviewAllowed,
    ReviewCompleted,
    ReviewDecision,
    ReviewWanted,
)
from meta_orchestrator.messages.session import (
    TERMINAL_STATUSES,
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    ControlRequested,
    Question,
    StartSession,
)
from meta_orchestrator.messages.supervision import ActorRestarted
from meta_orchestrator.messages.worker import StartAssignment, StopWorker
from meta_orchestrator.messages.workspace import (
    AssignmentMerged,
    CheckoutReady,
    MergeAssignment,
    MergeResult,
    PrepareCheckout,
)
from tests.playbook import BUILD, CHECK, DESIGN, Playbook, finished, plan_text

DECISIONS = ("CONTINUE", "CONTINUE", "LOG_WARNING", "PAUSE_AND_CLARIFY", "STOP_AND_ESCALATE")
ORDERS = 400  # seeded orders per test; each is a whole session


def end_decided(state: CoreState) -> bool:
    ending = state.ending
    return state.snapshot.status in TERMINAL_STATUSES or bool(ending.stop or ending.wait)


def starts(effects: list[Effect], before: CoreState, after: CoreState) -> list[Any]:
    """What in ``effects`` starts work: a run, a review, a recovery, a checkout, a relaunch
    timer, or a question put to the user (a new open question, or its expiry timer)."""
    found: list[Any] = []
    for effect in effects:
        match effect:
            case ToWorker(message=StartAssignment() as message):
                found.append(message)
            case ToReviewer(message=RequestReview() | ReviewAllowed() as message):
                found.append(message)
            case ToRecovery(message=message):
                found.append(message)
            case ToWorkspace(message=PrepareCheckout() as message):
                found.append(message)
            case StartTimer(message=message):
                found.append(message)
    if end_decided(before):  # (a question nobody can answer decides a 'waiting' end: it is kept)
        asked_before = {q.id for q in before.snapshot.questions if q.status == "open"}
        found += [q for q in after.snapshot.questions if q.status == "open" and q.id not in asked_before]
    return found


@dataclass
class World:
    """The actors around the core: each effect becomes the message they would send back,
    kept in flight until the driver delivers it (in any order)."""

    rng: random.Random
    book: Playbook
    in_flight: list[Any] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # agent -> the run id it works on
    reviews: int = 0
    recoveries: int = 0

    def answer(self, effects: list[Effect]) -> None:
        for effect in effects:
            match effect:
                case ToWorker(agent=agent, message=StartAssignment() as start):
                    self.runs[agent] = start.assignment_id
                    self.in_flight.append(self._finish(agent, start.assignment_id))
                case ToWorker(agent=agent, message=StopWorker(reason=reason)):
                    self._stopped(agent, reason)
                case ToReviewer(message=RequestReview() as request):
                    self.in_flight.append(self._decision(request.trigger.assignment_id, request.gate))
                case ToReviewer(message=ReviewAllowed(key=key)):
                    self.in_flight.append(self._decision(key, gate=False))
                case ToRecovery(message=RecoveryRequested(finished=done)):
                    self.in_flight.append(self._recovery(done.agent, done.assignment_id))
                case ToWorkspace(message=PrepareCheckout(assignment_id=aid)):
                    self.in_flight.append(self._checkout(aid))
                case ToWorkspace(message=MergeAssignment(assignment_id=aid)):
                    self.in_flight.append(self._merged(aid))
                case StartTimer(message=message):
                    self.in_flight.append(message)

    def _finish(self, agent: str, run_id: str) -> Any:
        if run_id.startswith(PLAN_ID):
            return finished(agent, run_id, text=plan_text(DESIGN, BUILD, CHECK))
        ok = self.rng.random() < 0.8
        return finished(agent, run_id, success=ok, denials=() if ok else ("Write /data",))

    def _stopped(self, agent: str, reason: str) -> None:
        """A stopped run ends stopped, unless its end is already on the way (the race)."""
        run_id = self.runs.get(agent)
        for i, message in enumerate(self.in_flight):
            if getattr(message, "agent", None) == agent and getattr(message, "assignment_id", None) == run_id:
                if type(message).__name__ == "AssignmentFinished" and self.rng.random() < 0.5:
                    self.in_flight[i] = finished(agent, run_id, success=False, stopped_by=reason)
                return

    def _decision(self, assignment_id: str | None, gate: bool) -> ReviewCompleted:
        self.reviews += 1
        decision = self.rng.choice(DECISIONS)
        return ReviewCompleted(
            review_id=f"rev-{self.reviews:03d}",
            assignment_id=assignment_id or None,
            decision=ReviewDecision(decision=decision, reasoning=f"because {decision}"),
            gate=gate,
        )

    def _recovery(self, agent: str, assignment_id: str) -> RecoveryPlanned:
        self.recoveries += 1
        action = self.rng.choice(("relaunch", "retry_after", "give_up", "escalate"))
        extra = {"delay_s": 5.0} if action == "retry_after" else {}
        if action == "relaunch" and self.rng.random() < 0.3:
            extra = {"extra_dirs": ("/data",)}  # asks the user first
        return RecoveryPlanned(
            recovery_id=f"rec-{self.recoveries}",
            agent=agent,
            assignment_id=assignment_id,
            action=action,
            cause="permission",
            **extra,
        )

    @staticmethod
    def _checkout(aid: str) -> CheckoutReady:
        return CheckoutReady(assignment_id=aid, workdir=f"/nowhere/s1/checkouts/{aid}", base="b" * 40)

    def _merged(self, aid: str) -> AssignmentMerged:
        status = "conflict" if self.rng.random() < 0.2 else "merged"
        conflicts = ("app/x.py",) if status == "conflict" else ()
        result = MergeResult(assignment_id=aid, status=status, commit="c" * 40, conflicts=conflicts)
        return AssignmentMerged(assignment_id=aid, result=result, commit="d" * 40)


def _outside_messages(rng: random.Random, book: Playbook) -> list[Any]:
    """What comes from outside the core's own requests: a person, the agents' events, the
    sandbox, a crashed reviewer; each may come at any moment, before or after the end."""
    messages: list[Any] = [
        ReviewWanted(key=aid, assignment_id=aid, author="gemini") for aid in ("design", "build", "check")
    ]
    messages.append(ControlRequested(action="review", source="dashboard"))
    messages.append(
        AskQuestion(question=Question(id="sandbox-1", kind="confirmation", text="may I?", asked_by="sandbox"))
    )
    if rng.random() < 0.5:
        messages.append(ControlRequested(action="stop", source="dashboard"))
    if rng.random() < 0.3:
        messages.append(ControlRequested(action="pause", source="dashboard"))
    if rng.random() < 0.2:
        messages.append(ActorRestarted(name="reviewer", error="boom", restarts_in_window=1))
    if book.state.channels is not None and rng.random() < 0.3:
        messages.append(AnswerChannelChanged(channel="console", open=False))
    return messages


def _step(rng: random.Random, world: World, book: Playbook) -> None:
    """Deliver one message in flight, chosen at random; with nothing in flight, a person
    answers an open question or resumes a paused session (else the session would wait)."""
    if world.in_flight:
        message = world.in_flight.pop(rng.randrange(len(world.in_flight)))
    elif open_questions := [q for q in book.snapshot.questions if q.status == "open"]:
        answer = rng.choice(("continue", "stop", "yes", "no"))
        message = AnswerGiven(question_id=open_questions[0].id, answer=answer, approve=answer == "yes")
    else:
        message = ControlRequested(action="resume", source="dashboard")
    before = book.state
    effects = book.send(message)
    after = book.state
    made = starts(effects, before, after)
    if end_decided(after):
        # In the step that decides the end, and in every step after it: nothing starts.
        assert not made, (type(message).__name__, made, book.snapshot.status, after.ending)
    world.answer(effects)


def _one_session(seed: int, workspace: bool, channels: tuple[str, ...] | None) -> Playbook:
    rng = random.Random(seed)
    book = Playbook(workspace=workspace, channels=channels)
    world = World(rng=rng, book=book)
    world.answer(book.send(StartSession()))
    outside = _outside_messages(rng, book)
    for _ in range(400):
        if book.snapshot.status in TERMINAL_STATUSES:
            break
        # Outside messages join the ones in flight one by one, at random moments.
        if outside and rng.random() < 0.3:
            world.in_flight.append(outside.pop(rng.randrange(len(outside))))
        _step(rng, world, book)
    assert book.snapshot.status in TERMINAL_STATUSES, (seed, book.snapshot.status, book.phases())
    # What was still in flight at the end arrives late (a review's result, a run's end,
    # a milestone's review, a timer): none of it starts anything.
    world.in_flight += outside
    while world.in_flight:
        _step(rng, world, book)
    return book


@pytest.mark.parametrize(
    ("workspace", "channels"),
    [(False, None), (True, None), (False, ("console",))],
    ids=["in-target", "workspace", "one-channel"],
)
def test_no_order_of_events_starts_anything_after_the_end(workspace, channels):
    ends: dict[str, int] = {}
    for seed in range(ORDERS):
        book = _one_session(seed, workspace, channels)
        ends[book.snapshot.status] = ends.get(book.snapshot.status, 0) + 1
    # The orders reach every kind of end, so the property is tried at each.
    assert {"completed", "failed", "stopped"} <= set(ends), ends
    if channels:
        assert "waiting" in ends, ends


# -- the three races the issue names, one by one ---------------------------------------------

NO_PHASE_END = {"review": {"phase_end_roles": []}}


def test_a_milestone_review_due_with_the_last_finish_holds_the_end_until_it_answers():
    book = Playbook(NO_PHASE_END)
    book.start_with_plan(CHECK)
    book.send(ReviewWanted(key="check", assignment_id="check", author="codex"))
    assert [type(m).__name__ for m in book.reviews_requested()] == ["ReviewAllowed"]
    book.finish("check")
    assert book.ended() is None and book.snapshot.status == "running"  # its review still answers
    book.review("check", gate=False)
    assert book.ended().status == "completed"
    assert book.snapshot.decisions[-1].applied == "continued"


def test_a_milestone_review_due_after_the_end_is_not_started():
    book = Playbook(NO_PHASE_END)
    book.start_with_plan(CHECK)
    book.finish("check")
    assert book.ended().status == "completed"
    book.send(ReviewWanted(key="check", assignment_id="check", author="codex"))
    assert not book.reviews_requested() and not [e for e in book.effects if isinstance(e, Persist)]


def test_an_assignment_finishing_after_stop_was_asked_starts_nothing():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD, CHECK)
    book.send(ControlRequested(action="stop", source="signal"))
    book.finish("design")  # its end crossed the stop: it succeeded
    assert not book.reviews_requested() and not book.started()  # no phase-end review, no dependent
    book.send(ReviewWanted(key="design", assignment_id="design", author="gemini"))
    book.send(ControlRequested(action="review", source="dashboard"))
    assert not book.reviews_requested() and book.reply() is False
    book.finish("check", success=False)
    assert not book.recoveries_requested()
    assert book.ended().status == "stopped"


def test_a_reviews_result_after_the_end_is_recorded_and_changes_nothing():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.send(ControlRequested(action="stop", source="signal"))
    assert book.ended().status == "stopped"
    effects = book.review("design", "STOP_AND_ESCALATE")
    assert not [e for e in effects if isinstance(e, ToWorker | ToReviewer | StartTimer | AnswerAsker)]
    assert book.snapshot.decisions[-1].applied == "session already stopped"
    assert not [q for q in book.snapshot.questions if q.status == "open"]


def test_a_pausing_review_while_stopping_asks_nobody():
    book = Playbook()
    book.start_with_plan(DESIGN, CHECK)
    book.send(ControlRequested(action="review", source="dashboard"))
    book.send(ControlRequested(action="stop", source="signal"))
    book.send(
        ReviewCompleted(
            review_id="r1",
            assignment_id="check",
            decision=ReviewDecision(decision="PAUSE_AND_CLARIFY", reasoning="unclear"),
        )
    )
    assert not book.snapshot.questions and book.snapshot.decisions[-1].applied == "not applied: the session is stopping"


def test_a_question_asked_once_the_session_ends_gets_its_default_at_once():
    book = Playbook(NO_PHASE_END)
    book.start_with_plan(CHECK)
    book.finish("check")
    book.send(AskQuestion(question=Question(id="s1", kind="confirmation", text="may I?", asked_by="sandbox")))
    (told,) = book.answers_to_askers()
    assert (told.answer, told.approve, told.expired) == ("no", False, True)
    assert not book.snapshot.questions and not book.timers()


def test_an_answer_after_the_end_changes_nothing():
    book = Playbook()
    book.start_with_plan(DESIGN, BUILD)
    book.finish("design")
    book.review("design", "PAUSE_AND_CLARIFY")  # pauses and asks q-r1
    book.send(ControlRequested(action="stop", source="signal"))
    assert book.ended().status == "stopped"
    book.send(AnswerGiven(question_id="q-r1", answer="go on with v2", source="dashboard"))
    assert book.reply() is False and not book.started() and not book.snapshot.notes
    assert book.snapshot.status == "stopped"
