"""Coordinator actor: plans the task, assigns work by role, owns the session state machine.

It tells workers what to run and hears back ``AssignmentFinished``; it never waits on an
answer from another actor. Every change of state is written to state.json before it is
announced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import threading
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import pykka

from meta_orchestrator.actors.runtime.prompts import (
    PlanRejected,
    assignment_prompt,
    fallback_plan,
    parse_plan,
    plan_prompt,
    plan_retry_prompt,
)
from meta_orchestrator.actors.runtime.session_files import SessionFileError, write_json_atomic
from meta_orchestrator.actors.runtime.supervision import tell_all
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.base import AGENT_NAMES, AgentName, iso_utc, utc_now
from meta_orchestrator.messages.resources import LimitExceeded, ResourcesSampled
from meta_orchestrator.messages.sandbox import SecurityFinding, ToolCallDecided
from meta_orchestrator.messages.recovery import (
    PreflightRecord,
    RecoveryPlanned,
    RecoveryRecord,
    RecoveryRequested,
    RelaunchDue,
)
from meta_orchestrator.messages.review import RequestReview, ReviewCompleted, ReviewDecisionRecord, ReviewTrigger
from meta_orchestrator.messages.supervision import ActorRestarted, SupervisionFailed
from meta_orchestrator.messages.session import (
    AgentShare,
    AnswerChannelChanged,
    AnswerGiven,
    AskQuestion,
    AssignmentRecord,
    ControlRequested,
    ExpireQuestion,
    GetSessionState,
    Plan,
    Question,
    RoleFallbackRecord,
    QuestionAnswered,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
    SessionStatus,
    StartSession,
    TERMINAL_STATUSES,
)
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    PauseWorker,
    ResumeWorker,
    StartAssignment,
    StopWorker,
)

log = logging.getLogger(__name__)

PLAN_ID = "@plan"  # outside the plan-id alphabet, so no planned assignment can clash
ROLES = ("architect", "implementer", "reviewer")
EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 130, "waiting": 3}
# Causes that mean the agent cannot serve in this session at all: its roles move on.
AGENT_OUT_CAUSES = ("not_installed", "auth", "account")


def agent_out_reason(plan: RecoveryPlanned) -> str | None:
    """Why a recovery plan means the agent cannot serve in this session (None: it can)."""
    if plan.action not in ("escalate", "give_up"):
        return None
    if plan.cause in AGENT_OUT_CAUSES:
        return f"{plan.cause}: {plan.advice}"
    if plan.cause == "rate_limit":
        return f"quota or rate limit still reached after back-off: {plan.advice}"
    return None


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


def _failure_reason(message: AssignmentFinished) -> str:
    """Why a run did not succeed, most telling cause first."""
    if message.spawn_error:
        return message.spawn_error
    if message.stopped_by:
        return f"stopped: {message.stopped_by}"
    return message.outcome.error or f"exited with {message.returncode}"


def _now() -> str:
    return iso_utc(utc_now())


class Coordinator(pykka.ThreadingActor):
    """Turns the user's task into assignments and runs them as their dependencies allow."""

    def __init__(
        self,
        settings: Settings,
        session_id: str,
        session_dir: Path,
        task: str,
        target: Path,
        workers: Mapping[AgentName, pykka.ActorRef[Any]],
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        demo: bool = False,
        reviewer: pykka.ActorRef[Any] | None = None,
        recovery: pykka.ActorRef[Any] | None = None,
        preflight_fixes: Sequence[PreflightRecord] = (),
        resume_from: SessionSnapshot | None = None,
        resume_ids: Mapping[str, str] | None = None,
        recorded_answers: Mapping[str, Mapping[str, Any]] | None = None,
        answer_channels: Sequence[str] | None = None,
        agents_out: Mapping[str, str] | None = None,
    ) -> None:
        """``answer_channels``: who can answer questions now (None: not tracked, someone always
        answers through this actor); ``agents_out``: agents that cannot serve, with why;
        ``recorded_answers``: question id -> ``{"answer", "approve"}`` given while no
        orchestrator ran (``orchestrate answer``), applied before a resumed session goes on."""
        super().__init__()
        self._channels: set[str] | None = set(answer_channels) if answer_channels is not None else None
        self._waiting: str | None = None  # set: nobody can answer; the session saves and exits 3
        self._recorded = dict(recorded_answers or {})
        self._resumed_questions: dict[str, Question] = {}  # re-asked after a resume
        self._held_for_answers = False  # a resumed session waits for re-asked questions first
        self._unusable: dict[str, str] = dict(agents_out or {})
        self._plan_prompt = ""
        self._plan_rejections = 0
        self._plan_recovering: AssignmentFinished | None = None
        self._plan_backing_off = False
        self._resume_from = resume_from
        self._resume_ids = dict(resume_ids or {})  # assignment id -> the CLI's own session id
        self._settings = settings
        self._reviewer = reviewer
        self._recovery = recovery
        self._gates: set[str] = set()  # completed assignments whose dependents wait for a review
        self._recovering: dict[str, AssignmentFinished] = {}  # waiting for RecoveryPlanned
        self._backing_off: set[str] = set()  # relaunch timer running
        self._fixes: dict[str, dict[str, Any]] = {}  # assignment id -> flags Recovery added
        self._recovery_pending: dict[str, str] = {}  # assignment id -> recovery id to settle
        self._decision_questions: set[str] = set()  # open questions about a review decision
        self._note_relaunch: dict[str, str] = {}  # running assignment -> user's note
        self._notes: list[str] = []
        self._workers = dict(workers)
        self._listeners = tuple(listeners)
        self._session_dir = session_dir
        self._reply_to: Any = None
        self._assignments: dict[str, AssignmentRecord] = {}
        self._plan_attempts = 0
        self._running: dict[str, str] = {}  # assignment id -> agent running it
        self._busy: set[AgentName] = set()
        self._stop_reason: str | None = None
        self._abort_reason: str | None = None  # set: the session ends failed, not stopped
        self._grant_waiting: dict[str, RecoveryPlanned] = {}  # question id -> plan on hold
        self._granted: set[str] = set()  # recovery ids the user allowed
        self._askers: dict[str, Any] = {}  # question id -> reply_to
        self._timers: list[threading.Timer] = []
        now = _now()
        self._state = SessionSnapshot(
            session_id=session_id,
            task=task,
            target=str(target),
            workspace=str(session_dir),
            demo=demo,
            status="planning",
            created_at=now,
            updated_at=now,
            orchestrator_pid=os.getpid(),
            shares=self._initial_shares(),
            recoveries=tuple(preflight_fixes),
            agents_out=dict(self._unusable),
        )

    # -- switchboard -----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case StartSession():
                return self._on_start_session(message)
            case AssignmentFinished():
                return self._on_assignment_finished(message)
            case ControlRequested():
                return self._on_control(message)
            case AskQuestion():
                return self._on_ask(message)
            case AnswerGiven():
                return self._on_answer(message)
            case ExpireQuestion():
                return self._on_expire(message)
            case AnswerChannelChanged():
                return self._on_channel(message)
            case ReviewCompleted():
                return self._on_review_completed(message)
            case RecoveryPlanned():
                return self._on_recovery_planned(message)
            case RelaunchDue():
                return self._on_relaunch_due(message)
            case GetSessionState():
                return self._state
            case ActorRestarted():
                return self._on_actor_restarted(message)
            case SupervisionFailed():
                return self._on_supervision_failed(message)
            case LimitExceeded():
                return self._on_limit_exceeded(message)
            case SecurityFinding() | ToolCallDecided():
                return self._on_security_fact(message)
            case ResourcesSampled():
                return None  # for the dashboard's charts; limits arrive as LimitExceeded
        return super().on_receive(message)

    # -- planning ----------------------------------------------------------------------------------

    def _on_start_session(self, message: StartSession) -> None:
        self._reply_to = message.reply_to
        for agent, reason in self._unusable.items():
            self._record_hand_over(agent, reason, {})
        if self._resume_from is not None and self._resume_from.assignments:
            self._continue_session(self._resume_from)
            return
        architect = self._agent_for("architect")
        if architect is None:
            self._adopt_plan(fallback_plan(self._state.task), "fallback", "no agent is enabled to plan")
            return
        roles = {role: agent for role in ROLES if (agent := self._agent_for(role))}
        shares = {name: (a.share_min, a.share_max) for name, a in self._settings.agents.items()}
        prompt = plan_prompt(self._state.session_id, self._state.task, self._state.target, shares, roles)
        self._update(status="planning")
        self._send_plan_request(architect, prompt)

    def _continue_session(self, saved: SessionSnapshot) -> None:
        """Resume after the orchestrator died: finished work stays finished, the rest runs again.

        An interrupted assignment is resumed with the CLI's own resume option when its
        session id is known, else restarted with the work done so far as context.
        """
        self._assignments = {}
        self._notes = [str(n) for n in (saved.model_extra or {}).get("notes", ())]
        for record in saved.assignments:
            if record.status in ("running", "failed", "skipped", "pending"):
                interrupted = record.status == "running"
                record = record.model_copy(update={"status": "pending", "error": None})
                note = (
                    "You were interrupted while working on this assignment; the work "
                    "already in the target is yours. Continue from where you stopped."
                    if interrupted
                    else None
                )
                resume = self._resume_ids.get(record.id) if interrupted else None
                self._fixes[record.id] = {
                    "extra_args": (),
                    "extra_dirs": (),
                    **({"resume": resume} if resume else {}),
                    **({"note": note} if note else {}),
                }
            self._assignments[record.id] = record
        keep = {
            k: v
            for k, v in saved.model_dump().items()
            if k not in ("status", "assignments", "orchestrator_pid", "ended_at", "exit_code")
        }
        self._state = SessionSnapshot(
            **{
                **keep,
                "status": "running",
                "orchestrator_pid": os.getpid(),
                "updated_at": _now(),
                "assignments": tuple(self._assignments.values()),
            }
        )
        log.info(
            "resuming session %s: %s",
            saved.session_id,
            ", ".join(f"{r.id}={r.status}" for r in self._assignments.values()),
        )
        self._update(status="running", summary="")
        self._apply_saved_questions(saved)
        if self._held_for_answers:
            self._update(status="paused")
            if self._channels is not None and not self._channels:
                self._nobody_to_answer("nobody can answer the questions still open")
            return
        self._schedule()

    def _send_plan_request(self, agent: AgentName, prompt: str) -> None:
        self._plan_prompt = prompt
        self._plan_attempts += 1
        self._busy.add(agent)
        self._running[PLAN_ID] = agent
        self._workers[agent].tell(
            StartAssignment(
                assignment_id=PLAN_ID if self._plan_attempts == 1 else f"{PLAN_ID}-{self._plan_attempts}",
                prompt=prompt,
                mode="read_only",
                reply_to=self.actor_ref,
            )
        )

    def _on_plan_finished(self, message: AssignmentFinished) -> None:
        self._running.pop(PLAN_ID, None)
        self._busy.discard(message.agent)
        if self._stop_reason and not self._abort_reason:
            self._finish("stopped", f"stopped during planning: {self._stop_reason}")
            return
        if self._waiting or self._abort_reason:
            self._check_done()
            return
        if not message.outcome.success:
            if self._wants_recovery(message):
                # Recovery classifies the architect's failure too: a refused account hands
                # planning to the next agent; a rate limit backs off and asks again.
                self._plan_recovering = message
                self._running[PLAN_ID] = message.agent
                self._busy.add(message.agent)
                self._recovery.tell(RecoveryRequested(finished=message, reply_to=self.actor_ref))  # type: ignore[union-attr]
                return
            self._plan_failed(message, None)
            return
        try:
            plan = parse_plan(message.outcome.final_text)
        except PlanRejected as exc:
            self._plan_rejections += 1
            errors = (*self._state.plan_errors, f"attempt {self._plan_attempts}: {exc}")
            self._update(plan_errors=errors)
            if self._plan_rejections <= self._settings.session.plan_retries:
                log.warning("plan rejected (%s); asking the architect again", exc)
                self._send_plan_request(
                    message.agent, plan_retry_prompt(self._state.session_id, self._state.task, str(exc))
                )
            else:
                self._adopt_plan(
                    fallback_plan(self._state.task),
                    "fallback",
                    f"no valid plan after {self._plan_rejections} attempt(s)",
                )
            return
        source = "architect" if self._plan_rejections == 0 else "architect_retry"
        self._adopt_plan(plan, source, None)

    def _plan_failed(self, message: AssignmentFinished, plan: RecoveryPlanned | None) -> None:
        reason = _failure_reason(message)
        if plan is not None and plan.action in ("escalate", "give_up") and plan.advice:
            reason = f"{reason} -- {plan.advice}"
        self._adopt_plan(fallback_plan(self._state.task), "fallback", f"architect run failed: {reason}")

    def _on_plan_recovery(self, plan: RecoveryPlanned) -> None:
        """Recovery's verdict on a failed planning run."""
        finished, self._plan_recovering = self._plan_recovering, None
        if finished is None:
            return
        self._running.pop(PLAN_ID, None)
        self._busy.discard(finished.agent)
        retry = plan.action in ("relaunch", "retry_after") and not self._stop_reason and not self._waiting
        out = agent_out_reason(plan)
        if plan.cause is not None:
            outcome = "pending" if retry else ("escalated" if plan.action == "escalate" else "given_up")
            if plan.action == "none":
                outcome = "not_needed"
            self._update(recoveries=(*self._state.recoveries, plan.record(outcome)))
        if self._stop_reason or self._waiting:
            self._check_done()
            return
        if out:
            self._hand_over(finished.agent, out)
            successor = self._agent_for("architect")
            if successor is not None and not self._abort_reason:
                self._send_plan_request(successor, self._plan_prompt)  # a real plan, not the default one
            return
        if retry:
            self._recovery_pending[PLAN_ID] = plan.recovery_id
            if plan.delay_s > 0:
                self._plan_backing_off = True
                self._running[PLAN_ID] = finished.agent  # reserved through the back-off
                self._busy.add(finished.agent)
                self._start_timer(plan.delay_s, RelaunchDue(assignment_id=PLAN_ID))
                return
            self._send_plan_request(finished.agent, self._plan_prompt)
            return
        self._plan_failed(finished, plan)

    def _adopt_plan(self, plan: Plan, source: str, why_fallback: str | None) -> None:
        if why_fallback:
            log.warning("using the default breakdown: %s", why_fallback)
        records = {}
        for item in plan.assignments:
            agent = self._agent_for(item.role)
            if agent is None:
                continue
            records[item.id] = AssignmentRecord(
                id=item.id,
                role=item.role,
                agent=agent,
                title=item.title,
                instructions=item.instructions,
                depends_on=item.depends_on,
                weight=item.weight,
            )
        self._assignments = records
        self._update(
            status="running",
            plan_source=source,
            plan_summary=plan.summary,
            plan_errors=(*self._state.plan_errors, *([why_fallback] if why_fallback else [])),
        )
        self._schedule()

    # -- running -----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._state.status not in ("running", "reviewing"):
            return
        for record in list(self._assignments.values()):
            if record.status != "pending":
                continue
            deps = [self._assignments.get(d) for d in record.depends_on]
            if any(d is None or d.status in ("failed", "skipped") for d in deps):
                self._set_assignment(
                    record.id, status="skipped", finished_at=_now(), error="a dependency did not complete"
                )
                continue
            if not all(d.status == "completed" and d.id not in self._gates for d in deps if d):
                continue  # a dependency still runs, or waits for its review's decision
            if len(self._running) >= self._settings.session.max_concurrent:
                break
            if record.agent in self._busy:
                continue
            self._launch(record)
        self._check_done()

    def _launch(self, record: AssignmentRecord) -> None:
        finished = [self._assignments[d] for d in record.depends_on if d in self._assignments]
        fixes = self._fixes.setdefault(record.id, {"extra_args": (), "extra_dirs": ()})
        notes = [*self._notes, *([fixes.pop("note")] if fixes.get("note") else [])]
        prompt = assignment_prompt(
            self._state.session_id, self._state.task, record, self._state.plan_summary, finished, notes
        )
        self._busy.add(record.agent)
        self._running[record.id] = record.agent
        self._set_assignment(record.id, status="running", started_at=_now(), attempts=record.attempts + 1)
        self._workers[record.agent].tell(
            StartAssignment(
                assignment_id=record.id,
                prompt=prompt,
                mode="write",
                reply_to=self.actor_ref,
                resume_session_id=fixes.pop("resume", None),
                extra_args=fixes["extra_args"],
                extra_dirs=fixes["extra_dirs"],
            )
        )

    def _on_assignment_finished(self, message: AssignmentFinished) -> None:
        if message.fatal:
            self._abort(message.fatal)
        if message.assignment_id.startswith(PLAN_ID) and PLAN_ID in self._running:
            self._settle_recovery(PLAN_ID, message)
            self._on_plan_finished(message)
            return
        record = self._assignments.get(message.assignment_id)
        if record is None:
            log.warning("finish of unknown assignment %s", message.assignment_id)
            return
        if record.id in self._recovering:
            return  # a late duplicate: Recovery is already deciding about this run
        self._running.pop(record.id, None)
        self._busy.discard(message.agent)
        self._settle_recovery(record.id, message)
        if self._waiting and message.stopped_by:
            # Ended because nobody can answer: it stays 'running' on disk, so `orchestrate
            # resume` continues it in its own CLI session (with the answers as notes).
            self._set_assignment(
                record.id,
                busy_s=round(record.busy_s + message.duration_s, 3),
                agent_session_id=message.outcome.session_id or record.agent_session_id,
                error="interrupted: waiting for answers",
            )
            self._check_done()
            return
        note = self._note_relaunch.pop(record.id, None)
        if note is not None and message.stopped_by and not self._stop_reason:
            # Stopped to hear the user's clarification: continue the same agent session.
            self._fixes.setdefault(record.id, {"extra_args": (), "extra_dirs": ()}).update(
                resume=message.outcome.session_id
            )
            self._set_assignment(record.id, status="pending")
            self._schedule()
            return
        if self._wants_recovery(message):
            self._recovering[record.id] = message
            self._running[record.id] = message.agent  # reserved until the plan arrives
            self._busy.add(message.agent)
            fixes = self._fixes.get(record.id, {})
            self._recovery.tell(
                RecoveryRequested(  # type: ignore[union-attr]
                    finished=message,
                    extra_args=fixes.get("extra_args", ()),
                    extra_dirs=fixes.get("extra_dirs", ()),
                    reply_to=self.actor_ref,
                )
            )
            return
        self._complete_run(record, message)

    def _complete_run(self, record: AssignmentRecord, message: AssignmentFinished, advice: str | None = None) -> None:
        outcome = message.outcome
        if outcome.success and not message.stopped_by:
            status, error = "completed", None
        else:
            status, error = "failed", _failure_reason(message)
            if advice:
                error = f"{error} -- {advice}"
        self._set_assignment(
            record.id,
            status=status,
            finished_at=_now(),
            busy_s=round(record.busy_s + message.duration_s, 3),
            agent_session_id=outcome.session_id,
            final_text=outcome.final_text[-20_000:],
            files_written=outcome.files_written,
            tokens=outcome.total_tokens,
            cost_usd=outcome.cost_usd,
            error=error,
            returncode=message.returncode,
        )
        self._update(shares=self._compute_shares())
        if self._stop_reason or self._waiting:
            self._check_done()
            return
        review = self._settings.review
        if (
            status == "completed"
            and self._reviewer is not None
            and review.enabled
            and record.role in review.phase_end_roles
        ):
            self._gates.add(record.id)
            self._refresh_status()
            self._reviewer.tell(
                RequestReview(
                    trigger=ReviewTrigger(
                        kind="phase_end",
                        agent=record.agent,
                        assignment_id=record.id,
                        source="coordinator",
                        text=f"{record.title} finished",
                    ),
                    gate=True,
                    reply_to=self.actor_ref,
                )
            )
        self._schedule()

    def _on_actor_restarted(self, message: ActorRestarted) -> None:
        """A crashed actor was started anew without its memory: stop waiting on what it owed."""
        log.warning("%s was restarted after a crash: %s", message.name, message.error)
        self._update(decisions=(*self._state.decisions, message.record()))
        if message.name == "reviewer" and self._gates:
            # The reviews in flight are lost: go on as after a warning, and say so.
            log.warning("reviews in flight were lost; continuing without their decisions")
            self._gates.clear()
            self._refresh_status()
            self._schedule()
            self._check_done()
        elif message.name == "recovery" and self._recovering:
            for assignment_id, finished in list(self._recovering.items()):
                self._recovering.pop(assignment_id)
                self._running.pop(assignment_id, None)
                self._busy.discard(finished.agent)
                self._complete_run(
                    self._assignments[assignment_id], finished, "the recovery engine crashed before deciding"
                )

    def _abort(self, reason: str) -> None:
        """The session cannot go on: stop every agent, then end as failed with the reason."""
        if self._state.status in TERMINAL_STATUSES or self._abort_reason:
            return
        log.error("the session cannot go on: %s", reason)
        self._abort_reason = reason
        self._on_control(ControlRequested(action="stop", source=reason))

    def _check_done(self) -> None:
        if self._running:
            return
        if self._abort_reason:
            self._finish("failed", f"failed: {self._abort_reason}\n{self._summary()}")
            return
        if self._stop_reason:
            self._finish("stopped", f"stopped: {self._stop_reason}")
            return
        if self._waiting:
            self._finish("waiting", self._waiting_summary())
            return
        if self._state.status not in ("running", "reviewing") or self._gates:
            return
        if any(r.status in ("pending", "running") for r in self._assignments.values()):
            return
        failed = [r for r in self._assignments.values() if r.status in ("failed", "skipped")]
        self._finish("failed" if failed or not self._assignments else "completed", self._summary())

    def _finish(self, status: SessionStatus, summary: str) -> None:
        if self._state.status in TERMINAL_STATUSES:
            return
        code = EXIT_CODES[status]
        self._update(status=status, summary=summary, exit_code=code, ended_at=_now(), shares=self._compute_shares())
        fact = SessionEnded(session_id=self._state.session_id, status=status, exit_code=code, summary=summary)
        tell_all(self._listeners, fact)
        if self._reply_to is not None:
            self._reply_to.tell(fact)

    def _summary(self) -> str:
        lines = []
        for r in self._assignments.values():
            files = f", {len(r.files_written)} file(s)" if r.files_written else ""
            why = f" - {r.error}" if r.error else ""
            lines.append(f"{r.id} [{r.agent}] {r.status}{files}{why}")
        for agent, why in self._unusable.items():
            lines.append(f"{agent} could not serve; its roles moved: {why}")
        for share in self._compute_shares():
            lines.append(
                f"share {share.agent}: planned {share.planned:.0%}, busy "
                f"{share.actual_by_time:.0%} (target {share.target_min:.0%}-"
                f"{share.target_max:.0%})"
            )
        return "\n".join(lines)

    # -- controls ----------------------------------------------------------------------------------

    def _on_control(self, message: ControlRequested) -> bool:
        if message.agent is not None and message.agent not in self._workers:
            log.warning("%s for %s ignored: that agent is not part of this session", message.action, message.agent)
            return False
        agents = [message.agent] if message.agent else list(dict.fromkeys(self._running.values()))
        match message.action:
            case "pause":
                for agent in agents:
                    self._workers[agent].tell(PauseWorker(reason=message.source))
                if message.agent is None and self._state.status in ("running", "reviewing"):
                    self._update(status="paused")
            case "resume":
                for agent in agents:
                    self._workers[agent].tell(ResumeWorker(reason=message.source))
                if message.agent is None and self._state.status == "paused":
                    self._update(status="reviewing" if self._gates else "running")
                    self._schedule()
            case "stop":
                if message.agent is not None:
                    self._workers[message.agent].tell(StopWorker(reason=message.source))
                    return True
                self._stop_reason = self._stop_reason or f"requested by {message.source}"
                self._drop_recoveries_and_gates()
                for agent in set(self._running.values()):
                    self._workers[agent].tell(StopWorker(reason=self._stop_reason))
                for record in self._assignments.values():
                    if record.status == "pending":
                        self._set_assignment(record.id, status="skipped", error="session stopped")
                self._check_done()
            case "review":
                return self._request_user_review(message)
        return True

    # -- reviews: the seed's decisions applied --------------------------------------------------------

    def _request_user_review(self, message: ControlRequested) -> bool:
        if self._reviewer is None or not self._settings.review.enabled:
            log.info("review requested by %s, but reviews are off", message.source)
            return False
        running = [
            (a, agent)
            for a, agent in self._running.items()
            if not a.startswith(PLAN_ID)
            and a not in self._recovering
            and (message.agent is None or agent == message.agent)
        ]
        done = [
            r
            for r in self._assignments.values()
            if r.status == "completed" and (message.agent is None or r.agent == message.agent)
        ]
        done.sort(key=lambda r: r.finished_at or "")
        assignment_id, author = (
            running[0] if running else (done[-1].id, done[-1].agent) if done else (None, message.agent)
        )
        self._reviewer.tell(
            RequestReview(
                trigger=ReviewTrigger(
                    kind="user",
                    agent=author,
                    assignment_id=assignment_id,
                    text=f"requested by {message.source}",
                    source=message.source,
                ),
                reply_to=self.actor_ref,
            )
        )
        return True

    def _refresh_status(self) -> None:
        """running <-> reviewing as review gates open and close (paused and ends stay)."""
        if self._state.status in ("running", "reviewing"):
            wanted = "reviewing" if self._gates else "running"
            if wanted != self._state.status:
                self._update(status=wanted)

    def _on_review_completed(self, message: ReviewCompleted) -> None:
        if any(isinstance(d, ReviewDecisionRecord) and d.review_id == message.review_id for d in self._state.decisions):
            return  # the same decision heard twice (reply_to and the default route)
        decision = message.decision.decision
        ended = self._state.status in TERMINAL_STATUSES
        if ended:
            applied = f"session already {self._state.status}"
        elif decision in ("CONTINUE", "LOG_WARNING"):
            if decision == "LOG_WARNING":
                log.warning("review %s: %s", message.review_id, message.decision.reasoning)
            applied = "continued" if decision == "CONTINUE" else "warning logged; continued"
        else:
            applied = "paused; asked the user"
        self._update(decisions=(*self._state.decisions, message.record(applied)))
        if ended:
            return
        if decision in ("CONTINUE", "LOG_WARNING"):
            self._release_gate(message)
            return
        self._pause_for_decision()
        escalate = decision == "STOP_AND_ESCALATE"
        where = f" of {message.assignment_id} ({message.author})" if message.assignment_id else ""
        question_id = f"q-{message.review_id}"
        text = f"Review {message.review_id}{where}: {message.decision.reasoning} " + (
            "Answer 'continue' to go on anyway (anything else you add is passed to the "
            "agents) or 'stop' to end the session."
            if escalate
            else "Your answer is passed to the agents as a note and the session resumes."
        )
        self._decision_questions.add(question_id)
        review = self._settings.review
        self._on_ask(
            AskQuestion(
                question=Question(
                    id=question_id,
                    kind="escalation" if escalate else "clarification",
                    text=text,
                    asked_by="reviewer",
                    agent=message.author,
                    options=("continue", "stop") if escalate else (),
                    details={
                        "review_id": message.review_id,
                        "decision": decision,
                        "assignment_id": message.assignment_id,
                        "gate": message.gate,
                        "reasoning": message.decision.reasoning[:2000],
                    },
                    timeout_s=review.question_timeout_s,
                    default_answer=("stop" if escalate else "continue") if review.question_timeout_s else None,
                )
            )
        )

    def _pause_for_decision(self) -> None:
        for agent in set(self._running.values()):
            self._workers[agent].tell(PauseWorker(reason="waiting for the user's decision"))
        if self._state.status in ("running", "reviewing"):
            self._update(status="paused")

    def _release_gate(self, message: ReviewCompleted) -> None:
        if message.gate and message.assignment_id in self._gates:
            self._gates.discard(message.assignment_id)
        self._refresh_status()
        self._schedule()
        self._check_done()

    def _on_decision_answered(self, question: Question, answer: str, expired: bool) -> None:
        """Apply the answer to a review's question (live, re-asked after a resume, or recorded)."""
        self._decision_questions.discard(question.id)
        details = question.details
        review_id, decision = details.get("review_id"), details.get("decision")
        aid = details.get("assignment_id")
        word = answer.strip().lower()
        stop = decision == "STOP_AND_ESCALATE" and word.split()[:1] in (["stop"], ["no"], ["n"], ["abort"], ["quit"])
        how = "expired: " if expired else ""
        applied = f"{how}{'stopped' if stop else 'resumed'} by the " + (
            "default answer" if expired else "user's answer"
        )
        answered = {"answer": answer, "answered_by": question.answered_by, "answered_at": utc_now(), "applied": applied}
        self._update(
            decisions=tuple(
                d.model_copy(update=answered) if isinstance(d, ReviewDecisionRecord) and d.review_id == review_id else d
                for d in self._state.decisions
            )
        )
        if stop:
            self._on_control(ControlRequested(action="stop", source=f"escalation {review_id}"))
            return
        where = f" about {aid}" if aid else ""
        raised = "blocker" if decision == "STOP_AND_ESCALATE" else "concerns"
        note = None
        if expired and question.kind == "clarification":
            note = (
                f"Nobody answered the reviewers' {raised}{where} (unanswered); go on with your own "
                f"judgement and address them: {details.get('reasoning', '')}"
            )
        elif word not in ("continue", "yes", "y", "ok", "go on", ""):
            note = f"The user answered the reviewers' {raised}{where}: {answer.strip()}"
        if note:
            self._notes.append(note)
            self._update(notes=tuple(self._notes))
            if aid in self._running and aid not in self._recovering and aid not in self._backing_off:
                # A running agent hears the answer by being resumed with it (same agent session).
                self._note_relaunch[aid] = note
                self._workers[self._running[aid]].tell(StopWorker(reason="relaunching with the user's clarification"))
        if not self._decision_questions and self._state.status == "paused" and not self._held_for_answers:
            for agent in set(self._running.values()):
                self._workers[agent].tell(ResumeWorker(reason="the user answered"))
            self._update(status="reviewing" if self._gates else "running")
        if details.get("gate") and aid in self._gates:
            self._gates.discard(aid)
        self._refresh_status()
        self._schedule()
        self._check_done()

    # -- recovery: classified failures, relaunched with corrected flags ---------------------------

    def _wants_recovery(self, message: AssignmentFinished) -> bool:
        if self._recovery is None or not self._settings.recovery.enabled or self._stop_reason or self._waiting:
            return False
        if message.stopped_by:
            return False  # the user or the wall-clock limit ended it: not a failure to fix
        return not message.outcome.success or bool(message.outcome.permission_denials)

    def _on_recovery_planned(self, plan: RecoveryPlanned) -> None:
        if plan.assignment_id.startswith(PLAN_ID):
            self._on_plan_recovery(plan)
            return
        if self._waiting:
            return  # the session is saving itself; the run goes again on resume
        if self._needs_grant(plan):
            return  # asked the user; the plan goes on (or is turned down) with the answer
        finished = self._recovering.pop(plan.assignment_id, None)
        record = self._assignments.get(plan.assignment_id)
        if finished is None or record is None:
            return
        self._running.pop(record.id, None)
        self._busy.discard(finished.agent)
        retry = plan.action in ("relaunch", "retry_after") and not self._stop_reason
        if plan.cause is not None:
            outcome = {
                "relaunch": "pending",
                "retry_after": "pending",
                "escalate": "escalated",
                "give_up": "given_up",
                "none": "not_needed",
            }[plan.action]
            if plan.action in ("relaunch", "retry_after") and not retry:
                outcome = "given_up"
            self._update(recoveries=(*self._state.recoveries, plan.record(outcome)))
        if not retry:
            advice = plan.advice if plan.action in ("escalate", "give_up") else None
            if advice:
                log.warning("%s %s: %s", record.agent, record.id, advice)
            out = agent_out_reason(plan)
            if out and not self._stop_reason:
                self._set_assignment(record.id, busy_s=round(record.busy_s + finished.duration_s, 3))
                self._hand_over(finished.agent, out, failed_id=record.id)
                return
            self._complete_run(record, finished, advice)
            return
        fixes = self._fixes.setdefault(record.id, {"extra_args": (), "extra_dirs": ()})
        fixes["extra_args"] = tuple(dict.fromkeys((*fixes["extra_args"], *plan.extra_args)))
        fixes["extra_dirs"] = tuple(dict.fromkeys((*fixes["extra_dirs"], *plan.extra_dirs)))
        if plan.resume_session_id:
            fixes["resume"] = plan.resume_session_id
        if plan.note:
            fixes["note"] = plan.note
        self._recovery_pending[record.id] = plan.recovery_id
        self._set_assignment(
            record.id, error=f"recovering ({plan.cause}): {plan.advice}", returncode=finished.returncode
        )
        if plan.delay_s > 0:
            self._backing_off.add(record.id)
            self._running[record.id] = record.agent  # reserved through the back-off
            self._busy.add(record.agent)
            self._start_timer(plan.delay_s, RelaunchDue(assignment_id=record.id))
            return
        self._set_assignment(record.id, status="pending")
        self._schedule()

    def _needs_grant(self, plan: RecoveryPlanned) -> bool:
        """A relaunch that would open a new directory to an agent waits for the user's yes:
        an agent must not gain access outside the target just by trying to write there."""
        if (
            not plan.extra_dirs
            or plan.action not in ("relaunch", "retry_after")
            or self._stop_reason
            or not self._settings.recovery.confirm_granted_dirs
            or plan.recovery_id in self._granted
        ):
            return False
        granted = self._fixes.get(plan.assignment_id, {}).get("extra_dirs", ())
        new = [d for d in plan.extra_dirs if d not in granted]
        if not new:
            return False
        question_id = f"grant-{plan.recovery_id}"
        self._grant_waiting[question_id] = plan
        self._on_ask(
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
                    details={"assignment_id": plan.assignment_id, "directories": new},
                    timeout_s=self._settings.recovery.confirm_timeout_s,
                    default_answer="no",
                )
            )
        )
        return True

    def _on_grant_answered(self, question_id: str, approve: bool | None) -> None:
        plan = self._grant_waiting.pop(question_id)
        if approve:
            self._granted.add(plan.recovery_id)
            self._on_recovery_planned(plan)
            return
        self._on_recovery_planned(
            plan.model_copy(
                update={
                    "action": "escalate",
                    "extra_dirs": (),
                    "extra_args": (),
                    "delay_s": 0.0,
                    "advice": f"access to {', '.join(plan.extra_dirs)} was not granted; grant it by "
                    f"rerunning with the folder in the target, or answer yes next time",
                }
            )
        )

    def _on_relaunch_due(self, message: RelaunchDue) -> None:
        if message.assignment_id == PLAN_ID:
            if not self._plan_backing_off:
                return
            self._plan_backing_off = False
            agent = self._running.pop(PLAN_ID, None)
            if agent is not None:
                self._busy.discard(agent)
            if self._stop_reason or self._waiting or agent is None:
                self._check_done()
                return
            self._send_plan_request(agent, self._plan_prompt)
            return
        if message.assignment_id not in self._backing_off:
            return
        self._backing_off.discard(message.assignment_id)
        agent = self._running.pop(message.assignment_id, None)
        if agent is not None:
            self._busy.discard(agent)
        if self._stop_reason:
            self._set_assignment(
                message.assignment_id, status="failed", finished_at=_now(), error="session stopped during the back-off"
            )
            self._check_done()
            return
        self._set_assignment(message.assignment_id, status="pending")
        self._schedule()

    def _settle_recovery(self, assignment_id: str, message: AssignmentFinished) -> None:
        """The run after a recovery ended: record whether the recovery worked."""
        recovery_id = self._recovery_pending.pop(assignment_id, None)
        if recovery_id is None:
            return
        ok = message.outcome.success and not message.stopped_by
        self._update(
            recoveries=tuple(
                r.model_copy(update={"outcome": "recovered" if ok else "failed_again", "settled_at": utc_now()})
                if isinstance(r, RecoveryRecord) and r.recovery_id == recovery_id
                else r
                for r in self._state.recoveries
            )
        )

    def _drop_recoveries_and_gates(self) -> None:
        """The session is stopping: nothing waits for a plan, a back-off or a review any more."""
        for assignment_id in [*self._recovering, *self._backing_off]:
            agent = self._running.pop(assignment_id, None)
            if agent is not None:
                self._busy.discard(agent)
            if assignment_id in self._assignments:
                self._set_assignment(
                    assignment_id, status="failed", finished_at=_now(), error="session stopped during recovery"
                )
        self._recovering.clear()
        self._backing_off.clear()
        self._gates.clear()
        if self._plan_backing_off:
            self._plan_backing_off = False
            agent = self._running.pop(PLAN_ID, None)
            if agent is not None:
                self._busy.discard(agent)
        if self._grant_waiting:
            waiting, self._grant_waiting = set(self._grant_waiting), {}
            self._update(
                questions=tuple(
                    q.model_copy(update={"status": "expired", "answer": "session stopped"})
                    if q.id in waiting and q.status == "open"
                    else q
                    for q in self._state.questions
                )
            )

    # -- limits and the sandbox ----------------------------------------------------------------------

    def _on_limit_exceeded(self, message: LimitExceeded) -> None:
        """The monitor already acted on the worker; the session records why and, for an
        exhausted budget, pauses (nothing new starts until the user resumes)."""
        self._update(decisions=(*self._state.decisions, message.record()))
        if message.action == "pause_session" and self._state.status == "running":
            log.warning("%s", message.reason)
            self._on_control(ControlRequested(action="pause", source=message.reason))

    def _on_security_fact(self, message: SecurityFinding | ToolCallDecided) -> None:
        self._update(decisions=(*self._state.decisions, message.record()))

    # -- questions for the user ---------------------------------------------------------------------

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _on_ask(self, message: AskQuestion) -> None:
        question = message.question
        timeout = self._settings.questions.timeout_s.get(question.kind, question.timeout_s)  # type: ignore[call-overload]
        question = question.model_copy(
            update={
                "asked_at": _now(),
                "status": "open",
                "timeout_s": timeout,
                "default_answer": default_answer(question)[0],
            }
        )
        self._askers[question.id] = message.reply_to
        self._update(questions=(*self._state.questions, question))
        self._watch(question)

    def _watch(self, question: Question) -> None:
        """An open question: its timer, and no wait at all when nobody can answer."""
        if question.timeout_s:
            self._start_timer(question.timeout_s, ExpireQuestion(question_id=question.id))
        if self._channels is not None and not self._channels:
            self._nobody_to_answer("nobody can answer (no terminal on stdin, no dashboard)")

    def _start_timer(self, delay_s: float, message: Any) -> None:
        timer = threading.Timer(delay_s, self._tell_self, args=(message,))
        timer.daemon = True
        timer.start()
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]

    def _tell_self(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the session ended meanwhile
            self.actor_ref.tell(message)

    def _open_questions(self) -> list[Question]:
        return [q for q in self._state.questions if q.status == "open"]

    def _resolve(
        self, question_id: str, answer: str, approve: bool | None, expired: bool, by: str | None = None
    ) -> bool:
        open_ = {q.id: q for q in self._open_questions()}
        if question_id not in open_:
            return False
        resolved = open_[question_id].model_copy(
            update={
                "status": "expired" if expired else "answered",
                "answer": answer,
                "approve": approve,
                "answered_by": by,
            }
        )
        self._update(questions=tuple(resolved if q.id == question_id else q for q in self._state.questions))
        if question_id in self._decision_questions:
            self._on_decision_answered(resolved, answer, expired)
        if question_id in self._grant_waiting:
            self._on_grant_answered(question_id, approve is True)
        if question_id in self._resumed_questions:
            self._resumed_questions.pop(question_id)
            self._apply_late_answer(resolved)
        asker = self._askers.pop(question_id, None)
        if asker is not None:
            try:
                asker.tell(
                    QuestionAnswered(
                        question_id=question_id, answer=answer, approve=approve, expired=expired, answered_by=by
                    )
                )
            except Exception:  # noqa: BLE001 - the asker is gone; the answer is recorded anyway
                log.warning("the asker of %s is gone", question_id)
        if self._held_for_answers and not self._resumed_questions and not self._decision_questions:
            self._held_for_answers = False
            if self._state.status == "paused":
                self._update(status="running")
            self._schedule()
            self._check_done()
        return True

    def _on_answer(self, message: AnswerGiven) -> bool:
        """True when the answer matched an open question."""
        found = self._resolve(message.question_id, message.answer, message.approve, expired=False, by=message.source)
        if not found:
            log.warning("answer to %s ignored: no such open question", message.question_id)
        return found

    def _on_expire(self, message: ExpireQuestion) -> None:
        question = next((q for q in self._state.questions if q.id == message.question_id), None)
        if question is not None and question.status == "open":
            answer, approve = default_answer(question)
            self._resolve(question.id, answer, approve, expired=True, by="timeout")

    # -- who can answer ------------------------------------------------------------------------------

    def _on_channel(self, message: AnswerChannelChanged) -> None:
        if self._channels is None:
            self._channels = set()
        if message.open:
            self._channels.add(message.channel)
            return
        if message.channel not in self._channels:
            return
        self._channels.discard(message.channel)
        log.info("the %s can no longer answer questions", message.channel)
        if not self._channels and self._open_questions():
            self._nobody_to_answer(f"the {message.channel} went away while questions were open")

    def _nobody_to_answer(self, why: str) -> None:
        """No one can answer the open questions: take their defaults, or save and exit 3."""
        if self._state.status in TERMINAL_STATUSES or self._waiting or self._stop_reason:
            return
        if self._settings.questions.unattended == "defaults":
            log.warning("%s; every open question takes its default answer", why)
            for question in self._open_questions():
                answer, approve = default_answer(question)
                self._resolve(question.id, answer, approve, expired=True, by="unattended")
            return
        log.warning("%s; the session saves itself and waits for answers (exit 3)", why)
        self._waiting = why
        for assignment_id in [*self._recovering, *self._backing_off]:
            agent = self._running.pop(assignment_id, None)
            if agent is not None:
                self._busy.discard(agent)
            if assignment_id in self._assignments:
                self._set_assignment(assignment_id, status="pending", error="waiting for answers")
        self._recovering.clear()
        self._backing_off.clear()
        if self._plan_backing_off or self._plan_recovering is not None:
            self._plan_backing_off, self._plan_recovering = False, None
            agent = self._running.pop(PLAN_ID, None)
            if agent is not None:
                self._busy.discard(agent)
        for agent in set(self._running.values()):
            self._workers[agent].tell(StopWorker(reason="nobody can answer the open questions; the session waits"))
        self._check_done()

    def _waiting_summary(self) -> str:
        sid = self._state.session_id
        workspace = shlex.quote(str(self._session_dir.parent))
        lines = [f"waiting for answers: {self._waiting}"]
        for q in self._open_questions():
            how = "yes|no" if q.kind == "confirmation" else "'<your answer>'"
            lines.append(f"  ? {q.kind} {q.id} (from {q.asked_by}): {q.text[:600]}")
            lines.append(f"    orchestrate answer {sid} {q.id} {how} --workspace {workspace}")
        lines.append(f"then continue with: orchestrate resume {sid} --workspace {workspace}")
        lines.append(self._summary())
        return "\n".join(lines)

    # -- answers given while no orchestrator ran, and questions still open after a resume ----------

    def _apply_saved_questions(self, saved: SessionSnapshot) -> None:
        """Recorded answers first; questions still unanswered are asked again."""
        for question in saved.questions:
            if question.status != "open":
                continue
            recorded = self._recorded.get(question.id)
            if recorded is not None:
                answered = question.model_copy(
                    update={
                        "status": "answered",
                        "answer": str(recorded.get("answer", "")),
                        "approve": recorded.get("approve"),
                        "answered_by": "command",
                    }
                )
                self._update(questions=tuple(answered if q.id == question.id else q for q in self._state.questions))
                self._apply_late_answer(answered)
                continue
            if question.asked_by == "reviewer":
                self._decision_questions.add(question.id)
            else:
                self._resumed_questions[question.id] = question
            self._held_for_answers = True
        for question in self._open_questions():
            if question.timeout_s:
                self._start_timer(question.timeout_s, ExpireQuestion(question_id=question.id))

    def _apply_late_answer(self, question: Question) -> None:
        """What an answer means once the run that asked has ended (the session was resumed)."""
        answer, expired = question.answer or "", question.status == "expired"
        if question.asked_by == "reviewer" and question.details.get("review_id"):
            self._on_decision_answered(question, answer, expired)
            return
        details = question.details
        target = details.get("assignment_id") or next(
            (r.id for r in self._assignments.values() if r.agent == question.agent and r.id in self._fixes), None
        )
        if target is None or target not in self._assignments:
            return
        fixes = self._fixes.setdefault(target, {"extra_args": (), "extra_dirs": ()})
        if question.id.startswith("grant-"):
            if question.approve:
                fixes["extra_dirs"] = tuple(dict.fromkeys((*fixes["extra_dirs"], *details.get("directories", ()))))
            return
        if question.asked_by != "sandbox":
            return
        if "event_seq" in details and not question.approve:  # a suspicious call: "no" stops the agent
            self._set_assignment(
                target, status="failed", error=f"stopped by the user after a security finding ({answer})"
            )
            self._fixes.pop(target, None)
            return
        verdict = "allowed" if question.approve else "refused"
        said = f"The user {verdict} this request of yours: {question.text[:400]}"
        fixes["note"] = f"{fixes['note']}\n{said}" if fixes.get("note") else said

    # -- agents that cannot serve: their roles move on ------------------------------------------------

    def _on_supervision_failed(self, message: SupervisionFailed) -> None:
        reason = f"{message.name} kept crashing ({message.restarts_in_window} restarts): {message.error}"
        agent = message.name.removeprefix("worker:")
        if not message.name.startswith("worker:") or agent not in self._workers:
            self._abort(reason)
            return
        running = [aid for aid, who in self._running.items() if who == agent]
        for aid in running:
            self._running.pop(aid, None)
        self._busy.discard(agent)  # type: ignore[arg-type]
        planning = PLAN_ID in running
        failed = next((aid for aid in running if aid in self._assignments), None)
        self._hand_over(agent, f"crashed past its restarts: {message.error}", failed_id=failed)
        if planning and not self._abort_reason and (successor := self._agent_for("architect")) is not None:
            self._plan_recovering, self._plan_backing_off = None, False
            self._send_plan_request(successor, self._plan_prompt)

    def _hand_over(self, agent: str, reason: str, failed_id: str | None = None) -> None:
        """``agent`` cannot serve in this session: its pending (and failed) assignments move
        to the next agent of their role's fallback order; with no agent left, the session fails."""
        self._unusable.setdefault(agent, reason)
        moved: dict[str, str] = {}
        for record in list(self._assignments.values()):
            if record.agent != agent or not (record.status == "pending" or record.id == failed_id):
                continue
            successor = self._agent_for(record.role)
            if successor is None:
                continue
            self._fixes.pop(record.id, None)  # flags fixed for the old CLI mean nothing to the next
            self._recovery_pending.pop(record.id, None)
            self._set_assignment(record.id, agent=successor, status="pending", error=None)
            moved[record.id] = successor
        self._record_hand_over(agent, reason, moved)
        left = [a for a in self._workers if a not in self._unusable and self._settings.agents[a].enabled]
        if not left:
            if failed_id is not None and failed_id not in moved:
                self._set_assignment(failed_id, status="failed", finished_at=_now(), error=reason)
            why = "; ".join(f"{name}: {text}" for name, text in self._unusable.items())
            self._abort(f"no agent is left to do the work ({why})")
            return
        self._update(shares=self._compute_shares())
        self._schedule()

    def _record_hand_over(self, agent: str, reason: str, moved: Mapping[str, str]) -> None:
        roles = {role: self._agent_for(role) for role in ROLES}
        log.warning(
            "%s cannot serve in this session (%s); roles now: %s%s",
            agent,
            reason[:300],
            ", ".join(f"{role}={who or 'nobody'}" for role, who in roles.items()),
            f"; moved {', '.join(f'{a}->{b}' for a, b in moved.items())}" if moved else "",
        )
        entry = RoleFallbackRecord(at=utc_now(), agent=agent, reason=reason, moved=dict(moved), roles=roles)
        self._update(decisions=(*self._state.decisions, entry), agents_out=dict(self._unusable))

    # -- state ---------------------------------------------------------------------------------------

    def _agent_for(self, role: str) -> AgentName | None:
        """The role's agent, else the first of ``[session] role_fallback`` (then any other) that can serve."""
        session = self._settings.session
        preferred = session.roles.get(role)
        order = ((preferred,) if preferred else ()) + tuple(session.role_fallback.get(role, ())) + AGENT_NAMES
        for agent in dict.fromkeys(order):
            if agent in self._workers and self._settings.agents[agent].enabled and agent not in self._unusable:
                return agent
        return None

    def _initial_shares(self) -> tuple[AgentShare, ...]:
        return tuple(
            AgentShare(agent=name, target_min=a.share_min, target_max=a.share_max)
            for name, a in self._settings.agents.items()
        )

    def _compute_shares(self) -> tuple[AgentShare, ...]:
        records = list(self._assignments.values())
        total_weight = sum(r.weight for r in records) or 1.0
        total_busy = sum(r.busy_s for r in records) or 0.0
        total_tokens = sum(r.tokens or 0 for r in records)
        shares = []
        for name, agent in self._settings.agents.items():
            mine = [r for r in records if r.agent == name]
            busy = sum(r.busy_s for r in mine)
            tokens = sum(r.tokens or 0 for r in mine)
            shares.append(
                AgentShare(
                    agent=name,
                    target_min=agent.share_min,
                    target_max=agent.share_max,
                    planned=round(sum(r.weight for r in mine) / total_weight, 4),
                    busy_s=round(busy, 3),
                    actual_by_time=round(busy / total_busy, 4) if total_busy else 0.0,
                    tokens=tokens,
                    actual_by_tokens=round(tokens / total_tokens, 4) if total_tokens else None,
                )
            )
        return tuple(shares)

    def _set_assignment(self, assignment_id: str, **changes: Any) -> None:
        record = self._assignments[assignment_id].model_copy(update=changes)
        self._assignments[assignment_id] = record
        self._update()

    def _update(self, **changes: Any) -> None:
        self._state = self._state.model_copy(
            update={**changes, "updated_at": _now(), "assignments": tuple(self._assignments.values())}
        )
        try:
            write_json_atomic(self._session_dir / "state.json", self._state.model_dump(mode="json"))
        except SessionFileError as exc:
            log.error("%s", exc)
            failure: str | None = f"session files cannot be written: {exc}"
        else:
            failure = None
        fact = SessionStateChanged(snapshot=self._state)
        tell_all(self._listeners, fact)
        if failure and not self._abort_reason:
            self._abort(failure)
