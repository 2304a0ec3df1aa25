"""The Reviewer actor with probe collaborators: triggers, merging, caps, failed peers, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pykka
import pytest

import meta_orchestrator.actors.reviews.reviewer as reviewer_module
from meta_orchestrator.actors.reviews.reviewer import Reviewer
from meta_orchestrator.actors.supervision.starting import LateRef
from meta_orchestrator.config.settings import ReviewSettings
from meta_orchestrator.messages.events import Event, EventPayload
from meta_orchestrator.messages.review import (
    RequestReview,
    CheckReviewers,
    ReviewAllowed,
    ReviewCompleted,
    ReviewDue,
    ReviewTrigger,
    ReviewWanted,
)
from meta_orchestrator.messages.session import SessionEnded
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    EventsRecorded,
    RunOutcome,
    StartAssignment,
)
from tests.conftest import ProbeHandle, wait_for

VERDICT = '[demo] verdict:\n```json\n{{"verdict": "{v}", "summary": "{v} from {a}", "findings": []}}\n```'


class FakePeer(pykka.ThreadingActor):
    """Stands in for a review Worker: answers StartAssignment as its script says."""

    def __init__(self, agent: str, script: str, seen: list[StartAssignment]) -> None:
        super().__init__()
        self.agent, self.script, self.seen = agent, script, seen

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, StartAssignment):
            return None
        self.seen.append(message)
        if self.script == "silent":
            return None
        if self.script == "die":
            raise RuntimeError("worker crashed")
        ok = self.script in ("approve", "concern", "blocker", "garbage")
        text = (
            "I read everything, looks fine to me."
            if self.script == "garbage"
            else VERDICT.format(v=self.script, a=self.agent)
            if ok
            else ""
        )
        message.reply_to.tell(
            AssignmentFinished(
                agent=self.agent,
                assignment_id=message.assignment_id,
                returncode=0 if ok else 1,
                outcome=RunOutcome(
                    success=ok, final_text=text, error=None if ok else "claude ended without a final result"
                ),
            )
        )
        return None


@pytest.fixture
def rig(tmp_path: Path, probe: ProbeHandle):
    class Rig:
        scripts: dict[str, str] = {"gemini": "approve", "codex": "approve", "claude": "approve"}
        seen: list[StartAssignment] = []
        started: list[tuple[str, Path]] = []
        peers: list[pykka.ActorRef[Any]] = []

        def factory(self, agent: str, events_path: Path) -> pykka.ActorRef[Any]:
            self.started.append((agent, events_path))
            ref = FakePeer.start(agent, self.scripts[agent], self.seen)
            self.peers.append(ref)
            return ref

        def start(self, agents=("gemini", "codex", "claude"), **settings: Any):
            base = {"debounce_s": 0.2, **settings}
            return Reviewer.start(
                settings=ReviewSettings(**base),
                session_id="s1",
                session_dir=tmp_path,
                target=tmp_path,
                agents=agents,
                start_review_worker=self.factory,
                decisions_to=probe.ref,
                listeners=(),
                task="the task",
            )

    r = Rig()
    r.seen, r.started, r.peers = [], [], []
    yield r
    for ref in r.peers:
        ref.stop()


def _gate(assignment: str = "design", agent: str = "gemini") -> RequestReview:
    return RequestReview(trigger=ReviewTrigger(kind="phase_end", agent=agent, assignment_id=assignment), gate=True)


def _marker(
    type_: str, assignment: str = "design", agent: str = "gemini", kind: str = "marker", seq: int = 5
) -> EventsRecorded:
    return EventsRecorded(
        events=(
            Event(
                type=type_,
                agent=agent,
                assignment_id=assignment,
                seq=seq,
                payload=EventPayload(kind=kind, text=f"{type_} text"),
            ),
        )
    )


def test_phase_end_review_asks_both_peers_read_only_and_saves_everything(rig, probe, tmp_path):
    ref = rig.start()
    ref.tell(_gate())
    done = probe.expect(ReviewCompleted)
    assert done.gate and done.assignment_id == "design" and done.author == "gemini"
    assert done.decision.decision == "CONTINUE"
    assert sorted(a.agent for a in done.answers) == ["claude", "codex"]  # not the author
    assert {s.mode for s in rig.seen} == {"read_only"}
    for header in ("Kind: peer_review", "Role: reviewer", f"Assignment: {done.review_id}"):
        assert header in rig.seen[0].prompt
    folder = tmp_path / "reviews" / done.review_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "claude.answer.json",
        "codex.answer.json",
        "decision.json",
        "request.json",
    ]
    assert {p for _, p in rig.started} == {folder / "codex.jsonl", folder / "claude.jsonl"}
    request = json.loads((folder / "request.json").read_text())
    assert request["reviewers"] == ["codex", "claude"] and "change" in request
    answer = json.loads((folder / "codex.answer.json").read_text())
    assert answer["verdict"] == "approve" and "```json" in answer["raw_text"]


@pytest.mark.parametrize(
    "scripts,decision",
    [
        ({"codex": "concern", "claude": "concern"}, "PAUSE_AND_CLARIFY"),
        ({"codex": "concern", "claude": "approve"}, "LOG_WARNING"),
        ({"codex": "approve", "claude": "blocker"}, "STOP_AND_ESCALATE"),  # contradictory
        ({"codex": "garbage", "claude": "approve"}, "LOG_WARNING"),  # unparseable -> concern
        ({"codex": "crash", "claude": "garbage"}, "PAUSE_AND_CLARIFY"),  # crashed run -> concern
    ],
)
def test_peer_answers_go_through_the_policy(rig, probe, scripts, decision):
    rig.scripts = {"gemini": "approve", **scripts}
    rig.start().tell(_gate())
    done = probe.expect(ReviewCompleted)
    assert done.decision.decision == decision
    for answer in done.answers:
        if rig.scripts[answer.agent] in ("garbage", "crash"):
            assert answer.verdict == "concern" and answer.reason


def test_a_worker_that_dies_counts_as_a_concern(rig, probe):
    rig.scripts = {"gemini": "approve", "codex": "die", "claude": "approve"}
    rig.start().tell(_gate())
    done = probe.expect(ReviewCompleted, timeout=15)
    codex = next(a for a in done.answers if a.agent == "codex")
    assert codex.verdict == "concern" and "crashed" in codex.reason
    assert done.decision.decision == "LOG_WARNING"


def test_a_silent_peer_times_out_as_a_concern(rig, probe, monkeypatch):
    monkeypatch.setattr(reviewer_module, "BACKSTOP_GRACE_S", 0.0)
    rig.scripts = {"gemini": "approve", "codex": "silent", "claude": "silent"}
    rig.start(reviewer_timeout_s=0.5).tell(_gate())
    done = probe.expect(ReviewCompleted, timeout=15)
    assert [a.reason for a in done.answers] == ["reviewer timed out after 0.5s"] * 2
    assert done.decision.decision == "PAUSE_AND_CLARIFY"


def test_no_reviewer_available_says_what_was_chosen(rig, probe):
    rig.start(agents=("claude",), when_no_reviewers="PAUSE_AND_CLARIFY").tell(_gate("implement", "claude"))
    done = probe.expect(ReviewCompleted)
    assert done.answers == () and done.decision.no_reviewers
    assert done.decision.decision == "PAUSE_AND_CLARIFY"
    assert "not an approval" in done.decision.reasoning
    assert "gemini disabled" in done.decision.reasoning


def test_triggers_close_together_are_merged_into_one_review(rig, probe):
    ref = rig.start(debounce_s=0.5)
    ref.tell(_marker("milestone", seq=3))
    ref.tell(_marker("review", seq=4))  # an explicit request from the agent
    ref.tell(_marker("milestone", kind="file_written", seq=5))  # not a trigger
    ref.tell(_gate())
    done = probe.expect(ReviewCompleted)
    assert [t.kind for t in done.triggers] == ["milestone", "request", "phase_end"]
    assert done.gate
    assert len(rig.seen) == 2  # one review, two peers
    with pytest.raises(AssertionError):
        probe.expect(ReviewCompleted, timeout=1.0)


def test_blocker_and_denials(rig, probe):
    ref = rig.start(debounce_s=0.1)
    ref.tell(_marker("blocker", kind="denial"))  # Recovery's business, not a review
    ref.tell(_marker("blocker"))  # the agent says it is stuck: a review
    wanted = probe.expect(ReviewWanted)  # the coordinator says whether the session still goes on
    assert (wanted.assignment_id, wanted.author) == ("design", "gemini") and not rig.seen
    ref.tell(ReviewAllowed(key=wanted.key))
    done = probe.expect(ReviewCompleted)
    assert [t.kind for t in done.triggers] == ["blocker"] and not done.gate


def test_rounds_are_capped_so_reviews_cannot_loop(rig, probe):
    ref = rig.start(max_rounds=2, debounce_s=0)
    ids = []
    for _ in range(5):
        ref.tell(_gate())
        done = probe.expect(ReviewCompleted)
        ids.append((done.skipped is None, done.decision.decision))
    assert ids[:2] == [(True, "CONTINUE"), (True, "CONTINUE")]
    assert ids[2:] == [(False, "CONTINUE")] * 3  # answered (the gate is released), not reviewed
    assert len(rig.seen) == 4  # two rounds, two peers each; never more
    # Event triggers past the cap are dropped without asking anyone.
    ref.tell(_marker("milestone"))
    with pytest.raises(AssertionError):
        probe.expect(ReviewCompleted, timeout=0.5)
    assert len(rig.seen) == 4


def test_user_review_without_an_assignment_asks_every_agent(rig, probe):
    rig.start().tell(RequestReview(trigger=ReviewTrigger(kind="user", source="dashboard")))
    done = probe.expect(ReviewCompleted)
    assert sorted(a.agent for a in done.answers) == ["claude", "codex", "gemini"]
    assert done.review_id.endswith("session")


def _ended() -> SessionEnded:
    return SessionEnded(session_id="s1", status="completed", exit_code=0, summary="done")


def test_an_event_review_starts_only_when_the_coordinator_allows_it(rig, probe):
    ref = rig.start(debounce_s=0)
    ref.tell(_marker("milestone"))
    ref.tell(_marker("milestone", seq=6))  # merged: the coordinator is asked once
    wanted = probe.expect(ReviewWanted)
    ref.ask(ReviewDue(key="nothing"))  # everything told before has been handled
    assert not rig.seen and not [m for m in probe.drain() if isinstance(m, ReviewWanted)]
    ref.tell(ReviewAllowed(key=wanted.key))
    done = probe.expect(ReviewCompleted)
    assert [t.event_seq for t in done.triggers] == [5, 6] and len(rig.seen) == 2


def test_nothing_starts_after_the_session_ended(rig, probe):
    """A start in flight when the session ended (the coordinator's allowance, a request, an
    agent's last milestone) is refused: no peer is started."""
    ref = rig.start(debounce_s=0)
    ref.tell(_marker("milestone"))
    wanted = probe.expect(ReviewWanted)
    ref.tell(_ended())
    ref.tell(ReviewAllowed(key=wanted.key))
    ref.tell(_gate())
    ref.tell(_marker("milestone", assignment="build", seq=9))
    ref.ask(ReviewDue(key=wanted.key))
    assert not rig.started and not rig.seen
    assert not [m for m in probe.drain() if isinstance(m, (ReviewWanted, ReviewCompleted))]


def test_peers_still_at_work_when_the_session_ends_are_stopped_and_waited_for(rig, probe):
    rig.scripts = {**rig.scripts, "codex": "silent", "claude": "silent"}
    ref = rig.start(agents=("gemini", "codex", "claude"))
    ref.tell(_gate())
    wait_for(lambda: len(rig.seen) == 2, timeout=10, message="both peers asked")
    ref.ask(_ended())  # returns once the reviewer has handled the end
    assert rig.peers and not any(peer.is_alive() for peer in rig.peers)
    ref.stop()


def test_the_coordinator_hears_a_decision_it_asked_for_once(tmp_path, probe):
    """As wired: the coordinator asks with itself as ``reply_to`` and is also the reviewer's
    ``decisions_to`` through a stand-in (LateRef); the decision reaches it once, not twice."""
    slot, peers = LateRef(), []
    slot.target = probe.ref
    ref = Reviewer.start(
        settings=ReviewSettings(debounce_s=0.2),
        session_id="s1",
        session_dir=tmp_path,
        target=tmp_path,
        agents=("gemini", "codex", "claude"),
        start_review_worker=lambda agent, _path: peers.append(FakePeer.start(agent, "approve", [])) or peers[-1],
        decisions_to=slot,
        listeners=(),
        task="the task",
    )
    try:
        ref.tell(_gate().model_copy(update={"reply_to": probe.ref}))
        done = probe.expect(ReviewCompleted)
        ref.ask(CheckReviewers(review_id="none"))  # the reviewer has finished telling the decision
        probe.barrier()
        assert [m for m in probe.drain() if isinstance(m, ReviewCompleted)] == []
        assert done.gate and done.decision.decision == "CONTINUE"
    finally:
        for actor in (ref, *peers):
            actor.stop()
