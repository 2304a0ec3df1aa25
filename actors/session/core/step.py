"""One handled message: the state as the rules change it, and the effects they ask for.

The rules (the mixins of ``core.SessionStep``) read and change a working copy here; ``result``
freezes it again and puts the one state.json write and the one broadcast of the step first,
so that nothing is told to anyone before the state that explains it is on disk.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from meta_orchestrator.actors.session.core.effects import (
    Announce,
    Effect,
    Log,
    Persist,
    Publish,
    StartTimer,
    ToRecovery,
    ToReviewer,
    ToWorker,
    ToWorkspace,
)
from meta_orchestrator.actors.session.core.phases import ACTIVE_PHASES, check_assignment_move, check_session_move
from meta_orchestrator.actors.session.core.state import PLAN_ID, CoreState, Ending, PlanRun
from meta_orchestrator.messages.base import Message, iso_utc
from meta_orchestrator.messages.session import (
    STATUS_OF_PHASE,
    AgentShare,
    AssignmentRecord,
    MergeConflictSubject,
    Question,
    ReviewDecisionSubject,
)

if TYPE_CHECKING:
    from meta_orchestrator.messages.recovery import RecoveryPlanned
    from meta_orchestrator.messages.session import AskQuestion, AssignmentPhase, ControlRequested, SessionStatus
    from meta_orchestrator.messages.worker import AssignmentFinished

ROLES = ("architect", "implementer", "reviewer")


class StepBase:
    def __init__(self, state: CoreState, now: datetime) -> None:
        self.config = state.config
        self.settings = state.config.settings
        self.now = now
        self.stamp = iso_utc(now)
        self.snap = state.snapshot
        self.records: dict[str, AssignmentRecord] = {r.id: r for r in state.snapshot.assignments}
        self.plan: PlanRun | None = state.plan
        self.ending: Ending = state.ending
        self.channels: set[str] | None = set(state.channels) if state.channels is not None else None
        self.finishes = dict(state.finishes)
        self.grants = dict(state.grants)
        self.granted = set(state.granted)
        self.resumed = set(state.resumed)
        self.held_for_answers = state.held_for_answers
        self.reviews = set(state.reviews)
        self.effects: list[Effect] = []
        self._state = state
        self._changed = False
        self._records_changed = False
        self.cause: type[Message] | None = None  # the message being handled: it says which moves are legal

    if TYPE_CHECKING:
        # The rules one mixin calls in another (``core.SessionStep`` joins them): declared here
        # so the type checker, reading each mixin alone, checks those calls against these.
        def schedule(self) -> None: ...
        def start_run(self, record: AssignmentRecord) -> None: ...
        def complete_run(
            self, assignment_id: str, message: AssignmentFinished, advice: str | None = None, merged: bool = False
        ) -> None: ...
        def check_done(self) -> None: ...
        def abort(self, reason: str) -> None: ...
        def finish(self, status: SessionStatus, summary: str) -> None: ...
        def summary(self) -> str: ...
        def ask(self, message: AskQuestion) -> None: ...
        def waiting_summary(self) -> str: ...
        def stop_session(self, reason: str) -> None: ...
        def hand_over(self, agent: str, reason: str, failed_id: str | None = None) -> None: ...
        def request_user_review(self, message: ControlRequested) -> bool: ...
        def refresh_status(self) -> None: ...
        def on_decision_answered(self, question: Question, subject: ReviewDecisionSubject) -> None: ...
        def on_conflict_answered(self, subject: MergeConflictSubject, approve: bool) -> None: ...
        def on_grant_answered(self, question_id: str, approve: bool) -> None: ...
        def wants_recovery(self, message: AssignmentFinished) -> bool: ...
        def settle(self, recovery_id: str, message: AssignmentFinished) -> None: ...
        def settle_run(self, record: AssignmentRecord, message: AssignmentFinished) -> AssignmentRecord: ...
        def drop_recoveries_and_gates(self) -> None: ...
        def send_plan_request(self, agent: str, prompt: str, recovery_id: str | None = None) -> None: ...
        def plan_failed(self, message: AssignmentFinished, plan: RecoveryPlanned | None) -> None: ...
        def on_plan_finished(self, message: AssignmentFinished) -> None: ...
        def on_plan_recovery(self, verdict: RecoveryPlanned) -> None: ...
        def on_plan_relaunch_due(self) -> None: ...
        def start_merge(self, record: AssignmentRecord, message: AssignmentFinished) -> None: ...

    # -- the result --------------------------------------------------------------------------

    def result(self) -> tuple[CoreState, list[Effect]]:
        snapshot = self.snap
        if self._changed or self._records_changed:
            update: dict[str, Any] = {"updated_at": self.stamp}
            if self._records_changed:
                update["assignments"] = tuple(self.records.values())
                update["shares"] = self.shares()
            snapshot = snapshot.model_copy(update=update)
        state = replace(
            self._state,
            snapshot=snapshot,
            plan=self.plan,
            ending=self.ending,
            channels=frozenset(self.channels) if self.channels is not None else None,
            finishes=self.finishes,
            grants=self.grants,
            granted=frozenset(self.granted),
            resumed=frozenset(self.resumed),
            held_for_answers=self.held_for_answers,
            reviews=frozenset(self.reviews),
        )
        head: list[Effect] = [Persist(snapshot), Publish(snapshot)] if snapshot is not self._state.snapshot else []
        return state, [*head, *self.effects]

    # -- changing the state ------------------------------------------------------------------

    def update(self, status: SessionStatus | None = None, **changes: Any) -> None:
        """Change the session's snapshot (not its assignments: ``put`` does those)."""
        if status is not None:
            check_session_move(self.snap.status, status)
            changes["status"] = status
        self.snap = self.snap.model_copy(update=changes)
        self._changed = True

    def put(self, assignment_id: str, phase: AssignmentPhase | None = None, **changes: Any) -> AssignmentRecord:
        """Change one assignment; a new ``phase`` must be a legal move (phases.py) and sets its status."""
        record = self.records[assignment_id]
        if phase is not None:
            check_assignment_move(self.cause, assignment_id, record.phase, phase)
            changes.update(phase=phase, status=STATUS_OF_PHASE[phase])
        record = record.model_copy(update=changes)
        self.records[assignment_id] = record
        self._records_changed = True
        return record

    def end(self, **reasons: str) -> None:
        self.ending = replace(self.ending, **reasons)

    # -- effects -----------------------------------------------------------------------------

    def log(self, level: str, text: str) -> None:
        self.effects.append(Log(level, text))

    def to_worker(self, agent: str, message: Message, slot: int = 1) -> None:
        self.effects.append(ToWorker(agent, message, slot))

    def tell_runs(self, runs: list[tuple[str, int]], message: Message) -> None:
        """Tell each (agent, slot)'s worker ``message``."""
        for agent, slot in runs:
            self.to_worker(agent, message, slot)

    def to_reviewer(self, message: Message) -> None:
        self.effects.append(ToReviewer(message))

    def to_recovery(self, message: Message) -> None:
        self.effects.append(ToRecovery(message))

    def to_workspace(self, message: Message) -> None:
        self.effects.append(ToWorkspace(message))

    def announce(self, fact: Message) -> None:
        self.effects.append(Announce(fact))

    def timer(self, delay_s: float, message: Message) -> None:
        self.effects.append(StartTimer(delay_s, message))

    # -- what the state says -----------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.snap.status in ("completed", "failed", "stopped", "waiting")

    @property
    def winding_down(self) -> bool:
        """Stopping or saving itself: nothing new starts, no failure is worth recovering."""
        return bool(self.ending.stop or self.ending.wait)

    @property
    def end_decided(self) -> bool:
        """Ended, or winding down to its end: from here on nothing starts (no run, no review,
        no retry, no question); what runs is stopped or finishes."""
        return self.terminal or self.winding_down

    def runs(self) -> list[tuple[str, str]]:
        """(assignment id, agent) of everything that holds an agent, planning included."""
        held = [(PLAN_ID, self.plan.agent)] if self.plan is not None and self.plan.active else []
        return held + [(r.id, r.agent) for r in self.records.values() if r.phase in ACTIVE_PHASES]

    def runs_with_process(self, agent: str | None = None) -> list[tuple[str, int]]:
        """(agent, slot) of every CLI that runs now (paused or not), of ``agent`` alone when
        given: those a control reaches (pausing an agent pauses each of its runs)."""
        planning = [(self.plan.agent, 1)] if self.plan is not None and self.plan.phase == "running" else []
        running = [(r.agent, r.slot) for r in self.records.values() if r.phase in ("running", "paused")]
        return [run for run in dict.fromkeys([*planning, *running]) if agent is None or run[0] == agent]

    def agent_paused(self, agent: str, but: str | None = None) -> bool:
        """One of the agent's runs (``but`` aside) is paused: a person paused the agent (each of
        its runs), so no other run of it starts until it is resumed."""
        return any(r.agent == agent and r.phase == "paused" and r.id != but for r in self.records.values())

    def free_slot(self, agent: str) -> int | None:
        """The lowest of ``agent``'s run slots (``[agents.<name>] max_parallel``) nothing holds
        now, None when each is taken (planning holds the architect's first)."""
        agent_settings = self.settings.agents.get(agent)
        limit = agent_settings.max_parallel if agent_settings is not None else 1
        held = {r.slot for r in self.records.values() if r.agent == agent and r.phase in ACTIVE_PHASES}
        if self.plan is not None and self.plan.active and self.plan.agent == agent:
            held.add(1)
        return next((slot for slot in range(1, limit + 1) if slot not in held), None)

    def in_phase(self, *phases: AssignmentPhase) -> list[AssignmentRecord]:
        return [r for r in self.records.values() if r.phase in phases]

    def open_questions(self) -> list[Question]:
        return [q for q in self.snap.questions if q.status == "open"]

    def decisions_open(self) -> bool:
        """A review's decision still waits for the user's answer."""
        return any(isinstance(q.subject, ReviewDecisionSubject) for q in self.open_questions())

    def agent_for(self, role: str) -> str | None:
        """The role's agent, else the first of ``[session] role_fallback`` (then any other) that can serve."""
        session = self.settings.session
        preferred = session.roles.get(role)
        # Then any other agent of the session, whichever CLIs are registered.
        order = ((preferred,) if preferred else ()) + tuple(session.role_fallback.get(role, ())) + self.config.agents
        for agent in dict.fromkeys(order):
            if agent in self.config.agents and self.can_serve(agent):
                return agent
        return None

    def can_serve(self, agent: str) -> bool:
        settings = self.settings.agents.get(agent)
        return settings is not None and settings.enabled and agent not in self.snap.agents_out

    def shares(self) -> tuple[AgentShare, ...]:
        records = list(self.records.values())
        total_weight = sum(r.weight for r in records) or 1.0
        total_busy = sum(r.busy_s for r in records) or 0.0
        total_tokens = sum(r.tokens or 0 for r in records)
        shares = []
        for name, agent in self.settings.agents.items():
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
