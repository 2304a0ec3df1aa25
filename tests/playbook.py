"""A playbook for the session core: feed it messages, look at the effects (no process, no actor).

book = Playbook()
book.send(StartSession())
assert book.started() == [("gemini", "@plan")]
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from meta_orchestrator.actors.session.core import CoreConfig, handle, initial_state
from meta_orchestrator.actors.session.core.effects import (
    Announce,
    AnswerAsker,
    Effect,
    Persist,
    Reply,
    StartTimer,
    ToRecovery,
    ToReviewer,
    ToWorker,
)
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.recovery import RecoveryPlanned
from meta_orchestrator.messages.review import ReviewCompleted, ReviewDecision
from meta_orchestrator.messages.session import SessionEnded, SessionSnapshot
from meta_orchestrator.messages.worker import AssignmentFinished, PauseWorker, ResumeWorker, RunOutcome, StopWorker

AGENTS = ("gemini", "claude", "codex")


class Playbook:
    def __init__(
        self,
        overrides: dict[str, Any] | None = None,
        agents: tuple[str, ...] = AGENTS,
        reviewer: bool = True,
        recovery: bool = True,
        channels: tuple[str, ...] | None = None,
        resume_from: SessionSnapshot | None = None,
        resume_ids: dict[str, str] | None = None,
        recorded_answers: dict[str, dict[str, Any]] | None = None,
        agents_out: dict[str, str] | None = None,
        workspace: bool = False,
        plan_view: bool = True,
    ) -> None:
        self.settings = load_settings(None, {"workspace": "/nowhere", **(overrides or {})})
        config = CoreConfig(
            settings=self.settings,
            agents=agents,
            session_dir="/nowhere/s1",
            has_reviewer=reviewer,
            has_recovery=recovery,
            resume_from=resume_from,
            resume_ids=resume_ids or {},
            recorded_answers=recorded_answers or {},
            workspace=workspace,
            branch="orchestrate/s1" if workspace else None,
            plan_workdir="/nowhere/s1/checkouts/plan" if workspace and plan_view else None,
            plan_read_only=("/app/.git",) if workspace else (),
        )
        self.clock = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        self.state = initial_state(
            config,
            session_id="s1",
            task="Add a /health endpoint",
            target="/app",
            now=self.clock,
            answer_channels=channels,
            agents_out=agents_out,
        )
        self.effects: list[Effect] = []
        self.history: list[tuple[Any, list[Effect]]] = []

    # -- driving ----------------------------------------------------------------------------

    def send(self, message: Any) -> list[Effect]:
        self.clock += timedelta(seconds=1)
        self.state, self.effects = handle(self.state, message, self.clock)
        self.history.append((message, self.effects))
        return self.effects

    def start_with_plan(self, *items: dict[str, Any]) -> None:
        """Start the session and have the architect answer with these assignments."""
        from meta_orchestrator.messages.session import StartSession

        self.send(StartSession())
        planner, run_id = self.started()[0]
        self.send(finished(planner, run_id, text=plan_text(*items)))

    def finish(self, assignment_id: str, **outcome: Any) -> list[Effect]:
        return self.send(finished(self.record(assignment_id).agent, assignment_id, **outcome))

    def review(self, assignment_id: str, decision: str = "CONTINUE", gate: bool = True, n: int = 1) -> list[Effect]:
        return self.send(
            ReviewCompleted(
                review_id=f"r{n}",
                assignment_id=assignment_id,
                author=self.record(assignment_id).agent,
                decision=ReviewDecision(decision=decision, reasoning=f"because {decision}"),
                gate=gate,
            )
        )

    def checkout_ready(self, assignment_id: str) -> list[Effect]:
        from meta_orchestrator.messages.workspace import CheckoutReady

        return self.send(
            CheckoutReady(
                assignment_id=assignment_id,
                workdir=f"/nowhere/s1/checkouts/{assignment_id}",
                base="b" * 40,
                read_only_dirs=("/app/.git/objects",),
            )
        )

    def merged(self, assignment_id: str, conflicts: tuple[str, ...] = (), n: int = 1) -> list[Effect]:
        from meta_orchestrator.messages.workspace import AssignmentMerged, MergeResult

        status = "conflict" if conflicts else "merged"
        result = MergeResult(assignment_id=assignment_id, status=status, commit="c" * 40, conflicts=conflicts)
        return self.send(AssignmentMerged(assignment_id=assignment_id, result=result, commit=f"{n:040d}"))

    def recover(self, assignment_id: str, action: str = "relaunch", n: int = 1, **plan: Any) -> list[Effect]:
        record = self.record(assignment_id)
        fields = {"cause": "permission", **plan}
        return self.send(
            RecoveryPlanned(
                recovery_id=f"rec-{n}", agent=record.agent, assignment_id=assignment_id, action=action, **fields
            )
        )

    # -- looking ----------------------------------------------------------------------------

    @property
    def snapshot(self) -> SessionSnapshot:
        return self.state.snapshot

    def record(self, assignment_id: str) -> Any:
        return next(r for r in self.snapshot.assignments if r.id == assignment_id)

    def phases(self) -> dict[str, str]:
        return {r.id: r.phase for r in self.snapshot.assignments}

    def told(self, kind: type, message_type: type | None = None) -> list[Any]:
        return [
            e
            for e in self.effects
            if isinstance(e, kind) and (message_type is None or isinstance(e.message, message_type))
        ]

    def started(self) -> list[tuple[str, str]]:
        from meta_orchestrator.messages.worker import StartAssignment

        return [(e.agent, e.message.assignment_id) for e in self.told(ToWorker, StartAssignment)]

    def start_of(self, assignment_id: str) -> Any:
        from meta_orchestrator.messages.worker import StartAssignment

        return next(e.message for e in self.told(ToWorker, StartAssignment) if e.message.assignment_id == assignment_id)

    def signals(self) -> list[tuple[str, str]]:
        names = {PauseWorker: "pause", ResumeWorker: "resume", StopWorker: "stop"}
        return [
            (e.agent, names[type(e.message)])
            for e in self.effects
            if isinstance(e, ToWorker) and type(e.message) in names
        ]

    def reviews_requested(self) -> list[Any]:
        return [e.message for e in self.told(ToReviewer)]

    def recoveries_requested(self) -> list[Any]:
        return [e.message for e in self.told(ToRecovery)]

    def timers(self) -> list[StartTimer]:
        return [e for e in self.effects if isinstance(e, StartTimer)]

    def answers_to_askers(self) -> list[Any]:
        return [e.message for e in self.effects if isinstance(e, AnswerAsker)]

    def ended(self) -> SessionEnded | None:
        return next(
            (e.fact for e in self.effects if isinstance(e, Announce) and isinstance(e.fact, SessionEnded)), None
        )

    def reply(self) -> Any:
        return next((e.value for e in self.effects if isinstance(e, Reply)), None)

    def writes(self) -> int:
        return sum(isinstance(e, Persist) for e in self.effects)


def plan_text(*items: dict[str, Any]) -> str:
    assignments = [{"title": f"do {item['id']}", "instructions": f"please do {item['id']}", **item} for item in items]
    return "Here is the plan:\n" + json.dumps({"summary": "the plan", "assignments": assignments})


def finished(
    agent: str,
    assignment_id: str,
    success: bool = True,
    text: str = "done",
    session_id: str | None = None,
    stopped_by: str | None = None,
    denials: tuple[str, ...] = (),
    duration_s: float = 2.0,
    error: str | None = None,
    returncode: int | None = None,
) -> AssignmentFinished:
    return AssignmentFinished(
        agent=agent,
        assignment_id=assignment_id,
        returncode=(0 if success else 1) if returncode is None else returncode,
        outcome=RunOutcome(
            success=success,
            final_text=text,
            session_id=session_id,
            permission_denials=denials,
            error=error if error or success else "it broke",
        ),
        duration_s=duration_s,
        stopped_by=stopped_by,
    )


# The usual three-step plan: a design, an implementation after it, an independent check.
DESIGN = {"id": "design", "role": "architect"}
BUILD = {"id": "build", "role": "implementer", "depends_on": ["design"]}
CHECK = {"id": "check", "role": "reviewer"}
