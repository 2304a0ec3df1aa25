"""Running: assignments start as their dependencies allow, end, and the session ends with them."""

from __future__ import annotations

from meta_orchestrator.actors.session.prompts import assignment_prompt
from meta_orchestrator.actors.session.core.phases import ACTIVE_PHASES, WAITING_PHASES
from meta_orchestrator.actors.session.core.planning import failure_reason
from meta_orchestrator.actors.session.core.state import PLAN_ID
from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.recovery import RecoveryRequested
from meta_orchestrator.messages.review import RequestReview, ReviewTrigger
from meta_orchestrator.messages.session import AssignmentRecord, SessionEnded, SessionStatus
from meta_orchestrator.messages.worker import AssignmentFinished, StartAssignment
from meta_orchestrator.messages.workspace import PrepareCheckout

EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 130, "waiting": 3}


class RunningRules(StepBase):
    def schedule(self) -> None:
        if self.snap.status not in ("running", "reviewing"):
            return
        if self.winding_down:
            self.skip_pending_when_stopping()
            self.check_done()
            return
        for record in list(self.records.values()):
            if record.phase != "pending":
                continue
            deps = [self.records.get(d) for d in record.depends_on]
            if any(d is None or d.phase in ("failed", "skipped") for d in deps):
                self.put(record.id, "skipped", finished_at=self.stamp, error="a dependency did not complete")
                continue
            if not all(d is not None and d.phase == "done" for d in deps):
                continue  # a dependency still runs, or waits for its review's decision
            if len(self.runs()) >= self.settings.session.max_concurrent:
                break
            slot = self.free_slot(record.agent)
            if slot is None or self.agent_paused(record.agent):
                continue  # each of its agent's runs is taken (max_parallel), or a person paused it
            self.launch(self.put(record.id, slot=slot))
        self.check_done()

    def skip_pending_when_stopping(self) -> None:
        """Stopping: work that became pending meanwhile (a hand-over) is skipped, never started.
        Saving itself for answers, it stays pending: `orchestrate resume` runs it."""
        if not self.ending.stop:
            return
        for record in self.in_phase("pending"):
            self.put(record.id, "skipped", finished_at=self.stamp, error="session stopped")

    def launch(self, record: AssignmentRecord) -> None:
        """Start the assignment's run; with a workspace, its checkout is made first."""
        if self.config.workspace:
            self.put(record.id, "preparing")
            self.to_workspace(PrepareCheckout(assignment_id=record.id))
            return
        self.start_run(record)

    def start_run(self, record: AssignmentRecord) -> None:
        finished = [self.records[d] for d in record.depends_on if d in self.records]
        fixes = record.fixes
        notes = [*self.snap.notes, *([fixes.note] if fixes.note else [])]
        prompt = assignment_prompt(
            self.snap.session_id, self.snap.task, record, self.snap.plan_summary, finished, notes
        )
        self.put(
            record.id,
            "running",
            started_at=self.stamp,
            attempts=record.attempts + 1,
            fixes=fixes.model_copy(update={"note": None, "resume": None}),  # said and used once
        )
        self.to_worker(
            record.agent,
            StartAssignment(
                assignment_id=record.id,
                prompt=prompt,
                mode="write",
                resume_session_id=fixes.resume,
                extra_args=fixes.extra_args,
                extra_dirs=fixes.extra_dirs,
                workdir=record.workdir,
                read_only_dirs=record.read_only_dirs,
            ),
            record.slot,
        )

    def on_assignment_finished(self, message: AssignmentFinished) -> None:
        if message.fatal:
            self.abort(message.fatal)
        if message.assignment_id.startswith(PLAN_ID):
            if self.plan is not None and self.plan.phase == "running":
                self.on_plan_finished(message)
            return
        record = self.records.get(message.assignment_id)
        if record is None or record.phase not in ("running", "paused"):
            # A late duplicate (Recovery already decides about this run), or unknown.
            self.log("warning", f"finish of {message.assignment_id} ignored: it is not running")
            return
        record = self.settle_run(record, message)
        relaunch = record.relaunch_on_stop
        if relaunch:
            record = self.put(record.id, relaunch_on_stop=False)
        if self.ending.wait and message.stopped_by:
            # Ended because nobody can answer: it stays 'running' on disk, so `orchestrate
            # resume` continues it in its own CLI session (with the answers as notes).
            self.put(
                record.id,
                "interrupted",
                busy_s=round(record.busy_s + message.duration_s, 3),
                agent_session_id=message.outcome.session_id or record.agent_session_id,
                error="interrupted: waiting for answers",
            )
            self.check_done()
            return
        if relaunch and message.stopped_by and not self.ending.stop:
            # Stopped to hear the user's clarification: continue the same agent session.
            self.put(record.id, "pending", fixes=record.fixes.model_copy(update={"resume": message.outcome.session_id}))
            self.schedule()
            return
        if self.wants_recovery(message):
            self.finishes[record.id] = message
            self.put(record.id, "recovering")
            self.to_recovery(
                RecoveryRequested(
                    finished=message, extra_args=record.fixes.extra_args, extra_dirs=record.fixes.extra_dirs
                )
            )
            return
        self.complete_run(record.id, message)

    def complete_run(
        self, assignment_id: str, message: AssignmentFinished, advice: str | None = None, merged: bool = False
    ) -> None:
        record = self.records[assignment_id]
        outcome = message.outcome
        if outcome.success and not message.stopped_by:
            error = None
            if self.config.workspace and not merged:
                self.start_merge(record, message)  # done once its commit is in the session branch
                return
        else:
            error = failure_reason(message)
            if advice:
                error = f"{error} -- {advice}"
        review = self.settings.review
        gated = (
            error is None
            and not self.winding_down
            and self.config.has_reviewer
            and review.enabled
            and record.role in review.phase_end_roles
        )
        self.put(
            record.id,
            "failed" if error else ("gated" if gated else "done"),
            finished_at=self.stamp,
            busy_s=round(record.busy_s + message.duration_s, 3),
            agent_session_id=outcome.session_id,
            final_text=outcome.final_text[-20_000:],
            files_written=outcome.files_written,
            tokens=outcome.total_tokens,
            cost_usd=outcome.cost_usd,
            error=error,
            returncode=message.returncode,
        )
        if self.winding_down:
            self.check_done()
            return
        if gated:
            self.refresh_status()
            trigger = ReviewTrigger(
                kind="phase_end",
                agent=record.agent,
                assignment_id=record.id,
                source="coordinator",
                text=f"{record.title} finished",
            )
            self.to_reviewer(RequestReview(trigger=trigger, gate=True))
        self.schedule()

    def abort(self, reason: str) -> None:
        """The session cannot go on: stop every agent, then end as failed with the reason."""
        if self.terminal or self.ending.abort:
            return
        self.log("error", f"the session cannot go on: {reason}")
        self.end(abort=reason)
        self.stop_session(reason)

    def check_done(self) -> None:
        if self.runs() or self.in_phase("merging"):
            return  # a merge in flight finishes even when stopping: work is never dropped
        if self.ending.abort:
            self.finish("failed", f"failed: {self.ending.abort}\n{self.summary()}")
            return
        if self.ending.stop:
            self.finish("stopped", f"stopped: {self.ending.stop}")
            return
        if self.ending.wait:
            self.finish("waiting", self.waiting_summary())
            return
        if self.snap.status not in ("running", "reviewing") or self.in_phase("gated") or self.reviews:
            return  # a review asked for still answers first: its decision is part of the session
        if self.in_phase("interrupted", *WAITING_PHASES, *ACTIVE_PHASES):
            return
        failed = self.in_phase("failed", "skipped")
        self.finish("failed" if failed or not self.records else "completed", self.summary())

    def finish(self, status: SessionStatus, summary: str) -> None:
        if self.terminal:
            return
        code = EXIT_CODES[status]
        self.update(status=status, summary=summary, exit_code=code, ended_at=self.stamp, shares=self.shares())
        self.announce(SessionEnded(session_id=self.snap.session_id, status=status, exit_code=code, summary=summary))

    def _where_the_work_is(self, branch: str, store: str | None) -> str:
        sid = self.snap.session_id
        if self.config.branch_folder is not None:  # a folder without git, imported into the store
            return (
                f"the work is on branch {branch} in the session's store {store}; {self.config.branch_folder} "
                f"is as it was: `orchestrate apply {sid}` writes the changed files into it; "
                f"`orchestrate discard {sid}` throws the work away"
            )
        if store is None:  # an older session: the branch is in the user's repository
            return (
                f"the work is on branch {branch}: `orchestrate apply {sid}` merges it into "
                f"your branch (or `git merge {branch}`); `orchestrate discard {sid}` throws it away"
            )
        return (
            f"the work is on branch {branch} in the session's store {store}, not yet in your repository: "
            f"`orchestrate apply {sid}` brings it in and merges it into your branch; see it first with "
            f"`git --git-dir {store} log {branch}`; `orchestrate discard {sid}` throws it away"
        )

    def summary(self) -> str:
        lines = []
        for r in self.records.values():
            files = f", {len(r.files_written)} file(s)" if r.files_written else ""
            why = f" - {r.error}" if r.error else ""
            lines.append(f"{r.id} [{r.agent}] {r.status}{files}{why}")
        for agent, why in self.snap.agents_out.items():
            lines.append(f"{agent} could not serve; its roles moved: {why}")
        if self.config.branch and any(r.commit for r in self.records.values()):
            lines.append(self._where_the_work_is(self.config.branch, self.config.branch_store))
        elif self.config.branch:  # nothing was merged: no "the work is on branch ..." before a "no change"
            lines.append(f"nothing was merged into branch {self.config.branch}")
        for share in self.shares():
            lines.append(
                f"share {share.agent}: planned {share.planned:.0%}, busy "
                f"{share.actual_by_time:.0%} (target {share.target_min:.0%}-"
                f"{share.target_max:.0%})"
            )
        return "\n".join(lines)
