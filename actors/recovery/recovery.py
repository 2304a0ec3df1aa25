"""Recovery actor: classifies a failed (or refused) run and plans what to do about it.

It listens to the workers' ``EventsRecorded`` (keeping each agent's recent error, blocker and
launch events) and answers the coordinator's ``RecoveryRequested`` with ``RecoveryPlanned``:
relaunch with corrected flags, retry after a jittered back-off, or escalate with advice.
Retries are bounded per agent and per class, so no failure can loop. It never starts or
stops a process itself: the coordinator applies the plan.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pykka
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.recovery.error_patterns import Classification, Evidence, classify_run, compile_patterns
from meta_orchestrator.actors.supervision.supervision import report_crash_of
from meta_orchestrator.config.settings import RecoverySettings
from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.recovery import RecoveryAction, RecoveryPlanned, RecoveryRequested
from meta_orchestrator.messages.worker import EventsRecorded, WorkerStateChanged

log = logging.getLogger(__name__)

RECENT_EVENTS = 60
_PROTECTED = tuple(
    Path(p)
    for p in ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/sbin", "/sys", "/usr", "/var")
)


class Recovery(pykka.ThreadingActor):
    """Turns a run's evidence into a class and a bounded action."""

    def __init__(
        self,
        settings: RecoverySettings,
        target: Path,
        workspace: Path | None = None,
        listeners: Sequence[pykka.ActorRef[Any]] = (),
        rng: Callable[[], float] = random.random,
        home: Path | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._target = Path(os.path.abspath(target))
        self._workspace = Path(os.path.abspath(workspace)) if workspace else None
        self._listeners = tuple(listeners)
        self._rng = rng
        self._home = Path(os.path.abspath(home or Path.home()))
        self._patterns = compile_patterns(p.model_dump() for p in settings.patterns)
        self._recent: dict[tuple[str, str | None], collections.deque[Event]] = {}
        self._launch_line: dict[tuple[str, str | None], str] = {}
        self._by_class: collections.Counter[tuple[str, str]] = collections.Counter()
        self._by_agent: collections.Counter[str] = collections.Counter()
        self._count = 0

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        # The supervisor restarts this actor; the coordinator then stops waiting on it.
        report_crash_of(self, exception_value)

    def on_receive(self, message: Any) -> Any:
        match message:
            case EventsRecorded():
                for event in message.events:
                    self._on_event(event)
                return None
            case RecoveryRequested():
                return self._on_requested(message)
            case WorkerStateChanged():
                return None  # heard as a listener; nothing to do
        return super().on_receive(message)

    # -- evidence -------------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        key = (event.agent, event.assignment_id)
        if event.type == "status" and event.payload.kind == "launch":
            self._launch_line[key] = event.payload.text or ""
            self._recent.pop(key, None)  # a new run: the old run's errors are history
            return
        if event.type in ("error", "blocker"):
            self._recent.setdefault(key, collections.deque(maxlen=RECENT_EVENTS)).append(event)

    def _evidence(self, message: RecoveryRequested) -> Evidence:
        done = message.finished
        events = list(self._recent.get((done.agent, done.assignment_id), ()))
        # Terminal errors first: they name the cause; blockers and stderr explain side effects.
        events.sort(key=lambda e: (not e.payload.terminal, e.type != "error"))
        lines: list[str] = []
        if done.stopped_by:
            lines.append(done.stopped_by)  # only a stall stop is asked about: it is why the run ended
        if done.spawn_error:
            lines.append(done.spawn_error)
        for event in events:
            p = event.payload
            details = p.details or {}
            # The parser's own reading of the event (its class, the CLI's error code) is evidence too.
            tags = " ".join(str(details[k]) for k in ("cause", "error") if isinstance(details.get(k), str))
            lines.append(" ".join(x for x in (p.text or "", f"[{tags}]" if tags else "") if x))
        if done.outcome.error:
            lines.append(done.outcome.error)
        lines.extend(done.outcome.permission_denials)
        lines.extend(line for line in done.stderr_tail if line.strip())
        return Evidence(
            agent=done.agent,
            lines=tuple(lines),
            returncode=done.returncode,
            terminal_event_seen=done.outcome.terminal_event_seen,
            succeeded=done.outcome.success and not done.stopped_by,
        )

    # -- planning ---------------------------------------------------------------------------------

    def _on_requested(self, message: RecoveryRequested) -> RecoveryPlanned:
        done = message.finished
        evidence = self._evidence(message)
        found = classify_run(evidence, self._patterns)
        self._count += 1
        base = dict(
            recovery_id=f"rec-{self._count:03d}",
            agent=done.agent,
            assignment_id=done.assignment_id,
            run_succeeded=evidence.succeeded,
        )
        if found is None:
            plan = RecoveryPlanned(
                **base, cause=None, action="none", advice="nothing to recover: no known error class matched"
            )
        else:
            plan = self._plan(message, found, base)
        log.info(
            "recovery %s: %s %s -> %s (%s)", plan.recovery_id, plan.agent, plan.cause, plan.action, plan.evidence[:200]
        )
        for ref in (message.reply_to, *self._listeners):
            if ref is not None:
                with contextlib.suppress(pykka.ActorDeadError):
                    ref.tell(plan)
        return plan

    def _plan(self, message: RecoveryRequested, found: Classification, base: dict[str, Any]) -> RecoveryPlanned:
        agent: AgentName = message.finished.agent
        cause = found.cause
        common = dict(base, cause=cause, evidence=found.evidence)

        def escalate(advice: str) -> RecoveryPlanned:
            action: RecoveryAction = "none" if base["run_succeeded"] else "escalate"
            return RecoveryPlanned(**common, action=action, advice=advice)

        retry_advice = _RETRY_ADVICE.get(cause)
        if retry_advice is not None or cause in ("outside_path", "session_not_found", "node_lost"):
            spent = self._spent(agent, cause)
            if spent is not None:
                return RecoveryPlanned(**common, action="none" if base["run_succeeded"] else "give_up", advice=spent)
        if cause in _RETRY_ADVICE:
            attempt = self._take(agent, cause)
            delay = self._backoff(attempt)
            return RecoveryPlanned(
                **common,
                action="retry_after",
                delay_s=delay,
                attempt=attempt,
                advice=f"{_RETRY_ADVICE[cause]}; retry {attempt} of "
                f"{self._settings.max_retries.get(cause, 0)} in "
                f"{delay:.1f}s",
            )
        if cause == "outside_path":
            return self._plan_outside_path(message, found, common, escalate)
        if cause == "repo_trust":
            flag = get_adapter(agent).trust_flag
            launch = self._launch_line.get((agent, message.finished.assignment_id), "")
            already = flag is not None and (flag in launch.split() or flag in message.extra_args)
            if flag and not already and self._spent(agent, cause) is None:
                attempt = self._take(agent, cause)
                return RecoveryPlanned(
                    **common,
                    action="relaunch",
                    extra_args=(flag,),
                    attempt=attempt,
                    advice=f"relaunching {agent} with {flag}",
                )
            return escalate(self._advice(agent, cause, found))
        if cause == "node_lost":
            return self._plan_node_lost(message, common)
        if cause == "session_not_found":
            attempt = self._take(agent, cause)
            return RecoveryPlanned(
                **common, action="relaunch", attempt=attempt, advice="the session to resume is gone; starting a new one"
            )
        return escalate(self._advice(agent, cause, found))

    def _plan_outside_path(
        self,
        message: RecoveryRequested,
        found: Classification,
        common: dict[str, Any],
        escalate: Callable[[str], RecoveryPlanned],
    ) -> RecoveryPlanned:
        agent = message.finished.agent
        path = found.groups.get("path")
        if path is None:
            return escalate(
                f"{agent} was refused a write outside its writable folders but did "
                "not say where; add the folder with [agents."
                f'{agent}] extra_args = ["--add-dir", "<dir>"]'
            )
        if not self._settings.grant_outside_dirs:
            return escalate(
                f"{agent} was refused {path}; recovery.grant_outside_dirs is off. "
                "Grant it with [agents.<name>] extra_args or move the work into "
                f"{self._target}"
            )
        grant, problem = self._grantable(Path(path))
        if grant is None:
            return escalate(
                f"{agent} was refused {path} and the orchestrator will not grant "
                f"{problem}; if it must, add it to [agents.{agent}] extra_args"
            )
        if str(grant) in message.extra_dirs:
            return RecoveryPlanned(
                **common,
                action="none" if common["run_succeeded"] else "give_up",
                advice=f"{grant} was already granted and {agent} was still refused; check the folder's permissions",
            )
        if not grant.exists():
            try:
                grant.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return escalate(f"cannot create {grant} to grant it: {exc.strerror or exc}")
        attempt = self._take(agent, "outside_path")
        flag = get_adapter(agent).grant_dir_flag
        note = (
            f"The orchestrator granted you access to {grant} after a refusal there. "
            "Redo what was refused, then finish the assignment."
        )
        return RecoveryPlanned(
            **common,
            action="relaunch",
            extra_dirs=(str(grant),),
            resume_session_id=message.finished.outcome.session_id,
            note=note,
            attempt=attempt,
            advice=f"relaunching {agent} with {flag} {grant}",
        )

    def _plan_node_lost(self, message: RecoveryRequested, common: dict[str, Any]) -> RecoveryPlanned:
        """The machine it ran on went: run it again at once (the cluster places it on another
        node, or it waits for a slot), resuming the CLI's session when the run named one."""
        agent = message.finished.agent
        attempt = self._take(agent, "node_lost")
        session = message.finished.outcome.session_id
        how = f"resuming its session {session}" if session else "from the start"
        return RecoveryPlanned(
            **common,
            action="relaunch",
            resume_session_id=session,
            note=_NODE_LOST_NOTE,
            attempt=attempt,
            advice=f"the cluster node running {agent} was lost; relaunching it on another node, {how} "
            f"(retry {attempt} of {self._settings.max_retries.get('node_lost', 0)})",
        )

    def _grantable(self, path: Path) -> tuple[Path | None, str]:
        """The folder to grant for a refused path, or None and why not."""
        path = Path(os.path.abspath(path if path.is_absolute() else self._target / path))
        folder = path if path.is_dir() else path.parent
        if folder in _PROTECTED or any(folder == p or p in folder.parents for p in _PROTECTED[1:]):
            return None, f"a system folder ({folder})"
        if folder == self._home or folder in self._home.parents:
            return None, f"the home folder or one of its parents ({folder})"
        for base in (self._target, self._workspace):
            if base is not None and (folder == base or folder in base.parents):
                return None, f"{folder}, which holds {base}"
        if self._target in folder.parents:
            return None, f"{folder}: it is inside the target, refused for another reason"
        if not folder.exists() and not self._settings.create_granted_dirs:
            return None, f"{folder}: it does not exist and recovery.create_granted_dirs is off"
        return folder, ""

    # -- bounds -----------------------------------------------------------------------------------

    def _spent(self, agent: str, cause: str) -> str | None:
        """Why no more retries of this class are allowed, or None."""
        limit = self._settings.max_retries.get(cause, 0)
        if self._by_class[(agent, cause)] >= limit:
            return (
                f"{self._by_class[(agent, cause)]} of {limit} {cause} retries for {agent} "
                f"already spent; {self._advice(agent, cause, None)}"
            )
        if self._by_agent[agent] >= self._settings.max_attempts_per_agent:
            return (
                f"{self._by_agent[agent]} recoveries for {agent} already spent "
                f"(recovery.max_attempts_per_agent); {self._advice(agent, cause, None)}"
            )
        return None

    def _take(self, agent: str, cause: str) -> int:
        self._by_class[(agent, cause)] += 1
        self._by_agent[agent] += 1
        return self._by_class[(agent, cause)]

    def _backoff(self, attempt: int) -> float:
        s = self._settings
        delay = min(s.backoff_max_s, s.backoff_base_s * 2 ** (attempt - 1))
        return round(delay * (1 + s.backoff_jitter * self._rng()), 3)

    def _advice(self, agent: str, cause: str, found: Classification | None) -> str:
        """The CLI's own advice for the class if its adapter has one, else the generic one."""
        adapter = get_adapter(agent)
        specific = adapter.advise(cause, self._target)
        if specific is not None:
            return specific
        groups = found.groups if found else {}
        if cause == "auth":
            var = groups.get("var")
            if var:
                # It may be set and withheld: only the allowlist of agent_env reaches the CLI.
                return (
                    f"set the environment variable {var} for {agent} and start again (a variable of your "
                    f"environment reaches {agent} only when it is its vendor's or named in [agents.{agent}] "
                    f"pass_env; or set it in [agents.{agent}] env)"
                )
            return f"{agent} has no valid credentials: set {adapter.credentials}, then start again"
        template = _FIX_ADVICE.get(cause)
        if template is None:
            return _RETRY_ADVICE.get(cause, f"{agent} failed ({cause})")
        return template.format(
            agent=agent,
            cause=cause,
            target=self._target,
            install_hint=adapter.install_hint(),
            path=groups.get("path", "?"),
            arg=groups.get("arg", "see the evidence"),
        )


_NODE_LOST_NOTE = (
    "The machine your previous run of this assignment ran on was lost, and every change that run made "
    "with it: the files are as they were when it started. Check them and do again what is missing."
)
_PERMISSION_REFUSED = "{agent}'s own permission checks refused the run ({cause}): see [agents.{agent}] extra_args"
# What the user must fix, per class (auth aside: it names the variable when the CLI did).
_FIX_ADVICE = {
    "not_installed": "install {agent}: {install_hint} "
    "(or set [agents.{agent}] command to its path, or enabled = false)",
    "account": "{agent} refused this account: use another account or key, or move its roles ([session] role_fallback)",
    "bad_workdir": "a folder {agent} needs does not exist ({path}); create it or fix the config",
    "bad_flag": "{agent} refused a flag ({arg}): fix [agents.{agent}] extra_args",
    "context": "the prompt is too long for {agent}'s model: split the assignment or "
    "pick a model with a larger context window",
    "turn_cap": "{agent} hit its turn cap: raise it",
    "invalid_model": "{agent} does not know the model: fix [agents.{agent}] model",
    "repo_trust": "{agent} refused the folder {target}",
    "outside_path": "grant the folder with [agents.{agent}] extra_args",
    "session_not_found": "the session to resume is gone",
    "node_lost": "the cluster node running {agent} was lost again; check the cluster's nodes (ray status)",
    "mode_too_strict": _PERMISSION_REFUSED,
    "sandbox": _PERMISSION_REFUSED,
    "root_bypass": _PERMISSION_REFUSED,
}
_RETRY_ADVICE = {
    "rate_limit": "rate limit or quota reached: backing off; if it persists, wait for the "
    "quota to reset or use another key or model",
    "server": "the model server failed (5xx/overloaded): retrying later",
    "network": "the model API was unreachable: retrying; if it persists, check the network, proxy and base URL",
    "hang": "the CLI was idle for the stall limit (no output, no file written, next to no CPU: hung, "
    "or retrying without a word) and was ended: retrying; if it hangs again its roles move on",
    "malformed": "the CLI's output was not the stream it should print (no result): retrying; if it "
    "persists its roles move on; its raw lines are in the session folder",
    "crash": "the CLI ended without a result: retrying once; if it crashes again, look at "
    "its stderr log in the session folder",
}


__all__ = ["Recovery"]
