"""What a session changed, read from git: per file (lines added and removed, binary files
marked), per assignment (each merge into the session branch), and the diff text per file,
cut at a size cap. Every diff is taken with ``--no-renames`` so that the per-file counts and
the per-file texts list the same paths in the same order (a rename is a delete and an add).
"""

from __future__ import annotations

from collections.abc import Sequence

from meta_orchestrator.actors.workspaces.git_command import Git
from meta_orchestrator.messages.workspace import (
    AssignmentChanges,
    FileChange,
    FileDiff,
    FileStatus,
    MergeRecord,
    SessionChanges,
    WorkspaceRecord,
)

# No external diff, no textconv, no colour: the output is data, whatever the user's config says.
DIFF_OPTIONS = ("--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")
_STATUS: dict[str, FileStatus] = {"A": "added", "M": "modified", "D": "deleted", "T": "type_changed", "U": "unmerged"}


def parse_raw_numstat(fields: Sequence[str]) -> tuple[FileChange, ...]:
    """The ``git diff --raw --numstat -z --no-renames`` output (split on NUL) as file changes."""
    statuses: dict[str, FileStatus] = {}
    order: list[str] = []
    counts: dict[str, tuple[int | None, int | None]] = {}
    i = 0
    while i < len(fields):
        field = fields[i]
        if field.startswith(":") and i + 1 < len(fields):
            path = fields[i + 1]
            statuses[path] = _STATUS.get(field.split(" ")[-1][:1], "unknown")
            order.append(path)
            i += 2
            continue
        added, removed, path = field.split("\t", 2)
        counts[path] = (None, None) if added == "-" else (int(added), int(removed))
        i += 1
    changes = []
    for path in order:
        lines_added, lines_removed = counts.get(path, (0, 0))
        changes.append(
            FileChange(
                path=path, status=statuses[path], added=lines_added, removed=lines_removed, binary=lines_added is None
            )
        )
    return tuple(changes)


def diff_files(git: Git, before: str, after: str) -> tuple[FileChange, ...]:
    """The files that differ between two commits, with their counts."""
    result = git.run("diff", "--raw", "--numstat", "-z", "--no-renames", *DIFF_OPTIONS, before, after)
    return parse_raw_numstat(result.fields)


def diff_texts(
    git: Git, before: str, after: str, files: Sequence[FileChange], max_file: int, max_total: int
) -> tuple[tuple[FileDiff, ...], bool]:
    """The unified diff of each file in ``files`` (as ``diff_files`` listed them), each cut at
    ``max_file`` bytes; git's output is read up to ``max_total`` bytes, later files get no
    text. Returns the texts and whether anything was cut."""
    result = git.run("diff", "--no-renames", *DIFF_OPTIONS, before, after, max_output=max_total)
    sections = _split_sections(result.stdout)
    if len(sections) > len(files) or (not result.truncated and len(sections) != len(files)):
        # Not the listing we expected (a path with a newline?): one text, not a wrong split.
        sections = [result.stdout]
        files = [FileChange(path="(all files)", status="unknown", added=None, removed=None)]
    texts = []
    cut = result.truncated
    for index, change in enumerate(files):
        if index < len(sections):
            raw, partial = sections[index], result.truncated and index == len(sections) - 1
        else:
            raw, partial = b"", True  # past what was read
        over = len(raw) > max_file
        cut = cut or over
        text = raw[:max_file].decode("utf-8", "replace")
        texts.append(FileDiff(path=change.path, text=text, truncated=over or partial))
    return tuple(texts), cut


def _split_sections(patch: bytes) -> list[bytes]:
    """A patch cut at each ``diff --git`` header line."""
    if not patch:
        return []
    starts = [0] if patch.startswith(b"diff --git ") else []
    position = patch.find(b"\ndiff --git ")
    while position != -1:
        starts.append(position + 1)
        position = patch.find(b"\ndiff --git ", position + 1)
    return [patch[start:end] for start, end in zip(starts, [*starts[1:], len(patch)], strict=True)]


def assignment_segments(base: str, tip: str, merges: Sequence[MergeRecord]) -> list[tuple[str | None, str, str]]:
    """``(assignment_id, before, after)`` steps from ``base`` to ``tip``: each recorded merge,
    with a step of no assignment where the branch moved without one (before, between, after)."""
    steps: list[tuple[str | None, str, str]] = []
    cursor = base
    for merge in merges:
        if merge.before != cursor:
            steps.append((None, cursor, merge.before))
        steps.append((merge.assignment_id, merge.before, merge.after))
        cursor = merge.after
    if cursor != tip:
        steps.append((None, cursor, tip))
    return steps


def assignment_changes(git: Git, base: str, tip: str, merges: Sequence[MergeRecord]) -> tuple[AssignmentChanges, ...]:
    """Per merge into the session branch, the files it brought."""
    found = []
    for assignment_id, before, after in assignment_segments(base, tip, merges):
        files = diff_files(git, before, after)
        found.append(
            AssignmentChanges(
                assignment_id=assignment_id,
                before=before,
                after=after,
                files=files,
                added=sum(f.added or 0 for f in files),
                removed=sum(f.removed or 0 for f in files),
            )
        )
    return tuple(found)


def session_changes(
    git: Git, record: WorkspaceRecord, tip: str, max_file_bytes: int, max_total_bytes: int
) -> SessionChanges:
    """The session branch (at ``tip``) against its base: per file, per assignment, and the text."""
    files = diff_files(git, record.base, tip)
    texts, cut = diff_texts(git, record.base, tip, files, max_file_bytes, max_total_bytes)
    return SessionChanges(
        session_id=record.session_id,
        branch=record.branch,
        store=record.store,
        folder=record.repository if record.kind == "folder" else None,
        base=record.base,
        tip=tip,
        files=files,
        assignments=assignment_changes(git, record.base, tip, record.merges),
        diffs=texts,
        added=sum(f.added or 0 for f in files),
        removed=sum(f.removed or 0 for f in files),
        truncated=cut,
    )
