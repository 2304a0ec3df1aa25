"""Coordinator actor: the switchboard between the session's rules and the other actors.

Every message it receives goes to the pure session core (``actors/session/core``), which says
what the session becomes and what to do about it; this actor carries that out: one state.json
write and one broadcast per message, then the tells and the timers. It never waits on an
answer from another actor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pykka

from meta_orchestrator.actors.files.session_files import SessionFileError, write_json_atomic
from meta_orchestrator.actors.supervision.supervision import tell_all
from meta_orchestrator.actors.session.core import CoreConfig, CoreState, handle, initial_state
from meta_orchestrator.actors.session.core.core import NoRule
from meta_orchestrator.actors.session.core.effects import (
    Announce,
    AnswerAsker,
    Effect,
    Log,
    Persist,
    Publish,
    Reply,
    StartTimer,
    ToRecovery,
    ToReviewer,
    ToWorker,
    ToWorkspace,
)
from meta_orchestrator.config.settings import Settings
from meta_orchestrator.messages.base import split_worker_name, utc_now
from meta_orchestrator.messages.recovery import PreflightRecord
from meta_orchestrator.messages.resources import ResourcesSampled
from meta_orchestrator.messages.session import (
    AskQuestion,
    GetSessionState,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
    StartSession,
    StateNotSaved,
)

log = logging.getLogger(__name__)


class Coordinator(pykka.ThreadingActor):
    """Turns the user's task into assignments and runs them as their dependencies allow."""

    def __init__(
        self,
        settings: Settings,
        session_id: str,
        session_dir: Path,
        task: str,
        target: Path,
        workers: Mapping[str, pykka.ActorRef[Any]],
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
        workspace: pykka.ActorRef[Any] | None = None,
        branch: str | None = None,
        branch_store: str | None = None,
        branch_folder: str | None = None,
        plan_checkout: tuple[str, tuple[str, ...]] | None = None,
    ) -> None:
        """``answer_channels``: who can answer questions now (None: not tracked, someone always
        answers through this actor); ``agents_out``: agents that cannot serve, with why;
        ``recorded_answers``: question id -> ``{"answer", "approve"}`` given while no
        orchestrator ran (``orchestrate answer``), applied before a resumed session goes on;
        ``workspace``: the Workspace actor when the target is a git repository (each writing
        assignment then works in its own checkout and is merged into ``branch``, kept in the
        session's store ``branch_store`` until ``orchestrate apply``; ``branch_folder``: a folder
        without git imported into that store, into which apply writes the changed files);
        ``plan_checkout``: the read-only checkout planning runs in, and what it must read;
        ``workers``: by worker name, one per run slot of each agent (``claude``, ``claude#2``)."""
        super().__init__()
        self._session_dir = session_dir
        self._workers = dict(workers)
        self._listeners = tuple(listeners)
        self._reviewer = reviewer
        self._recovery = recovery
        self._workspace = workspace
        self._reply_to: Any = None  # whoever started the session: told SessionEnded
        self._askers: dict[str, Any] = {}  # question id -> who asked (told the answer)
        self._timers: list[threading.Timer] = []
        config = CoreConfig(
            settings=settings,
            agents=tuple(dict.fromkeys(split_worker_name(name)[0] for name in self._workers)),
            session_dir=str(session_dir),
            has_reviewer=reviewer is not None,
            has_recovery=recovery is not None,
            resume_from=resume_from,
            resume_ids=dict(resume_ids or {}),
            recorded_answers=dict(recorded_answers or {}),
            workspace=workspace is not None,
            branch=branch if workspace is not None else None,
            branch_store=branch_store if workspace is not None else None,
            branch_folder=branch_folder if workspace is not None else None,
            plan_workdir=plan_checkout[0] if plan_checkout else None,
            plan_read_only=plan_checkout[1] if plan_checkout else (),
        )
        self._state: CoreState = initial_state(
            config,
            session_id=session_id,
            task=task,
            target=str(target),
            now=utc_now(),
            demo=demo,
            orchestrator_pid=os.getpid(),
            preflight_fixes=preflight_fixes,
            agents_out=agents_out,
            answer_channels=answer_channels,
        )

    def on_receive(self, message: Any) -> Any:
        match message:
            case GetSessionState():
                return self._state.snapshot
            case ResourcesSampled():
                return None  # for the dashboard's charts; limits arrive as LimitExceeded
            case StartSession():
                self._reply_to = message.reply_to
            case AskQuestion():
                self._askers[message.question.id] = message.reply_to
        return self._step(message)

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def _step(self, message: Any) -> Any:
        try:
            self._state, effects = handle(self._state, message, utc_now())
        except NoRule:
            return super().on_receive(message)
        answer = None
        for effect in effects:
            if isinstance(effect, Reply):
                answer = effect.value
            else:
                self._carry_out(effect)
        return answer

    def _carry_out(self, effect: Effect) -> None:
        match effect:
            case Persist(snapshot=snapshot):
                self._persist(snapshot)
            case Publish(snapshot=snapshot):
                tell_all(self._listeners, SessionStateChanged(snapshot=snapshot))
            case ToWorker():
                self._workers[effect.worker].tell(self._replying(effect.message))
            case ToReviewer(message=message) if self._reviewer is not None:
                self._reviewer.tell(self._replying(message))
            case ToRecovery(message=message) if self._recovery is not None:
                self._recovery.tell(self._replying(message))
            case ToWorkspace(message=message) if self._workspace is not None:
                self._workspace.tell(self._replying(message))
            case Announce(fact=fact):
                tell_all(self._listeners, fact)
                if isinstance(fact, SessionEnded) and self._reply_to is not None:
                    self._reply_to.tell(fact)
            case AnswerAsker(question_id=question_id, message=message):
                self._answer_asker(question_id, message)
            case StartTimer(delay_s=delay_s, message=message):
                self._start_timer(delay_s, message)
            case Log(level=level, text=text):
                log.log(logging.getLevelName(level.upper()), "%s", text)

    def _persist(self, snapshot: SessionSnapshot) -> None:
        try:
            write_json_atomic(self._session_dir / "state.json", snapshot.model_dump(mode="json"))
        except SessionFileError as exc:
            log.error("%s", exc)
            if not self._state.ending.abort:
                # After this step's tells; the abort is a step of its own.
                self.actor_ref.tell(StateNotSaved(reason=f"session files cannot be written: {exc}"))

    def _replying(self, message: Any) -> Any:
        """The message with this actor as its ``reply_to`` (the core knows no actor)."""
        if "reply_to" in type(message).model_fields and message.reply_to is None:
            return message.model_copy(update={"reply_to": self.actor_ref})
        return message

    def _answer_asker(self, question_id: str, message: Any) -> None:
        asker = self._askers.pop(question_id, None)
        if asker is None:
            return
        try:
            asker.tell(message)
        except Exception:  # noqa: BLE001 - the asker is gone; the answer is recorded anyway
            log.warning("the asker of %s is gone", question_id)

    def _start_timer(self, delay_s: float, message: Any) -> None:
        timer = threading.Timer(delay_s, self._tell_self, args=(message,))
        timer.daemon = True
        timer.start()
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]

    def _tell_self(self, message: Any) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the session ended meanwhile
            self.actor_ref.tell(message)
