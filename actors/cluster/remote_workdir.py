"""The driver's side of a remote run's work: it travels to the node and back by git.

A CLI on another machine cannot see the folder it is to work in (the assignment's checkout,
or the target itself without a workspace), so around the spawn and the end of a remote run
the worker calls this module:

- ``spawn``: the folder's current state, uncommitted and untracked files included (ignored
  ones not), becomes one commit, made with a private index so that nothing of the folder's
  own index, HEAD or branches moves; a bundle of it goes with the start (the node checks it
  out on its own disk). A local host just spawns.
- ``finish``: when the CLI has ended, its node has committed what the run changed and sent
  that commit back as a bundle; the driver fetches it and brings the folder's files to it,
  again with the private index. The folder then holds the run's changes as if the CLI had
  written them here (the Workspace actor's commit and merge go on as for a local run); HEAD,
  the index and every branch are as they were. A read-only run brings nothing back.

A run whose node was lost brings nothing back: the folder is still at the run's start, which
is where its retry begins. No ray here (the cluster host is duck-typed: ``spawn`` takes
``work``); the git calls are the real git, hardened as every call over an agent's tree
(``HOSTILE_TREE_CONFIG``: no hook, fsmonitor or submodule; nested repositories left out),
and, when the run is confined, inside its sandbox's bwrap without network. An assignment's
checkout is sent with the git folder the workspace made for it, never the one its tree's
``.git`` names (its agent may have rewritten that file).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.base import Draft, Launch, draft
from meta_orchestrator.actors.cluster.bundles import BundleError, apply_bundle, make_bundle
from meta_orchestrator.actors.workspaces.git_command import (
    HOSTILE_TREE_CONFIG,
    TOOL_IDENTITY,
    Git,
    WorkspaceError,
    add_all,
    confined_git,
)
from meta_orchestrator.actors.processes.process_host import describe_spawn_error
from meta_orchestrator.actors.cluster.remote_checkout import RemoteWork
from meta_orchestrator.actors.workspaces.workspaces import checkout_of, object_folders
from meta_orchestrator.actors.sandbox.bwrap import Confinement
from meta_orchestrator.messages.cluster import RemoteRunChanged, RunNode, RunPlaced

log = logging.getLogger(__name__)

REF_PREFIX = "refs/orchestrate/remote"  # a run's start and result, for as long as it needs them


class RemoteWorkError(OSError):
    """The run's folder could not be sent (git failed, or it is no git work tree)."""


@dataclass(frozen=True)
class RunEnd:
    """What the end of a run adds to its report: ``error`` (the run failed for a reason of
    the cluster's: its node was lost, its changes could not be brought back) with ``kind``
    (``node_lost``, ``work_lost``), or ``spawn_error`` (its node could not start it)."""

    error: str | None = None
    kind: str | None = None
    spawn_error: str | None = None
    changes: str | None = None  # what came back, said in the run's log
    moved: tuple[str, str] | None = None  # (the node's checkout, the driver's folder)

    def drafts(self) -> list[Draft]:
        """The events that say it in the run's log (a node_lost error is Recovery's evidence)."""
        out = [draft("status", kind="remote_work", text=self.changes)] if self.changes else []
        if self.error:
            out.append(draft("error", kind=self.kind, text=self.error, terminal=True, details={"cause": self.kind}))
        return out

    def here(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """Paths the CLI named on its node, as the driver's (its files written)."""
        if self.moved is None:
            return paths
        node, local = self.moved
        return tuple(local + p[len(node) :] if p == node or p.startswith(node + "/") else p for p in paths)


@dataclass
class SentWork:
    """One remote run's folder as it was sent: how to bring the run's changes back into it."""

    git: Git
    git_dir: Path
    top: str
    start: str
    start_ref: str
    index: Path  # the private index of the start (its stat data saves re-reading the files)
    private: Path
    bring_back: bool


def is_remote(host: Any) -> bool:
    """True for a host whose CLIs run on other machines."""
    return bool(getattr(host, "remote", False))


def spawn(
    host: Any,
    launch: Launch,
    confinement: Confinement | None,
    *,
    folder: Path,
    writing: bool,
    subject: str,
    stand_ins: tuple[str, ...] = (),
    on_change: Any = None,
) -> tuple[Any, SentWork | None]:
    """Start the run on ``host``; on a remote one, in a checkout of ``folder`` (a git work
    tree or a folder inside one) made on its node. ``writing``: the run's changes come back.

    Raises:
        OSError: the host could not start it; ``RemoteWorkError``: the folder could not be sent.
    """
    if not is_remote(host):
        return host.spawn(launch, confinement), None
    sent, work, bundle = _send(folder, writing, subject, stand_ins, confinement)
    try:
        return host.spawn(launch, confinement, on_change=on_change, work=work, bundle=bundle), sent
    except BaseException:
        _forget(sent)
        raise


def placed(agent: str, command: Any, fact: RemoteRunChanged) -> RunPlaced:
    """The fact that tells the coordinator where ``command``'s run now runs."""
    node = RunNode(node_id=fact.node_id or "unknown", node_ip=fact.node_ip, hostname=fact.hostname)
    return RunPlaced(agent=agent, assignment_id=command.assignment_id, node=node, pid=fact.pid)


def sampler(proc: Any) -> Callable[[], Any] | None:
    """How the resource monitor reads a remote run's tree (its node's latest sample); None
    for a local run, whose tree the monitor reads itself."""
    if proc is None or not hasattr(proc, "latest_sample"):
        return None
    return lambda: proc.latest_sample


def finish(proc: Any, sent: SentWork | None) -> RunEnd:
    """After a run ended (every line read): bring a remote run's changes into its folder, and
    say how a run that did not end by itself on its node ended. A local run: nothing to do."""
    end = getattr(proc, "end", None)
    if end is None:
        return RunEnd()
    try:
        if end.kind == "node_lost":
            where = f" {proc.hostname} ({proc.node_ip})" if getattr(proc, "node_ip", None) else ""
            return RunEnd(
                kind="node_lost", error=f"node lost: the cluster node{where} running this CLI was lost ({end.detail})"
            )
        if end.kind == "spawn_failed":
            return RunEnd(spawn_error=_spawn_failure(proc))
        if end.kind == "cancelled":
            return RunEnd()  # stopped before it was placed: it never ran
        if sent is None:
            return RunEnd()
        moved = (proc.workdir, sent.top) if getattr(proc, "workdir", None) else None
        if not sent.bring_back:
            return RunEnd(moved=moved)
        back = _bring_back(sent, getattr(proc, "work_back", None), f"{proc.hostname} ({proc.node_ip})")
        return dataclasses.replace(back, moved=moved)
    finally:
        if sent is not None:
            _forget(sent)


# -- sending ----------------------------------------------------------------------------------


def _send(
    folder: Path, writing: bool, subject: str, stand_ins: tuple[str, ...], confinement: Confinement | None
) -> tuple[SentWork, RemoteWork, Callable[[tuple[str, ...]], bytes]]:
    top, git_dir = _work_tree_of(folder)
    private = Path(tempfile.mkdtemp(prefix="orchestrate-send-"))  # 0700
    confine = None
    if confinement is not None:
        objects = tuple(str(p) for p in object_folders(Path(git_dir)))
        confine = confined_git(confinement.bwrap, (top, git_dir, str(private)), objects, confinement.hidden)
    git = Git(
        ["--git-dir", git_dir, "--work-tree", top], config=HOSTILE_TREE_CONFIG, env=TOOL_IDENTITY, confine=confine
    )
    index = private / "index"
    start_ref = f"{REF_PREFIX}/{uuid.uuid4().hex}"
    try:
        own_index = Path(git_dir) / "index"
        if own_index.exists():
            shutil.copyfile(own_index, index)  # stat data: only changed files are read again
        with_index = {"GIT_INDEX_FILE": str(index)}
        left_out = add_all(git, Path(top), env=with_index)
        if left_out:
            log.warning("not sent to the cluster node (nested git repositories): %s", ", ".join(left_out))
        tree = git.out("write-tree", env=with_index)
        head = git.run("rev-parse", "--verify", "-q", "HEAD", ok=(0, 1)).text
        parents = ["-p", head] if head else []
        start = git.out("commit-tree", tree, *parents, "-m", f"start of a remote run: {subject}")
        git.run("update-ref", start_ref, start)
    except WorkspaceError as exc:
        _forget(SentWork(git, Path(git_dir), top, "", start_ref, index, private, writing))
        raise RemoteWorkError(f"cannot send {folder} to the cluster node: {exc}") from None
    sent = SentWork(git, Path(git_dir), top, start, start_ref, index, private, writing)
    work = RemoteWork(
        head=start_ref, start=start, local_top=top, bring_back=writing, subject=subject, stand_ins=stand_ins
    )

    def bundle(has: tuple[str, ...]) -> bytes:
        """Made once the node is known: without what the starts it keeps (``has``) hold;
        nothing when it keeps this very start (the same folder sent again)."""
        data = b"" if start in has else make_bundle(Path(git_dir), start_ref, has=has)
        log.info(
            "sending %s to a cluster node: commit %s, bundle of %d bytes (%s)",
            top,
            start[:12],
            len(data),
            f"thin: the node keeps {len(has)} start(s)" if has else "whole: the node keeps no start",
        )
        return data

    return sent, work, bundle


def _work_tree_of(folder: Path) -> tuple[str, str]:
    """The work tree ``folder`` is in and its git folder: an assignment's checkout's as the
    workspace made them; otherwise (the target, worked in place) as git finds them."""
    known = checkout_of(folder)
    if known is not None:
        return str(known[0]), str(known[1])
    try:
        found = Git(["-C", str(folder)], config=HOSTILE_TREE_CONFIG).run(
            "rev-parse", "--show-toplevel", "--absolute-git-dir", ok=(0, 128)
        )
    except WorkspaceError as exc:
        raise RemoteWorkError(f"cannot send {folder} to the cluster node: {exc}") from None
    if found.returncode != 0:
        raise RemoteWorkError(
            f"{folder} is not in a git work tree: a remote run's folder travels by git (git init and commit it)"
        )
    top, git_dir = found.text.splitlines()[:2]
    return top, git_dir


def _forget(sent: SentWork) -> None:
    """The run no longer needs its refs and private index (its objects go with git's gc)."""
    with contextlib.suppress(WorkspaceError):
        sent.git.run("update-ref", "-d", sent.start_ref, ok=(0, 1))
        sent.git.run("update-ref", "-d", sent.start_ref + "-back", ok=(0, 1))
    shutil.rmtree(sent.private, ignore_errors=True)


# -- bringing back ----------------------------------------------------------------------------


def _bring_back(sent: SentWork, back: Any, node: str) -> RunEnd:
    if back is None or back.error:
        why = back.error if back is not None else "the node sent nothing back"
        return RunEnd(kind="work_lost", error=f"the run's changes could not be brought back from {node}: {why}")
    left = getattr(back, "left_out", ())
    note = f"; nested git repositories left on the node, not brought back: {', '.join(left)}" if left else ""
    if back.bundle is None:
        return RunEnd(changes=f"no change to bring back from {node}{note}")
    try:
        commit = apply_bundle(sent.git_dir, back.bundle, sent.start_ref + "-back")
        with_index = {"GIT_INDEX_FILE": str(sent.index)}
        # From the start to the run's commit: what it changed is written, what it removed is
        # removed; the folder is at the start (nothing else works in it meanwhile).
        sent.git.run("read-tree", "-m", "-u", sent.start, commit, env=with_index)
        files = sent.git.out("diff-tree", "-r", "--name-only", "--no-commit-id", sent.start, commit).splitlines()
    except (WorkspaceError, BundleError) as exc:
        return RunEnd(kind="work_lost", error=f"the run's changes could not be brought back from {node}: {exc}")
    return RunEnd(changes=f"{len(files)} changed file(s) brought back from {node} (commit {commit[:12]}){note}")


def _spawn_failure(proc: Any) -> str:
    error = getattr(proc, "spawn_error", None)
    launch = getattr(proc, "launch", None)
    if isinstance(error, OSError) and launch is not None:
        return f"{describe_spawn_error(error, launch)} (on its cluster node)"
    return f"the cluster node could not start it: {proc.end.detail}"


__all__ = ["RemoteWorkError", "RunEnd", "SentWork", "finish", "is_remote", "placed", "sampler", "spawn"]
