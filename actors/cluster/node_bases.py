"""The starting points a node has received, kept for the next runs: a thin bundle's base.

Each run's checkout is removed with the run, so without this every run would need its whole
history sent again. Here every start a node receives is fetched into one bare repository of
the node's user (``orchestrate-bases-<uid>`` in its temp folder, 0700), under
``refs/bases/<commit>``; the driver asks which starts a node has (``known``) and sends a bundle
without what they hold; its prerequisites are then in this repository, and the run's checkout
is made from it (its objects copied: the checkout stands alone, as one made from a bundle).

Only the newest ``BASES_KEPT`` starts are kept (git's own gc drops the rest's objects). Runs on
the same node fetch into it at once: each ref is its own, and a start already there is taken
as it is (its name is its commit). No ray here: both sides import it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from meta_orchestrator.actors.cluster.bundles import BundleError, apply_bundle, known_commits, run_git

BASES_KEPT = 16
BASE_REFS = "refs/bases"


def default_bases_repo() -> Path:
    """This node user's repository of starts."""
    return Path(tempfile.gettempdir()) / f"orchestrate-bases-{os.getuid()}" / "bases.git"


class NodeBases:
    """One node's repository of received starts."""

    def __init__(self, repo: Path | None = None) -> None:
        self.repo = repo or default_bases_repo()

    def known(self) -> tuple[str, ...]:
        """The starts kept here, newest first (none when the repository is not made yet)."""
        if not (self.repo / "HEAD").is_file():
            return ()
        try:
            out = run_git(self.repo, "for-each-ref", "--sort=-creatordate", "--format=%(objectname)", BASE_REFS)
        except BundleError:
            return ()
        return tuple(out.split()[:BASES_KEPT])

    def receive(self, bundle: bytes, start: str) -> str:
        """Fetch the bundle's one head (the start, commit ``start``) in; the ref to check out.
        An empty ``bundle``: the start is kept here already.

        Raises:
            BundleError: the bundle is not of ``start``, or lacks a prerequisite this node has not.
        """
        self._make()
        ref = f"{BASE_REFS}/{start}"
        if not bundle:  # the driver saw this node keeps the start itself
            if not self._has_ref(ref):
                raise BundleError(f"no bundle was sent and this node does not keep the start {start[:12]}")
            return ref
        try:
            commit = apply_bundle(self.repo, bundle, ref)
        except BundleError:
            if known_commits(self.repo, [start]) != [start] or not self._has_ref(ref):
                raise
            commit = start  # another run on this node brought the same start in at the same time
        if commit != start:
            raise BundleError(f"the bundle's head is {commit[:12]}, not the run's start {start[:12]}")
        self._forget_old()
        return ref

    def _make(self) -> None:
        if (self.repo / "HEAD").is_file():
            return
        self.repo.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.repo.parent.stat().st_uid != os.getuid():
            raise BundleError(f"{self.repo.parent} belongs to another user")
        run_git(self.repo.parent, "init", "--quiet", "--bare", str(self.repo))

    def _has_ref(self, ref: str) -> bool:
        return bool(run_git(self.repo, "for-each-ref", "--format=%(objectname)", ref).strip())

    def _forget_old(self) -> None:
        out = run_git(self.repo, "for-each-ref", "--sort=-creatordate", "--format=%(refname)", BASE_REFS)
        for ref in out.split()[BASES_KEPT:]:
            run_git(self.repo, "update-ref", "-d", ref)


__all__ = ["BASES_KEPT", "NodeBases", "default_bases_repo"]
