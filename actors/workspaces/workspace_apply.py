"""What ``orchestrate apply`` brings in when the session's base is a snapshot of the user's
uncommitted files (``--include-uncommitted``), and how its refusals name files.

That snapshot is no commit of the user's: their work in progress, written into the session's
store. Merging the session branch as it is would commit that work under the orchestrator's
name (and a ``git stash pop`` afterwards would conflict with itself). So apply brings in the
session's own changes only, from the snapshot to the tip: merged three-way (base: the
snapshot) onto the user's HEAD as it is then, as one commit. Whatever the user did with their
work meanwhile (committed it, stashed it, kept it uncommitted) stays theirs.
"""

from __future__ import annotations

from collections.abc import Sequence

from meta_orchestrator.actors.workspaces.git_command import TOOL_IDENTITY, Git

SHOWN_NAMES = 5  # a refusal names a few files, then the count: it stays one readable line


def few(names: Sequence[str], shown: int = SHOWN_NAMES) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 4,995 more (5,000 files)``."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown:,} more ({len(names):,} files)"


def snapshot_base(base: str, user_head: str, include_uncommitted: bool) -> str | None:
    """The snapshot commit a session started from, or None: its base is the user's own commit."""
    return base if include_uncommitted and base != user_head else None


def replayed_tree(git: Git, head: str, snapshot: str, session_tip: str) -> tuple[str | None, tuple[str, ...]]:
    """The tree of ``head`` with the session's own changes (``snapshot``..``session_tip``)
    merged in, three-way with the snapshot as the base; or (None, the files that conflict).

    git 2.39's merge-tree takes no ``--merge-base`` (2.40 does): a stand-in commit of HEAD's
    tree whose parent is the snapshot makes the snapshot the merge base. Against it, the
    user's work in progress reads as undone (HEAD lacks it), so the merge keeps HEAD's files
    wherever the session changed nothing, and the session's changes wherever it did. The
    stand-in and the merged tree are loose objects no ref names.
    """
    message = "orchestrate apply: the tree of your HEAD on the session's snapshot (a merge base; no branch)"
    stand_in = git.out("commit-tree", f"{head}^{{tree}}", "-p", snapshot, "-m", message, env=TOOL_IDENTITY)
    merged = git.run(
        "merge-tree", "--write-tree", "--no-messages", "--name-only", "-z", stand_in, session_tip, ok=(0, 1)
    )
    if merged.returncode == 1:
        return None, tuple(name for name in dict.fromkeys(merged.fields[1:]) if name)
    return merged.fields[0], ()


def snapshot_conflict(branch: str, into: str, files: Sequence[str]) -> str:
    """Why apply refuses when the session's changes and the user's branch meet in a file."""
    return (
        f"the changes {branch} made on top of the snapshot of your uncommitted files conflict with {into} "
        f"in {few(files)}; nothing was changed. If that is your work in progress the session built on, "
        "commit it first (git commit), then apply again: the session's changes then go on top of it"
    )


def overlap_refusal(files: Sequence[str]) -> str:
    """Why apply refuses when files it would change hold uncommitted changes of the user's."""
    return (
        f"your uncommitted changes touch files the session changed: {few(files)}; nothing was changed. "
        "Commit them (apply then merges the session's changes into them), or stash them, apply, "
        "and `git stash pop`"
    )
