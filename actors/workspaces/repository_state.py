"""A repository in the middle of a git operation (a merge, rebase, cherry-pick, revert, am or
bisect), or with unmerged files: its uncommitted files are then half-made (conflict markers,
a half-applied patch). ``--include-uncommitted`` would copy them into the session's base
without a word, so such a start is refused, naming the state and the fix; a session from
HEAD alone starts, and its start message says what HEAD is then.

git keeps these states as files in the worktree's own git folder (``git rev-parse
--absolute-git-dir``), the same as ``git status`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meta_orchestrator.actors.workspaces.git_command import Git
from meta_orchestrator.actors.workspaces.workspace_apply import few


@dataclass(frozen=True)
class Unfinished:
    """An operation git has not finished: what it is, and how to finish or abort it."""

    what: str
    fix: str


# The first marker found wins: rebase-apply/applying is git am's, rebase-apply alone a rebase's;
# a sequencer folder without CHERRY_PICK_HEAD or REVERT_HEAD is a series stopped between commits.
_MARKERS = (
    ("rebase-merge", Unfinished("a rebase", "git rebase --continue, or git rebase --abort")),
    ("rebase-apply/applying", Unfinished("a git am", "git am --continue, or git am --abort")),
    ("rebase-apply", Unfinished("a rebase", "git rebase --continue, or git rebase --abort")),
    ("MERGE_HEAD", Unfinished("a merge", "resolve and git commit, or git merge --abort")),
    ("CHERRY_PICK_HEAD", Unfinished("a cherry-pick", "git cherry-pick --continue, or git cherry-pick --abort")),
    ("REVERT_HEAD", Unfinished("a revert", "git revert --continue, or git revert --abort")),
    ("sequencer", Unfinished("a cherry-pick or revert series", "git cherry-pick --continue (or --abort)")),
    ("BISECT_LOG", Unfinished("a bisect", "git bisect reset when you are done")),
)


def unfinished_operation(git_dir: Path) -> Unfinished | None:
    """The operation the worktree whose git folder is ``git_dir`` is in the middle of, or None."""
    for marker, unfinished in _MARKERS:
        if (git_dir / marker).exists():
            return unfinished
    return None


def unmerged_files(git: Git) -> list[str]:
    """The files the user's index holds unresolved (conflict stages), each once."""
    entries = git.run("ls-files", "--unmerged", "-z").fields
    return list(dict.fromkeys(entry.partition("\t")[2] for entry in entries if "\t" in entry))


def unfinished_refusal(top: str, unfinished: Unfinished, head: str) -> str:
    """Why a start with --include-uncommitted is refused mid-operation, with the fix."""
    return (
        f"{top} is in the middle of {unfinished.what}: its uncommitted files are that operation's half-made "
        "state (conflict markers, maybe), which --include-uncommitted would copy into the session's base. "
        f"Finish or abort it first ({unfinished.fix}), then start again; or start without "
        f"--include-uncommitted, from HEAD ({head[:10]}). Nothing was started"
    )


def unmerged_refusal(top: str, files: list[str]) -> str:
    """Why a start with --include-uncommitted is refused with unmerged files, naming them."""
    return (
        f"{top} has unmerged files (conflicts not resolved): {few(files)}; --include-uncommitted would copy "
        "their conflict markers into the session's base. Resolve them (edit, then git add), then start again; "
        "or start without --include-uncommitted. Nothing was started"
    )


def unfinished_note(unfinished: Unfinished, head: str, branch: str | None) -> str:
    """What the start message says of a session from HEAD while an operation is unfinished."""
    on = f"on {branch.removeprefix('refs/heads/')}" if branch else "detached"
    return (
        f"your repository is in the middle of {unfinished.what} ({unfinished.fix}): the session starts "
        f"from HEAD {head[:10]} ({on}), without that operation's uncommitted state"
    )
