"""Reviews: the seed's decisions applied. A phase-end review gates the work that depends on the
reviewed assignment; a decision that needs the user pauses the session and asks."""

from __future__ import annotations

from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.review import (
    RequestReview,
    ReviewAllowed,
    ReviewCompleted,
    ReviewDecisionRecord,
    ReviewTrigger,
    ReviewWanted,
)
from meta_orchestrator.messages.session import (
    AskQuestion,
    ControlRequested,
    Question,
    ReviewDecisionSubject,
    SessionStatus,
)
from meta_orchestrator.messages.worker import PauseWorker, ResumeWorker, StopWorker

_GO_ON_WORDS = ("continue", "yes", "y", "ok", "go on", "")
_STOP_WORDS = (["stop"], ["no"], ["n"], ["abort"], ["quit"])


class ReviewRules(StepBase):
    def request_user_review(self, message: ControlRequested) -> bool:
        if not self.config.has_reviewer or not self.settings.review.enabled:
            self.log("info", f"review requested by {message.source}, but reviews are off")
            return False
        if self.end_decided:
            self.log("info", f"review requested by {message.source} not started: the session is ending")
            return False
        running = [
            (r.id, r.agent)
            for r in self.in_phase("running", "paused")
            if message.agent is None or r.agent == message.agent
        ]
        done = [r for r in self.in_phase("gated", "done") if message.agent is None or r.agent == message.agent]
        done.sort(key=lambda r: r.finished_at or "")
        assignment_id, author = (
            running[0] if running else (done[-1].id, done[-1].agent) if done else (None, message.agent)
        )
        trigger = ReviewTrigger(
            kind="user",
            agent=author,
            assignment_id=assignment_id,
            text=f"requested by {message.source}",
            source=message.source,
        )
        self.reviews.add(assignment_id or "")
        self.to_reviewer(RequestReview(trigger=trigger))
        return True

    def on_review_wanted(self, message: ReviewWanted) -> None:
        """An agent's events asked for a review: it starts only while the session goes on."""
        where = message.assignment_id or "the session"
        if self.end_decided:
            self.log("info", f"review of {where} not started: the session is ending")
            return
        if not self.config.has_reviewer or not self.settings.review.enabled:
            return
        self.reviews.add(message.assignment_id or "")
        self.to_reviewer(ReviewAllowed(key=message.key))

    def refresh_status(self) -> None:
        """running <-> reviewing as review gates open and close (paused and ends stay)."""
        if self.snap.status in ("running", "reviewing"):
            wanted: SessionStatus = "reviewing" if self.in_phase("gated") else "running"
            if wanted != self.snap.status:
                self.update(status=wanted)

    def on_review_completed(self, message: ReviewCompleted) -> None:
        self.reviews.discard(message.assignment_id or "")
        decision = message.decision.decision
        if self.terminal:
            applied = f"session already {self.snap.status}"
        elif self.winding_down:
            applied = "not applied: the session is stopping"
        elif decision in ("CONTINUE", "LOG_WARNING"):
            if decision == "LOG_WARNING":
                self.log("warning", f"review {message.review_id}: {message.decision.reasoning}")
            applied = "continued" if decision == "CONTINUE" else "warning logged; continued"
        else:
            applied = "paused; asked the user"
        self.update(decisions=(*self.snap.decisions, message.record(applied, at=self.now)))
        if self.terminal:
            return
        if self.winding_down:
            self.check_done()  # no question now: the session ends once its runs have
            return
        if decision in ("CONTINUE", "LOG_WARNING"):
            self.release_gate(message.assignment_id if message.gate else None)
            return
        self.pause_for_decision()
        self.ask(AskQuestion(question=self.decision_question(message)))

    def decision_question(self, message: ReviewCompleted) -> Question:
        decision = message.decision.decision
        escalate = decision == "STOP_AND_ESCALATE"
        where = f" of {message.assignment_id} ({message.author})" if message.assignment_id else ""
        text = f"Review {message.review_id}{where}: {message.decision.reasoning} " + (
            "Answer 'continue' to go on anyway (anything else you add is passed to the "
            "agents) or 'stop' to end the session."
            if escalate
            else "Your answer is passed to the agents as a note and the session resumes."
        )
        timeout = self.settings.review.question_timeout_s
        return Question(
            id=f"q-{message.review_id}",
            kind="escalation" if escalate else "clarification",
            text=text,
            asked_by="reviewer",
            agent=message.author,
            options=("continue", "stop") if escalate else (),
            subject=ReviewDecisionSubject(
                review_id=message.review_id,
                decision=decision,
                assignment_id=message.assignment_id,
                gate=message.gate,
                reasoning=message.decision.reasoning[:2000],
            ),
            timeout_s=timeout,
            default_answer=("stop" if escalate else "continue") if timeout else None,
        )

    def pause_for_decision(self) -> None:
        self.tell_runs(self.runs_with_process(), PauseWorker(reason="waiting for the user's decision"))
        for record in self.in_phase("running"):
            self.put(record.id, "paused")
        if self.snap.status in ("running", "reviewing"):
            self.update(status="paused")

    def release_gate(self, assignment_id: str | None) -> None:
        record = self.records.get(assignment_id or "")
        if record is not None and record.phase == "gated":
            self.put(record.id, "done")
        self.refresh_status()
        self.schedule()
        self.check_done()

    def on_decision_answered(self, question: Question, subject: ReviewDecisionSubject) -> None:
        """Apply the answer to a review's question (live, re-asked after a resume, or recorded)."""
        answer, expired = question.answer or "", question.status == "expired"
        review_id, decision, aid = subject.review_id, subject.decision, subject.assignment_id
        word = answer.strip().lower()
        stop = decision == "STOP_AND_ESCALATE" and word.split()[:1] in _STOP_WORDS
        how = "expired: " if expired else ""
        applied = f"{how}{'stopped' if stop else 'resumed'} by the " + (
            "default answer" if expired else "user's answer"
        )
        answered = {"answer": answer, "answered_by": question.answered_by, "answered_at": self.now, "applied": applied}
        self.update(
            decisions=tuple(
                d.model_copy(update=answered) if isinstance(d, ReviewDecisionRecord) and d.review_id == review_id else d
                for d in self.snap.decisions
            )
        )
        if stop:
            self.stop_session(f"escalation {review_id}")
            return
        note = self.decision_note(question, subject)
        if note:
            self.update(notes=(*self.snap.notes, note))
            record = self.records.get(aid or "")
            if record is not None and record.phase in ("running", "paused"):
                # A running agent hears the answer by being resumed with it (same agent session).
                self.put(record.id, relaunch_on_stop=True)
                self.to_worker(
                    record.agent, StopWorker(reason="relaunching with the user's clarification"), record.slot
                )
        if not self.decisions_open() and self.snap.status == "paused" and not self.held_for_answers:
            self.resume_all("the user answered")
        if subject.gate:
            self.release_gate(aid)
            return
        self.refresh_status()
        self.schedule()
        self.check_done()

    def decision_note(self, question: Question, subject: ReviewDecisionSubject) -> str | None:
        """What the agents are told of the answer (None: nothing worth passing on)."""
        answer = question.answer or ""
        where = f" about {subject.assignment_id}" if subject.assignment_id else ""
        raised = "blocker" if subject.decision == "STOP_AND_ESCALATE" else "concerns"
        if question.status == "expired" and question.kind == "clarification":
            return (
                f"Nobody answered the reviewers' {raised}{where} (unanswered); go on with your own "
                f"judgement and address them: {subject.reasoning}"
            )
        if answer.strip().lower() not in _GO_ON_WORDS:
            return f"The user answered the reviewers' {raised}{where}: {answer.strip()}"
        return None

    def resume_all(self, reason: str) -> None:
        """Resume every paused run and the session (it was paused as a whole)."""
        self.tell_runs(self.runs_with_process(), ResumeWorker(reason=reason))
        for record in self.in_phase("paused"):
            self.put(record.id, "running")
        self.update(status="reviewing" if self.in_phase("gated") else "running")
