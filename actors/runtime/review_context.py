"""What a peer review is shown: the task, the assignment, the author's recent events, the change.

With a git workspace the change is the assignment's own (``workspace_change``): its commits
against its own base, or, while it still runs, its checkout's working tree against that base;
nothing of the user's uncommitted files or of other assignments. Without one it is read from
the target: ``git status`` and ``git diff HEAD`` with every untracked file, or, outside a git
repository, the files the author touched. Either is cut at ``diff_chars``.
"""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.runtime.git_command import WorkspaceError
from meta_orchestrator.actors.runtime.workspaces import SessionRepo
from meta_orchestrator.messages.events import Event
from meta_orchestrator.messages.review import ReviewTrigger
from meta_orchestrator.messages.session import AssignmentRecord

GIT_TIMEOUT_S = 10
FILE_CHARS = 6000
FINAL_TEXT_CHARS = 6000
EVENT_CHARS = 300


class Evidence:
    """What the authors did, per assignment: their latest events that say something (not
    status lines) and the files their milestones name."""

    def __init__(self, keep: int) -> None:
        self._keep = max(keep, 1)
        self._recent: dict[tuple[str, str], collections.deque[Event]] = {}
        self._touched: dict[str, list[str]] = collections.defaultdict(list)

    def add(self, event: Event) -> None:
        """Keep an event of an assignment (``event.assignment_id`` is set)."""
        assert event.assignment_id is not None
        if event.type != "status":
            key = (event.agent, event.assignment_id)
            self._recent.setdefault(key, collections.deque(maxlen=self._keep)).append(event)
        if event.payload.file and event.type == "milestone":
            self._touched[event.assignment_id].append(event.payload.file)

    def recent(self, author: str | None, assignment_id: str | None, count: int) -> list[Event]:
        if author is None or assignment_id is None:
            return []
        return list(self._recent.get((author, assignment_id), ()))[-count:]

    def touched(self, assignment_id: str | None) -> list[str]:
        return list(self._touched.get(assignment_id or "", ()))


def review_context(
    task: str,
    triggers: Sequence[ReviewTrigger],
    record: AssignmentRecord | None,
    recent: Iterable[Event],
    touched: Sequence[str],
    target: Path,
    diff_chars: int,
    change: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The context saved in ``request.json`` and rendered into the reviewers' prompt;
    ``change`` given (``workspace_change``), else read from the target."""
    files = [*(record.files_written if record else ()), *touched]
    return {
        "task": task,
        "triggers": [t.model_dump(mode="json") for t in triggers],
        "assignment": _assignment(record) if record is not None else None,
        "recent_events": _events(recent),
        "change": change if change is not None else change_in(target, files, diff_chars),
    }


def workspace_change(repo: SessionRepo, record: AssignmentRecord | None, limit: int) -> dict[str, Any]:
    """The change a review quotes, with ``commit``: what its peers read (None: it cannot be read).

    An assignment not finished (still running, or its work not merged) is shown as its
    checkout's working tree now, committed aside; a finished one as its commits against its
    own base; a review of no assignment as the session branch against the session's base.
    """
    try:
        if record is None:
            changes = repo.session_changes(max_total_bytes=limit + 1)
            text = "\n".join(d.text for d in changes.diffs)
            how = f"the session branch {repo.branch} against its base {repo.base[:10]}"
            return _change(how, text, limit, changes.tip)
        checkout = repo.record.checkouts.get(record.id)
        if checkout is None or checkout.kind != "assignment":
            return _change(f"{record.id} has no checkout: it changed nothing yet", "", limit, repo.tip())
        if record.phase not in ("gated", "done") and checkout.present:
            commit, text = repo.working_tree_commit(record.id)
            how = f"the working tree of {record.id}'s checkout against its base {checkout.base[:10]} (not merged yet)"
            return _change(how, text, limit, commit)
        how = f"the commits of {record.id} against its own base {checkout.base[:10]}"
        return _change(how, repo.assignment_diff(record.id), limit, checkout.head or checkout.base)
    except WorkspaceError as exc:
        return _change(f"the change could not be read: {exc}", "", limit, None)


def _change(how: str, text: str, limit: int, commit: str | None) -> dict[str, Any]:
    return {"how": how, "text": _cut(text or "(no change)", limit), "commit": commit}


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + (
        f"\n[... cut at {limit} of {len(text)} characters (review.diff_chars); read the files for the rest]"
    )


def _assignment(record: AssignmentRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "role": record.role,
        "agent": record.agent,
        "title": record.title,
        "instructions": record.instructions,
        "status": record.status,
        "final_text": record.final_text[-FINAL_TEXT_CHARS:],
        "files_written": list(record.files_written),
    }


def _events(recent: Iterable[Event]) -> list[dict[str, Any]]:
    shown = []
    for event in recent:
        text = (event.payload.text or "").strip().replace("\n", " ")
        if text:
            shown.append({"seq": event.seq, "type": event.type, "text": text[:EVENT_CHARS]})
    return shown


def change_in(target: Path, files: Sequence[str], limit: int) -> dict[str, Any]:
    """The change in the target: git diff (with untracked files) or the touched files."""
    status = _git(target, "status", "--porcelain", "--untracked-files=all")
    if status is not None:
        diff = _git(target, "diff", "HEAD") or _git(target, "diff") or ""
        parts = [
            f"$ git status --porcelain\n{status or '(clean)'}",
            f"$ git diff HEAD\n{diff or '(no change to tracked files)'}",
        ]
        for line in status.splitlines():
            if line.startswith("??"):
                parts.append(file_excerpt(target / line[3:].strip(), target))
        how = "git diff of the target, with untracked files"
    else:
        parts = [file_excerpt(Path(f) if os.path.isabs(f) else target / f, target) for f in dict.fromkeys(files)]
        how = "the files the author touched (the target is not a git repository)"
    return {"how": how, "text": _cut("\n\n".join(p for p in parts if p), limit)}


def _git(target: Path, *args: str) -> str | None:
    """git output in the target, or None when it is not a repository (or git is missing)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(target), *args],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace").rstrip()


def file_excerpt(path: Path, target: Path) -> str:
    """A file as the reviewers see it: its name, then its text (cut), or why it is not shown."""
    try:
        shown = path.relative_to(target)
    except ValueError:
        shown = path
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"--- {shown}: cannot be read ({exc.strerror or exc})"
    if b"\0" in data[:8192]:
        return f"--- {shown}: binary file ({len(data)} bytes), not shown"
    text = data.decode("utf-8", errors="replace")
    if len(text) > FILE_CHARS:
        text = text[:FILE_CHARS] + f"\n[... cut: {len(text) - FILE_CHARS} more characters]"
    return f"--- {shown}\n{text}"


__all__ = ["Evidence", "change_in", "file_excerpt", "review_context", "workspace_change"]
