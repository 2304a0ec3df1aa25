"""Benchmarks of the workspace code in big repositories, in two parts. Run by hand:

    python -m tests.bench.workspaces                 # both parts below
    python -m tests.bench.workspaces --part assignment --files 5000 --rounds 3
    python -m tests.bench.workspaces --part checkouts --checkout-files 40000 --checkout-mb 150

**checkouts** (``tests/bench/checkouts.py``): a realistic repository (``--checkout-files``
files, ``--checkout-mb`` MB in all: nested folders of varied depth, most files of a few KB,
some of tens, a few of hundreds, some binary) is generated in a temporary folder; then,
round after round and alternately, a checkout of its HEAD commit is made by ``git worktree
add --detach`` and by the session's workspace code (``SessionRepo.checkout``, a new
assignment each round, in one session: after the rounds it holds that many checkouts),
without and with the OS sandbox the sessions run git in. For each: the time (wall, medians)
and the disk the new files take (their blocks, a hardlinked file counted once: the
checkout's tree and git folder; for the worktree its tree and ``.git/worktrees/<name>``);
then the session folder's size, and where the module's time goes (each git call, and the
rest). Caches are written back (``sync``) before each timed checkout, so that no checkout
pays for the previous one's writes.

**assignment**, one assignment's checkout made, committed and merged: it generates a
repository of ``--files`` small files in a temporary folder (through ``git fast-import``,
then one checkout), then times, round after round and alternately:

* plain git, the same steps by hand: ``git clone --shared`` of the session branch, a branch
  for the work, the edit, ``git add -A``, ``git commit``, and ``git fetch`` of the result
  into the session branch of the user's repository (the fetch updates the ref);
* the workspace module: ``SessionRepo.checkout``, the same edit, ``commit_assignment``,
  ``merge_assignment``.

Checkouts are removed only at the end: deleting 50,000 files (with ext4's ``discard``)
slows the next writes for many seconds, and would time the previous round's cleanup. Figures are medians, the module's
beside plain git's as a ratio, in wall time and in CPU time (this process and its children,
user + system: on a loaded machine the wall time of writing 50,000 files varies far more
than the work done); the session's opening (a ``git status`` of the user's tree) is shown
beside a plain ``git status``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo, open_session_repo
from tests.bench.checkouts import run_checkouts

IDENTITY = ("-c", "user.name=bench", "-c", "user.email=bench@localhost")
EDITED = 10
ADDED = 5


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    ).stdout.strip()


def make_repository(repo: Path, files: int) -> None:
    """``files`` small files in 100 x 50 folders, one commit, checked out."""
    git("init", "-q", "-b", "main", str(repo))
    stream = bytearray()
    for i in range(files):
        data = f"file {i}\n".encode() * 3
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data)
    stream += b"commit refs/heads/main\ncommitter bench <bench@localhost> 1700000000 +0000\ndata 6\nstart\n"
    for i in range(files):
        stream += b"M 100644 :%d %s\n" % (i + 1, _path(i).encode())
    stream += b"\n"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True)
    git("-C", str(repo), "checkout", "-q", "-f", "main")


def _path(i: int) -> str:
    return f"d{i % 100:03d}/e{(i // 100) % 50:02d}/f{i}.txt"


def edit(tree: Path, round_no: int, files: int) -> None:
    """The same change in both: a few files edited, a few added."""
    for i in range(EDITED):
        with (tree / _path((i * 997 + round_no) % files)).open("a") as f:
            f.write(f"edited in round {round_no}\n")
    for i in range(ADDED):
        (tree / f"new-{round_no}-{i}.txt").write_text(f"added in round {round_no}\n")


def cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (git calls are waited for)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(steps: dict[str, float], name: str, action: Callable[[], object]) -> object:
    """Run ``action``, adding its wall time to ``steps[name]`` and its CPU time to ``steps["cpu"]``."""
    start, start_cpu = time.perf_counter(), cpu_s()
    result = action()
    steps[name] = steps.get(name, 0.0) + time.perf_counter() - start
    steps["cpu"] = steps.get("cpu", 0.0) + cpu_s() - start_cpu
    return result


def plain_round(repo: Path, scratch: Path, round_no: int, files: int) -> dict[str, float]:
    """The steps by hand; the session branch is refs/heads/orchestrate/plain."""
    steps: dict[str, float] = {}
    clone = scratch / f"plain-{round_no}"
    timed(steps, "clone", lambda: git("clone", "-q", "--shared", "-b", "orchestrate/plain", str(repo), str(clone)))
    timed(steps, "clone", lambda: git("-C", str(clone), "checkout", "-q", "-b", f"work-{round_no}"))
    timed(steps, "edit", lambda: edit(clone, round_no, files))
    timed(steps, "commit", lambda: git("-C", str(clone), "add", "-A"))
    timed(steps, "commit", lambda: git("-C", str(clone), *IDENTITY, "commit", "-q", "-m", f"round {round_no}"))
    refspec = f"refs/heads/work-{round_no}:refs/heads/orchestrate/plain"
    timed(steps, "merge", lambda: git("-C", str(repo), "fetch", "-q", "--no-tags", str(clone), refspec))
    return steps


def module_round(session: SessionRepo, round_no: int, files: int) -> dict[str, float]:
    steps: dict[str, float] = {}
    name = f"a{round_no}"
    checkout = timed(steps, "clone", lambda: session.checkout(name))
    timed(steps, "edit", lambda: edit(checkout.path, round_no, files))  # type: ignore[attr-defined]
    timed(steps, "commit", lambda: session.commit_assignment(name, "bench", f"round {round_no}"))
    result = timed(steps, "merge", lambda: session.merge_assignment(name))
    assert result.status == "fast_forward", result  # type: ignore[attr-defined]
    return steps


def _median(rounds: list[dict[str, float]], step: str | None = None) -> float:
    """The median of one step, or of the wall time of all (``step`` None)."""
    return statistics.median(sum(v for k, v in r.items() if k != "cpu") if step is None else r[step] for r in rounds)


def _best_of(times: int, action: Callable[[], object]) -> float:
    found = []
    for _ in range(times):
        start = time.perf_counter()
        action()
        found.append(time.perf_counter() - start)
    return min(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["assignment", "checkouts", "both"], default="both")
    parser.add_argument("--files", type=int, default=50_000, help="assignment: the repository's files")
    parser.add_argument("--rounds", type=int, default=5, help="assignment: rounds")
    parser.add_argument("--checkout-files", type=int, default=40_000, help="checkouts: the repository's files")
    parser.add_argument("--checkout-mb", type=float, default=150, help="checkouts: the repository's size in MB")
    parser.add_argument("--checkout-rounds", type=int, default=4, help="checkouts: rounds (the session's checkouts)")
    opts = parser.parse_args()
    if opts.part in ("checkouts", "both"):
        with tempfile.TemporaryDirectory(prefix="bench-checkouts-") as folder:
            run_checkouts(Path(folder), opts.checkout_files, opts.checkout_mb, opts.checkout_rounds)
    if opts.part in ("assignment", "both"):
        run_assignment(opts.files, opts.rounds)


def run_assignment(files: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-workspaces-") as folder:
        root = Path(folder)
        repo = root / "repo"
        start = time.perf_counter()
        make_repository(repo, files)
        print(f"repository: {files:,} files, made in {time.perf_counter() - start:.1f} s")
        git("-C", str(repo), "branch", "orchestrate/plain", "main")

        status_s = _best_of(3, lambda: git("-C", str(repo), "status", "--porcelain", "--untracked-files=all"))
        workspace = private_dir(root / "workspace")
        open_s = float("inf")
        session = None
        for attempt in range(3):  # the best of three openings (each a new session), as for status
            start = time.perf_counter()
            opened = open_session_repo(repo, private_dir(workspace / f"bench{attempt}"), f"bench{attempt}").repo
            elapsed = time.perf_counter() - start
            open_s = min(open_s, elapsed)
            session = opened
        assert session is not None
        print(
            f"opening a session: {open_s * 1000:.0f} ms; plain git status: {status_s * 1000:.0f} ms "
            f"({open_s / status_s:.2f} x)"
        )

        scratch = root / "scratch"
        scratch.mkdir()
        plain_round(repo, scratch, 0, files)  # warm-up: the objects in the page cache for both
        module_round(session, 0, files)
        plain: list[dict[str, float]] = []
        module: list[dict[str, float]] = []
        for round_no in range(1, rounds + 1):
            plain.append(plain_round(repo, scratch, round_no, files))
            module.append(module_round(session, round_no, files))

    print(f"one assignment (checkout, edit {EDITED} + add {ADDED} files, commit, merge), median of {rounds} rounds:")
    for label, rounds in (("plain git", plain), ("workspaces", module)):
        parts = ", ".join(f"{step} {_median(rounds, step) * 1000:.0f} ms" for step in ("clone", "commit", "merge"))
        wall, cpu = _median(rounds) * 1000, _median(rounds, "cpu") * 1000
        print(f"  {label:<11} {wall:7.0f} ms wall, {cpu:6.0f} ms CPU  ({parts})")
    ratio = _median(module) / _median(plain)
    cpu_ratio = _median(module, "cpu") / _median(plain, "cpu")
    print(
        f"  ratio       {ratio:.3f} x wall (overhead {(ratio - 1) * 100:+.1f}%), {cpu_ratio:.3f} x CPU "
        f"(overhead {(cpu_ratio - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
