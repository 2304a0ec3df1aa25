"""Questions for the user: asked, answered, expired, or taken by default when nobody can answer;
a session that nobody can answer saves itself and ends 'waiting' (exit 3)."""

from __future__ import annotations

import shlex
from pathlib import PurePath

from meta_orchestrator.actors.session.core.effects import AnswerAsker
from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.session import (
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    ExpireQuestion,
    FolderGrantSubject,
    LaunchFixes,
    MergeConflictSubject,
    Question,
    QuestionAnswered,
    ReviewDecisionSubject,
    SandboxCallSubject,
    SecurityFindingSubject,
    SessionSnapshot,
)
from meta_orchestrator.messages.worker import StopWorker


def default_answer(question: Question) -> tuple[str, bool | None]:
    """The answer a question takes when nobody gives one (timeout, or nobody there).

    clarification: continue (with an 'unanswered' note); escalation: stop; confirmation: no.
    """
    match question.kind:
        case "confirmation":
            answer = question.default_answer or "no"
            return answer, answer.strip().lower() in ("yes", "y", "allow", "approve")
        case "escalation":
            return question.default_answer or "stop", None
        case "clarification":
            return question.default_answer or "continue", None
    return question.default_answer or "no", None


class QuestionRules(StepBase):
    def ask(self, message: AskQuestion) -> None:
        question = message.question
        if self.end_decided:
            self.decline(question)
            return
        timeout = self.settings.questions.timeout_s.get(question.kind, question.timeout_s)
        question = question.model_copy(
            update={
                "asked_at": self.stamp,
                "status": "open",
                "timeout_s": timeout,
                "default_answer": default_answer(question)[0],
            }
        )
        self.update(questions=(*self.snap.questions, question))
        if question.timeout_s:
            self.timer(question.timeout_s, ExpireQuestion(question_id=question.id))
        if self.channels is not None and not self.channels:
            self.nobody_to_answer("nobody can answer (no terminal on stdin, no dashboard)")

    def decline(self, question: Question) -> None:
        """A question asked once the session ends: nobody will answer it; its asker hears the default."""
        answer, approve = default_answer(question)
        self.log("info", f"question {question.id} from {question.asked_by} not asked: the session is ending")
        told = QuestionAnswered(
            question_id=question.id, answer=answer, approve=approve, expired=True, answered_by="session ending"
        )
        self.effects.append(AnswerAsker(question.id, told))

    def on_answer(self, message: AnswerGiven) -> bool:
        """True when the answer matched an open question."""
        found = self.resolve(message.question_id, message.answer, message.approve, expired=False, by=message.source)
        if not found:
            why = f"the session ended ({self.snap.status})" if self.terminal else "no such open question"
            self.log("warning", f"answer to {message.question_id} ignored: {why}")
        return found

    def on_expire(self, message: ExpireQuestion) -> None:
        question = next((q for q in self.open_questions() if q.id == message.question_id), None)
        if question is not None:
            answer, approve = default_answer(question)
            self.resolve(question.id, answer, approve, expired=True, by="timeout")

    def resolve(self, question_id: str, answer: str, approve: bool | None, expired: bool, by: str | None) -> bool:
        question = next((q for q in self.open_questions() if q.id == question_id), None)
        if question is None or self.terminal:
            return False  # an ended session's open questions are answered with `orchestrate answer`
        resolved = question.model_copy(
            update={
                "status": "expired" if expired else "answered",
                "answer": answer,
                "approve": approve,
                "answered_by": by,
            }
        )
        self.update(questions=tuple(resolved if q.id == question_id else q for q in self.snap.questions))
        late = question_id in self.resumed
        self.resumed.discard(question_id)
        self.apply_answer(resolved, late)
        told = QuestionAnswered(
            question_id=question_id, answer=answer, approve=approve, expired=expired, answered_by=by
        )
        self.effects.append(AnswerAsker(question_id, told))
        if self.held_for_answers and not self.resumed and not self.decisions_open():
            self.held_for_answers = False
            if self.snap.status == "paused":
                self.update(status="running")
            self.schedule()
            self.check_done()
        return True

    # -- who can answer ----------------------------------------------------------------------

    def on_channel(self, message: AnswerChannelChanged) -> None:
        if self.channels is None:
            self.channels = set()
        if message.open:
            self.channels.add(message.channel)
            return
        if message.channel not in self.channels:
            return
        self.channels.discard(message.channel)
        self.log("info", f"the {message.channel} can no longer answer questions")
        if not self.channels and self.open_questions():
            self.nobody_to_answer(f"the {message.channel} went away while questions were open")

    def nobody_to_answer(self, why: str) -> None:
        """No one can answer the open questions: take their defaults, or save and exit 3."""
        if self.terminal or self.winding_down:
            return
        if self.settings.questions.unattended == "defaults":
            self.log("warning", f"{why}; every open question takes its default answer")
            for question in self.open_questions():
                answer, approve = default_answer(question)
                self.resolve(question.id, answer, approve, expired=True, by="unattended")
            return
        self.log("warning", f"{why}; the session saves itself and waits for answers (exit 3)")
        self.end(wait=why)
        for record in self.in_phase("preparing", "recovering", "backing_off", "awaiting_grant"):
            self.finishes.pop(record.id, None)
            self.put(record.id, "pending", error="waiting for answers")
        if self.plan is not None and self.plan.phase in ("recovering", "backing_off"):
            self.plan = None
        self.tell_runs(
            self.runs_with_process(), StopWorker(reason="nobody can answer the open questions; the session waits")
        )
        self.check_done()

    def waiting_summary(self) -> str:
        sid = self.snap.session_id
        workspace = shlex.quote(str(PurePath(self.config.session_dir).parent))
        lines = [f"waiting for answers: {self.ending.wait}"]
        for q in self.open_questions():
            how = "yes|no" if q.kind == "confirmation" else "'<your answer>'"
            lines.append(f"  ? {q.kind} {q.id} (from {q.asked_by}): {q.text[:600]}")
            lines.append(f"    orchestrate answer {sid} {q.id} {how} --workspace {workspace}")
        lines.append(f"then continue with: orchestrate resume {sid} --workspace {workspace}")
        lines.append(self.summary())
        return "\n".join(lines)

    # -- answers given while no orchestrator ran, and questions still open after a resume ----

    def apply_saved_questions(self, saved: SessionSnapshot) -> None:
        """Recorded answers first; questions still unanswered are asked again."""
        for question in saved.questions:
            if question.status != "open":
                continue
            recorded = self.config.recorded_answers.get(question.id)
            if recorded is not None:
                answered = question.model_copy(
                    update={
                        "status": "answered",
                        "answer": str(recorded.get("answer", "")),
                        "approve": recorded.get("approve"),
                        "answered_by": "command",
                    }
                )
                self.update(questions=tuple(answered if q.id == question.id else q for q in self.snap.questions))
                self.apply_answer(answered, late=True)
                continue
            if not isinstance(question.subject, ReviewDecisionSubject):
                self.resumed.add(question.id)
            self.held_for_answers = True
        for question in self.open_questions():
            if question.timeout_s:
                self.timer(question.timeout_s, ExpireQuestion(question_id=question.id))

    def apply_answer(self, question: Question, late: bool) -> None:
        """What an answer means, by what the question is about. ``late``: the run that asked has
        ended (the session was resumed), so the answer goes into the assignment's next launch."""
        match question.subject:
            case ReviewDecisionSubject() as subject:
                self.on_decision_answered(question, subject)
            case MergeConflictSubject() as subject:
                self.on_conflict_answered(subject, question.approve is True)  # its assignment waited for it
            case FolderGrantSubject() if question.id in self.grants:
                self.on_grant_answered(question.id, question.approve is True)
            case FolderGrantSubject() as subject if late and question.approve:
                record = self.records.get(subject.assignment_id)
                if record is not None:
                    self.put(record.id, fixes=record.fixes.add(extra_dirs=subject.directories))
            case SecurityFindingSubject() | SandboxCallSubject() as subject if late:
                self.apply_late_sandbox_answer(question, subject)

    def apply_late_sandbox_answer(
        self, question: Question, subject: SecurityFindingSubject | SandboxCallSubject
    ) -> None:
        """The sandbox asked while the run went on (the guard applied a live answer itself)."""
        wanted = subject.assignment_id if isinstance(subject, SandboxCallSubject) else None
        target = wanted or next(
            (r.id for r in self.records.values() if r.agent == question.agent and r.phase == "pending"), None
        )
        record = self.records.get(target or "")
        if record is None:
            return
        if isinstance(subject, SecurityFindingSubject) and not question.approve:
            if record.phase == "pending":  # a suspicious call: "no" stops the agent
                error = f"stopped by the user after a security finding ({question.answer or ''})"
                self.put(record.id, "failed", error=error, fixes=LaunchFixes())
            return
        verdict = "allowed" if question.approve else "refused"
        said = f"The user {verdict} this request of yours: {question.text[:400]}"
        self.put(record.id, fixes=record.fixes.with_note(said))
