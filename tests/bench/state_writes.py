"""Benchmark: what a session writes to state.json and broadcasts, before and after the session core.

    python -m tests.bench.state_writes                 # 50 assignments
    python -m tests.bench.state_writes --assignments 30 --before fbfc091

Drives the Coordinator actor through a whole session with scripted workers, reviewer and
recovery (actors that answer at once, no process), once with the Coordinator as it was at
``--before`` (read from git: the last version before the rules moved into actors/session/core)
and once with the current one, and prints per version the state.json writes, their bytes, the
snapshots broadcast and the wall time. Every third assignment fails once and is relaunched;
implementers' work is reviewed before its dependents start, as in a real session.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pykka

from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.recovery import RecoveryPlanned, RecoveryRequested
from meta_orchestrator.messages.review import RequestReview, ReviewCompleted, ReviewDecision
from meta_orchestrator.messages.session import (
    AssignmentRecord,
    SessionEnded,
    SessionSnapshot,
    SessionStateChanged,
    StartSession,
)
from meta_orchestrator.messages.worker import AssignmentFinished, RunOutcome, StartAssignment

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("gemini", "claude", "codex")
ROLES = ("architect", "implementer", "reviewer")


def saved_session(count: int) -> SessionSnapshot:
    """A session of ``count`` pending assignments in chains of three (design -> build -> check).

    A plan holds at most 30 assignments, so the session starts as a resumed one (everything
    pending), which both versions of the Coordinator run from the start.
    """
    agent_of = dict(zip(ROLES, AGENTS, strict=True))
    records = []
    for i in range(count):
        link = i % 3
        records.append(
            AssignmentRecord(
                id=f"a{i:02d}",
                role=ROLES[link],
                agent=agent_of[ROLES[link]],
                title=f"step {i}",
                instructions=f"do step {i}",
                depends_on=(f"a{i - 1:02d}",) if link else (),
            )
        )
    now = "2026-12-01T12:00:00.000Z"
    return SessionSnapshot(
        session_id="bench",
        task="benchmark",
        target="/nowhere",
        workspace="/nowhere",
        created_at=now,
        updated_at=now,
        status="running",
        plan_source="architect",
        plan_summary="benchmark plan",
        assignments=tuple(records),
    )


class ScriptedWorker(pykka.ThreadingActor):
    """Answers every StartAssignment at once; an assignment listed in ``fail_once`` fails first."""

    def __init__(self, agent: str, fail_once: set[str]) -> None:
        super().__init__()
        self.agent, self.fail_once = agent, fail_once

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StartAssignment):
            fails = message.assignment_id in self.fail_once
            self.fail_once.discard(message.assignment_id)
            text = "done: " + "x" * 400
            outcome = RunOutcome(success=not fails, final_text=text, session_id=f"{self.agent}-1", total_tokens=1000)
            message.reply_to.tell(
                AssignmentFinished(
                    agent=self.agent,
                    assignment_id=message.assignment_id,
                    returncode=1 if fails else 0,
                    outcome=outcome,
                    duration_s=1.5,
                )
            )
        return None


class ScriptedReviewer(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RequestReview):
            self.count += 1
            message.reply_to.tell(
                ReviewCompleted(
                    review_id=f"r{self.count}",
                    assignment_id=message.trigger.assignment_id,
                    author=message.trigger.agent,
                    decision=ReviewDecision(decision="CONTINUE", reasoning="fine"),
                    gate=message.gate,
                )
            )
        return None


class ScriptedRecovery(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RecoveryRequested):
            self.count += 1
            finished = message.finished
            message.reply_to.tell(
                RecoveryPlanned(
                    recovery_id=f"rec-{self.count}",
                    agent=finished.agent,
                    assignment_id=finished.assignment_id,
                    cause="crash",
                    action="relaunch",
                    advice="run it again",
                )
            )
        return None


class Listener(pykka.ThreadingActor):
    def __init__(self, ended: threading.Event) -> None:
        super().__init__()
        self.ended, self.broadcasts, self.broadcast_bytes = ended, 0, 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, SessionStateChanged):
            self.broadcasts += 1
            self.broadcast_bytes += len(message.snapshot.model_dump_json())
        elif isinstance(message, SessionEnded):
            self.ended.set()
        elif message == "figures":
            return self.broadcasts, self.broadcast_bytes
        return None


def coordinator_at(rev: str) -> Any:
    """The Coordinator class as it was at git revision ``rev``."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:actors/session/coordinator.py"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="coordinator-"))
    path = folder / "coordinator_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("meta_orchestrator.actors.coordinator_before", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_session(module: Any, count: int) -> dict[str, float]:
    writes = {"n": 0, "bytes": 0}
    original = module.write_json_atomic

    def counting(path: Path, data: Any) -> None:
        writes["n"] += 1
        writes["bytes"] += len(json.dumps(data, indent=2))
        original(path, data)

    module.write_json_atomic = counting
    ended = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        settings = load_settings(None, {"workspace": tmp, "review.phase_end_roles": ["implementer"]})
        fail_once = {f"a{i:02d}" for i in range(0, count, 3)}
        workers = {agent: ScriptedWorker.start(agent, fail_once) for agent in AGENTS}
        listener = Listener.start(ended)
        reviewer, recovery = ScriptedReviewer.start(), ScriptedRecovery.start()
        coordinator = module.Coordinator.start(
            settings=settings,
            session_id="bench",
            session_dir=folder,
            task="benchmark",
            target=folder,
            workers=workers,
            listeners=(listener,),
            reviewer=reviewer,
            recovery=recovery,
            resume_from=saved_session(count),
        )
        started = time.perf_counter()
        coordinator.tell(StartSession(reply_to=listener))
        if not ended.wait(120):
            raise SystemExit("the session did not end within 120 s")
        elapsed = time.perf_counter() - started
        state = json.loads((folder / "state.json").read_text())
        broadcasts, broadcast_bytes = listener.ask("figures", timeout=10)
        for ref in (coordinator, listener, reviewer, recovery, *workers.values()):
            ref.stop()
    module.write_json_atomic = original
    if state["status"] != "completed":
        raise SystemExit(f"the session ended {state['status']}: {state['summary']}")
    return {
        "writes": writes["n"],
        "bytes": writes["bytes"],
        "broadcasts": broadcasts,
        "broadcast_bytes": broadcast_bytes,
        "seconds": elapsed,
        "final_bytes": len(json.dumps(state, indent=2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignments", type=int, default=50)
    parser.add_argument("--before", default="fbfc091", help="git revision of the Coordinator to compare with")
    args = parser.parse_args()
    import meta_orchestrator.actors.session.coordinator as current

    before = run_session(coordinator_at(args.before), args.assignments)
    after = run_session(current, args.assignments)
    print(f"a session of {args.assignments} assignments (a third fail once and are relaunched):")
    print(f"{'':28}{'before':>14}{'after':>14}{'after/before':>14}")
    for key, label in (
        ("writes", "state.json writes"),
        ("bytes", "state.json bytes written"),
        ("broadcasts", "snapshots broadcast"),
        ("broadcast_bytes", "bytes broadcast"),
        ("seconds", "wall time (s)"),
    ):
        b, a = before[key], after[key]
        shown = (f"{b:14.3f}{a:14.3f}") if key == "seconds" else f"{int(b):14,}{int(a):14,}"
        print(f"{label:28}{shown}{a / b:14.2f}")
    print(f"final state.json: {int(after['final_bytes']):,} bytes")


if __name__ == "__main__":
    main()
