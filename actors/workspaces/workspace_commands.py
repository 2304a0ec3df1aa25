"""``orchestrate apply`` and ``orchestrate discard``: a session's branch into the user's
current branch (a folder without git: its changed files into the folder), or away; and the
branch column of ``orchestrate sessions``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import psutil

from meta_orchestrator.actors.workspaces.folder_apply import apply_folder_session
from meta_orchestrator.actors.workspaces.git_command import WorkspaceError
from meta_orchestrator.actors.files.end_lock import END_WAIT_S, SessionBusy, SessionLock
from meta_orchestrator.actors.files.end_lock import take as take_end_lock
from meta_orchestrator.actors.files.session_files import read_json
from meta_orchestrator.actors.workspaces.workspaces import (
    apply_session,
    discard_session,
    main_worktree_of,
    session_branch,
    where_branch,
    workspace_summary,
)
from meta_orchestrator.messages.session import TERMINAL_STATUSES

EXIT_REFUSED = 1
EXIT_USAGE = 2


def _say(text: str) -> None:
    print(f"orchestrate: {text}", file=sys.stderr)


def _session(
    folder: Path, session_id: str, what: str, wait_s: float
) -> tuple[dict[str, Any], Path | None, SessionLock] | None:
    """The session's state, the user's repository (None: no git target) and the session's
    lock, held: its launcher's end work is done (files.end_lock), waited for up to ``wait_s``.
    None (said why): no such session, still running, or its end work not done in time."""
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
    try:
        lock = take_end_lock(folder, wait_s, what)
    except SessionBusy as exc:
        _say(str(exc))
        return None
    except OSError as exc:
        _say(f"{folder} cannot be locked: {exc}")
        return None
    try:  # as the end work left it (the launcher may write it once more after the status)
        state = read_json(folder / "state.json")
    except (OSError, ValueError) as exc:
        lock.release()
        _say(f"{folder / 'state.json'} cannot be read: {exc}")
        return None
    note = lock.unfinished_end()
    if note is not None:
        _say(note)
    summary = workspace_summary(folder)
    if summary is not None:
        return state, Path(str(summary["repository"])), lock
    target = state.get("target")
    return state, Path(target) if target else None, lock


def apply_command(
    folder: Path,
    session_id: str,
    squash: bool,
    *,
    onto: str | None = None,
    sign: bool = True,
    target: Path | None = None,
    wait_s: float = END_WAIT_S,
) -> int:
    """Merge the session's branch into the user's current branch; 1 when refused.
    ``target``: another worktree of the session's repository to apply in; ``wait_s``: how
    long to wait for the launcher's end work."""
    found = _session(folder, session_id, "apply", wait_s)
    if found is None:
        return EXIT_USAGE
    state, repository, lock = found
    with lock:
        return _apply_held(folder, session_id, state, repository, squash, onto, sign, target)


def _apply_held(
    folder: Path,
    session_id: str,
    state: dict[str, Any],
    repository: Path | None,
    squash: bool,
    onto: str | None,
    sign: bool,
    target: Path | None,
) -> int:
    if repository is None:
        _say(f"session {session_id} has no target repository recorded; nothing to apply")
        return EXIT_USAGE
    title = str(state.get("task") or "").strip() or None
    summary = workspace_summary(folder) or {}
    if summary.get("kind") == "folder":
        if squash or onto or target is not None:
            _say(
                "not applied: --squash, --onto and --target are for a git repository's session; this one "
                f"writes its changed files into {repository}"
            )
            return EXIT_USAGE
        return _apply_folder(folder, session_id)
    store = Path(str(summary["store"])) if summary.get("store") else None
    where = _apply_target(repository, target, summary, session_id)
    if where is None:
        return EXIT_REFUSED
    started_on = str(summary["user_branch"]) if summary.get("user_branch") else None
    snapshot = str(summary["snapshot"]) if summary.get("snapshot") else None
    try:
        result = apply_session(
            where,
            session_id,
            squash=squash,
            title=title,
            store=store,
            started_on=started_on,
            onto=onto,
            sign=sign,
            snapshot=snapshot,
        )
    except WorkspaceError as exc:  # ApplyRefused too: the reason nothing was done
        _say(f"not applied: {exc}")
        return EXIT_REFUSED
    branch = session_branch(session_id)
    if result.status == "up_to_date":
        print(f"{branch} is already in {result.branch}; nothing to do")
        return 0
    how = {
        "fast_forward": "fast-forward",
        "merged": "merge commit",
        "squashed": "one squashed commit",
        "replayed": "one commit",
    }[result.status]
    count = len(result.files)
    print(f"applied {branch} to {result.branch} ({how} {result.commit[:10]}, {count} file{'s' * (count != 1)})")
    if snapshot is not None:
        print(
            f"only the session's own changes came in: its base {snapshot[:10]}, the snapshot of your uncommitted "
            "files, is no commit of yours; your uncommitted files, if any, stay as they are"
        )
    kept = where_branch(branch, str(store) if store else None).split(" (")[0]
    print(f"the {kept} is kept; remove it and its checkouts with: orchestrate discard {session_id}")
    return 0


def _apply_folder(folder: Path, session_id: str) -> int:
    """Write a folder's session (no git there) into the folder; 1 when refused."""
    try:
        result = apply_folder_session(folder, session_id)
    except WorkspaceError as exc:  # ApplyRefused too: the reason nothing was written
        _say(f"not applied: {exc}")
        return EXIT_REFUSED
    if result.already:
        print(f"session {session_id} is already applied to {result.folder}; nothing written")
        return 0
    if not result.written and not result.deleted:
        print(f"session {session_id} changed nothing in {result.folder}; nothing written")
        return 0
    count = len(result.written) + len(result.deleted)
    print(
        f"applied session {session_id} to {result.folder}: {len(result.written)} file(s) written, "
        f"{len(result.deleted)} deleted ({count} in all)"
    )
    print(f"the session's store is kept; remove it and its checkouts with: orchestrate discard {session_id}")
    return 0


def _apply_target(repository: Path, target: Path | None, summary: dict[str, Any], session_id: str) -> Path | None:
    """Where to apply: ``target`` when it is a worktree of the session's repository, else the
    folder the session started in; None (said why) when that is gone or ``target`` is another
    repository's."""
    common = str(summary.get("common_dir") or "")
    if target is not None:
        theirs = main_worktree_of(target.resolve())
        if theirs is None:
            _say(f"not applied: {target} is no folder of a git repository")
            return None
        if common and theirs[1] != Path(common).resolve():
            _say(f"not applied: {target} is not a worktree of {repository}'s repository (git folder {common})")
            return None
        return target
    if repository.is_dir() or not common:
        return repository
    main = (main_worktree_of(Path(common)) or (None, None))[0]
    way = (
        f"its main worktree is {main}: run `orchestrate apply {session_id} --target {main}` "
        "(or cd there and pass --target .)"
        if main is not None
        else f"pass --target with a worktree of the repository whose git folder is {common}"
    )
    _say(f"not applied: {repository}, the worktree the session started in, is gone; {way}")
    return None


def discard_command(folder: Path, session_id: str, wait_s: float = END_WAIT_S) -> int:
    """Delete the session's branches and checkouts; 1 when something could not be deleted.
    ``wait_s``: how long to wait for the launcher's end work."""
    found = _session(folder, session_id, "discard", wait_s)
    if found is None:
        return EXIT_USAGE
    _, repository, lock = found
    with lock:
        result = discard_session(repository, folder, session_id)
    if (workspace_summary(folder) or {}).get("kind") == "folder":
        print(f"removed the session's own repository of {repository}; the folder is left as it is")
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
    if summary.get("kind") == "folder":
        applied = "applied to" if summary.get("applied") else "until apply writes into"
        return f"  {summary['branch']} (its own repository; {applied} {summary['repository']})"
    where = f"{summary['branch']} (in its store until apply)" if summary.get("store") else str(summary["branch"])
    left = int(summary["checkouts"])  # type: ignore[call-overload]
    return f"  {where}, {left} checkout{'s' * (left != 1)} left" if left else f"  {where}"
