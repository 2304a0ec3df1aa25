"""``[agents.<name>] max_parallel``: an agent's independent assignments run at once, each in a
run slot of its own (its own worker), through the pure core."""

from __future__ import annotations

from meta_orchestrator.actors.session.core.effects import ToWorker
from meta_orchestrator.messages.session import ControlRequested, SessionSnapshot, StartSession
from meta_orchestrator.messages.supervision import SupervisionFailed
from meta_orchestrator.messages.worker import StartAssignment
from tests.playbook import Playbook

NO_REVIEWS = {"review": {"enabled": False}}


def _impl(n: int, **extra) -> dict:
    return {"id": f"impl{n}", "role": "implementer", **extra}


def _parallel(claude: int, total: int = 8, **more) -> Playbook:
    return Playbook({"session": {"max_concurrent": total}, "agents": {"claude": {"max_parallel": claude}}, **more})


def _slots(book: Playbook) -> list[tuple[str, str]]:
    """(worker, assignment) of each start told in the last step."""
    return [(e.worker, e.message.assignment_id) for e in book.told(ToWorker, StartAssignment)]


def test_an_agent_runs_up_to_max_parallel_independent_assignments_each_in_its_own_slot():
    book = _parallel(3, **NO_REVIEWS)
    book.start_with_plan(*(_impl(n) for n in range(1, 6)))
    assert _slots(book) == [("claude", "impl1"), ("claude#2", "impl2"), ("claude#3", "impl3")]
    assert [book.record(f"impl{n}").slot for n in (1, 2, 3)] == [1, 2, 3]
    assert book.phases()["impl4"] == "pending"
    book.finish("impl2")  # its slot is free again: the next waiting one takes it
    assert _slots(book) == [("claude#2", "impl4")]
    book.finish("impl1")
    assert _slots(book) == [("claude", "impl5")]


def test_max_parallel_one_is_one_run_at_a_time_as_before():
    book = _parallel(1, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2))
    assert _slots(book) == [("claude", "impl1")]


def test_the_session_cap_still_holds_over_every_agents_runs():
    book = _parallel(4, total=2, **NO_REVIEWS)
    book.start_with_plan(*(_impl(n) for n in range(1, 5)))
    assert _slots(book) == [("claude", "impl1"), ("claude#2", "impl2")]


def test_dependencies_hold_between_parallel_runs():
    book = _parallel(3, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2, depends_on=["impl1"]), _impl(3), _impl(4, depends_on=["impl2", "impl3"]))
    assert _slots(book) == [("claude", "impl1"), ("claude#2", "impl3")]
    book.finish("impl3")
    assert _slots(book) == []  # impl2 waits for impl1, impl4 for impl2
    book.finish("impl1")
    assert _slots(book) == [("claude", "impl2")]
    book.finish("impl2")
    assert _slots(book) == [("claude", "impl4")]


def test_the_planner_is_told_how_many_runs_each_agent_may_have():
    book = _parallel(3)
    book.send(StartSession())
    prompt = book.start_of("@plan").prompt
    assert "implementer (claude): up to 3 assignment(s) at once" in prompt
    assert "architect (gemini): up to 1 assignment(s) at once" in prompt
    single = Playbook()
    single.send(StartSession())
    assert "at once" not in single.start_of("@plan").prompt  # nothing parallel: nothing said


def test_pausing_resuming_and_stopping_an_agent_reaches_each_of_its_runs():
    book = _parallel(2, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2), {"id": "check", "role": "reviewer"})
    book.send(ControlRequested(action="pause", agent="claude", source="dashboard"))
    assert sorted((e.worker, type(e.message).__name__) for e in book.told(ToWorker)) == [
        ("claude", "PauseWorker"),
        ("claude#2", "PauseWorker"),
    ]
    assert book.phases() == {"impl1": "paused", "impl2": "paused", "check": "running"}
    book.send(ControlRequested(action="resume", agent="claude", source="dashboard"))
    assert sorted(e.worker for e in book.told(ToWorker)) == ["claude", "claude#2"]
    assert book.phases()["impl1"] == book.phases()["impl2"] == "running"
    book.send(ControlRequested(action="stop", agent="claude", source="dashboard"))
    assert sorted((e.worker, type(e.message).__name__) for e in book.told(ToWorker)) == [
        ("claude", "StopWorker"),
        ("claude#2", "StopWorker"),
    ]


def test_a_resumed_session_runs_the_interrupted_parallel_runs_again_each_in_a_slot():
    book = _parallel(2, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2), _impl(3))
    saved = SessionSnapshot.model_validate(book.snapshot.model_dump(mode="json"))  # as state.json holds it
    assert {r.id: (r.status, r.slot) for r in saved.assignments} == {
        "impl1": ("running", 1),
        "impl2": ("running", 2),
        "impl3": ("pending", 1),
    }
    resumed = Playbook(
        {"session": {"max_concurrent": 8}, "agents": {"claude": {"max_parallel": 2}}, **NO_REVIEWS},
        resume_from=saved,
        resume_ids={"impl1": "cli-1", "impl2": "cli-2"},
    )
    resumed.send(StartSession())
    assert _slots(resumed) == [("claude", "impl1"), ("claude#2", "impl2")]
    assert [resumed.start_of(i).resume_session_id for i in ("impl1", "impl2")] == ["cli-1", "cli-2"]
    resumed.finish("impl1")
    assert _slots(resumed) == [("claude", "impl3")]


def test_a_paused_agent_starts_no_other_run_until_resumed():
    book = _parallel(2, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2), _impl(3))
    book.send(ControlRequested(action="pause", agent="claude", source="dashboard"))
    book.send(ControlRequested(action="stop", agent="claude", source="dashboard"))  # ends one of them, say
    book.finish("impl2", success=False, stopped_by="dashboard")
    assert _slots(book) == [] and book.phases()["impl3"] == "pending"  # impl1 is still paused
    book.send(ControlRequested(action="resume", agent="claude", source="dashboard"))
    assert _slots(book) == [("claude#2", "impl3")]


def test_a_run_worker_crashing_past_its_restarts_hands_that_run_over():
    book = _parallel(2, **NO_REVIEWS)
    book.start_with_plan(_impl(1), _impl(2))
    book.send(SupervisionFailed(name="worker:claude#2", error="segfault", restarts_in_window=3))
    assert "claude" in book.snapshot.agents_out
    assert book.record("impl2").agent == "codex" and _slots(book) == [("codex", "impl2")]
    assert (book.record("impl1").agent, book.phases()["impl1"]) == ("claude", "running")  # its first run goes on


def test_a_checkout_made_while_its_agent_is_paused_starts_its_run_paused():
    overrides = {"session": {"max_concurrent": 8}, "agents": {"claude": {"max_parallel": 2}}, **NO_REVIEWS}
    book = Playbook(overrides, workspace=True)
    book.start_with_plan(_impl(1), _impl(2))
    assert book.phases() == {"impl1": "preparing", "impl2": "preparing"}
    book.checkout_ready("impl1")
    book.send(ControlRequested(action="pause", agent="claude", source="dashboard"))
    assert book.phases() == {"impl1": "paused", "impl2": "preparing"}
    book.checkout_ready("impl2")
    told = [(e.worker, type(e.message).__name__) for e in book.told(ToWorker)]
    assert told == [("claude#2", "StartAssignment"), ("claude#2", "PauseWorker")]
    assert book.phases()["impl2"] == "paused"
    book.send(ControlRequested(action="resume", agent="claude", source="dashboard"))
    assert sorted(e.worker for e in book.told(ToWorker)) == ["claude", "claude#2"]
    assert book.phases() == {"impl1": "running", "impl2": "running"}
