"""Recovery: a failed run is classified by the Recovery actor and relaunched with its fixes,
after a back-off, or with a directory only once the user granted it."""

from __future__ import annotations

from meta_orchestrator.actors.session.core.planning import agent_out_reason
from meta_orchestrator.actors.session.core.state import PLAN_ID
from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.recovery import RecoveryPlanned, RecoveryRecord, RelaunchDue
from meta_orchestrator.messages.resources import LimitExceededRecord
from meta_orchestrator.messages.session import (
    AskQuestion,
    AssignmentRecord,
    FolderGrantSubject,
    MergeConflictSubject,
    Question,
)
from meta_orchestrator.messages.worker import AssignmentFinished

_OUTCOME_OF_ACTION = {
    "relaunch": "pending",
    "retry_after": "pending",
    "escalate": "escalated",
    "give_up": "given_up",
    "none": "not_needed",
}


class RecoveryRules(StepBase):
    def wants_recovery(self, message: AssignmentFinished) -> bool:
        if not self.config.has_recovery or not self.settings.recovery.enabled or self.winding_down:
            return False
        if message.stopped_by:
            # The user or the wall-clock limit ended it: not a failure to fix. The stall limit
            # did: it hung (or retried without a word), a failure Recovery counts.
            return self.stalled(message)
        return not message.outcome.success or bool(message.outcome.permission_denials)

    def stalled(self, message: AssignmentFinished) -> bool:
        """The resource monitor stopped this run for its silence (its fact is in decisions)."""
        return any(
            isinstance(d, LimitExceededRecord)
            and d.limit == "stall"
            and d.action == "stop"
            and d.agent == message.agent
            and d.assignment_id == message.assignment_id
            for d in self.snap.decisions
        )

    def on_recovery_planned(self, plan: RecoveryPlanned) -> None:
        if plan.assignment_id.startswith(PLAN_ID):
            self.on_plan_recovery(plan)
            return
        if self.ending.wait:
            return  # the session is saving itself; the run goes again on resume
        record = self.records.get(plan.assignment_id)
        if record is None or record.phase not in ("recovering", "awaiting_grant"):
            return
        if self.needs_grant(plan, record):
            return  # asked the user; the plan goes on (or is turned down) with the answer
        finished = self.finishes.pop(record.id)
        retry = plan.action in ("relaunch", "retry_after") and not self.ending.stop
        if plan.cause is not None:
            outcome = _OUTCOME_OF_ACTION[plan.action]
            if plan.action in ("relaunch", "retry_after") and not retry:
                outcome = "given_up"  # a relaunch the stop turned down
            self.update(recoveries=(*self.snap.recoveries, plan.record(outcome, at=self.now)))  # type: ignore[arg-type]
        if not retry:
            advice = plan.advice if plan.action in ("escalate", "give_up") else None
            if advice:
                self.log("warning", f"{record.agent} {record.id}: {advice}")
            out = agent_out_reason(plan)
            if out and not self.ending.stop:
                self.put(record.id, busy_s=round(record.busy_s + finished.duration_s, 3))
                self.hand_over(finished.agent, out, failed_id=record.id)
                return
            self.complete_run(record.id, finished, advice)
            return
        fixes = record.fixes.add(plan.extra_args, plan.extra_dirs)
        if plan.resume_session_id:
            fixes = fixes.model_copy(update={"resume": plan.resume_session_id})
        if plan.note:
            fixes = fixes.model_copy(update={"note": plan.note})
        self.put(
            record.id,
            fixes=fixes,
            recovery_id=plan.recovery_id,
            error=f"recovering ({plan.cause}): {plan.advice}",
            returncode=finished.returncode,
        )
        if plan.delay_s > 0:
            self.put(record.id, "backing_off")
            self.timer(plan.delay_s, RelaunchDue(assignment_id=record.id))
            return
        self.put(record.id, "pending")
        self.schedule()

    def needs_grant(self, plan: RecoveryPlanned, record: AssignmentRecord) -> bool:
        """A relaunch that would open a new directory to an agent waits for the user's yes:
        an agent must not gain access outside the target just by trying to write there."""
        if (
            not plan.extra_dirs
            or plan.action not in ("relaunch", "retry_after")
            or self.ending.stop
            or not self.settings.recovery.confirm_granted_dirs
            or plan.recovery_id in self.granted
        ):
            return False
        new = [d for d in plan.extra_dirs if d not in record.fixes.extra_dirs]
        if not new:
            return False
        question_id = f"grant-{plan.recovery_id}"
        self.grants[question_id] = plan
        self.put(record.id, "awaiting_grant")
        self.ask(
            AskQuestion(
                question=Question(
                    id=question_id,
                    kind="confirmation",
                    asked_by="recovery",
                    agent=plan.agent,
                    text=(
                        f"{plan.agent} was refused access to {', '.join(new)} while working on "
                        f"{plan.assignment_id} ({plan.evidence[:200]}). Relaunch it with access to "
                        f"{'that folder' if len(new) == 1 else 'those folders'}?"
                    ),
                    subject=FolderGrantSubject(assignment_id=plan.assignment_id, directories=tuple(new)),
                    timeout_s=self.settings.recovery.confirm_timeout_s,
                    default_answer="no",
                )
            )
        )
        return True

    def on_grant_answered(self, question_id: str, approve: bool) -> None:
        plan = self.grants.pop(question_id)
        if approve:
            self.granted.add(plan.recovery_id)
            self.on_recovery_planned(plan)
            return
        refused = plan.model_copy(
            update={
                "action": "escalate",
                "extra_dirs": (),
                "extra_args": (),
                "delay_s": 0.0,
                "advice": f"access to {', '.join(plan.extra_dirs)} was not granted; grant it by "
                f"rerunning with the folder in the target, or answer yes next time",
            }
        )
        self.on_recovery_planned(refused)

    def on_relaunch_due(self, message: RelaunchDue) -> None:
        if message.assignment_id == PLAN_ID:
            self.on_plan_relaunch_due()
            return
        record = self.records.get(message.assignment_id)
        if record is None or record.phase != "backing_off":
            return
        if self.ending.stop:
            self.put(record.id, "failed", finished_at=self.stamp, error="session stopped during the back-off")
            self.check_done()
            return
        self.put(record.id, "pending")
        self.schedule()

    def settle_run(self, record: AssignmentRecord, message: AssignmentFinished) -> AssignmentRecord:
        """The run after a recovery ended: record whether the recovery worked."""
        if record.recovery_id is None:
            return record
        self.settle(record.recovery_id, message)
        return self.put(record.id, recovery_id=None)

    def settle(self, recovery_id: str, message: AssignmentFinished) -> None:
        ok = message.outcome.success and not message.stopped_by
        self.update(
            recoveries=tuple(
                r.model_copy(update={"outcome": "recovered" if ok else "failed_again", "settled_at": self.now})
                if isinstance(r, RecoveryRecord) and r.recovery_id == recovery_id
                else r
                for r in self.snap.recoveries
            )
        )

    def drop_recoveries_and_gates(self) -> None:
        """The session is stopping: nothing waits for a plan, a back-off or a review any more."""
        for record in self.in_phase("recovering", "backing_off", "awaiting_grant"):
            self.finishes.pop(record.id, None)
            self.put(record.id, "failed", finished_at=self.stamp, error="session stopped during recovery")
        for record in self.in_phase("preparing"):
            self.put(record.id, "failed", finished_at=self.stamp, error="session stopped before it started")
        for record in self.in_phase("conflicted"):
            self.put(record.id, "failed", finished_at=self.stamp)  # its branch and checkout are kept
        conflicts = {q.id for q in self.open_questions() if isinstance(q.subject, MergeConflictSubject)}
        if conflicts:
            self.update(
                questions=tuple(
                    q.model_copy(update={"status": "expired", "answer": "session stopped"}) if q.id in conflicts else q
                    for q in self.snap.questions
                )
            )
        for record in self.in_phase("gated"):
            self.put(record.id, "done")
        self.reviews.clear()  # the reviewer stops what still runs when the session ends
        if self.plan is not None and self.plan.phase == "backing_off":
            self.plan = None
        if self.grants:
            waiting, self.grants = set(self.grants), {}
            self.update(
                questions=tuple(
                    q.model_copy(update={"status": "expired", "answer": "session stopped"})
                    if q.id in waiting and q.status == "open"
                    else q
                    for q in self.snap.questions
                )
            )
