"""The session's git workspace: its base and branch, each checkout, each merge, the change.

``WorkspaceRecord`` is saved as ``workspace.json`` in the session folder so that a resumed
session finds its base, branch and checkouts again; ``SessionChanges`` is what the Changes
panel shows; ``MergeResult`` and ``ApplyResult`` say how a merge into the session branch, or
into the user's branch, ended.
"""

from __future__ import annotations

from typing import Any, Literal

from meta_orchestrator.messages.base import AgentName, Frozen, Message, Timestamp, utc_now
from pydantic import ConfigDict, Field

CheckoutKind = Literal["assignment", "view"]
# "repository": the target is a git repository, the session branch is merged into it at apply;
# "folder": a folder without git (or a repository without a commit) imported into the
# session's store as its base, the changed files written back into it at apply.
WorkspaceKind = Literal["repository", "folder"]
MergeStatus = Literal["fast_forward", "merged", "up_to_date", "conflict"]
ApplyStatus = Literal["fast_forward", "merged", "squashed", "replayed", "up_to_date"]
FileStatus = Literal["added", "modified", "deleted", "type_changed", "unmerged", "unknown"]


class CheckoutRecord(Frozen):
    """One checkout in the session folder: an assignment's (on its own branch) or a
    read-only view of one commit (planning, reviews)."""

    name: str
    kind: CheckoutKind
    branch: str | None = Field(default=None, description="orchestrate/<session>/<assignment>; None for a view")
    base: str = Field(description="the commit the assignment's change is measured from (a view: its commit)")
    head: str | None = Field(default=None, description="the assignment's last commit, once it has one")
    merged_head: str | None = Field(default=None, description="the head last merged into the session branch")
    conflicts: tuple[str, ...] = Field(default=(), description="files left with conflict markers to resolve")
    config_digest: str = Field(description="sha256 of the checkout's git config as the orchestrator wrote it")
    present: bool = Field(default=True, description="False once removed: base and head still serve its diff")
    left_out: tuple[str, ...] = Field(
        default=(),
        description="nested git repositories its agent made in it, left out of its commits (kept in the checkout)",
    )
    ignored: tuple[str, ...] = Field(
        default=(),
        description="files its agent wrote that an ignore rule keeps off its commits, each with the rule (kept)",
    )
    submodules: tuple[str, ...] = Field(
        default=(), description="submodule folders filled read-only from the user's checkouts of them"
    )
    empty_submodules: tuple[str, ...] = Field(
        default=(), description="submodule folders left empty: the user has not checked them out"
    )


class MergeRecord(Frozen):
    """The session branch moved from ``before`` to ``after`` by merging one assignment."""

    assignment_id: str
    before: str
    after: str
    fast_forward: bool
    at: Timestamp = Field(default_factory=utc_now)


class WorkspaceRecord(Frozen):
    """What a session knows of its repository: saved in workspace.json, reread on resume."""

    session_id: str
    kind: WorkspaceKind = Field(
        default="repository",
        description="repository: a git repository's branch; folder: a folder imported into the session's store",
    )
    repository: str = Field(description="the top folder of the user's working tree (a folder: the folder itself)")
    git_dir: str = Field(
        description="the user's git folder of that working tree (its index lives there); a folder: the store"
    )
    common_dir: str = Field(
        description="the git folder holding objects and refs (differs in a linked worktree); a folder: the store"
    )
    prefix: str = Field(default="", description="the target's folder inside the repository, '' at the top")
    branch: str = Field(
        description="orchestrate/<session_id>, in the session's store (or, older, the user's repository)"
    )
    store: str | None = Field(
        default=None,
        description="the session's own bare repository, holding its branch and objects until `orchestrate apply`; "
        "None: an older session, whose branch is in the user's repository",
    )
    base: str = Field(description="the commit the session starts from")
    user_head: str = Field(description="the user's HEAD commit at the start")
    user_branch: str | None = Field(default=None, description="refs/heads/<name>, or None when HEAD was detached")
    uncommitted_count: int = 0
    uncommitted: tuple[str, ...] = Field(default=(), description="the user's uncommitted files (the first ones)")
    include_uncommitted: bool = False
    tip: str = Field(description="the session branch's commit as last set by the session")
    checkouts: dict[str, CheckoutRecord] = Field(default_factory=dict)
    merges: tuple[MergeRecord, ...] = ()
    discarded: bool = False
    applied: str | None = Field(default=None, description="a folder's session: the tip `orchestrate apply` wrote")
    created_at: Timestamp = Field(default_factory=utc_now)


class MergeResult(Frozen):
    """How merging an assignment into the session branch ended."""

    assignment_id: str
    status: MergeStatus
    commit: str = Field(description="the session branch's commit afterwards (unchanged on a conflict)")
    conflicts: tuple[str, ...] = Field(default=(), description="files both sides changed, on a conflict")

    @property
    def ok(self) -> bool:
        """The work is in the session branch."""
        return self.status != "conflict"


class FolderApplyResult(Frozen):
    """``orchestrate apply`` of a folder's session: the files written into the folder."""

    session_id: str
    folder: str
    already: bool = Field(default=False, description="the folder already held the session's changes")
    written: tuple[str, ...] = Field(default=(), description="files written (added, changed, mode or type)")
    deleted: tuple[str, ...] = ()


class ApplyResult(Frozen):
    """``orchestrate apply``: what came into the user's branch."""

    session_id: str
    status: ApplyStatus
    branch: str = Field(description="the user's branch the session was applied to")
    commit: str = Field(description="the user's branch's commit afterwards")
    files: tuple[str, ...] = Field(default=(), description="files the apply changed in the user's tree")


class DiscardResult(Frozen):
    """``orchestrate discard``: what was deleted, and what could not be."""

    session_id: str
    branches: tuple[str, ...] = ()
    checkouts: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


class FileChange(Frozen):
    """One file's change: lines added and removed (None for a binary file)."""

    path: str
    status: FileStatus
    added: int | None
    removed: int | None
    binary: bool = False


class AssignmentChanges(Frozen):
    """What one merge into the session branch brought (``assignment_id`` None: commits the
    session did not make, e.g. someone committed on the branch)."""

    assignment_id: str | None
    before: str
    after: str
    files: tuple[FileChange, ...]
    added: int
    removed: int


class FileDiff(Frozen):
    """The unified diff of one file, as plain text, cut at the size cap."""

    path: str
    text: str
    truncated: bool = False


class SessionChanges(Frozen):
    """The session branch against its base: per file, per assignment, and the diff text."""

    session_id: str
    branch: str
    base: str
    tip: str
    files: tuple[FileChange, ...]
    assignments: tuple[AssignmentChanges, ...]
    diffs: tuple[FileDiff, ...]
    added: int
    removed: int
    truncated: bool = Field(default=False, description="some diff text was cut at the size cap")
    store: str | None = Field(default=None, description="the git folder the branch is in, when not the user's")
    folder: str | None = Field(
        default=None, description="a folder's session (no git there): `orchestrate apply` writes the files into it"
    )


# -- Coordinator <-> Workspace actor ------------------------------------------------------------


class PrepareCheckout(Message):
    """Coordinator -> Workspace: make (or reuse) the assignment's checkout; answered with
    ``CheckoutReady`` or ``CheckoutFailed`` to ``reply_to``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assignment_id: str
    writing: bool = True
    reply_to: Any = Field(default=None, exclude=True)


class CheckoutReady(Message):
    """Workspace -> Coordinator: the agent works in ``workdir``; ``read_only_dirs`` are what a
    sandbox must let it read for git to work there (the shared objects)."""

    assignment_id: str
    workdir: str
    base: str = Field(description="the commit the checkout started from")
    read_only_dirs: tuple[str, ...] = ()
    note: str | None = Field(default=None, description="for the agent's prompt: its checkout's submodule folders")


class CheckoutFailed(Message):
    """Workspace -> Coordinator: no checkout could be made; the run does not start."""

    assignment_id: str
    error: str


class MergeAssignment(Message):
    """Coordinator -> Workspace: commit everything in the assignment's checkout and merge it
    into the session branch; answered with ``AssignmentMerged`` (a conflict included)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    assignment_id: str
    agent: AgentName
    title: str
    files_written: tuple[str, ...] = Field(default=(), description="what its CLI reported writing (ignored ones kept)")
    reply_to: Any = Field(default=None, exclude=True)


class AssignmentMerged(Message):
    """Workspace -> Coordinator: how the merge ended. ``commit``: the assignment's commit
    (None: it changed nothing); on a conflict the checkout already holds the session branch
    merged in, with the markers, for its agent to resolve. ``error``: git itself failed."""

    assignment_id: str
    result: MergeResult | None = None
    commit: str | None = None
    error: str | None = None
    left_out: tuple[str, ...] = ()  # nested git repositories its agent made: not committed, kept in its checkout


class ChangesUpdated(Message):
    """Workspace -> listeners (the dashboard): the session branch's change after a merge."""

    changes: SessionChanges


class WorkspaceNotOpened(Message):
    """Launcher -> listeners (the dashboard), at start: the session has no git workspace, so
    there is no session branch and no ``ChangesUpdated`` will come; the agents work in the
    target itself (``orchestrate <task> --in-place``, or a resumed session that ran so).
    ``reason``: what the launcher warned."""

    reason: str
