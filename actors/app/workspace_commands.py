"""``orchestrate apply`` and ``orchestrate discard``: a session's branch into the user's
current branch, or away; and the branch column of ``orchestrate sessions``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import psutil

from meta_orchestrator.actors.runtime.git_command import WorkspaceError
from meta_orchestrator.actors.runtime.session_files import read_json
from meta_orchestrator.actors.runtime.workspaces import (
    ApplyRefused,
    apply_session,
    discard_session,
    session_branch,
    where_branch,
    workspace_summary,
)
from meta_orchestrator.messages.session import TERMINAL_STATUSES

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _say(text: str) -> None:
    print(f"orchestrate: {text}", file=sys.stderr)


def _session(folder: Path, session_id: str) -> tuple[dict[str, Any], Path | None] | None:
    """The session's state and the user's repository (None: no git target)."""
    try:
        state = read_json(folder / "state.json")
    except FileNotFoundError:
        _say(f"no session {session_id} in {folder.parent}")
        return None
    except (OSError, ValueError) as exc:
        _say(f"{folder / 'state.json'} cannot be read: {exc}")
        return None
    pid = state.get("orchestrator_pid")
    if state.get("status") not in TERMINAL_STATUSES and pid and pid != os.getpid() and psutil.pid_exists(pid):
        _say(f"session {session_id} is running (orchestrator pid {pid}); let it end, or stop it, first")
        return None
    summary = workspace_summary(folder)
    if summary is not None:
        return state, Path(str(summary["repository"]))
    target = state.get("target")
    return state, Path(target) if target else None


def apply_command(folder: Path, session_id: str, squash: bool) -> int:
    """Merge the session's branch into the user's current branch; 1 when refused."""
    found = _session(folder, session_id)
    if found is None:
        return EXIT_USAGE
    state, repository = found
    if repository is None:
        _say(f"session {session_id} has no target repository recorded; nothing to apply")
        return EXIT_USAGE
    title = str(state.get("task") or "").strip() or None
    summary = workspace_summary(folder) or {}
    store = Path(str(summary["store"])) if summary.get("store") else None
    try:
        result = apply_session(repository, session_id, squash=squash, title=title, store=store)
    except ApplyRefused as exc:
        _say(f"not applied: {exc}")
        return EXIT_REFUSED
    except WorkspaceError as exc:
        _say(f"not applied: {exc}")
        return EXIT_REFUSED
    branch = session_branch(session_id)
    if result.status == "up_to_date":
        print(f"{branch} is already in {result.branch}; nothing to do")
        return 0
    how = {"fast_forward": "fast-forward", "merged": "merge commit", "squashed": "one squashed commit"}[result.status]
    count = len(result.files)
    print(f"applied {branch} to {result.branch} ({how} {result.commit[:10]}, {count} file{'s' * (count != 1)})")
    kept = where_branch(branch, str(store) if store else None).split(" (")[0]
    print(f"the {kept} is kept; remove it and its checkouts with: orchestrate discard {session_id}")
    return 0


def discard_command(folder: Path, session_id: str) -> int:
    """Delete the session's branches and checkouts; 1 when something could not be deleted."""
    found = _session(folder, session_id)
    if found is None:
        return EXIT_USAGE
    _, repository = found
    result = discard_session(repository, folder, session_id)
    for branch in result.branches:
        print(f"deleted branch {branch}")
    for name in result.checkouts:
        print(f"removed checkout {name}")
    if not result.branches and not result.checkouts and not result.problems:
        print(f"session {session_id} had no branch or checkout left")
    for problem in result.problems:
        _say(problem)
    return EXIT_REFUSED if result.problems else 0


def branch_note(folder: Path) -> str:
    """``orchestrate sessions``' last column: the session's branch and its checkouts left."""
    summary = workspace_summary(folder)
    if summary is None:
        return ""
    if summary["discarded"]:
        return f"  {summary['branch']} (discarded)"
    where = f"{summary['branch']} (in its store until apply)" if summary.get("store") else str(summary["branch"])
    left = int(summary["checkouts"])  # type: ignore[call-overload]
    return f"  {where}, {left} checkout{'s' * (left != 1)} left" if left else f"  {where}"
