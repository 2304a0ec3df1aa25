"""The work travels by git: ``git bundle`` files made and applied with the real ``git``.

A run on another machine needs no shared filesystem: the driver sends the assignment's
starting point as a bundle (bytes, through Ray's object store), the node makes its own
checkout from it, and sends back a bundle of the commits the run made, which the driver
fetches into a ref of its repository. A bundle of the commits alone carries only what the
receiver lacks (its prerequisite is the start the receiver already has).

Every git runs in its own process group with a timeout (the group is killed when it runs
over), hardened (``HOSTILE_TREE_CONFIG``: no hook, no fsmonitor, no submodule); a failure is
a ``BundleError`` with git's own words.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from meta_orchestrator.actors.workspaces.git_command import HOSTILE_TREE_CONFIG

GIT_TIMEOUT_S = 300.0
_OBJECT_NAME = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256


class BundleError(Exception):
    """A bundle could not be made, read or applied; the message says what git said."""


def make_bundle(repo: Path, ref: str, base: str | None = None, has: Sequence[str] = ()) -> bytes:
    """A bundle of ``ref`` (a branch or other ref name, recorded in the bundle) and its history;
    with ``base`` (a commit the receiver has), only the commits after it; with ``has`` (commits
    the receiver may have), without what they hold that ``repo`` knows of (a thin bundle:
    those it knows are its prerequisites; the others are ignored)."""
    exclude = [f"^{commit}" for commit in known_commits(repo, has)]
    with tempfile.TemporaryDirectory(prefix="orchestrate-bundle-") as tmp:
        path = Path(tmp) / "work.bundle"
        run_git(repo, "bundle", "create", "--quiet", str(path), f"{base}..{ref}" if base else ref, *exclude)
        return path.read_bytes()


def known_commits(repo: Path, commits: Sequence[str]) -> list[str]:
    """Those of ``commits`` (full object names) that are commits of ``repo``."""
    wanted = [c for c in dict.fromkeys(commits) if _OBJECT_NAME.fullmatch(c)]
    if not wanted:
        return []
    answers = run_git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(wanted) + "\n")
    found = {line.split()[0] for line in answers.splitlines() if line.endswith(" commit")}
    return [c for c in wanted if c in found]


def bundle_of_commits(repo: Path, branch: str, since: str) -> bytes | None:
    """The commits on ``branch`` after ``since`` (an assignment's start) as a bundle whose
    prerequisite is ``since``; None when the branch has none."""
    if run_git(repo, "rev-list", "--count", f"{since}..{branch}").strip() == "0":
        return None
    return make_bundle(repo, branch, base=since)


def checkout_from_bundle(
    data: bytes, dest: Path, branch: str, git_dir: Path | None = None, local_branch: str | None = None
) -> str:
    """A new repository at ``dest`` (absent or empty) with ``branch`` of the bundle (a branch
    name, or any full ref name it carries) checked out as ``local_branch`` (default: the
    same), and no remote pointing at the bundle. With ``git_dir`` the repository's git folder
    is made there, outside the tree (the tree's ``.git`` is then a file naming it). Returns
    the commit checked out."""
    local = local_branch or branch
    with _bundle_file(data) as path:
        head = _head_named(path, branch)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise BundleError(f"{dest} is not empty")
        run_git(dest, "init", "--quiet", *([f"--separate-git-dir={git_dir}"] if git_dir is not None else []))
        # The new repository's own (unborn) branch may have the same name: fetch into it anyway.
        run_git(dest, "fetch", "--quiet", "--update-head-ok", str(path), f"{head}:refs/heads/{local}")
        run_git(dest, "checkout", "--quiet", "--force", local)
    return run_git(dest, "rev-parse", "HEAD").strip()


def checkout_from_repo(source: Path, ref: str, dest: Path, git_dir: Path, local_branch: str) -> str:
    """As ``checkout_from_bundle``, from ``ref`` of the repository ``source`` on this machine
    (its objects copied: the new repository stands alone). Returns the commit checked out."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise BundleError(f"{dest} is not empty")
    run_git(dest, "init", "--quiet", f"--separate-git-dir={git_dir}")
    run_git(dest, "fetch", "--quiet", "--no-tags", "--update-head-ok", str(source), f"{ref}:refs/heads/{local_branch}")
    run_git(dest, "checkout", "--quiet", "--force", local_branch)
    return run_git(dest, "rev-parse", "HEAD").strip()


def apply_bundle(repo: Path, data: bytes, ref: str) -> str:
    """Fetch the bundle's one head into ``ref`` of ``repo`` (a branch name or a full ref name):
    created, or moved forward; a ref that would move otherwise, or a checked-out branch, is
    refused. ``repo`` must have the bundle's prerequisites. Returns the new commit."""
    target = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    with _bundle_file(data) as path:
        run_git(repo, "bundle", "verify", str(path))  # names any missing prerequisite
        heads = _heads(path)
        if len(heads) != 1:
            raise BundleError(f"the bundle has {len(heads)} heads ({', '.join(heads) or 'none'}); one was expected")
        run_git(repo, "fetch", str(path), f"{heads[0]}:{target}")
    return run_git(repo, "rev-parse", target).strip()


@contextlib.contextmanager
def _bundle_file(data: bytes):  # noqa: ANN202 - a context manager of a Path
    with tempfile.TemporaryDirectory(prefix="orchestrate-bundle-") as tmp:
        path = Path(tmp) / "received.bundle"
        path.write_bytes(data)
        yield path


def _heads(path: Path) -> list[str]:
    """The ref names a bundle carries."""
    out = run_git(path.parent, "bundle", "list-heads", str(path))
    return [line.split(" ", 1)[1] for line in out.splitlines() if " " in line]


def _head_named(path: Path, branch: str) -> str:
    heads = _heads(path)
    for wanted in (f"refs/heads/{branch}", branch):
        if wanted in heads:
            return wanted
    raise BundleError(f"the bundle has no branch {branch!r} (it has {', '.join(heads) or 'nothing'})")


def run_git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    """Run git in its own process group; its output, or a BundleError with its message."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    # Hardened as every git over a folder an agent wrote: a repository worked in place is
    # the agent's, its hooks (reference-transaction runs on a fetch) and config included.
    # (Found from the git folder itself here, as a bare one: no safe.bareRepository.)
    pairs = [pair for pair in HOSTILE_TREE_CONFIG if not pair.startswith("safe.bareRepository")]
    hardening = [part for pair in pairs for part in ("-c", pair)]
    proc = subprocess.Popen(
        ["git", *hardening, *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BundleError(f"git {args[0]} did not finish within {GIT_TIMEOUT_S:g}s") from None
    if proc.returncode != 0:
        raise BundleError(f"git {' '.join(args[:2])} failed: {err.strip() or out.strip()}")
    return out
