"""Planning: ask the architect for a plan, retry a rejected one, fall back to the default breakdown."""

from __future__ import annotations

from dataclasses import replace

from meta_orchestrator.actors.session.prompts import (
    PlanRejected,
    fallback_plan,
    parse_plan,
    plan_prompt,
    plan_retry_prompt,
)
from meta_orchestrator.actors.session.core.state import PLAN_ID, PlanRun
from meta_orchestrator.actors.session.core.step import ROLES, StepBase
from meta_orchestrator.messages.recovery import RecoveryOutcome, RecoveryPlanned, RecoveryRequested, RelaunchDue
from meta_orchestrator.messages.session import AssignmentRecord, Plan
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment


def failure_reason(message: AssignmentFinished) -> str:
    """Why a run did not succeed, most telling cause first."""
    if message.spawn_error:
        return message.spawn_error
    if message.stopped_by:
        return f"stopped: {message.stopped_by}"
    return message.outcome.error or f"exited with {message.returncode}"


# Failures that say the CLI (or its vendor) cannot do the work today once its retries are
# spent (recovery.max_retries, per class): its roles move on, like refused credentials.
PERSISTENT_FAILURES = {
    "rate_limit": "quota or rate limit still reached after back-off",
    "server": "the vendor's server kept failing (5xx) after its retries",
    "network": "the model API stayed unreachable after its retries",
    "malformed": "its output stream stayed malformed (no result) after its retries",
    "hang": "it hung again (ended by the stall limit) after its retries",
    "crash": "it kept ending without a result after its retries",
}


def agent_out_reason(plan: RecoveryPlanned) -> str | None:
    """Why a recovery plan means the agent cannot serve in this session (None: it can).

    Refused credentials or account and a missing CLI move its roles at once; a persistent
    failure (``PERSISTENT_FAILURES``) only once Recovery gave up retrying it, never on the
    first transient one."""
    if plan.action not in ("escalate", "give_up"):
        return None
    if plan.cause in ("not_installed", "auth", "account"):
        return f"{plan.cause}: {plan.advice}"
    if plan.cause in PERSISTENT_FAILURES and plan.action == "give_up":
        return f"{plan.cause}: {PERSISTENT_FAILURES[plan.cause]}: {plan.advice}"
    return None


class PlanningRules(StepBase):
    def start_planning(self) -> None:
        architect = self.agent_for("architect")
        if architect is None:
            self.adopt_plan(fallback_plan(self.snap.task), "fallback", "no agent is enabled to plan")
            return
        if self.config.workspace and self.config.plan_workdir is None:
            # Its read-only checkout could not be made (the log says why): the architect would
            # run in the user's own tree, where it could write.
            reason = "planning's read-only checkout could not be made; the architect never runs in your tree"
            self.adopt_plan(fallback_plan(self.snap.task), "fallback", reason)
            return
        roles = {role: agent for role in ROLES if (agent := self.agent_for(role))}
        shares = {name: (a.share_min, a.share_max) for name, a in self.settings.agents.items()}
        # With a workspace the architect reads its checkout of the base, not the user's tree.
        where = self.config.plan_workdir or self.snap.target
        parallel = {name: a.max_parallel for name, a in self.settings.agents.items() if name in self.config.agents}
        prompt = plan_prompt(self.snap.session_id, self.snap.task, where, shares, roles, parallel)
        self.send_plan_request(architect, prompt)

    def send_plan_request(self, agent: str, prompt: str, recovery_id: str | None = None) -> None:
        previous = self.plan
        if previous is None:
            self.plan = PlanRun(agent=agent, prompt=prompt, recovery_id=recovery_id)
        else:
            self.plan = replace(
                previous,
                agent=agent,
                prompt=prompt,
                attempts=previous.attempts + 1,
                phase="running",
                finish=None,
                recovery_id=recovery_id,
            )
        start = StartAssignment(
            assignment_id=self.plan.run_id,
            prompt=prompt,
            mode="read_only",
            workdir=self.config.plan_workdir,
            read_only_dirs=self.config.plan_read_only,
        )
        self.to_worker(agent, start)

    def on_plan_finished(self, message: AssignmentFinished) -> None:
        assert self.plan is not None
        self.settle_plan_recovery(message)
        plan = self.plan = replace(self.plan, phase="idle")
        if self.ending.stop and not self.ending.abort:
            self.finish("stopped", f"stopped during planning: {self.ending.stop}")
            return
        if self.ending.wait or self.ending.abort:
            self.check_done()
            return
        if not message.outcome.success:
            if self.wants_recovery(message):
                # Recovery classifies the architect's failure too: a refused account hands
                # planning to the next agent; a rate limit backs off and asks again.
                self.plan = replace(plan, phase="recovering", finish=message)
                self.to_recovery(RecoveryRequested(finished=message))
                return
            self.plan_failed(message, None)
            return
        try:
            parsed = parse_plan(message.outcome.final_text)
        except PlanRejected as exc:
            self.plan = plan = replace(plan, rejections=plan.rejections + 1)
            self.update(plan_errors=(*self.snap.plan_errors, f"attempt {plan.attempts}: {exc}"))
            if plan.rejections <= self.settings.session.plan_retries:
                self.log("warning", f"plan rejected ({exc}); asking the architect again")
                self.send_plan_request(message.agent, plan_retry_prompt(self.snap.session_id, self.snap.task, str(exc)))
            else:
                self.adopt_plan(
                    fallback_plan(self.snap.task), "fallback", f"no valid plan after {plan.rejections} attempt(s)"
                )
            return
        self.adopt_plan(parsed, "architect" if plan.rejections == 0 else "architect_retry", None)

    def plan_failed(self, message: AssignmentFinished, plan: RecoveryPlanned | None) -> None:
        reason = failure_reason(message)
        if plan is not None and plan.action in ("escalate", "give_up") and plan.advice:
            reason = f"{reason} -- {plan.advice}"
        self.adopt_plan(fallback_plan(self.snap.task), "fallback", f"architect run failed: {reason}")

    def on_plan_recovery(self, verdict: RecoveryPlanned) -> None:
        """Recovery's verdict on a failed planning run."""
        if self.plan is None or self.plan.phase != "recovering" or self.plan.finish is None:
            return
        finished = self.plan.finish
        self.plan = plan = replace(self.plan, phase="idle", finish=None)
        retry = verdict.action in ("relaunch", "retry_after") and not self.winding_down
        if verdict.cause is not None:
            outcome: RecoveryOutcome = (
                "pending" if retry else ("escalated" if verdict.action == "escalate" else "given_up")
            )
            if verdict.action == "none":
                outcome = "not_needed"
            self.update(recoveries=(*self.snap.recoveries, verdict.record(outcome, at=self.now)))
        if self.winding_down:
            self.check_done()
            return
        out = agent_out_reason(verdict)
        if out:
            self.hand_over(finished.agent, out)
            successor = self.agent_for("architect")
            if successor is not None and not self.ending.abort:
                self.send_plan_request(successor, plan.prompt)  # a real plan, not the default one
            return
        if retry:
            if verdict.delay_s > 0:
                self.plan = replace(plan, phase="backing_off", recovery_id=verdict.recovery_id)
                self.timer(verdict.delay_s, RelaunchDue(assignment_id=PLAN_ID))
                return
            self.send_plan_request(finished.agent, plan.prompt, verdict.recovery_id)
            return
        self.plan_failed(finished, verdict)

    def on_plan_relaunch_due(self) -> None:
        if self.plan is None or self.plan.phase != "backing_off":
            return
        plan = self.plan = replace(self.plan, phase="idle")
        if self.winding_down:
            self.check_done()
            return
        self.send_plan_request(plan.agent, plan.prompt, plan.recovery_id)

    def settle_plan_recovery(self, message: AssignmentFinished) -> None:
        if self.plan is not None and self.plan.recovery_id:
            self.settle(self.plan.recovery_id, message)
            self.plan = replace(self.plan, recovery_id=None)

    def adopt_plan(self, plan: Plan, source: str, why_fallback: str | None) -> None:
        if why_fallback:
            self.log("warning", f"using the default breakdown: {why_fallback}")
        self.plan = None
        self.records = {}
        for item in plan.assignments:
            agent = self.agent_for(item.role)
            if agent is None:
                continue
            self.records[item.id] = AssignmentRecord(
                id=item.id,
                role=item.role,
                agent=agent,
                title=item.title,
                instructions=item.instructions,
                depends_on=item.depends_on,
                weight=item.weight,
            )
        self._records_changed = True
        self.update(
            status="running",
            plan_source=source,
            plan_summary=plan.summary,
            plan_errors=(*self.snap.plan_errors, *([why_fallback] if why_fallback else [])),
        )
        self.schedule()
