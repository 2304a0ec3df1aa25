"""Controls and the facts other actors report: pause, resume, stop, limits, the sandbox's
findings, crashed actors, and agents that cannot serve (their roles move on)."""

from __future__ import annotations

from collections.abc import Mapping

from meta_orchestrator.actors.session.core.phases import ACTIVE_PHASES
from meta_orchestrator.actors.session.core.step import ROLES, StepBase
from meta_orchestrator.messages.base import split_worker_name
from meta_orchestrator.messages.resources import LimitExceeded
from meta_orchestrator.messages.sandbox import SecurityFinding, ToolCallDecided
from meta_orchestrator.messages.session import ControlRequested, LaunchFixes, RoleFallbackRecord
from meta_orchestrator.messages.supervision import ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.worker import PauseWorker, ResumeWorker, StopWorker


class ControlRules(StepBase):
    def on_control(self, message: ControlRequested) -> bool:
        if message.agent is not None and message.agent not in self.config.agents:
            self.log("warning", f"{message.action} for {message.agent} ignored: that agent is not part of this session")
            return False
        # One agent: each of its runs (its first worker when none runs); else every run.
        runs = (
            (self.runs_with_process(message.agent) or [(message.agent, 1)])
            if message.agent
            else self.runs_with_process()
        )
        match message.action:
            case "pause":
                self.pause(runs, message)
            case "resume":
                self.resume(runs, message)
            case "stop":
                if message.agent is not None:
                    self.tell_runs(runs, StopWorker(reason=message.source))
                    return True
                self.stop_session(f"requested by {message.source}")
            case "review":
                return self.request_user_review(message)
        return True

    def pause(self, runs: list[tuple[str, int]], message: ControlRequested) -> None:
        self.tell_runs(runs, PauseWorker(reason=message.source))
        for record in self.in_phase("running"):
            if (record.agent, record.slot) in runs:
                self.put(record.id, "paused")
        if message.agent is None and self.snap.status in ("running", "reviewing"):
            self.update(status="paused")

    def resume(self, runs: list[tuple[str, int]], message: ControlRequested) -> None:
        self.tell_runs(runs, ResumeWorker(reason=message.source))
        for record in self.in_phase("paused"):
            if (record.agent, record.slot) in runs:
                self.put(record.id, "running")
        if message.agent is None and self.snap.status == "paused":
            self.update(status="reviewing" if self.in_phase("gated") else "running")
        self.schedule()  # the agent's waiting work may start again

    def stop_session(self, reason: str) -> None:
        """Stop every run; pending work is skipped; the session ends once the runs have ended."""
        self.end(stop=self.ending.stop or reason)
        self.drop_recoveries_and_gates()
        self.tell_runs(self.runs_with_process(), StopWorker(reason=self.ending.stop or reason))
        for record in self.in_phase("pending"):
            self.put(record.id, "skipped", error="session stopped")
        self.check_done()

    def on_limit_exceeded(self, message: LimitExceeded) -> None:
        """The monitor already acted on the worker; the session records why and, for an
        exhausted budget, pauses (nothing new starts until the user resumes)."""
        self.update(decisions=(*self.snap.decisions, message.record(at=self.now)))
        # A review run's spend counts too: the budget may run out while the session reviews.
        if message.action == "pause_session" and self.snap.status in ("running", "reviewing"):
            self.log("warning", message.reason)
            self.on_control(ControlRequested(action="pause", source=message.reason))

    def on_security_fact(self, message: SecurityFinding | ToolCallDecided) -> None:
        self.update(decisions=(*self.snap.decisions, message.record(at=self.now)))

    def on_actor_restarted(self, message: ActorRestarted) -> None:
        """A crashed actor was started anew without its memory: stop waiting on what it owed."""
        self.log("warning", f"{message.name} was restarted after a crash: {message.error}")
        self.update(decisions=(*self.snap.decisions, message.record(at=self.now)))
        if message.name == "reviewer" and (self.in_phase("gated") or self.reviews):
            # The reviews in flight are lost: go on as after a warning, and say so.
            self.log("warning", "reviews in flight were lost; continuing without their decisions")
            for record in self.in_phase("gated"):
                self.put(record.id, "done")
            self.reviews.clear()
            self.refresh_status()
            self.schedule()
            self.check_done()
        elif message.name == "recovery":
            for record in self.in_phase("recovering"):
                finished = self.finishes.pop(record.id)
                self.complete_run(record.id, finished, "the recovery engine crashed before deciding")
            if self.plan is not None and self.plan.phase == "recovering" and self.plan.finish is not None:
                self.plan_failed(self.plan.finish, None)

    # -- agents that cannot serve: their roles move on -----------------------------------------

    def on_supervision_failed(self, message: SupervisionFailed) -> None:
        reason = f"{message.name} kept crashing ({message.restarts_in_window} restarts): {message.error}"
        agent, slot = split_worker_name(message.name.removeprefix("worker:"))  # any of its runs' workers
        if not message.name.startswith("worker:") or agent not in self.config.agents:
            self.abort(reason)
            return
        planning = self.plan if self.plan is not None and self.plan.active and self.plan.agent == agent else None
        held = self.in_phase(*ACTIVE_PHASES)
        failed = next((r.id for r in held if r.agent == agent and r.slot == slot), None)  # that worker's run
        if failed is not None:
            self.finishes.pop(failed, None)
        if planning is not None:
            self.plan = None
        self.hand_over(agent, f"crashed past its restarts: {message.error}", failed_id=failed)
        if planning is not None and self.winding_down:
            self.check_done()  # stopping while it planned: nothing else would end the session
        elif planning is not None and not self.ending.abort and (successor := self.agent_for("architect")):
            self.plan = planning
            self.send_plan_request(successor, planning.prompt)

    def hand_over(self, agent: str, reason: str, failed_id: str | None = None) -> None:
        """``agent`` cannot serve in this session: its pending (and failed) assignments move
        to the next agent of their role's fallback order; with no agent left, the session fails."""
        self.update(agents_out={**self.snap.agents_out, agent: self.snap.agents_out.get(agent, reason)})
        moved: dict[str, str] = {}
        for record in list(self.records.values()):
            if record.agent != agent or not (record.phase == "pending" or record.id == failed_id):
                continue
            successor = self.agent_for(record.role)
            if successor is None:
                continue
            # Flags fixed for the old CLI mean nothing to the next.
            self.put(record.id, "pending", agent=successor, error=None, fixes=LaunchFixes(), recovery_id=None)
            moved[record.id] = successor
        self.record_hand_over(agent, reason, moved)
        if not any(self.can_serve(a) for a in self.config.agents):
            if failed_id is not None and failed_id not in moved:
                self.put(failed_id, "failed", finished_at=self.stamp, error=reason)
            why = "; ".join(f"{name}: {text}" for name, text in self.snap.agents_out.items())
            self.abort(f"no agent is left to do the work ({why})")
            return
        self.schedule()

    def record_hand_over(self, agent: str, reason: str, moved: Mapping[str, str]) -> None:
        roles = {role: self.agent_for(role) for role in ROLES}
        now_roles = ", ".join(f"{role}={who or 'nobody'}" for role, who in roles.items())
        moves = f"; moved {', '.join(f'{a}->{b}' for a, b in moved.items())}" if moved else ""
        self.log("warning", f"{agent} cannot serve in this session ({reason[:300]}); roles now: {now_roles}{moves}")
        entry = RoleFallbackRecord(at=self.now, agent=agent, reason=reason, moved=dict(moved), roles=roles)
        self.update(decisions=(*self.snap.decisions, entry))
