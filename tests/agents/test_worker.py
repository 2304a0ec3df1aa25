"""The worker actor: process groups, signals, line handling and recording."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import textwrap
from pathlib import Path

import psutil

from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    PauseWorker,
    ResumeWorker,
    StartAssignment,
    StopWorker,
    WorkerStateChanged,
)
from tests.conftest import RecordedEvent, wait_for


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_cli.py"
    path.write_text(textwrap.dedent(body))
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(path))}"


def _worker(tmp_path: Path, probe, command: str, agent: str = "claude", **session: object):
    settings = AgentSettings(command=command, share_min=0.4, share_max=0.5)
    return Worker.start(
        agent=agent,
        adapter=get_adapter(agent),
        agent_settings=settings,
        session_settings=SessionSettings(**{"stop_grace_s": 1.0, **session}),
        session_id="test-session",
        session_dir=tmp_path / "session",
        target=tmp_path,
        listeners=(probe.ref,),
        base_env=dict(os.environ),
    )


CLAUDE_INIT = json.dumps({"type": "system", "subtype": "init", "session_id": "s-1", "model": "m", "cwd": "/x"})
CLAUDE_RESULT = json.dumps(
    {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "done",
        "session_id": "s-1",
        "total_cost_usd": 0.01,
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
)


def test_every_line_is_recorded_in_order_before_the_finish(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import sys
        print({CLAUDE_INIT!r})
        for i in range(20000):
            print('{{"type":"assistant","message":{{"content":[{{"type":"text","text":"line %d"}}]}}}}' % i)
        print({CLAUDE_RESULT!r})
    """,
    )
    worker = _worker(tmp_path, probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=60)
    assert finished.returncode == 0 and finished.outcome.success
    assert finished.outcome.final_text == "done" and finished.outcome.cost_usd == 0.01
    records = read_jsonl(tmp_path / "session" / "claude.jsonl").records
    texts = [r["payload"].get("text") for r in records if r["payload"].get("kind") == "text"]
    assert texts == [f"line {i}" for i in range(20000)]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["assignment_id"] == "a1" for r in records)


def test_over_long_line_is_kept_whole_in_a_side_file(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import sys
        print({CLAUDE_INIT!r})
        sys.stdout.write('{{"x":"' + 'a' * 3_000_000 + '"}}\\n')
        print({CLAUDE_RESULT!r})
    """,
    )
    worker = _worker(tmp_path, probe, command, max_line_bytes=65536)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished, timeout=30)
    assert finished.outcome.success
    records = read_jsonl(tmp_path / "session" / "claude.jsonl").records
    long_one = [r for r in records if r.get("raw_file")]
    assert len(long_one) == 1 and long_one[0]["type"] == "error"
    assert "3000008 bytes" in long_one[0]["payload"]["text"]
    assert Path(long_one[0]["raw_file"]).stat().st_size == 3_000_009  # the line and its newline
    assert records[-1]["type"] in ("review", "milestone")  # the stream went on


def test_pause_and_resume_stop_and_continue_the_whole_group(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import subprocess, sys, time
        print({CLAUDE_INIT!r}, flush=True)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print('{{"type":"system","subtype":"status","status":"child %d"}}' % child.pid, flush=True)
        time.sleep(60)
    """,
    )
    worker = _worker(tmp_path, probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    state = probe.expect(WorkerStateChanged, where=lambda m: m.snapshot.status == "running")
    event = probe.expect(RecordedEvent, where=lambda m: (m.event.payload.text or "").startswith("child"))
    leader = psutil.Process(state.snapshot.pid)
    child = psutil.Process(int(event.event.payload.text.split()[1]))
    assert worker.ask(PauseWorker(), timeout=5)
    wait_for(
        lambda: leader.status() == psutil.STATUS_STOPPED and child.status() == psutil.STATUS_STOPPED,
        message="both processes stopped",
    )
    assert worker.ask(ResumeWorker(), timeout=5)
    wait_for(
        lambda: leader.status() != psutil.STATUS_STOPPED and child.status() != psutil.STATUS_STOPPED,
        message="both processes running again",
    )
    assert worker.ask(StopWorker(reason="test"), timeout=5)
    finished = probe.expect(AssignmentFinished, timeout=15)
    assert finished.stopped_by == "test" and not finished.outcome.success
    assert finished.returncode == -signal.SIGTERM
    wait_for(
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, message="the child to be gone too"
    )


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print({CLAUDE_INIT!r}, flush=True)
        time.sleep(60)
    """,
    )
    worker = _worker(tmp_path, probe, command, stop_grace_s=0.5)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    worker.tell(StopWorker(reason="test"))
    finished = probe.expect(AssignmentFinished, timeout=15)
    assert finished.returncode == -signal.SIGKILL


def test_children_left_behind_by_a_finished_cli_are_ended(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print('{{"type":"system","subtype":"status","status":"child %d"}}' % child.pid, flush=True)
        print({CLAUDE_RESULT!r}, flush=True)
    """,
    )
    worker = _worker(tmp_path, probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    event = probe.expect(RecordedEvent, where=lambda m: (m.event.payload.text or "").startswith("child"))
    child_pid = int(event.event.payload.text.split()[1])
    finished = probe.expect(AssignmentFinished, timeout=15)
    assert finished.returncode == 0
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE


def test_missing_executable_is_a_clear_spawn_error(tmp_path, probe):
    worker = _worker(tmp_path, probe, str(tmp_path / "no-such-cli"))
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    finished = probe.expect(AssignmentFinished)
    assert finished.returncode is None and "not found" in finished.spawn_error
    records = read_jsonl(tmp_path / "session" / "claude.jsonl").records
    assert records[-1]["payload"]["kind"] == "spawn_error"


def test_stopping_the_actor_ends_the_cli_and_records_its_last_lines(tmp_path, probe):
    command = _script(
        tmp_path,
        f"""
        import time
        print({CLAUDE_INIT!r}, flush=True)
        time.sleep(60)
    """,
    )
    worker = _worker(tmp_path, probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    state = probe.expect(WorkerStateChanged, where=lambda m: m.snapshot.status == "running")
    probe.expect(RecordedEvent, where=lambda m: m.event.payload.kind == "init")
    worker.stop(timeout=15)
    assert not psutil.pid_exists(state.snapshot.pid)
    records = read_jsonl(tmp_path / "session" / "claude.jsonl").records
    assert records[-1]["type"] == "error" and records[-1]["payload"]["terminal"]


def test_sequence_continues_in_an_existing_event_file(tmp_path, probe):
    session = tmp_path / "session"
    session.mkdir()
    (session / "claude.jsonl").write_text(
        json.dumps({"seq": 1, "type": "status"})
        + "\n"
        + json.dumps({"seq": 2, "type": "status"})
        + "\n"
        + '{"seq": 3, "type": "sta'
    )  # torn by a crash
    command = _script(tmp_path, f"print({CLAUDE_RESULT!r})")
    worker = _worker(tmp_path, probe, command)
    worker.tell(StartAssignment(assignment_id="a1", prompt="go", reply_to=probe.ref))
    probe.expect(AssignmentFinished)
    result = read_jsonl(session / "claude.jsonl")
    seqs = [r["seq"] for r in result.records]
    assert seqs[:2] == [1, 2] and seqs[2:] == list(range(3, 3 + len(seqs) - 2))
    assert result.bad_lines == 1  # the torn line, ended so the next record stands alone
