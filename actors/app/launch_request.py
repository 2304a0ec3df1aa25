"""What the user asked for one session (``LaunchRequest``): built once, from the command line
(``orchestrate <task> ...`` or ``orchestrate resume <id> ...``) or by a program, and never
changed after; on resume, what the first start asked comes from its ``launch.json``
(``resumed``). The flags that change settings become overrides in one place
(``settings_overrides``). Nothing here reads a file or starts anything: the launcher imports
it before it knows whether it will run a session at all."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TextIO

from meta_orchestrator.actors.files.end_lock import END_WAIT_S

if TYPE_CHECKING:
    from meta_orchestrator.actors.app.start_order import RunningSession


@dataclass(frozen=True)
class LaunchRequest:
    """One session as asked for: a new one (``task`` and ``target``) or one to continue
    (``resume``: its id; its task, target and demo come from its first start)."""

    task: str
    target: Path | None
    demo: bool = False
    resume: str | None = None  # a session id: continue that session
    session_id: str | None = None  # a new session's id (None: a fresh one)
    # The user's uncommitted files go into the session's base (their tree stays as it is).
    include_uncommitted: bool = False
    # The agents write straight into the target: no branch, no checkout, nothing to undo.
    in_place: bool = False
    # Settings the flags change, by dotted name ("web.port"): on resume they apply over the
    # settings of the first start, as over the config file on a first start.
    settings_overrides: Mapping[str, Any] = field(default_factory=dict)
    dashboard: bool = True
    next_free_port: bool = False
    exit_when_done: bool = False
    # How long a start waits for the session's lock (files.end_lock): on resume, for its last
    # launcher to finish its end work.
    end_wait_s: float = END_WAIT_S
    verbose: bool = False
    console: bool = True
    # -- how the caller is reached (a program or a test; the launcher sets answer_stream) --
    env: Mapping[str, str] | None = None  # the agents' environment comes from this (None: os.environ)
    answer_stream: TextIO | None = None  # where typed answers come from (the launcher passes stdin)
    # Channels beyond the console and the dashboard: "program" when the caller itself answers
    # through the coordinator (tests, an embedding program). None of them: no question waits.
    answer_channels: tuple[str, ...] = ()
    print_url: Callable[[str], None] | None = None
    on_started: Callable[[RunningSession], None] | None = None

    def __post_init__(self) -> None:
        # Copies the caller cannot change afterwards (a frozen dataclass only stops reassignment).
        object.__setattr__(self, "settings_overrides", MappingProxyType(dict(self.settings_overrides)))
        if self.env is not None:
            object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def resumed(self, task: str, target: Path, demo: bool) -> LaunchRequest:
        """This request as it applies to the session it continues: what its first start asked
        (``launch.json``), with this run's own flags."""
        return dataclasses.replace(self, task=task, target=target, demo=demo)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line's flags change, by dotted name: the one place a flag
    becomes a setting (``orchestrate`` and ``orchestrate resume`` share these flags)."""
    flags: dict[str, Any] = {
        "workspace": str(args.workspace) if args.workspace else None,
        "web.port": args.port,
        "web.host": args.host or None,
        "web.allow_remote": True if args.allow_remote else None,
        "questions.unattended": "defaults" if args.unattended else None,
    }
    if "cluster" in args:  # only a first start chooses where its agents run
        flags["cluster.address"] = args.cluster or None
        flags["cluster.token_file"] = str(args.cluster_token_file) if args.cluster_token_file else None
    return {name: value for name, value in flags.items() if value is not None}


def from_command_line(args: argparse.Namespace, **asked: Any) -> LaunchRequest:
    """The request of ``orchestrate`` or ``orchestrate resume``: what only that command asks
    (``asked``: a task and target, or the session to continue) and the flags both share."""
    return LaunchRequest(
        **asked,
        settings_overrides=settings_overrides(args),
        dashboard=not args.no_dashboard,
        next_free_port=args.next_free_port,
        exit_when_done=args.exit_when_done,
        verbose=args.verbose,
        answer_stream=sys.stdin,
    )
