"""The git workspace: each writing assignment works in a checkout of its own; when its run
succeeds the Workspace actor commits it and merges it into the session branch. A conflict goes
back to the assignment's agent (bounded rounds), then to the user."""

from __future__ import annotations

from meta_orchestrator.actors.session.core.step import StepBase
from meta_orchestrator.messages.session import AskQuestion, AssignmentRecord, MergeConflictSubject, Question
from meta_orchestrator.messages.worker import AssignmentFinished, PauseWorker
from meta_orchestrator.messages.workspace import AssignmentMerged, CheckoutFailed, CheckoutReady, MergeAssignment


class WorkspaceRules(StepBase):
    def on_checkout_ready(self, message: CheckoutReady) -> None:
        record = self.records.get(message.assignment_id)
        if record is None or record.phase != "preparing":
            return  # stopped (or handed over) while the checkout was made
        record = self.put(record.id, workdir=message.workdir, read_only_dirs=message.read_only_dirs)
        if message.note:  # said in its prompt, once (start_run clears it)
            note = " ".join(n for n in (record.fixes.note, message.note) if n)
            record = self.put(record.id, fixes=record.fixes.model_copy(update={"note": note}))
        self.start_run(record)
        if self.agent_paused(record.agent, but=record.id):  # its checkout was made as the agent was paused
            self.to_worker(record.agent, PauseWorker(reason="its agent is paused"), record.slot)
            self.put(record.id, "paused")

    def on_checkout_failed(self, message: CheckoutFailed) -> None:
        record = self.records.get(message.assignment_id)
        if record is None or record.phase != "preparing":
            return
        self.log("error", f"no checkout for {record.id}: {message.error}")
        self.put(record.id, "failed", finished_at=self.stamp, error=f"no checkout could be made: {message.error}")
        self.schedule()

    def start_merge(self, record: AssignmentRecord, message: AssignmentFinished) -> None:
        self.finishes[record.id] = message
        self.put(record.id, "merging", busy_s=round(record.busy_s + message.duration_s, 3))
        self.to_workspace(
            MergeAssignment(
                assignment_id=record.id,
                agent=record.agent,
                title=record.title,
                files_written=message.outcome.files_written,
            )
        )
        self.schedule()  # its agent is free for other work meanwhile

    def on_merged(self, message: AssignmentMerged) -> None:
        record = self.records.get(message.assignment_id)
        if record is None or record.phase != "merging":
            return
        finished = self.finishes.pop(record.id)
        if message.left_out:
            self.log(
                "warning",
                f"{record.id}: nested git repositories its agent made are not on the session branch "
                f"(kept in its checkout): {', '.join(message.left_out)}",
            )
        # The run's time was counted when the merge began.
        finished = finished.model_copy(update={"duration_s": 0.0})
        if message.error:
            error = f"merging into the session branch failed: {message.error} (its checkout is kept)"
            self.put(record.id, "failed", finished_at=self.stamp, error=error)
            self.schedule()
            return
        result = message.result
        if result is None or result.ok:
            self.put(record.id, commit=message.commit)
            self.complete_run(record.id, finished, merged=True)
            return
        self.on_conflict(record, finished, result.conflicts)

    def on_conflict(self, record: AssignmentRecord, finished: AssignmentFinished, files: tuple[str, ...]) -> None:
        listed = ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else "")
        rounds = record.conflict_rounds + 1
        if rounds <= self.settings.session.conflict_rounds and not self.winding_down:
            note = (
                f"Merging your work into the session branch conflicts in: {listed}. Your checkout now has "
                "the session branch merged in, with conflict markers in those files. Resolve every "
                "conflict, keeping what both sides meant, and leave no markers behind."
            )
            self.log("warning", f"{record.id}: merge conflict in {listed}; {record.agent} resolves it (round {rounds})")
            fixes = record.fixes.model_copy(update={"note": note, "resume": finished.outcome.session_id})
            self.put(record.id, "pending", conflict_rounds=rounds, fixes=fixes, error=f"merge conflict in {listed}")
            self.schedule()
            return
        self.put(record.id, "conflicted", error=f"merge conflict in {listed}")
        if self.winding_down:
            self.put(record.id, "failed", finished_at=self.stamp)
            self.check_done()
            return
        asked = sum(
            isinstance(q.subject, MergeConflictSubject) and q.subject.assignment_id == record.id
            for q in self.snap.questions
        )
        self.ask(
            AskQuestion(
                question=Question(
                    id=f"conflict-{record.id}-{asked + 1}",
                    kind="confirmation",
                    asked_by="workspace",
                    agent=record.agent,
                    text=(
                        f"{record.agent}'s work on {record.id} still conflicts with the session branch in "
                        f"{listed} after {rounds - 1} round(s) of resolving. Its checkout "
                        f"({record.workdir}) holds the conflict: resolve it there yourself and answer yes, "
                        f"or answer yes to let {record.agent} try again; no fails the assignment "
                        f"(its branch is kept)."
                    ),
                    subject=MergeConflictSubject(assignment_id=record.id, files=files),
                    default_answer="no",
                )
            )
        )

    def on_conflict_answered(self, subject: MergeConflictSubject, approve: bool) -> None:
        record = self.records.get(subject.assignment_id)
        if record is None or record.phase != "conflicted":
            return
        if approve and not self.winding_down:
            note = "The user asked you to finish resolving the merge conflict in your checkout."
            self.put(record.id, "pending", conflict_rounds=0, fixes=record.fixes.with_note(note))
            self.schedule()
            return
        self.put(record.id, "failed", finished_at=self.stamp)
        self.schedule()
