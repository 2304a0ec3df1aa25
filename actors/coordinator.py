"""Coordinator actor: plans the task, assigns work by role, owns the session state machine.

It tells workers what to run and hears back ``AssignmentFinished``; it never waits on an
answer from another actor. Every change of state is written to state.json before it is
announced.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import pykka

from actors.runtime.prompts import (
    PlanRejected, assignment_prompt, fallback_plan, parse_plan, plan_prompt, plan_retry_prompt,
)
from actors.runtime.session_files import SessionFileError, write_json_atomic
from config.settings import Settings
from messages.base import AGENT_NAMES, AgentName
from messages.session import (
    AgentShare, AnswerGiven, AskQuestion, AssignmentRecord, ControlRequested, ExpireQuestion,
    GetSessionState, Plan, QuestionAnswered, SessionEnded, SessionSnapshot,
    SessionStateChanged, SessionStatus, StartSession,
)
from messages.worker import (
    AssignmentFinished, PauseWorker, ResumeWorker, StartAssignment, StopWorker,
)

log = logging.getLogger(__name__)

PLAN_ID = "@plan"  # outside the plan-id alphabet, so no planned assignment can clash
ROLE_FALLBACKS: dict[str, tuple[AgentName, ...]] = {
    "architect": ("gemini", "claude", "codex"),
    "implementer": ("claude", "gemini", "codex"),
    "reviewer": ("codex", "claude", "gemini"),
}
EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 130}


def _failure_reason(message: AssignmentFinished) -> str:
    """Why a run did not succeed, most telling cause first."""
    if message.spawn_error:
        return message.spawn_error
    if message.stopped_by:
        return f"stopped: {message.stopped_by}"
    return message.outcome.error or f"exited with {message.returncode}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    ) -> None:
        super().__init__()
        self._settings = settings
        self._workers = dict(workers)
        self._listeners = tuple(listeners)
        self._session_dir = session_dir
        self._reply_to: Any = None
        self._assignments: dict[str, AssignmentRecord] = {}
        self._plan_attempts = 0
        self._running: dict[str, str] = {}  # assignment id -> agent running it
        self._busy: set[AgentName] = set()
        self._stop_reason: str | None = None
        self._askers: dict[str, Any] = {}  # question id -> reply_to
        self._timers: list[threading.Timer] = []
        now = _now()
        self._state = SessionSnapshot(
            session_id=session_id, task=task, target=str(target), workspace=str(session_dir),
            demo=demo, status="planning", created_at=now, updated_at=now,
            orchestrator_pid=os.getpid(), shares=self._initial_shares())

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
            case GetSessionState():
                return self._state
        return super().on_receive(message)

    # -- planning ----------------------------------------------------------------------------------

    def _on_start_session(self, message: StartSession) -> None:
        self._reply_to = message.reply_to
        architect = self._agent_for("architect")
        if architect is None:
            self._adopt_plan(fallback_plan(self._state.task), "fallback",
                             "no agent is enabled to plan")
            return
        roles = {role: agent for role in ROLE_FALLBACKS if (agent := self._agent_for(role))}
        shares = {name: (a.share_min, a.share_max) for name, a in self._settings.agents.items()}
        prompt = plan_prompt(self._state.session_id, self._state.task, self._state.target,
                             shares, roles)
        self._update(status="planning")
        self._send_plan_request(architect, prompt)

    def _send_plan_request(self, agent: AgentName, prompt: str) -> None:
        self._plan_attempts += 1
        self._busy.add(agent)
        self._running[PLAN_ID] = agent
        self._workers[agent].tell(StartAssignment(
            assignment_id=PLAN_ID if self._plan_attempts == 1 else f"{PLAN_ID}-{self._plan_attempts}",
            prompt=prompt, mode="read_only", reply_to=self.actor_ref))

    def _on_plan_finished(self, message: AssignmentFinished) -> None:
        self._running.pop(PLAN_ID, None)
        self._busy.discard(message.agent)
        if self._stop_reason:
            self._finish("stopped", f"stopped during planning: {self._stop_reason}")
            return
        if not message.outcome.success:
            reason = _failure_reason(message)
            self._adopt_plan(fallback_plan(self._state.task), "fallback",
                             f"architect run failed: {reason}")
            return
        try:
            plan = parse_plan(message.outcome.final_text)
        except PlanRejected as exc:
            errors = (*self._state.plan_errors, f"attempt {self._plan_attempts}: {exc}")
            self._update(plan_errors=errors)
            if self._plan_attempts <= self._settings.session.plan_retries:
                log.warning("plan rejected (%s); asking the architect again", exc)
                self._send_plan_request(message.agent, plan_retry_prompt(
                    self._state.session_id, self._state.task, str(exc)))
            else:
                self._adopt_plan(fallback_plan(self._state.task), "fallback",
                                 f"no valid plan after {self._plan_attempts} attempt(s)")
            return
        source = "architect" if self._plan_attempts == 1 else "architect_retry"
        self._adopt_plan(plan, source, None)

    def _adopt_plan(self, plan: Plan, source: str, why_fallback: str | None) -> None:
        if why_fallback:
            log.warning("using the default breakdown: %s", why_fallback)
        records = {}
        for item in plan.assignments:
            agent = self._agent_for(item.role)
            if agent is None:
                continue
            records[item.id] = AssignmentRecord(
                id=item.id, role=item.role, agent=agent, title=item.title,
                instructions=item.instructions, depends_on=item.depends_on, weight=item.weight)
        self._assignments = records
        self._update(status="running", plan_source=source, plan_summary=plan.summary,
                     plan_errors=(*self._state.plan_errors, *([why_fallback] if why_fallback else [])))
        self._schedule()

    # -- running -----------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._state.status != "running":
            return
        for record in list(self._assignments.values()):
            if record.status != "pending":
                continue
            deps = [self._assignments.get(d) for d in record.depends_on]
            if any(d is None or d.status in ("failed", "skipped") for d in deps):
                self._set_assignment(record.id, status="skipped", finished_at=_now(),
                                     error="a dependency did not complete")
                continue
            if not all(d.status == "completed" for d in deps if d):
                continue
            if len(self._running) >= self._settings.session.max_concurrent:
                break
            if record.agent in self._busy:
                continue
            self._launch(record)
        self._check_done()

    def _launch(self, record: AssignmentRecord) -> None:
        finished = [self._assignments[d] for d in record.depends_on if d in self._assignments]
        prompt = assignment_prompt(self._state.session_id, self._state.task, record,
                                   self._state.plan_summary, finished)
        self._busy.add(record.agent)
        self._running[record.id] = record.agent
        self._set_assignment(record.id, status="running", started_at=_now(),
                             attempts=record.attempts + 1)
        self._workers[record.agent].tell(StartAssignment(
            assignment_id=record.id, prompt=prompt, mode="write", reply_to=self.actor_ref))

    def _on_assignment_finished(self, message: AssignmentFinished) -> None:
        if message.assignment_id.startswith(PLAN_ID) and PLAN_ID in self._running:
            self._on_plan_finished(message)
            return
        record = self._assignments.get(message.assignment_id)
        if record is None:
            log.warning("finish of unknown assignment %s", message.assignment_id)
            return
        self._running.pop(record.id, None)
        self._busy.discard(message.agent)
        outcome = message.outcome
        if outcome.success and not message.stopped_by:
            status, error = "completed", None
        else:
            status, error = "failed", _failure_reason(message)
        self._set_assignment(
            record.id, status=status, finished_at=_now(),
            busy_s=round(record.busy_s + message.duration_s, 3),
            agent_session_id=outcome.session_id, final_text=outcome.final_text[-20_000:],
            files_written=outcome.files_written, tokens=outcome.total_tokens,
            cost_usd=outcome.cost_usd, error=error, returncode=message.returncode)
        self._update(shares=self._compute_shares())
        if self._stop_reason:
            self._check_done()
            return
        self._schedule()

    def _check_done(self) -> None:
        if self._running:
            return
        if self._stop_reason:
            self._finish("stopped", f"stopped: {self._stop_reason}")
            return
        if self._state.status not in ("running",):
            return
        if any(r.status in ("pending", "running") for r in self._assignments.values()):
            return
        failed = [r for r in self._assignments.values() if r.status in ("failed", "skipped")]
        self._finish("failed" if failed or not self._assignments else "completed", self._summary())

    def _finish(self, status: SessionStatus, summary: str) -> None:
        if self._state.status in ("completed", "failed", "stopped"):
            return
        code = EXIT_CODES[status]
        self._update(status=status, summary=summary, exit_code=code, ended_at=_now(),
                     shares=self._compute_shares())
        fact = SessionEnded(session_id=self._state.session_id, status=status, exit_code=code,
                            summary=summary)
        for listener in self._listeners:
            listener.tell(fact)
        if self._reply_to is not None:
            self._reply_to.tell(fact)

    def _summary(self) -> str:
        lines = []
        for r in self._assignments.values():
            files = f", {len(r.files_written)} file(s)" if r.files_written else ""
            why = f" - {r.error}" if r.error else ""
            lines.append(f"{r.id} [{r.agent}] {r.status}{files}{why}")
        for share in self._compute_shares():
            lines.append(f"share {share.agent}: planned {share.planned:.0%}, busy "
                         f"{share.actual_by_time:.0%} (target {share.target_min:.0%}-"
                         f"{share.target_max:.0%})")
        return "\n".join(lines)

    # -- controls ----------------------------------------------------------------------------------

    def _on_control(self, message: ControlRequested) -> bool:
        agents = [message.agent] if message.agent else [
            self._running[a] for a in self._running]
        match message.action:
            case "pause":
                for agent in agents:
                    self._workers[agent].tell(PauseWorker(reason=message.source))
                if message.agent is None and self._state.status == "running":
                    self._update(status="paused")
            case "resume":
                for agent in agents:
                    self._workers[agent].tell(ResumeWorker(reason=message.source))
                if message.agent is None and self._state.status == "paused":
                    self._update(status="running")
                    self._schedule()
            case "stop":
                if message.agent is not None:
                    self._workers[message.agent].tell(StopWorker(reason=message.source))
                    return True
                self._stop_reason = self._stop_reason or f"requested by {message.source}"
                for agent in set(self._running.values()):
                    self._workers[agent].tell(StopWorker(reason=self._stop_reason))
                for record in self._assignments.values():
                    if record.status == "pending":
                        self._set_assignment(record.id, status="skipped",
                                             error="session stopped")
                self._check_done()
            case "review":
                log.info("review requested by %s (the review engine is not wired yet)",
                         message.source)
                return False
        return True

    # -- questions for the user ---------------------------------------------------------------------

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _on_ask(self, message: AskQuestion) -> None:
        question = message.question.model_copy(update={"asked_at": _now(), "status": "open"})
        self._askers[question.id] = message.reply_to
        if question.timeout_s:
            timer = threading.Timer(question.timeout_s, self._tell_self,
                                    args=(ExpireQuestion(question_id=question.id),))
            timer.daemon = True
            timer.start()
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        self._update(questions=(*self._state.questions, question))

    def _tell_self(self, message: Any) -> None:
        try:
            self.actor_ref.tell(message)
        except Exception:  # noqa: BLE001 - the session ended meanwhile
            pass

    def _resolve(self, question_id: str, answer: str, approve: bool | None,
                 expired: bool) -> bool:
        open_ = {q.id: q for q in self._state.questions if q.status == "open"}
        if question_id not in open_:
            return False
        resolved = open_[question_id].model_copy(update={
            "status": "expired" if expired else "answered", "answer": answer, "approve": approve})
        self._update(questions=tuple(resolved if q.id == question_id else q
                                     for q in self._state.questions))
        asker = self._askers.pop(question_id, None)
        if asker is not None:
            try:
                asker.tell(QuestionAnswered(question_id=question_id, answer=answer,
                                            approve=approve, expired=expired))
            except Exception:  # noqa: BLE001 - the asker is gone; the answer is recorded anyway
                log.warning("the asker of %s is gone", question_id)
        return True

    def _on_answer(self, message: AnswerGiven) -> bool:
        """True when the answer matched an open question."""
        found = self._resolve(message.question_id, message.answer, message.approve, expired=False)
        if not found:
            log.warning("answer to %s ignored: no such open question", message.question_id)
        return found

    def _on_expire(self, message: ExpireQuestion) -> None:
        question = next((q for q in self._state.questions if q.id == message.question_id), None)
        if question is not None and question.status == "open":
            default = question.default_answer or "no"
            self._resolve(question.id, default, False if question.kind == "confirmation" else None,
                          expired=True)

    # -- state ---------------------------------------------------------------------------------------

    def _agent_for(self, role: str) -> AgentName | None:
        preferred = self._settings.session.roles.get(role)
        order = ((preferred,) if preferred else ()) + ROLE_FALLBACKS.get(role, AGENT_NAMES)
        for agent in order:
            if agent in self._workers and self._settings.agents[agent].enabled:
                return agent
        return None

    def _initial_shares(self) -> tuple[AgentShare, ...]:
        return tuple(AgentShare(agent=name, target_min=a.share_min, target_max=a.share_max)
                     for name, a in self._settings.agents.items())

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
            shares.append(AgentShare(
                agent=name, target_min=agent.share_min, target_max=agent.share_max,
                planned=round(sum(r.weight for r in mine) / total_weight, 4),
                busy_s=round(busy, 3),
                actual_by_time=round(busy / total_busy, 4) if total_busy else 0.0,
                tokens=tokens,
                actual_by_tokens=round(tokens / total_tokens, 4) if total_tokens else None))
        return tuple(shares)

    def _set_assignment(self, assignment_id: str, **changes: Any) -> None:
        record = self._assignments[assignment_id].model_copy(update=changes)
        self._assignments[assignment_id] = record
        self._update()

    def _update(self, **changes: Any) -> None:
        self._state = self._state.model_copy(update={
            **changes, "updated_at": _now(), "assignments": tuple(self._assignments.values())})
        try:
            write_json_atomic(self._session_dir / "state.json", self._state.model_dump(mode="json"))
        except SessionFileError as exc:
            log.error("%s", exc)
        fact = SessionStateChanged(snapshot=self._state)
        for listener in self._listeners:
            listener.tell(fact)
