"""Worker actor: one per run slot of an agent (one slot unless ``max_parallel``). Owns its CLI
process; turns its output into recorded events.

Threads only move bytes (``processes.run_threads``): the process's pipe reader tells the
actor the stdout/stderr lines (a remote run's: two pumps), a reaper waits for the exit.
Parsing, the .jsonl append and publishing happen in the actor, in order
(``history.event_recorder``), so every event is on disk before anyone hears of it. A remote
run (a cluster host) is started and ended through ``cluster.remote_workdir``: its folder
travels to its node and its changes come back by git.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.adapters.base import AgentAdapter, Draft, LaunchSpec, StreamParser, draft
from meta_orchestrator.actors.cluster import remote_workdir
from meta_orchestrator.actors.agents.cli_launch import confinement, launch_spec, shown_command
from meta_orchestrator.actors.sandbox.cli_state import PrivateCliState
from meta_orchestrator.actors.history.event_recorder import EventRecorder, StderrLog
from meta_orchestrator.actors.processes.process_host import HostedProcess, ProcessHost, describe_spawn_error, monotonic
from meta_orchestrator.actors.processes.run_clock import RunClock
from meta_orchestrator.actors.processes.run_threads import AFTER_RESULT, RunThreads
from meta_orchestrator.actors.files.session_files import SessionFileError, private_dir
from meta_orchestrator.actors.supervision.supervision import report_crash_of, tell_all
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox, PrivateBind
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.base import AgentName, Message, utc_now, worker_name
from meta_orchestrator.messages.cluster import RemoteRunChanged
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    GetWorkerState,
    LinesRead,
    PauseWorker,
    ProcessEnded,
    ResumeWorker,
    RunOutcome,
    StartAssignment,
    StopWorker,
    WorkerSnapshot,
    WorkerStateChanged,
    WorkerStatus,
)

log = logging.getLogger(__name__)


def _parsed(
    parser: StreamParser, lines: tuple[tuple[bytes, int, str | None], ...]
) -> list[tuple[list[Draft], str, str | None]]:
    """Each stdout line of a read: its drafts (a line no draft came of says so), its text and
    its side file, for the recorder to number in one call."""
    parsed = []
    for data, total_bytes, overflow_path in lines:
        drafts = parser.feed_line(data, total_bytes)
        raw = data.decode("utf-8", errors="replace")
        if not drafts and raw.strip():
            drafts = [draft("status", kind="unrecognised", text=raw[:200])]
        parsed.append((drafts, raw, overflow_path))
    return parsed


class Worker(pykka.ThreadingActor):
    """Runs one agent CLI at a time and records everything it prints."""

    def __init__(
        self,
        agent: AgentName,
        adapter: AgentAdapter,
        agent_settings: AgentSettings,
        session_settings: SessionSettings,
        session_id: str,
        session_dir: Path,
        target: Path,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        base_env: dict[str, str] | None = None,
        events_path: Path | None = None,
        host: ProcessHost | None = None,
        extra_dirs: Sequence[Path] = (),
        sandbox: OsSandbox | None = None,
        review_id: str | None = None,
        slot: int = 1,
    ) -> None:
        """``slot``: which of the agent's parallel runs (``max_parallel``) this worker holds; its
        events go to ``<agent>.jsonl`` for the first, ``<agent>#<slot>.jsonl`` for the others."""
        super().__init__()
        self._slot = slot
        self._review_id = review_id  # a peer's worker for this one review
        self._sandbox = sandbox
        self._agent = agent
        self._adapter = adapter
        self._settings = agent_settings
        self._session_settings = session_settings
        self._session_id = session_id
        self._session_dir = session_dir
        self._target = target
        self._listeners = tuple(listeners)
        self._base_env = dict(base_env or {})
        events_path = events_path or session_dir / f"{worker_name(agent, slot)}.jsonl"
        self._recorder = EventRecorder(agent, events_path, self._listeners, slot)
        self._stderr = StderrLog(events_path.with_suffix(".stderr.log"))
        self._host = host or ProcessHost()
        # The CLI's private state (a remote run's node keeps its own; unconfined, the user's).
        local = sandbox is not None and not remote_workdir.is_remote(self._host)
        self._cli_state = PrivateCliState(agent, adapter, session_dir) if local else None
        self._extra_dirs = tuple(extra_dirs)
        self._run_env: Mapping[str, str] = {}
        self._threads = RunThreads(agent, self.actor_ref, session_settings.max_line_bytes, session_dir / "overflow")
        self._status: WorkerStatus = "idle"
        self._proc: HostedProcess | None = None
        self._parser: StreamParser | None = None
        self._current: StartAssignment | None = None
        self._run_id = 0
        self._clock = RunClock(started=0.0)
        self._stopped_by: str | None = None
        self._exit_watch_armed = False
        self._sent: remote_workdir.SentWork | None = None  # a remote run's folder, as sent
        self._node: str | None = None  # where a remote run runs
        self._workdir: str | None = None  # a local run's folder (the monitor looks for writes there)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        self._session_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self._session_dir)
        self._recorder.open()
        self._stderr.open()

    def on_stop(self) -> None:
        self._end_process("orchestrator stopping")

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # Pykka skips on_stop after a crash: the CLI must still not outlive its worker.
        log.error("%s worker crashed: %s", self._agent, exception_value)
        try:
            self._end_process("worker crashed")
        finally:
            report_crash_of(self, exception_value)

    def _end_process(self, reason: str) -> None:
        self._threads.closing.set()
        proc = self._proc
        if proc is not None and not proc.exited:
            self._stopped_by = self._stopped_by or reason
            proc.terminate(self._session_settings.stop_grace_s)
        # Whatever the pumps read after the actor stopped taking messages is recorded here.
        for batch in self._threads.join(timeout=self._session_settings.stop_grace_s + 2):
            self._on_lines(batch)
        if proc is not None and self._current is not None:
            try:
                returncode = proc.reap()
            except Exception:  # noqa: BLE001 - already reaped by the reaper thread
                returncode = -signal.SIGKILL
            self._on_process_ended(ProcessEnded(returncode=returncode, run_id=self._run_id))
        elif self._current is not None:  # crashed before the CLI was started
            current, self._current = self._current, None
            self._reply_not_started(current, reason)
        self._recorder.close()
        self._stderr.close()

    # -- switchboard --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case LinesRead():
                try:
                    return self._on_lines(message)
                finally:
                    self._threads.recorded(message)
            case ProcessEnded():
                return self._on_process_ended(message)
            case StartAssignment():
                return self._on_start_assignment(message)
            case PauseWorker():
                return self._on_pause(message)
            case ResumeWorker():
                return self._on_resume(message)
            case StopWorker():
                return self._on_stop_worker(message)
            case RemoteRunChanged():
                return self._on_remote_change(message)
            case GetWorkerState():
                snapshot = self._snapshot()
                if message.reply_to is not None:
                    tell_all((message.reply_to,), WorkerStateChanged(snapshot=snapshot))
                return snapshot
        return super().on_receive(message)

    # -- handlers -----------------------------------------------------------------------------

    def _on_start_assignment(self, message: StartAssignment) -> None:
        if self._current is not None:
            self._reply(
                message,
                AssignmentFinished(
                    agent=self._agent,
                    assignment_id=message.assignment_id,
                    returncode=None,
                    outcome=RunOutcome(success=False, error="worker is busy"),
                    spawn_error=f"{self._agent} is already running {self._current.assignment_id}",
                ),
            )
            return
        spec = launch_spec(
            self._adapter,
            self._settings,
            message,
            session_id=self._session_id,
            workdir=self._target,
            extra_dirs=self._extra_dirs,
            base_env=self._base_env,
            confined=self._sandbox is not None,
        )
        self._begin_run(message, spec.protocol)
        launch = self._adapter.build_launch(spec)
        self._run_env = spec.env
        self._set_status("starting")
        text = f"starting {self._agent}: " + shown_command(launch.argv, message.prompt)
        self._record([draft("status", kind="launch", text=text)], raw=None)
        try:
            self._proc, self._sent = remote_workdir.spawn(
                self._host,
                launch,
                confinement(self._adapter, self._sandbox, spec, message.read_only_dirs, self._state_binds(spec)),
                folder=spec.workdir,
                writing=message.mode == "write",
                subject=f"{message.assignment_id} ({self._agent}): the run's changes",
                stand_ins=tuple(str(d) for d in self._extra_dirs),
                on_change=self._tell_self,
            )
        except OSError as exc:
            reason = describe_spawn_error(exc, launch)
            self._record([draft("error", kind="spawn_error", text=reason, terminal=True)], raw=None)
            self._current = None
            self._parser = None
            self._set_status("idle")
            self._reply_not_started(message, reason)
            return
        self._clock = RunClock(started=monotonic())
        self._workdir = None if remote_workdir.is_remote(self._host) else str(spec.workdir)  # a node watches its own
        self._set_status("running" if self._proc.pid is not None else "starting")  # remote: once placed
        self._threads.watch(
            self._proc,
            self._run_id,
            self._clock,
            self._session_settings.assignment_timeout_s,
            self._recorder.path.stem,
        )

    def _state_binds(self, spec: LaunchSpec) -> tuple[PrivateBind, ...] | None:
        """The CLI's private state bound for this run (made or completed now); None: none kept here."""
        return self._cli_state.prepare(spec.env, spec.workdir) if self._cli_state else None

    def _begin_run(self, message: StartAssignment, protocol: str) -> None:
        """A new run: nothing of the last one's parse, stop reason, stderr or progress is kept."""
        self._current = message
        self._run_id += 1
        self._parser = self._adapter.parser_for(protocol)
        self._stopped_by = None
        self._exit_watch_armed = False
        self._stderr.tail.clear()
        self._recorder.last_progress = None
        self._node = None

    def _on_lines(self, message: LinesRead) -> None:
        if message.run_id != self._run_id or self._parser is None:
            return
        if message.stream == "stderr":
            self._on_stderr(message)
            return
        arrived = utc_now()  # the lines of one read arrived together
        assignment_id = self._current.assignment_id if self._current else None
        self._recorder.add_lines(_parsed(self._parser, message.lines), assignment_id, arrived)
        self._flush()
        if self._parser.terminal_seen and not self._exit_watch_armed and self._proc is not None:
            # Some CLI versions print their final result and then never exit.
            self._exit_watch_armed = True
            self._threads.watch_exit(self._proc, self._session_settings.exit_grace_after_result_s)

    def _on_stderr(self, message: LinesRead) -> None:
        for text in self._stderr.write([data for data, _, _ in message.lines]):
            drafts = self._parser.feed_stderr(text) if self._parser is not None else None
            if drafts:
                self._record(drafts, raw=text)

    def _on_process_ended(self, message: ProcessEnded) -> None:
        if message.run_id != self._run_id or self._current is None or self._parser is None:
            return
        # A remote run's changes are in its folder before anyone hears it finished.
        remote = remote_workdir.finish(self._proc, self._sent)
        self._sent = None
        if remote.spawn_error:
            self._record([draft("error", kind="spawn_error", text=remote.spawn_error, terminal=True)], raw=None)
            current, self._current, self._parser, self._proc = self._current, None, None, None
            self._set_status("idle")
            self._reply_not_started(current, remote.spawn_error)
            return
        if remote.drafts():
            self._record(remote.drafts(), raw=None)
        tail = tuple(self._stderr.tail)
        returncode = message.returncode
        if self._stopped_by == AFTER_RESULT:
            # The run had ended by its own account; only the process lingered.
            grace = self._session_settings.exit_grace_after_result_s
            text = (
                f"the CLI printed its final result but did not exit within {grace:g}s; "
                "it was ended and the run counts as finished"
            )
            self._record([draft("status", kind="ended_after_result", text=text)], raw=None)
            self._stopped_by = None
            returncode = 0
        self._record(self._parser.finish(returncode, tail), raw=None)
        for line in self._cli_state.return_tokens(self._run_env) if self._cli_state else ():
            self._record([draft("status", kind="credentials", text=line)], raw=None)
        outcome = self._parser.outcome(writing=self._current.mode == "write")
        outcome = outcome.model_copy(update={"files_written": remote.here(outcome.files_written)})
        if remote.error:
            outcome = outcome.model_copy(update={"success": False, "error": remote.error})
        current = self._current
        # A pause still open when the run ended counts as run time (as it always has).
        duration = monotonic() - self._clock.started - self._clock.paused_total
        self._current = None
        self._parser = None
        self._proc = None
        self._set_status("idle")
        self._reply(
            current,
            AssignmentFinished(
                agent=self._agent,
                assignment_id=current.assignment_id,
                returncode=message.returncode,
                stderr_tail=tail,
                outcome=outcome,
                duration_s=round(max(duration, 0.0), 3),
                stopped_by=self._stopped_by,
                fatal=self._recorder.fatal,
            ),
        )

    def _on_remote_change(self, fact: RemoteRunChanged) -> None:
        """The remote run waits for a slot (no run time passes), or runs on its node now."""
        if self._current is None or self._proc is None:
            return
        if fact.phase == "waiting_for_slot":
            self._clock.pause(monotonic())
            self._record(
                [draft("status", kind="waiting_for_slot", text=f"waiting for an agent slot: {fact.detail}")], raw=None
            )
            self._set_status("waiting")
        elif fact.phase == "running":
            self._clock.resume(monotonic())
            placed = remote_workdir.placed(self._agent, self._current, fact)
            self._node = placed.node.label
            text = f"running on {self._node}: pid {fact.pid}"
            self._record([draft("status", kind="placed", text=text, details={"node_id": fact.node_id})], raw=None)
            if self._status in ("starting", "waiting"):
                self._set_status("running")
            if self._current.mode == "write":  # an assignment's: state.json names its node
                self._reply(self._current, placed)

    def _tell_self(self, message: Message) -> None:
        """From another thread (a remote run's reader): the actor handles it in order."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    def _on_pause(self, message: PauseWorker) -> bool:
        if self._proc is None or self._status != "running":
            return False
        if self._proc.signal_group(signal.SIGSTOP):
            self._clock.pause(monotonic())
            self._set_status("paused")
            self._record([draft("status", kind="paused", text=f"paused ({message.reason})")], raw=None)
            return True
        return False

    def _on_resume(self, message: ResumeWorker) -> bool:
        if self._proc is None or self._status != "paused":
            return False
        self._proc.signal_group(signal.SIGCONT)
        self._clock.resume(monotonic())
        self._set_status("running")
        self._record([draft("status", kind="resumed", text=f"resumed ({message.reason})")], raw=None)
        return True

    def _on_stop_worker(self, message: StopWorker) -> bool:
        proc = self._proc
        if proc is None or self._status in ("stopping", "idle"):
            return False
        self._stopped_by = message.reason
        self._set_status("stopping")
        self._record([draft("status", kind="stopping", text=f"stopping: {message.reason}")], raw=None)
        # Waiting out the grace period here would stall the actor's inbox (lines, pause...).
        self._threads.terminate(proc, self._session_settings.stop_grace_s)
        return True

    # -- recording -----------------------------------------------------------------------------

    def _record(self, drafts: list[Draft], raw: str | None) -> None:
        self._recorder.add(drafts, self._current.assignment_id if self._current else None, raw, None)
        self._flush()

    def _flush(self) -> None:
        error = self._recorder.flush()
        if error is not None:
            self._on_cannot_record(error)

    def _on_cannot_record(self, exc: SessionFileError) -> None:
        """The event file cannot be written: publishing events not on disk would break the
        log's promise, so the run is ended and the coordinator told the session cannot go on."""
        proc = self._proc
        if proc is not None and not proc.exited and self._status != "stopping":
            self._stopped_by = self._recorder.fatal
            self._status = "stopping"
            self._threads.terminate(proc, self._session_settings.stop_grace_s)

    def _reply_not_started(self, command: StartAssignment, reason: str) -> None:
        """The CLI never ran for this command: say why, as a finish with no exit code."""
        self._reply(
            command,
            AssignmentFinished(
                agent=self._agent,
                assignment_id=command.assignment_id,
                returncode=None,
                outcome=RunOutcome(success=False, error=reason),
                spawn_error=reason,
                fatal=self._recorder.fatal,
            ),
        )

    def _reply(self, command: StartAssignment, fact: Message) -> None:
        if command.reply_to is not None:
            try:
                command.reply_to.tell(fact)
            except pykka.ActorDeadError:
                log.warning("%s: %s finished but nobody is listening", self._agent, command.assignment_id)

    def _set_status(self, status: WorkerStatus) -> None:
        self._status = status
        fact = WorkerStateChanged(snapshot=self._snapshot())
        tell_all(self._listeners, fact)

    def _snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            agent=self._agent,
            slot=self._slot,
            status=self._status,
            pid=self._proc.pid if self._proc else None,
            assignment_id=self._current.assignment_id if self._current else None,
            events_recorded=self._recorder.recorded,
            last_activity=self._recorder.last_activity,
            last_progress=self._recorder.last_progress,
            node=self._node,
            review_id=self._review_id,
            worker=self.actor_ref if self._review_id or self._slot > 1 else None,
            remote_sample=remote_workdir.sampler(self._proc),
            workdir=self._workdir if self._proc else None,
        )


__all__ = ["Worker"]
