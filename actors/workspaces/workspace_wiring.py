"""The session's git workspace at start and at the end: open it (or say why not), give
planning its read-only checkout, and at the end remove what is no longer needed and tell the
user where the work is and what they can do with it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from meta_orchestrator.actors.workspaces.folder_workspace import check_folder, import_folder
from meta_orchestrator.actors.workspaces.git_command import NO_DRIVERS, WorkspaceError
from meta_orchestrator.actors.files.session_files import SessionFileError
from meta_orchestrator.actors.workspaces.workspace_apply import snapshot_base
from meta_orchestrator.actors.workspaces.workspaces import (
    RECORD_FILE,
    SessionRepo,
    check_can_start,
    discard_session,
    open_session_repo,
    probe_repository,
    where_branch,
)
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox

log = logging.getLogger(__name__)

PLAN_VIEW = "plan"
_MAX_STAT_LINES = 40

Say = Callable[[str], None]


def say_on_stderr(text: str) -> None:
    """How the launcher tells the user about the workspace at start."""
    print(f"orchestrate: {text}", file=sys.stderr, flush=True)


def isolation_refused(target: Path, workspace: Path, include_uncommitted: bool = False) -> str | None:
    """Why a new session on ``target`` can be neither a repository's branch nor an imported
    folder, with the fix; None: it can. Read only: checked before the session folder is made.
    ``include_uncommitted``: a repository mid-merge, mid-rebase... is refused too (its
    half-made state would become the session's base)."""
    try:
        if isinstance(probe_repository(target), str):
            check_folder(target, workspace)
        else:
            check_can_start(target, include_uncommitted)
    except WorkspaceError as exc:  # RepositoryRefused, ImportRefused: the fix is named
        return str(exc)
    return None


def in_place_note(target: Path) -> str:
    """What an in-place session says at start, in the log and at its end."""
    return (
        f"IN PLACE: the agents write straight into {target}: no session branch, no checkout, and nothing "
        "to undo or discard their changes"
    )


def open_workspace(
    target: Path,
    session_dir: Path,
    session_id: str,
    include_uncommitted: bool,
    resuming: bool,
    say: Say | None = say_on_stderr,
    no_branch: Say | None = None,
    bwrap: str | None = None,
    in_place: bool = False,
) -> SessionRepo | None:
    """The session's branch and checkouts, or None: the agents work in the target itself,
    only when asked (``in_place``, ``orchestrate <task> --in-place``), said loudly.

    A folder without git, or a repository without a commit, is imported into the session's
    own repository (workspaces.folder_workspace). A resumed session keeps what it started with:
    its workspace if it had one, none if it ran in place (a repository made meanwhile must not
    move half its work elsewhere). ``bwrap``: the agents' OS sandbox; the orchestrator's git
    over their checkouts runs in it too, with the workspace (every session's files) hidden as
    it is from the agents.

    Raises:
        WorkspaceError: git failed, the folder cannot be imported, or the session was discarded.
    """
    if in_place or (resuming and not (session_dir / RECORD_FILE).exists()):
        note = in_place_note(target) + (" (it ran in place; it goes on that way)" if resuming else "")
        log.warning("%s", note)
        if no_branch is not None:
            no_branch(note)
        if say is not None:
            say(f"warning: {note}")
        return None
    sandbox = OsSandbox(bwrap=bwrap, hidden=(str(session_dir.parent),)) if bwrap is not None else None
    opened = open_session_repo(target, session_dir, session_id, include_uncommitted, sandbox=sandbox)
    if opened.repo is None:  # no git, or no commit: the folder becomes the session's own repository
        log.info("%s: importing the folder", opened.message)
        opened = import_folder(target, session_dir, session_id, sandbox=sandbox)
        if include_uncommitted:
            opened = opened._replace(message=f"{opened.message}\n(--include-uncommitted: the whole folder is the base)")
    for line in opened.message.splitlines():
        log.info("workspace: %s", line)
        if say is not None:
            say(line)
    return opened.repo


def plan_checkout(repo: SessionRepo) -> tuple[str, tuple[str, ...]] | None:
    """Planning's read-only checkout of the session branch, and what its sandbox must read;
    None: it cannot be made (said in the log), and planning takes the default breakdown
    (never the user's tree)."""
    try:
        view = repo.readonly_checkout(PLAN_VIEW, repo.tip())
    except (WorkspaceError, SessionFileError, OSError) as exc:
        log.warning("no checkout for planning (%s); the default breakdown is used", exc)
        return None
    return str(view.workdir), view.sandbox_paths()[1]


def abandon_workspace(repo: SessionRepo, session_dir: Path) -> None:
    """A new session that could not start: its branch and checkouts go (nothing ran there)."""
    result = discard_session(Path(repo.record.repository), session_dir, repo.session_id)
    for problem in result.problems:
        log.warning("%s", problem)


def finish_workspace(repo: SessionRepo, session_dir: Path, say: Say | None) -> list[str]:
    """At the end: remove the views and every checkout whose work is in the session branch
    (the branch always stays), then tell where the work is and the next commands. Returns the
    checkouts kept (work not merged, or a conflict to resolve)."""
    kept = _remove_finished_checkouts(repo)
    if say is None:
        return kept
    try:
        lines = end_report(repo, session_dir, kept)
    except (WorkspaceError, OSError) as exc:  # the session has ended: say so, never fail here
        lines = [f"the work is on {where_branch(repo.branch, repo.store)} (its diff cannot be shown: {exc})"]
    for line in lines:
        say(line)
    return kept


def _remove_finished_checkouts(repo: SessionRepo) -> list[str]:
    kept = []
    for name, record in list(repo.record.checkouts.items()):
        if record.kind == "assignment" and not record.present:
            continue
        try:
            repo.remove_checkout(name)
        except (WorkspaceError, OSError) as exc:
            log.info("keeping checkout %s: %s", name, exc)
            kept.append(name)
    return kept


def end_report(repo: SessionRepo, session_dir: Path, kept: list[str]) -> list[str]:
    """The lines that close a session with a branch: where, what changed, what next."""
    record, sid = repo.record, repo.session_id
    try:
        tip = repo.tip()
    except WorkspaceError as exc:
        return [f"the session branch is gone: {exc}"]
    if tip == record.base:
        lines = [
            f"{where_branch(repo.branch, repo.store)} has no change against its base {record.base[:10]}",
            f"next: orchestrate discard {sid}  (removes its branches and checkouts)",
        ]
        if record.kind == "folder":
            lines[0] = f"the session changed nothing in {record.repository} (its imported base {record.base[:10]})"
    else:
        lines = _work_lines(repo, tip)
    lines += _kept_lines(repo, session_dir, kept)
    return lines


def _work_lines(repo: SessionRepo, tip: str) -> list[str]:
    """Where the work is, its diffstat, and the next commands."""
    record, sid, branch = repo.record, repo.session_id, repo.branch
    git = repo.branch_git()
    stat = git.run("diff", "--stat", "--no-color", *NO_DRIVERS, record.base, tip, ok=(0, 1)).text.splitlines()
    if len(stat) > _MAX_STAT_LINES:
        stat = [*stat[: _MAX_STAT_LINES - 1], f" ... ({len(stat) - _MAX_STAT_LINES} more files)", stat[-1]]
    store = f"--git-dir {repo.store} " if repo.store is not None else ""
    where = where_branch(branch, repo.store)
    lines = [f"the work is on {where} (base {record.base[:10]}); git {store}diff --stat {record.base[:10]}..{branch}:"]
    lines += [f"  {line.strip()}" for line in stat]
    into = (record.user_branch or "").removeprefix("refs/heads/") or "your current branch"
    if record.kind == "folder":  # no git in the folder: apply writes the files, after a check
        lines[0] = (
            f"the work is on branch {branch} in the session's own repository {repo.store}, made from "
            f"{record.repository} (imported as base {record.base[:10]}; the folder is as it was); "
            f"git --git-dir {repo.store} diff --stat {record.base[:10]}..{branch}:"
        )
        lines.append(
            f"next: orchestrate apply {sid}  (writes the changed files into {record.repository}, "
            "after checking you did not change them meanwhile)"
        )
        lines.append(f"      throw it away: orchestrate discard {sid}  (its store and checkouts; the folder stays)")
        return lines
    snapshot = snapshot_base(record.base, record.user_head, record.include_uncommitted)
    if snapshot is not None:  # the base holds the user's uncommitted files: only the session's change is applied
        lines.append(
            f"next: orchestrate apply {sid}  (one commit on {into} of the changes since {snapshot[:10]}, "
            "the snapshot of your uncommitted files, which stay yours)"
        )
        fetch = f"git fetch {repo.store} {branch}"
        lines.append(f"      or: {fetch} && git diff --binary {snapshot[:10]} FETCH_HEAD | git apply -3")
    else:
        lines.append(f"next: orchestrate apply {sid}  (merges it into {into}; --squash for one commit)")
        fetch = (
            f"git merge {branch}" if repo.store is None else f"git fetch {repo.store} {branch} && git merge FETCH_HEAD"
        )
        lines.append(f"      or: {fetch}")
    lines.append(f"      throw it away: orchestrate discard {sid}  (its branches and checkouts)")
    return lines


def _kept_lines(repo: SessionRepo, session_dir: Path, kept: list[str]) -> list[str]:
    record, branch = repo.record, repo.branch
    lines = []
    for name in kept:
        # The layout of workspaces.workspaces: checkouts/<assignment>, views/<name>.
        where = session_dir / ("views" if name.startswith("view:") else "checkouts") / name.removeprefix("view:")
        left_out = record.checkouts[name].left_out if name in record.checkouts else ()
        ignored = record.checkouts[name].ignored if name in record.checkouts else ()
        if ignored:
            lines.append(
                f"kept checkout {name}: files its agent wrote that an ignore rule keeps off {branch} "
                f"(git add -f them there, or change the rule): {', '.join(ignored)}: {where}"
            )
        if left_out:
            lines.append(
                f"kept checkout {name}: the nested git repositories its agent made there are not on {branch} "
                f"(a gitlink to a commit only that checkout has would be of no use): {', '.join(left_out)}: {where}"
            )
        if ignored or left_out:
            continue
        lines.append(f"kept checkout {name} (work not in {branch}, or a conflict to resolve): {where}")
    return lines


__all__ = [
    "abandon_workspace",
    "end_report",
    "finish_workspace",
    "in_place_note",
    "isolation_refused",
    "open_workspace",
    "plan_checkout",
    "say_on_stderr",
]
