"""Reviewer actor (review engine): triggers, review requests, peers' verdicts, the decision.

It listens to the workers' ``EventsRecorded`` (milestone markers, blockers, review requests)
and the coordinator's ``SessionStateChanged`` (the task and its assignments), and takes
``RequestReview`` from the coordinator (end of a phase, the user). Triggers for the same
assignment within ``debounce_s`` make one review; reviews per assignment are capped. A review
the events ask for starts only on the coordinator's ``ReviewAllowed`` (asked with
``ReviewWanted``): the session's rules alone decide that the session ends, so no review starts
after that. Once the session has ended, nothing starts, and the peers still at work are
stopped and waited for.

Peers answer through their own Worker actors, started by a factory the wiring passes in
(this module imports no other actor), in read-only mode, recording to
``reviews/<review_id>/<agent>.jsonl``. Everything is saved beside it: ``request.json``,
``<agent>.answer.json``, ``decision.json``. The decision goes to the coordinator as
``ReviewCompleted``; the coordinator applies it. What a peer is shown is gathered in
``reviews.review_context``; the policy, the verdicts and the prompt are ``reviews.review_policy``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.adapters.registry import agent_names
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.reviews.review_context import Evidence, review_context, workspace_change
from meta_orchestrator.actors.reviews.review_policy import (
    answer_of_run,
    decide,
    dump_answer,
    failed_answer,
    review_prompt,
    skipped_review,
    trigger_line,
)
from meta_orchestrator.actors.files.session_files import SessionFileError, private_dir, write_json_atomic
from meta_orchestrator.actors.supervision.supervision import report_crash_of
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.config.settings import ReviewSettings
from meta_orchestrator.messages.base import AgentName, iso_utc, utc_now
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.review import (
    CheckReviewers,
    RequestReview,
    ReviewAnswer,
    ReviewAllowed,
    ReviewCompleted,
    ReviewDue,
    ReviewerTimedOut,
    ReviewStarted,
    ReviewTrigger,
    ReviewWanted,
)
from meta_orchestrator.messages.session import (
    TERMINAL_STATUSES,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
)
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    EventsRecorded,
    StartAssignment,
    StopWorker,
    WorkerStateChanged,
)

log = logging.getLogger(__name__)

StartReviewWorker = Callable[[AgentName, Path], pykka.ActorRef[Any]]
CHECK_EVERY_S = 1.0
BACKSTOP_GRACE_S = 30.0  # past the worker's own limit, which normally ends a slow peer
STOP_WAIT_S = 30.0  # a peer's worker ends its CLI within its stop grace; this bounds the wait


@dataclass(kw_only=True)
class _Pending:
    """Triggers gathered for one key, waiting for the debounce window to close."""

    triggers: list[ReviewTrigger] = field(default_factory=list)
    reply_to: list[Any] = field(default_factory=list)
    gate: bool = False
    timer: threading.Timer | None = None
    asked: bool = False  # the coordinator was asked whether it may start (ReviewWanted)

    def merge(self, trigger: ReviewTrigger, reply_to: Any, gate: bool) -> None:
        self.triggers.append(trigger)
        if reply_to is not None:
            self.reply_to.append(reply_to)
        self.gate = self.gate or gate

    def cancel_timers(self) -> None:
        if self.timer:
            self.timer.cancel()


@dataclass(kw_only=True)
class _Running(_Pending):
    """A review whose peers have been asked; triggers arriving meanwhile merge into it."""

    review_id: str
    key: str
    directory: Path
    assignment_id: str | None
    author: AgentName | None
    round: int
    workers: dict[AgentName, pykka.ActorRef[Any]] = field(default_factory=dict)
    answers: dict[AgentName, ReviewAnswer] = field(default_factory=dict)
    checker: threading.Timer | None = None
    # Where the peers read (a read-only checkout of the commit under review) and what their
    # sandbox must let them read; None: the target itself (no git workspace).
    workdir: str | None = None
    read_only_dirs: tuple[str, ...] = ()

    def cancel_timers(self) -> None:
        super().cancel_timers()
        if self.checker:
            self.checker.cancel()


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
        workspace: SessionRepo | None = None,
    ) -> None:
        """``workspace``: the session's git workspace; a review then quotes the assignment's own
        change and its peers read a checkout of exactly that commit."""
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
        self._repo = workspace
        self._snapshot: SessionSnapshot | None = None
        self._evidence = Evidence(keep=settings.recent_events)
        self._pending: dict[str, _Pending] = {}
        self._running: dict[str, _Running] = {}  # review id -> review
        self._rounds: collections.Counter[str] = collections.Counter()
        # A resumed session (or a restarted reviewer) numbers on after the reviews on disk: an
        # id used again would overwrite that review's files and read as a decision already made.
        self._count = _reviews_on_disk(self._dir)
        self._closed = False

    def on_stop(self) -> None:
        self._close("the orchestrator is stopping")

    def _close(self, why: str) -> None:
        """The session ended: no review starts from now on, and the peers still at work are
        stopped and waited for (their CLIs ended and reaped) before this returns."""
        if self._closed:
            return
        self._closed = True
        for pending in self._pending.values():
            pending.cancel_timers()
        self._pending.clear()
        for review in list(self._running.values()):
            del self._running[review.review_id]
            review.cancel_timers()
            for ref in review.workers.values():
                _stop_and_wait(ref)
            self._drop_view(review)
            log.info("review %s stopped: %s", review.review_id, why)

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
            case ReviewAllowed():
                return self._on_allowed(message.key)
            case ReviewerTimedOut():
                return self._on_timed_out(message)
            case CheckReviewers():
                return self._on_check(message)
            case EventsRecorded():
                for event in message.events:
                    self._on_event(event)
                return None
            case SessionEnded():
                return self._close(f"the session ended ({message.status})")
            case WorkerStateChanged():
                return None  # heard as a listener; nothing to do
        return super().on_receive(message)

    # -- triggers -----------------------------------------------------------------------------

    def _on_session(self, snapshot: SessionSnapshot) -> None:
        self._snapshot = snapshot
        self._task = snapshot.task or self._task
        if snapshot.status in TERMINAL_STATUSES:
            self._close(f"the session ended ({snapshot.status})")

    def _on_event(self, event: Event) -> None:
        if event.assignment_id is None or event.assignment_id.startswith("@"):
            return  # planning runs and events outside an assignment are not reviewed
        self._evidence.add(event)
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
        if self._closed:  # in flight when the session ended: its decision would change nothing
            log.info("review of %s not started: the session has ended", trigger.assignment_id or "the session")
            return
        if not self._settings.enabled:
            skipped = skipped_review(
                self._next_id(trigger.assignment_id),
                (trigger,),
                trigger.agent,
                message.gate,
                "reviews are disabled (review.enabled = false)",
                "reviews are disabled; not reviewed, not an approval",
            )
            self._tell_decision(skipped, [reply_to])
            return
        self._add(trigger, reply_to=reply_to, gate=message.gate, now=True)

    def _add(self, trigger: ReviewTrigger, reply_to: Any, gate: bool, now: bool) -> None:
        key = trigger.assignment_id or f"session:{trigger.agent or 'all'}"
        running = next((r for r in self._running.values() if r.key == key), None)
        if running is not None:  # merged into the review already under way
            running.merge(trigger, reply_to, gate)
            return
        pending = self._pending.setdefault(key, _Pending())
        pending.merge(trigger, reply_to, gate)
        if now or self._settings.debounce_s == 0:
            self._on_due(key)
        elif pending.timer is None:
            pending.timer = _timer(self._settings.debounce_s, self.actor_ref, ReviewDue(key=key))

    def _on_due(self, key: str) -> None:
        """The triggers for ``key`` may start a review: at once when the coordinator asked for it,
        else once the coordinator allows it (only it knows whether the session goes on)."""
        pending = self._pending.get(key)
        if pending is None or self._closed:
            return
        if pending.reply_to or self._decisions_to is None:
            self._begin(key)
            return
        if pending.asked or self._past_cap(key, pending):
            return
        pending.asked = True
        first = pending.triggers[0]
        author = next((t.agent for t in pending.triggers if t.agent), None)
        _tell(self._decisions_to, ReviewWanted(key=key, assignment_id=first.assignment_id, author=author))

    def _on_allowed(self, key: str) -> None:
        pending = self._pending.get(key)
        if pending is not None and pending.asked and not self._closed:
            pending.reply_to.append(self._decisions_to)  # the session now waits for its decision
            self._begin(key)

    def _begin(self, key: str) -> None:
        pending = self._pending.pop(key)
        pending.cancel_timers()
        if self._past_cap(key, pending):
            return
        assignment_id = pending.triggers[0].assignment_id
        author = next((t.agent for t in pending.triggers if t.agent), None)
        if assignment_id:
            self._rounds[assignment_id] += 1
        self._start_review(key, pending, assignment_id, author)

    def _past_cap(self, key: str, pending: _Pending) -> bool:
        """True (and the triggers dropped, told as skipped to whoever waits) past ``max_rounds``."""
        assignment_id = pending.triggers[0].assignment_id
        if not assignment_id or self._rounds[assignment_id] < self._settings.max_rounds:
            return False
        self._pending.pop(key, None)
        pending.cancel_timers()
        reason = (
            f"{self._rounds[assignment_id]} review round(s) of {assignment_id} done: "
            f"review.max_rounds = {self._settings.max_rounds} reached"
        )
        log.info("review skipped: %s", reason)
        if pending.gate or pending.reply_to:
            author = next((t.agent for t in pending.triggers if t.agent), None)
            skipped = skipped_review(
                self._next_id(assignment_id),
                pending.triggers,
                author,
                pending.gate,
                reason,
                f"{reason}; not reviewed again, so not an approval",
                self._rounds[assignment_id],
            )
            self._tell_decision(skipped, pending.reply_to)
        return True

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
        review.workdir, review.read_only_dirs = _view(self._repo, review_id, context["change"].get("commit"))
        prompt = review_prompt(self._session_id, review_id, self._task, context)
        _save(
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
        self._ask_peers(review, peers, prompt)
        self._maybe_finish(review)

    def _ask_peers(self, review: _Running, peers: Sequence[AgentName], prompt: str) -> None:
        """Each peer's own read-only worker, and the timers that bound the wait for them."""
        review_id = review.review_id
        for agent in peers:
            try:
                ref = self._start_worker(agent, review.directory / f"{agent}.jsonl")
            except Exception as exc:  # noqa: BLE001 - a peer that cannot start is a concern
                log.error("review %s: cannot start %s: %s", review_id, agent, exc)
                self._record_answer(review, failed_answer(agent, f"reviewer could not start: {exc}"), "")
                continue
            review.workers[agent] = ref
            ref.tell(
                StartAssignment(
                    assignment_id=review_id,
                    prompt=prompt,
                    mode="read_only",
                    workdir=review.workdir,
                    read_only_dirs=review.read_only_dirs,
                    reply_to=self.actor_ref,
                )
            )
        if review.workers:
            # The worker's own wall-clock limit ends a slow peer; this is the backstop.
            review.timer = _timer(
                self._settings.reviewer_timeout_s + BACKSTOP_GRACE_S,
                self.actor_ref,
                [ReviewerTimedOut(review_id=review_id, agent=a) for a in review.workers],
            )
            review.checker = _timer(CHECK_EVERY_S, self.actor_ref, CheckReviewers(review_id=review_id))

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
        answer = answer_of_run(message)
        self._record_answer(review, answer, message.outcome.final_text)
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
        _save(review.directory / f"{answer.agent}.answer.json", dump_answer(answer, raw_text))

    def _maybe_finish(self, review: _Running) -> None:
        asked = set(review.workers) | set(review.answers)
        if review.review_id not in self._running or not asked <= set(review.answers):
            return
        del self._running[review.review_id]
        review.cancel_timers()
        self._drop_view(review)
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
        _save(review.directory / "decision.json", fact.model_dump(mode="json", exclude={"message_id"}))
        log.info("review %s: %s (%s)", review.review_id, decision.decision, decision.reasoning)
        self._tell_decision(fact, review.reply_to)

    # -- context ----------------------------------------------------------------------------------

    def _context(self, review: _Running) -> dict[str, Any]:
        """The review's context; with a workspace its change names the commit the peers read."""
        record = None
        if self._snapshot is not None and review.assignment_id:
            record = next((a for a in self._snapshot.assignments if a.id == review.assignment_id), None)
        change = None
        if self._repo is not None:
            change = workspace_change(self._repo, record, self._settings.diff_chars)
        return review_context(
            self._task,
            review.triggers,
            record,
            self._evidence.recent(review.author, review.assignment_id, self._settings.recent_events),
            self._evidence.touched(review.assignment_id),
            self._target,
            self._settings.diff_chars,
            change=change,
            private=(self._dir.parent.parent,),  # the workspace: every session's files
        )

    def _drop_view(self, review: _Running) -> None:
        if self._repo is None or review.workdir is None:
            return
        try:
            self._repo.remove_checkout(f"view:{review.review_id}")
        except (WorkspaceError, OSError) as exc:
            log.warning("review %s: its checkout stays until the session ends: %s", review.review_id, exc)

    # -- output ------------------------------------------------------------------------------------

    def _tell_decision(self, fact: ReviewCompleted, reply_to: Sequence[Any]) -> None:
        """Each who waits for the decision, once: the coordinator is among them when it asked for
        the review (its ``reply_to``) or allowed it (``_on_allowed``); it is not told again."""
        for ref in _distinct(reply_to):
            _tell(ref, fact)
        self._tell_listeners(fact)

    def _tell_listeners(self, fact: Any) -> None:
        for ref in self._listeners:
            _tell(ref, fact)


def _view(repo: SessionRepo | None, review_id: str, commit: str | None) -> tuple[str | None, tuple[str, ...]]:
    """A read-only checkout of ``commit`` for the peers: its folder and what they must read."""
    if repo is None or commit is None:
        return None, ()
    try:
        view = repo.readonly_checkout(review_id, commit)
    except WorkspaceError as exc:
        log.error("review %s: no checkout of %s for the peers (%s); they read the target", review_id, commit, exc)
        return None, ()
    return str(view.workdir), view.sandbox_paths()[1]


def _save(path: Path, data: Any) -> None:
    try:
        write_json_atomic(path, data)
    except SessionFileError as exc:
        log.error("%s", exc)


def _reviews_on_disk(folder: Path) -> int:
    """The highest review number in ``reviews/`` (``rev-<n>-...``), 0 when there is none."""
    numbers = [0]
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if (found := re.match(r"rev-(\d+)-", entry.name)) is not None:
                numbers.append(int(found.group(1)))
    return max(numbers)


def _trigger_kind(event: Event, settings: ReviewSettings) -> str | None:
    kind = event.payload.kind
    if event.type == "milestone" and kind == "marker" and settings.on_milestone:
        return "milestone"
    if event.type == "blocker" and kind in ("marker", "question") and settings.on_blocker:
        return "blocker"  # denial blockers go to Recovery, not to a review
    if event.type == "review" and kind == "marker" and settings.on_request:
        return "request"
    return None


def _distinct(refs: Sequence[Any]) -> list[Any]:
    """Each actor once: a stand-in for a later actor (the wiring's LateRef) is the actor it stands for."""
    targets: list[Any] = []
    for ref in refs:
        real = getattr(ref, "target", None) or ref
        if ref is not None and not any(real == getattr(t, "target", None) or real == t for t in targets):
            targets.append(ref)
    return targets


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


def _stop_and_wait(ref: pykka.ActorRef[Any]) -> None:
    """Stop a peer's worker and wait until it has ended its CLI (and reaped it)."""
    try:
        ref.stop(block=True, timeout=STOP_WAIT_S)
    except pykka.ActorDeadError:
        pass
    except pykka.Timeout:
        log.error("a review worker did not stop within %.0fs", STOP_WAIT_S)


def _stop_quietly(ref: pykka.ActorRef[Any] | None) -> None:
    if ref is None:
        return
    with contextlib.suppress(pykka.ActorDeadError):
        ref.stop(block=False)


def _now() -> str:
    return iso_utc(utc_now())


__all__ = ["Reviewer", "StartReviewWorker", "trigger_line"]
