"""A remote run's working folder on its node: made from a git bundle, given back as one.

The CLI on another machine cannot see the driver's checkout, so the driver sends the run's
starting point (``RemoteWork``, with a bundle of it) and the node's host makes a checkout of
its own from it (``NodeCheckout.make``), in the run's scratch folder: the lifeline removes
it with the run. Every path of the driver's checkout in the CLI's command line, prompt, environment,
cwd and sandbox is replaced by the node's (``rewrite``). When the CLI has ended, ``collect``
commits what it changed (untracked files too, ignored ones not, as the orchestrator) and
returns a bundle of that commit, whose prerequisite is the start the driver already has.

The git folder sits outside the tree and is only readable inside the sandbox, and every git
call names it (``--git-dir``) with the hardening of ``HOSTILE_TREE_CONFIG`` (no hook, no
fsmonitor, no submodule): a ``.git`` an agent wrote cannot make the host run anything. A
nested repository the agent made is left out of the commit (it stays on the node, and the
driver says so). When the run was confined, ``collect`` runs in the same sandbox, without
network. No ray here: both sides import it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.cluster.bundles import (
    BundleError,
    bundle_of_commits,
    checkout_from_bundle,
    checkout_from_repo,
)
from meta_orchestrator.actors.cluster.node_bases import NodeBases
from meta_orchestrator.actors.workspaces.git_command import (
    HOSTILE_TREE_CONFIG,
    TOOL_IDENTITY,
    Git,
    add_all,
    commit_staged,
    confined_git,
)
from meta_orchestrator.actors.sandbox.bwrap import Confinement

WORK_BRANCH = "orchestrate-remote"  # the run's branch in the node's checkout


@dataclass(frozen=True)
class RemoteWork:
    """What a node needs to work where the driver's run would have: sent with the start
    (the bundle itself travels beside it, through Ray's object store)."""

    head: str  # the ref the bundle carries: the starting point
    start: str  # its commit
    local_top: str  # the driver's work tree (its paths are replaced by the node's)
    bring_back: bool  # write mode: the changes are committed and returned
    subject: str  # the commit's subject line
    stand_ins: tuple[str, ...] = ()  # driver folders the CLI is given; absent on a node: an empty one instead


@dataclass(frozen=True)
class WorkBack:
    """What a run's checkout gives back when the CLI has ended: a bundle of the one commit
    of its changes (None: it changed nothing), or why that failed."""

    bundle: bytes | None = None
    commit: str | None = None
    error: str | None = None
    left_out: tuple[str, ...] = ()  # nested repositories the agent made, not brought back


class NodeCheckout:
    """One run's checkout in ``scratch`` (the run's own folder on the node)."""

    def __init__(self, work: RemoteWork, scratch: Path, bases: NodeBases | None = None) -> None:
        self.work = work
        self._bases = bases  # with it, the start is kept on the node: the next bundle can be thin
        self.tree = scratch / "checkout" / (Path(work.local_top).name or "work")
        self.git_dir = scratch / "git"
        self._scratch = scratch
        self._paths: dict[str, str] = {}
        self._confinement: Confinement | None = None  # the run's, once rewritten: collect runs in it too

    def make(self, bundle: bytes) -> str:
        """Check the start out from ``bundle`` (thin: its prerequisites are in this node's
        bases); the commit checked out. Raises BundleError."""
        self.tree.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._bases is None:
            commit = checkout_from_bundle(
                bundle, self.tree, self.work.head, git_dir=self.git_dir, local_branch=WORK_BRANCH
            )
        else:
            kept = self._bases.receive(bundle, self.work.start)
            commit = checkout_from_repo(self._bases.repo, kept, self.tree, self.git_dir, WORK_BRANCH)
        if commit != self.work.start:
            raise BundleError(f"the checkout is at {commit[:12]}, not the run's start {self.work.start[:12]}")
        self._paths = {self.work.local_top: str(self.tree)}
        for n, folder in enumerate(self.work.stand_ins):
            if not os.path.isdir(folder):  # shared or on this machine: the CLI gets the folder itself
                stand_in = self._scratch / f"folder-{n}"
                stand_in.mkdir(mode=0o700, exist_ok=True)
                self._paths[folder] = str(stand_in)
        return commit

    def rewrite(self, launch: Launch, confinement: Confinement | None) -> tuple[Launch, Confinement | None]:
        """The launch and sandbox with every driver path replaced by the node's (in the prompt
        on stdin too); the node's git folder readable in the sandbox (for the CLI's own git
        status and diff)."""
        stdin = launch.stdin
        launch = Launch(
            argv=tuple(self._local(a) for a in launch.argv),
            env={k: self._local(v) for k, v in launch.env.items()},
            cwd=Path(self._local(str(launch.cwd))),
            stdin=None
            if stdin is None
            else self._local(stdin.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape"),
        )
        if confinement is not None:
            confinement = dataclasses.replace(
                confinement,
                writable=tuple(self._local(p) for p in confinement.writable),
                readable=(*(self._local(p) for p in confinement.readable), str(self.git_dir)),
                chdir=self._local(confinement.chdir) if confinement.chdir else None,
            )
        self._confinement = confinement
        return launch, confinement

    def _local(self, text: str) -> str:
        """``text`` with each driver path replaced where it stands whole (not "/a/b" in "/a/bc")."""
        for driver in sorted(self._paths, key=len, reverse=True):
            if driver in text:
                node = self._paths[driver]  # literal: re.sub reads backslashes in a replacement
                text = re.sub(re.escape(driver) + r"(?![\w.-])", node.replace("\\", "\\\\"), text)
        return text

    def collect(self) -> WorkBack:
        """Commit everything the run changed as the orchestrator; a bundle of that commit."""
        run = self._confinement
        confine = confined_git(run.bwrap, (str(self.tree), str(self.git_dir)), (), run.hidden) if run else None
        prefix = ["--git-dir", str(self.git_dir), "--work-tree", str(self.tree)]
        git = Git(prefix, config=HOSTILE_TREE_CONFIG, env=TOOL_IDENTITY, confine=confine)
        try:
            left_out = add_all(git, self.tree)
            body = f"Made on {socket.gethostname()} by a remote run; brought back to the driver as a bundle."
            commit_staged(git, self.git_dir, "-m", self.work.subject, "-m", body)
            commit = git.out("rev-parse", "HEAD")
            # Run in the git folder itself: nothing in the tree is read.
            bundle = bundle_of_commits(self.git_dir, WORK_BRANCH, since=self.work.start)
        except Exception as exc:  # noqa: BLE001 - git's failure is the run's to report, not the host's crash
            return WorkBack(error=f"{type(exc).__name__}: {exc}")
        return WorkBack(bundle=bundle, commit=commit if bundle is not None else None, left_out=left_out)


__all__ = ["NodeCheckout", "RemoteWork", "WORK_BRANCH", "WorkBack"]
