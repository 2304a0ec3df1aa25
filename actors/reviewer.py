"""Reviewer actor (review engine): triggers, review requests, peers' verdicts, the decision.

It listens to the workers' ``EventRecorded`` (milestone markers, blockers, review requests)
and the coordinator's ``SessionStateChanged`` (the task and its assignments), and takes
``RequestReview`` from the coordinator (end of a phase, the user). Triggers for the same
assignment within ``debounce_s`` make one review; reviews per assignment are capped.

Peers answer through their own Worker actors, started by a factory the wiring passes in
(this module imports no other actor), in read-only mode, recording to
``reviews/<review_id>/<agent>.jsonl``. Everything is saved beside it: ``request.json``,
``<agent>.answer.json``, ``decision.json``. The decision goes to the coordinator as
``ReviewCompleted``; the coordinator applies it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.runtime.review_policy import (
    decide,
    dump_answer,
    failed_answer,
    parse_verdict,
    review_prompt,
    trigger_line,
)
from meta_orchestrator.actors.runtime.session_files import SessionFileError, private_dir, write_json_atomic
from meta_orchestrator.actors.runtime.supervision import report_crash_of
from meta_orchestrator.config.settings import ReviewSettings
from meta_orchestrator.messages.base import AgentName, iso_utc, utc_now
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.review import (
    CheckReviewers,
    RequestReview,
    ReviewAnswer,
    ReviewCompleted,
    ReviewDecision,
    ReviewDue,
    ReviewerTimedOut,
    ReviewStarted,
    ReviewTrigger,
)
from meta_orchestrator.messages.session import (
    TERMINAL_STATUSES,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
)
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    EventRecorded,
    EventsRecorded,
    StartAssignment,
    StopWorker,
    WorkerStateChanged,
    events_in,
)

log = logging.getLogger(__name__)

StartReviewWorker = Callable[[AgentName, Path], pykka.ActorRef[Any]]
GIT_TIMEOUT_S = 10
CHECK_EVERY_S = 1.0
BACKSTOP_GRACE_S = 30.0  # past the worker's own limit, which normally ends a slow peer
FILE_CHARS = 6000


@dataclass
class _Pending:
    """Triggers gathered for one key, waiting for the debounce window to close."""

    triggers: list[ReviewTrigger]
    reply_to: list[Any] = field(default_factory=list)
    gate: bool = False
    timer: threading.Timer | None = None


@dataclass
class _Running:
    """A review whose peers have been asked."""

    review_id: str
    key: str
    directory: Path
    assignment_id: str | None
    author: AgentName | None
    triggers: list[ReviewTrigger]
    reply_to: list[Any]
    gate: bool
    round: int
    workers: dict[AgentName, pykka.ActorRef[Any]] = field(default_factory=dict)
    answers: dict[AgentName, ReviewAnswer] = field(default_factory=dict)
    timer: threading.Timer | None = None
    checker: threading.Timer | None = None


class Reviewer(pykka.ThreadingActor):
    """Runs peer reviews under the seed's decision policy."""

    def __init__(
        self,
        settings: ReviewSettings,
        session_id: str,
        session_dir: Path,
        target: Path,
        agents: Sequence[AgentName],
        start_review_worker: StartReviewWorker,
        decisions_to: pykka.ActorRef[Any] | None = None,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        task: str = "",
    ) -> None:
        super().__init__()
        self._settings = settings
        self._session_id = session_id
        self._dir = session_dir / "reviews"
        self._target = target
        self._agents = tuple(agents)
        self._start_worker = start_review_worker
        self._decisions_to = decisions_to
        self._listeners = tuple(listeners)
        self._task = task
        self._snapshot: SessionSnapshot | None = None
        self._recent: dict[tuple[str, str | None], collections.deque[Event]] = {}
        self._touched: dict[str | None, list[str]] = collections.defaultdict(list)
        self._pending: dict[str, _Pending] = {}
        self._running: dict[str, _Running] = {}  # review id -> review
        self._rounds: collections.Counter[str] = collections.Counter()
        self._count = 0
        self._closed = False

    def on_stop(self) -> None:
        self._closed = True
        for pending in self._pending.values():
            if pending.timer:
                pending.timer.cancel()
        for review in list(self._running.values()):
            for timer in (review.timer, review.checker):
                if timer:
                    timer.cancel()
            for ref in review.workers.values():
                _stop_quietly(ref)

    # -- switchboard --------------------------------------------------------------------------

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # The supervisor restarts this actor; the coordinator then stops waiting on it.
        report_crash_of(self, exception_value)

    def on_receive(self, message: Any) -> Any:
        match message:
            case SessionStateChanged():
                return self._on_session(message.snapshot)
            case RequestReview():
                return self._on_request(message)
            case AssignmentFinished():
                return self._on_answer(message)
            case ReviewDue():
                return self._on_due(message.key)
            case ReviewerTimedOut():
                return self._on_timed_out(message)
            case CheckReviewers():
                return self._on_check(message)
            case EventRecorded() | EventsRecorded():
                for event in events_in(message):
                    self._on_event(event)
                return None
            case WorkerStateChanged() | SessionEnded():
                return None  # heard as a listener; nothing to do
        return super().on_receive(message)

    # -- triggers -----------------------------------------------------------------------------

    def _on_session(self, snapshot: SessionSnapshot) -> None:
        self._snapshot = snapshot
        self._task = snapshot.task or self._task
        if snapshot.status in TERMINAL_STATUSES:
            for pending in self._pending.values():
                if pending.timer:
                    pending.timer.cancel()
            self._pending.clear()

    def _on_event(self, event: Event) -> None:
        if event.assignment_id is None or event.assignment_id.startswith("@"):
            return  # planning runs and events outside an assignment are not reviewed
        key = (event.agent, event.assignment_id)
        if event.type != "status":
            self._recent.setdefault(key, collections.deque(maxlen=max(self._settings.recent_events, 1))).append(event)
        if event.payload.file and event.type == "milestone":
            self._touched[event.assignment_id].append(event.payload.file)
        kind = _trigger_kind(event, self._settings)
        if kind is None or not self._settings.enabled or self._closed:
            return
        trigger = ReviewTrigger(
            kind=kind,
            agent=event.agent,
            assignment_id=event.assignment_id,
            text=(event.payload.text or "")[:500],
            event_seq=event.seq,
            file=event.payload.file,
            source="events",
        )
        self._add(trigger, reply_to=None, gate=False, now=False)

    def _on_request(self, message: RequestReview) -> None:
        trigger = message.trigger
        reply_to = message.reply_to or self._decisions_to
        if not self._settings.enabled:
            self._tell_decision(
                ReviewCompleted(
                    review_id=self._next_id(trigger.assignment_id),
                    assignment_id=trigger.assignment_id,
                    author=trigger.agent,
                    triggers=(trigger,),
                    gate=message.gate,
                    skipped="reviews are disabled (review.enabled = false)",
                    decision=ReviewDecision(
                        decision="CONTINUE", reasoning="reviews are disabled; not reviewed, not an approval"
                    ),
                ),
                [reply_to],
            )
            return
        self._add(trigger, reply_to=reply_to, gate=message.gate, now=True)

    def _add(self, trigger: ReviewTrigger, reply_to: Any, gate: bool, now: bool) -> None:
        key = trigger.assignment_id or f"session:{trigger.agent or 'all'}"
        running = next((r for r in self._running.values() if r.key == key), None)
        if running is not None:  # merged into the review already under way
            running.triggers.append(trigger)
            if reply_to is not None:
                running.reply_to.append(reply_to)
            running.gate = running.gate or gate
            return
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(triggers=[])
        pending.triggers.append(trigger)
        if reply_to is not None:
            pending.reply_to.append(reply_to)
        pending.gate = pending.gate or gate
        if now or self._settings.debounce_s == 0:
            self._on_due(key)
        elif pending.timer is None:
            pending.timer = _timer(self._settings.debounce_s, self.actor_ref, ReviewDue(key=key))

    def _on_due(self, key: str) -> None:
        pending = self._pending.pop(key, None)
        if pending is None or self._closed:
            return
        if pending.timer:
            pending.timer.cancel()
        first = pending.triggers[0]
        assignment_id = first.assignment_id
        author = next((t.agent for t in pending.triggers if t.agent), None)
        if self._snapshot is not None and self._snapshot.status in TERMINAL_STATUSES and not pending.reply_to:
            return
        if assignment_id and self._rounds[assignment_id] >= self._settings.max_rounds:
            reason = (
                f"{self._rounds[assignment_id]} review round(s) of {assignment_id} done: "
                f"review.max_rounds = {self._settings.max_rounds} reached"
            )
            log.info("review skipped: %s", reason)
            if pending.gate or pending.reply_to:
                self._tell_decision(
                    ReviewCompleted(
                        review_id=self._next_id(assignment_id),
                        assignment_id=assignment_id,
                        author=author,
                        triggers=tuple(pending.triggers),
                        gate=pending.gate,
                        skipped=reason,
                        round=self._rounds[assignment_id],
                        decision=ReviewDecision(
                            decision="CONTINUE", reasoning=f"{reason}; not reviewed again, so not an approval"
                        ),
                    ),
                    pending.reply_to,
                )
            return
        if assignment_id:
            self._rounds[assignment_id] += 1
        self._start_review(key, pending, assignment_id, author)

    # -- one review ------------------------------------------------------------------------------

    def _next_id(self, assignment_id: str | None) -> str:
        self._count += 1
        tail = re.sub(r"[^A-Za-z0-9_.-]", "_", assignment_id or "session")[:40]
        return f"rev-{self._count:03d}-{tail}"

    def _start_review(self, key: str, pending: _Pending, assignment_id: str | None, author: AgentName | None) -> None:
        review_id = self._next_id(assignment_id)
        directory = private_dir(private_dir(self._dir) / review_id)
        out = self._snapshot.agents_out if self._snapshot is not None else {}
        peers = tuple(a for a in self._agents if a != author and a not in out)  # out: its roles moved
        review = _Running(
            review_id=review_id,
            key=key,
            directory=directory,
            assignment_id=assignment_id,
            author=author,
            triggers=list(pending.triggers),
            reply_to=list(pending.reply_to),
            gate=pending.gate,
            round=self._rounds[assignment_id or ""],
        )
        self._running[review_id] = review
        context = self._context(review)
        prompt = review_prompt(self._session_id, review_id, self._task, context)
        self._save(
            directory / "request.json",
            {
                "review_id": review_id,
                "session_id": self._session_id,
                "created_at": _now(),
                "reviewers": list(peers),
                "author": author,
                "round": review.round,
                **context,
                "prompt": prompt,
            },
        )
        self._tell_listeners(
            ReviewStarted(
                review_id=review_id, triggers=tuple(review.triggers), reviewers=peers, review_dir=str(directory)
            )
        )
        for agent in peers:
            try:
                ref = self._start_worker(agent, directory / f"{agent}.jsonl")
            except Exception as exc:  # noqa: BLE001 - a peer that cannot start is a concern
                log.error("review %s: cannot start %s: %s", review_id, agent, exc)
                self._record_answer(review, failed_answer(agent, f"reviewer could not start: {exc}"), "")
                continue
            review.workers[agent] = ref
            ref.tell(StartAssignment(assignment_id=review_id, prompt=prompt, mode="read_only", reply_to=self.actor_ref))
        if review.workers:
            # The worker's own wall-clock limit ends a slow peer; this is the backstop.
            review.timer = _timer(
                self._settings.reviewer_timeout_s + BACKSTOP_GRACE_S,
                self.actor_ref,
                [ReviewerTimedOut(review_id=review_id, agent=a) for a in review.workers],
            )
            review.checker = _timer(CHECK_EVERY_S, self.actor_ref, CheckReviewers(review_id=review_id))
        self._maybe_finish(review)

    def _on_check(self, message: CheckReviewers) -> None:
        """A peer whose worker died without answering (it crashed) counts as a concern."""
        review = self._running.get(message.review_id)
        if review is None:
            return
        for agent, ref in review.workers.items():
            if agent not in review.answers and not ref.is_alive():
                self._record_answer(
                    review, failed_answer(agent, "reviewer crashed: its worker stopped without an answer"), ""
                )
        self._maybe_finish(review)
        if review.review_id in self._running:
            review.checker = _timer(CHECK_EVERY_S, self.actor_ref, message)

    def _on_answer(self, message: AssignmentFinished) -> None:
        review = self._running.get(message.assignment_id)
        if review is None or message.agent in review.answers:
            return
        outcome = message.outcome
        if message.stopped_by:
            answer = failed_answer(
                message.agent,
                f"reviewer timed out or was stopped ({message.stopped_by})",
                message.returncode,
                message.duration_s,
            )
        elif message.spawn_error:
            answer = failed_answer(
                message.agent, f"reviewer could not start: {message.spawn_error}", None, message.duration_s
            )
        elif not outcome.success and not outcome.final_text.strip():
            answer = failed_answer(
                message.agent,
                f"reviewer run failed: {outcome.error or message.returncode}",
                message.returncode,
                message.duration_s,
            )
        else:
            answer = parse_verdict(message.agent, outcome.final_text, message.returncode, message.duration_s)
            if not outcome.success and answer.verdict == "approve":
                answer = failed_answer(
                    message.agent,
                    f"reviewer run failed after answering approve ({outcome.error}); not counted as approval",
                    message.returncode,
                    message.duration_s,
                )
        self._record_answer(review, answer, outcome.final_text)
        _stop_quietly(review.workers.get(message.agent))
        self._maybe_finish(review)

    def _on_timed_out(self, message: ReviewerTimedOut) -> None:
        review = self._running.get(message.review_id)
        if review is None or message.agent in review.answers:
            return
        worker = review.workers.get(message.agent)
        if worker is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                worker.tell(StopWorker(reason="review timed out"))
        self._record_answer(
            review, failed_answer(message.agent, f"reviewer timed out after {self._settings.reviewer_timeout_s:g}s"), ""
        )
        _stop_quietly(worker)
        self._maybe_finish(review)

    def _record_answer(self, review: _Running, answer: ReviewAnswer, raw_text: str) -> None:
        review.answers[answer.agent] = answer
        self._save(review.directory / f"{answer.agent}.answer.json", dump_answer(answer, raw_text))

    def _maybe_finish(self, review: _Running) -> None:
        asked = set(review.workers) | set(review.answers)
        if review.review_id not in self._running or not asked <= set(review.answers):
            return
        del self._running[review.review_id]
        for timer in (review.timer, review.checker):
            if timer:
                timer.cancel()
        answers = tuple(review.answers[a] for a in self._agents if a in review.answers)
        unavailable = [a for a in agent_names() if a not in self._agents and a != review.author]
        decision = decide(answers, self._settings.when_no_reviewers, [f"{a} disabled" for a in unavailable])
        fact = ReviewCompleted(
            review_id=review.review_id,
            assignment_id=review.assignment_id,
            author=review.author,
            triggers=tuple(review.triggers),
            answers=answers,
            decision=decision,
            gate=review.gate,
            review_dir=str(review.directory),
            round=review.round,
        )
        self._save(review.directory / "decision.json", fact.model_dump(mode="json", exclude={"message_id"}))
        log.info("review %s: %s (%s)", review.review_id, decision.decision, decision.reasoning)
        self._tell_decision(fact, review.reply_to)

    # -- context ----------------------------------------------------------------------------------

    def _context(self, review: _Running) -> dict[str, Any]:
        record = None
        if self._snapshot is not None and review.assignment_id:
            record = next((a for a in self._snapshot.assignments if a.id == review.assignment_id), None)
        assignment = None
        if record is not None:
            assignment = {
                "id": record.id,
                "role": record.role,
                "agent": record.agent,
                "title": record.title,
                "instructions": record.instructions,
                "status": record.status,
                "final_text": record.final_text[-6000:],
                "files_written": list(record.files_written),
            }
        events = []
        if review.author is not None:
            for event in list(self._recent.get((review.author, review.assignment_id), ()))[
                -self._settings.recent_events :
            ]:
                text = (event.payload.text or "").strip().replace("\n", " ")
                if text:
                    events.append({"seq": event.seq, "type": event.type, "text": text[:300]})
        files = [*(record.files_written if record else ()), *self._touched[review.assignment_id]]
        return {
            "task": self._task,
            "triggers": [t.model_dump(mode="json") for t in review.triggers],
            "assignment": assignment,
            "recent_events": events,
            "change": self._change(files),
        }

    def _change(self, files: Sequence[str]) -> dict[str, Any]:
        """The change in the target: git diff (with untracked files) or the touched files."""
        limit = self._settings.diff_chars
        status = _git(self._target, "status", "--porcelain", "--untracked-files=all")
        if status is not None:
            diff = _git(self._target, "diff", "HEAD") or _git(self._target, "diff") or ""
            parts = [
                f"$ git status --porcelain\n{status or '(clean)'}",
                f"$ git diff HEAD\n{diff or '(no change to tracked files)'}",
            ]
            for line in status.splitlines():
                if line.startswith("??"):
                    parts.append(_file_excerpt(self._target / line[3:].strip(), self._target))
            how = "git diff of the target, with untracked files"
        else:
            parts = [
                _file_excerpt(Path(f) if os.path.isabs(f) else self._target / f, self._target)
                for f in dict.fromkeys(files)
            ]
            how = "the files the author touched (the target is not a git repository)"
        text = "\n\n".join(p for p in parts if p)
        if len(text) > limit:
            text = text[:limit] + (
                f"\n[... cut at {limit} of {len(text)} characters (review.diff_chars); read the files for the rest]"
            )
        return {"how": how, "text": text}

    # -- output ------------------------------------------------------------------------------------

    def _tell_decision(self, fact: ReviewCompleted, reply_to: Sequence[Any]) -> None:
        targets: list[Any] = []
        for ref in (*reply_to, self._decisions_to):
            # A stand-in for a later actor (the wiring's LateRef) is the actor it stands for.
            real = getattr(ref, "target", None) or ref
            if ref is not None and not any(real == getattr(t, "target", None) or real == t for t in targets):
                targets.append(ref)
        for ref in targets:
            _tell(ref, fact)
        self._tell_listeners(fact)

    def _tell_listeners(self, fact: Any) -> None:
        for ref in self._listeners:
            _tell(ref, fact)

    def _save(self, path: Path, data: Any) -> None:
        try:
            write_json_atomic(path, data)
        except SessionFileError as exc:
            log.error("%s", exc)


def _trigger_kind(event: Event, settings: ReviewSettings) -> str | None:
    kind = event.payload.kind
    if event.type == "milestone" and kind == "marker" and settings.on_milestone:
        return "milestone"
    if event.type == "blocker" and kind in ("marker", "question") and settings.on_blocker:
        return "blocker"  # denial blockers go to Recovery, not to a review
    if event.type == "review" and kind == "marker" and settings.on_request:
        return "request"
    return None


def _timer(delay: float, ref: pykka.ActorRef[Any], messages: Any) -> threading.Timer:
    batch = messages if isinstance(messages, list) else [messages]

    def fire() -> None:
        for message in batch:
            _tell(ref, message)

    timer = threading.Timer(delay, fire)
    timer.daemon = True
    timer.name = "reviewer-timer"
    timer.start()
    return timer


def _tell(ref: Any, message: Any) -> None:
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)


def _stop_quietly(ref: pykka.ActorRef[Any] | None) -> None:
    if ref is None:
        return
    with contextlib.suppress(pykka.ActorDeadError):
        ref.stop(block=False)


def _git(target: Path, *args: str) -> str | None:
    """git output in the target, or None when it is not a repository (or git is missing)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(target), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace").rstrip()


def _file_excerpt(path: Path, target: Path) -> str:
    try:
        shown = path.relative_to(target)
    except ValueError:
        shown = path
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"--- {shown}: cannot be read ({exc.strerror or exc})"
    if b"\0" in data[:8192]:
        return f"--- {shown}: binary file ({len(data)} bytes), not shown"
    text = data.decode("utf-8", errors="replace")
    if len(text) > FILE_CHARS:
        text = text[:FILE_CHARS] + f"\n[... cut: {len(text) - FILE_CHARS} more characters]"
    return f"--- {shown}\n{text}"


def _now() -> str:
    return iso_utc(utc_now())


__all__ = ["Reviewer", "StartReviewWorker", "trigger_line"]
