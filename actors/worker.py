"""Worker actor: one per agent. Owns its CLI process; turns its output into recorded events.

Threads only move bytes: two pumps read stdout/stderr lines and tell them to the actor, a
reaper waits for the exit. Parsing, the .jsonl append and publishing happen in the actor,
in order, so every event is on disk before anyone hears of it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pykka
from meta_orchestrator.actors.adapters.base import AgentAdapter, Draft, LaunchSpec, StreamParser, draft
from meta_orchestrator.actors.runtime.process_host import (
    SESSION_MARKER_ENV,
    HostedProcess,
    ProcessHost,
    describe_spawn_error,
    monotonic,
)
from meta_orchestrator.actors.runtime.session_files import JsonlWriter, SessionFileError, open_private, private_dir
from meta_orchestrator.actors.runtime.supervision import report_crash_of, tell_all
from meta_orchestrator.actors.sandbox.bwrap import Confinement, OsSandbox, under_private_tmp
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.worker import (
    AssignmentFinished,
    EventRecorded,
    EventsRecorded,
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

IN_FLIGHT_BATCHES = 64  # reads (of at most 64 KiB) not yet recorded; then the CLI waits on its pipe
STDERR_TAIL = 40
AFTER_RESULT = "final result printed, but the CLI did not exit"


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
    ) -> None:
        super().__init__()
        self._sandbox = sandbox
        self._fatal: str | None = None  # events can no longer be written: the run is ended
        self._agent = agent
        self._adapter = adapter
        self._settings = agent_settings
        self._session_settings = session_settings
        self._session_id = session_id
        self._session_dir = session_dir
        self._target = target
        self._listeners = tuple(listeners)
        self._base_env = dict(base_env or {})
        self._events_path = events_path or session_dir / f"{agent}.jsonl"
        self._stderr_path = self._events_path.with_suffix(".stderr.log")
        self._host = host or ProcessHost()
        self._extra_dirs = tuple(extra_dirs)
        self._writer: JsonlWriter | None = None
        self._stderr_file: IO[bytes] | None = None
        self._status: WorkerStatus = "idle"
        self._proc: HostedProcess | None = None
        self._parser: StreamParser | None = None
        self._current: StartAssignment | None = None
        self._run_id = 0
        self._run_started = 0.0
        self._paused_since: float | None = None
        self._paused_total = 0.0
        self._stopped_by: str | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._in_flight = threading.BoundedSemaphore(IN_FLIGHT_BATCHES)
        self._closing = threading.Event()
        self._late_lines: list[LinesRead] = []  # lines read while the actor was stopping
        self._threads: list[threading.Thread] = []
        self._events_recorded = 0
        self._last_activity: str | None = None
        self._last_progress: int | None = None
        self._overflow_count = 0
        self._unpublished: list[tuple[Event, str]] = []  # written, not yet flushed
        self._exit_watch_armed = False

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        self._session_dir.parent.mkdir(parents=True, exist_ok=True)
        private_dir(self._session_dir)
        self._writer = JsonlWriter(self._events_path)
        self._events_recorded = self._writer.seq
        self._stderr_file = open_private(self._stderr_path, binary=True)

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
        self._closing.set()
        proc = self._proc
        if proc is not None and not proc.exited:
            self._stopped_by = self._stopped_by or reason
            proc.terminate(self._session_settings.stop_grace_s)
        for thread in self._threads:
            thread.join(timeout=self._session_settings.stop_grace_s + 2)
        # Whatever the pumps read after the actor stopped taking messages is recorded here.
        for batch in list(self._late_lines):
            self._on_lines(batch)
        self._late_lines.clear()
        if proc is not None and self._current is not None:
            try:
                returncode = proc.reap()
            except Exception:  # noqa: BLE001 - already reaped by the reaper thread
                returncode = -signal.SIGKILL
            self._on_process_ended(ProcessEnded(returncode=returncode, run_id=self._run_id))
        elif self._current is not None:  # crashed before the CLI was started
            current, self._current = self._current, None
            self._reply_not_started(current, reason)
        if self._writer:
            self._writer.close()
        if self._stderr_file:
            self._stderr_file.close()

    # -- switchboard --------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case LinesRead():
                try:
                    return self._on_lines(message)
                finally:
                    self._in_flight.release()
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
        self._current = message
        self._run_id += 1
        self._parser = self._adapter.new_parser()
        self._stopped_by = None
        self._exit_watch_armed = False
        self._paused_total = 0.0
        self._paused_since = None
        self._stderr_tail.clear()
        self._last_progress = None
        spec = self._launch_spec(message)
        launch = self._adapter.build_launch(spec)
        self._set_status("starting")
        self._record(
            [
                draft(
                    "status",
                    kind="launch",
                    text=f"starting {self._agent}: " + shlex.join(_redact_prompt(launch.argv, message.prompt)),
                )
            ],
            raw=None,
        )
        try:
            self._proc = self._host.spawn(launch, self._confinement(spec))
        except OSError as exc:
            reason = describe_spawn_error(exc, launch)
            self._record([draft("error", kind="spawn_error", text=reason, terminal=True)], raw=None)
            self._current = None
            self._parser = None
            self._set_status("idle")
            self._reply_not_started(message, reason)
            return
        self._run_started = monotonic()
        self._set_status("running")
        run_id = self._run_id
        pumps = [
            self._spawn_thread(f"{self._agent}-{name}", self._pump, name, self._proc, run_id)
            for name in ("stdout", "stderr")
        ]
        self._spawn_thread(f"{self._agent}-reaper", self._reap, self._proc, pumps, run_id)
        self._spawn_thread(f"{self._agent}-watchdog", self._watchdog, self._proc, run_id)

    def _launch_spec(self, message: StartAssignment) -> LaunchSpec:
        executable = launch_for_preflight(self._adapter, self._settings)
        env = {**self._base_env, **self._settings.env, SESSION_MARKER_ENV: self._session_id}
        return LaunchSpec(
            executable=executable,
            prompt=message.prompt,
            workdir=self._target,
            extra_dirs=tuple(dict.fromkeys([*self._extra_dirs, *map(Path, message.extra_dirs)])),
            mode=message.mode,
            model=self._settings.model,
            resume_session_id=message.resume_session_id,
            extra_args=(*self._settings.extra_args, *message.extra_args),
            env=env,
        )

    def _confinement(self, spec: LaunchSpec) -> Confinement | None:
        """What this run may write under the OS sandbox: its folders and the CLI's own state."""
        if self._sandbox is None:
            return None
        state = self._adapter.cli_state(spec.env)
        for folder in state.dirs:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the CLI cannot create it inside
        # What the CLI runs from must stay readable: its executable (or script) and, for the
        # Python the hook and the demo agents use, the interpreter and its import path.
        own = under_private_tmp([*spec.executable, sys.prefix, sys.base_prefix, *sys.path])
        return Confinement(
            bwrap=self._sandbox.bwrap,
            writable=tuple(str(p) for p in (spec.workdir, *spec.extra_dirs, *state.dirs, *state.files)),
            hidden=self._sandbox.hidden,
            readable=(*own, *self._sandbox.readable),
            chdir=str(spec.workdir),
        )

    def _on_lines(self, message: LinesRead) -> None:
        if message.run_id != self._run_id or self._parser is None:
            return
        if message.stream == "stderr":
            self._on_stderr(message)
            return
        for data, total_bytes, overflow_path in message.lines:
            drafts = self._parser.feed_line(data, total_bytes)
            raw = data.decode("utf-8", errors="replace")
            if not drafts and raw.strip():
                drafts = [draft("status", kind="unrecognised", text=raw[:200])]
            self._record(drafts, raw=raw, raw_file=overflow_path, flush=False)
        self._flush()
        if self._parser.terminal_seen and not self._exit_watch_armed and self._proc is not None:
            # Some CLI versions print their final result and then never exit.
            self._exit_watch_armed = True
            self._spawn_thread(
                f"{self._agent}-exit-watch",
                self._exit_watch,
                self._proc,
                self._session_settings.exit_grace_after_result_s,
            )

    def _on_stderr(self, message: LinesRead) -> None:
        if self._stderr_file is not None:
            try:
                self._stderr_file.write(b"".join(data + b"\n" for data, _, _ in message.lines))
                self._stderr_file.flush()
            except OSError as exc:
                log.error("cannot write %s: %s", self._stderr_path, exc)
        for data, _, _ in message.lines:
            text = data.decode("utf-8", errors="replace")
            self._stderr_tail.append(text[:2000])
            if self._parser is not None:
                drafts = self._parser.feed_stderr(text)
                if drafts:
                    self._record(drafts, raw=text)

    def _on_process_ended(self, message: ProcessEnded) -> None:
        if message.run_id != self._run_id or self._current is None or self._parser is None:
            return
        tail = tuple(self._stderr_tail)
        returncode = message.returncode
        if self._stopped_by == AFTER_RESULT:
            # The run had ended by its own account; only the process lingered.
            grace = self._session_settings.exit_grace_after_result_s
            self._record(
                [
                    draft(
                        "status",
                        kind="ended_after_result",
                        text=f"the CLI printed its final result but did not exit within "
                        f"{grace:g}s; it was ended and the run counts as finished",
                    )
                ],
                raw=None,
            )
            self._stopped_by = None
            returncode = 0
        drafts = self._parser.finish(returncode, tail)
        self._record(drafts, raw=None)
        outcome = self._parser.outcome()
        current = self._current
        duration = monotonic() - self._run_started - self._paused_total
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
                fatal=self._fatal,
            ),
        )

    def _on_pause(self, message: PauseWorker) -> bool:
        if self._proc is None or self._status != "running":
            return False
        if self._proc.signal_group(signal.SIGSTOP):
            self._paused_since = monotonic()
            self._set_status("paused")
            self._record([draft("status", kind="paused", text=f"paused ({message.reason})")], raw=None)
            return True
        return False

    def _on_resume(self, message: ResumeWorker) -> bool:
        if self._proc is None or self._status != "paused":
            return False
        self._proc.signal_group(signal.SIGCONT)
        if self._paused_since is not None:
            self._paused_total += monotonic() - self._paused_since
        self._paused_since = None
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
        grace = self._session_settings.stop_grace_s
        # Waiting out the grace period here would stall the actor's inbox (lines, pause...).
        self._spawn_thread(f"{self._agent}-terminate", proc.terminate, grace)
        return True

    # -- recording -----------------------------------------------------------------------------

    def _record(self, drafts: list[Draft], raw: str | None, raw_file: str | None = None, flush: bool = True) -> None:
        """Serialise the events; ``_flush`` writes them, and publishes them once on disk."""
        assert self._writer is not None
        if self._fatal:
            return  # nothing more can be recorded; the run is being ended
        assignment_id = self._current.assignment_id if self._current else None
        for item in drafts:
            event = Event(
                type=item.type,
                agent=self._agent,
                payload=item.payload,
                seq=self._writer.seq + len(self._unpublished) + 1,
                assignment_id=assignment_id,
                raw=raw,
                raw_file=raw_file,
            )
            self._unpublished.append((event, event.model_dump_json(exclude_none=True)))
            if event.payload.text and event.type != "status":
                self._last_activity = event.payload.text[:160]
            if event.payload.progress is not None:
                self._last_progress = event.payload.progress
        if flush:
            self._flush()

    def _flush(self) -> None:
        """Write and flush the pending events (one write per batch), then tell the listeners."""
        assert self._writer is not None
        if not self._unpublished:
            return
        try:
            self._writer.write_batch([line for _, line in self._unpublished], self._unpublished[-1][0].seq)
        except SessionFileError as exc:
            self._on_cannot_record(exc)
            return
        self._events_recorded += len(self._unpublished)
        batch, self._unpublished = self._unpublished, []
        # One fact per batch: a flood costs each listener one message per read, not per line.
        if len(batch) == 1:
            fact: EventRecorded | EventsRecorded = EventRecorded(event=batch[0][0], line=batch[0][1])
        else:
            fact = EventsRecorded(events=tuple(e for e, _ in batch), lines=tuple(li for _, li in batch))
        tell_all(self._listeners, fact)

    def _on_cannot_record(self, exc: SessionFileError) -> None:
        """The event file cannot be written: publishing events not on disk would break the
        log's promise, so the run is ended and the coordinator told the session cannot go on."""
        log.error("%s: %s; ending the run", self._agent, exc)
        self._fatal = f"session files cannot be written: {exc}"
        self._unpublished = []  # never published: they are not on disk
        proc = self._proc
        if proc is not None and not proc.exited and self._status != "stopping":
            self._stopped_by = self._fatal
            self._status = "stopping"
            self._spawn_thread(f"{self._agent}-terminate", proc.terminate, self._session_settings.stop_grace_s)

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
                fatal=self._fatal,
            ),
        )

    def _reply(self, command: StartAssignment, fact: AssignmentFinished) -> None:
        if command.reply_to is not None:
            try:
                command.reply_to.tell(fact)
            except pykka.ActorDeadError:
                log.warning("%s: %s finished but nobody is listening", self._agent, fact.assignment_id)

    def _set_status(self, status: WorkerStatus) -> None:
        self._status = status
        fact = WorkerStateChanged(snapshot=self._snapshot())
        tell_all(self._listeners, fact)

    def _snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            agent=self._agent,
            status=self._status,
            pid=self._proc.pid if self._proc else None,
            assignment_id=self._current.assignment_id if self._current else None,
            events_recorded=self._events_recorded,
            last_activity=self._last_activity,
            last_progress=self._last_progress,
        )

    # -- threads: they move bytes and tell; they never touch actor state -------------------------

    def _spawn_thread(self, name: str, target: Any, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def _overflow_file(self) -> Path:
        self._overflow_count += 1  # only the stdout pump calls this
        folder = private_dir(self._session_dir / "overflow")
        return folder / f"{self._events_path.stem}-run{self._run_id}-{self._overflow_count}.txt"

    def _pump(self, stream: str, proc: HostedProcess, run_id: int) -> None:
        limit = self._session_settings.max_line_bytes
        try:  # a local pipe or a remote run's lines: the process says how to read them
            for batch in proc.line_batches(stream, limit, self._overflow_file):
                self._forward(LinesRead(stream=stream, run_id=run_id, lines=tuple(batch)))
        except (OSError, ValueError) as exc:
            log.warning("%s %s pipe: %s", self._agent, stream, exc)

    def _forward(self, message: LinesRead) -> None:
        while not self._closing.is_set():
            if self._in_flight.acquire(timeout=0.2):
                try:
                    self.actor_ref.tell(message)
                    return
                except pykka.ActorDeadError:
                    self._in_flight.release()
                    break
        self._late_lines.append(message)

    def _reap(self, proc: HostedProcess, pumps: list[threading.Thread], run_id: int) -> None:
        proc.wait_exit_unreaped()
        stragglers = proc.end_stragglers()
        if stragglers:
            log.info("%s left %d process(es) in its group; ended them", self._agent, stragglers)
        for pump in pumps:
            pump.join()  # every line is queued before the exit is
        if self._closing.is_set():
            return  # on_stop reaps and records the end itself
        returncode = proc.reap()
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(ProcessEnded(returncode=returncode, run_id=run_id))

    def _exit_watch(self, proc: HostedProcess, grace_s: float) -> None:
        if proc.wait_exited(grace_s) or self._closing.is_set():
            return
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(StopWorker(reason=AFTER_RESULT))

    def _watchdog(self, proc: HostedProcess, run_id: int) -> None:
        limit = self._session_settings.assignment_timeout_s
        started = monotonic()
        while not proc.exited and not self._closing.is_set():
            if self._closing.wait(0.5):
                return
            paused = self._paused_total + (monotonic() - self._paused_since if self._paused_since is not None else 0.0)
            if monotonic() - started - paused > limit:
                with contextlib.suppress(pykka.ActorDeadError):
                    self.actor_ref.tell(StopWorker(reason=f"wall-clock limit of {limit:g}s reached"))
                return


def _redact_prompt(argv: tuple[str, ...], prompt: str) -> tuple[str, ...]:
    """The command line for the log, with the (long) prompt shortened."""
    short = prompt if len(prompt) < 80 else prompt[:60].replace("\n", " ") + f"... ({len(prompt)} chars)"
    return tuple(short if a == prompt else a for a in argv)


def launch_for_preflight(adapter: AgentAdapter, settings: AgentSettings) -> tuple[str, ...]:
    """The executable argv prefix for an agent (config command or the CLI's own name)."""
    if settings.command:
        return tuple(shlex.split(settings.command))
    return (adapter.default_executable,)


__all__ = ["Worker", "launch_for_preflight"]
