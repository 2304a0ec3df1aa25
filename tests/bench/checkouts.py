"""The checkouts part of ``python -m tests.bench.workspaces`` (see its docstring): a checkout of
a realistic repository by the session's workspace code against ``git worktree add`` of the
same commit, in time and disk, and the session folder with several checkouts."""

from __future__ import annotations

import os
import random
import resource
import shutil
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from meta_orchestrator.actors.workspaces import git_command
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo, open_session_repo
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox

MIB = 1024 * 1024
_WORDS = [
    "def",
    "class",
    "return",
    "import",
    "self",
    "value",
    "name",
    "data",
    "items",
    "config",
    "path",
    "result",
    "error",
    "file",
    "list",
    "for",
    "while",
    "if",
    "else",
    "try",
    "except",
    "with",
    "open",
    "read",
    "write",
    "parse",
    "build",
    "test",
    "assert",
    "update",
    "index",
    "the",
    "of",
    "to",
    "and",
    "a",
    "in",
    "is",
    "that",
    "it",
    "on",
    "as",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "or",
    "an",
]
_EXTENSIONS = ("py", "js", "ts", "md", "json", "txt", "c", "h", "go", "rs", "yaml", "html")


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    ).stdout.strip()


# -- the repository ------------------------------------------------------------------------------


def _folders(rng: random.Random, count: int) -> list[str]:
    """``count`` folders of a tree grown at random: a few top folders, nesting up to 7 deep."""
    folders = [f"{name}/" for name in ("src", "lib", "tests", "docs", "tools", "web", "assets", "vendor")]
    while len(folders) < count:
        parent = rng.choice(folders)
        if parent.count("/") < 7:
            folders.append(f"{parent}{rng.choice(_WORDS)}_{len(folders)}/")
    return folders


def _size(rng: random.Random, scale: float) -> int:
    """Most files a few KB, some tens of KB, one in two hundred a few hundred KB (about 3.7 KB
    on average: 40,000 files make about 150 MB at scale 1)."""
    pick = rng.random()
    if pick < 0.90:
        return int(rng.randint(100, 4_000) * scale)
    if pick < 0.995:
        return int(rng.randint(4_000, 20_000) * scale)
    return int(rng.randint(50_000, 250_000) * scale)


def _text_pool(rng: random.Random) -> bytes:
    """Two MB of source-like lines that file contents are cut from."""
    lines = []
    for i in range(40_000):
        words = " ".join(rng.choices(_WORDS, k=rng.randint(2, 12)))
        lines.append(f"{'    ' * rng.randint(0, 3)}{words}  # {i}\n")
    return "".join(lines).encode()


def make_realistic_repository(repo: Path, files: int, megabytes: float, seed: int = 22) -> int:
    """``files`` files in nested folders, about ``megabytes`` MB in all (one in a hundred of
    the big ones binary), one commit made through ``git fast-import``, then checked out.
    Returns the bytes written."""
    rng = random.Random(seed)
    pool = _text_pool(rng)
    folders = _folders(rng, max(8, files // 16))
    scale = megabytes / 150 * 40_000 / max(files, 1)
    git("init", "-q", "-b", "main", str(repo))
    stream = bytearray()
    paths, total = [], 0
    for i in range(files):
        size = max(16, _size(rng, scale))
        if size > 50_000 and rng.random() < 0.5:
            data = rng.randbytes(size)  # an image, an archive: nothing to compress
            paths.append(f"{rng.choice(folders)}blob_{i}.bin")
        else:
            start = rng.randrange(len(pool))
            body = (pool[start:] + pool)[:size]
            data = b"%d\n" % i + body
            paths.append(f"{rng.choice(folders)}{rng.choice(_WORDS)}_{i}.{rng.choice(_EXTENSIONS)}")
        total += len(data)
        stream += b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data)
    stream += b"commit refs/heads/main\ncommitter bench <bench@localhost> 1700000000 +0000\ndata 6\nstart\n"
    for i, path in enumerate(paths):
        stream += b"M 100644 :%d %s\n" % (i + 1, path.encode())
    stream += b"\n"
    subprocess.run(["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream), check=True)
    git("-C", str(repo), "checkout", "-q", "-f", "main")
    return total


# -- what is measured ----------------------------------------------------------------------------


def disk_bytes(*roots: Path) -> int:
    """The blocks the files under ``roots`` take, each file once (a hardlinked one too), as du."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                info = os.lstat(os.path.join(folder, name))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
        info = os.lstat(root)
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


@dataclass
class Checkouts:
    """The rounds of one way of making a checkout: seconds and bytes each, git's calls by name."""

    label: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    disk: list[int] = field(default_factory=list)
    calls: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cpu_counted: bool = True  # under bwrap git's CPU time does not reach this process's rusage

    def add(self, seconds: tuple[float, float], disk: int) -> None:
        self.seconds.append(seconds[0])
        self.cpu.append(seconds[1])
        self.disk.append(disk)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu)

    def line(self) -> str:
        rounds = ", ".join(f"{s * 1000:.0f}" for s in self.seconds)
        disk = statistics.median(self.disk) / MIB
        cpu = f"{self.median_cpu_s * 1000:5.0f} ms CPU" if self.cpu_counted else "CPU not counted"
        return f"  {self.label:<32} {self.median_s * 1000:6.0f} ms wall (rounds: {rounds}), {cpu}; disk {disk:6.1f} MiB"


@contextmanager
def git_calls(into: dict[str, list[float]]) -> Iterator[None]:
    """Each git call the workspace code makes meanwhile, timed, by its subcommand."""
    original = git_command.Git.run

    def timed_run(self: git_command.Git, *args: str, **kwargs: object) -> git_command.GitResult:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            into[next((a for a in args if not a.startswith("-")), "?")].append(time.perf_counter() - start)

    git_command.Git.run = timed_run  # type: ignore[method-assign]
    try:
        yield
    finally:
        git_command.Git.run = original  # type: ignore[method-assign]


def cpu_s() -> float:
    """CPU seconds of this process and of its children that ended (git calls are waited for)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(action: Callable[[], object]) -> tuple[float, float]:
    """The wall and CPU seconds of ``action``."""
    os.sync()  # the previous checkout's writes are on disk: none of them is paid for here
    start, start_cpu = time.perf_counter(), cpu_s()
    action()
    return time.perf_counter() - start, cpu_s() - start_cpu


def _worktree_round(repo: Path, commit: str, where: Path, result: Checkouts) -> None:
    seconds = _timed(lambda: git("-C", str(repo), "worktree", "add", "-q", "--detach", str(where), commit))
    result.add(seconds, disk_bytes(where, repo / ".git" / "worktrees" / where.name))


def _module_round(session: SessionRepo, session_dir: Path, name: str, result: Checkouts) -> None:
    calls: dict[str, list[float]] = defaultdict(list)
    with git_calls(calls):
        seconds = _timed(lambda: session.checkout(name))
    for call, times in calls.items():
        result.calls[call].append(sum(times))
    result.calls["(the rest: Python, files)"].append(seconds[0] - sum(sum(t) for t in calls.values()))
    result.add(seconds, disk_bytes(session_dir / "checkouts" / name, session_dir / "git" / "checkouts" / name))


def _open(repo: Path, workspace: Path, sid: str, sandbox: OsSandbox | None) -> tuple[SessionRepo, Path]:
    session_dir = private_dir(workspace / sid)
    opened = open_session_repo(repo, session_dir, sid, sandbox=sandbox)
    assert opened.repo is not None, opened.message
    return opened.repo, session_dir


def run_checkouts(root: Path, files: int, megabytes: float, rounds: int) -> None:
    repo = root / "repo"
    start = time.perf_counter()
    written = make_realistic_repository(repo, files, megabytes)
    commit = git("-C", str(repo), "rev-parse", "HEAD")
    print(
        f"repository: {files:,} files, {written / MIB:,.0f} MiB, {disk_bytes(repo / '.git') / MIB:,.0f} MiB "
        f"in .git, made in {time.perf_counter() - start:.1f} s"
    )
    workspace = private_dir(root / "workspace")
    bwrap = shutil.which("bwrap")
    ways: list[tuple[Checkouts, SessionRepo, Path]] = []
    for label, sandbox in (("SessionRepo.checkout", None), ("SessionRepo.checkout, sandboxed", bwrap)):
        if label.endswith("sandboxed") and sandbox is None:
            print("(bwrap not found: no sandboxed rounds)")
            continue
        confined = OsSandbox(bwrap=sandbox, hidden=(str(workspace),)) if sandbox else None
        session, session_dir = _open(repo, workspace, f"bench-{len(ways)}", confined)
        ways.append((Checkouts(label, cpu_counted=confined is None), session, session_dir))
    plain = Checkouts("git worktree add")
    (root / "worktrees").mkdir()
    _worktree_round(repo, commit, root / "worktrees" / "warm-up", Checkouts("warm-up"))  # objects in the page cache
    for round_no in range(1, rounds + 1):
        order = [None, *ways] if round_no % 2 else [*ways, None]
        for way in order:
            if way is None:
                _worktree_round(repo, commit, root / "worktrees" / f"w{round_no}", plain)
            else:
                _module_round(way[1], way[2], f"c{round_no}", way[0])
    _report(plain, ways, rounds)


def _report(plain: Checkouts, ways: list[tuple[Checkouts, SessionRepo, Path]], rounds: int) -> None:
    print(f"one checkout of the commit, median of {rounds} rounds (time; disk of its new files):")
    print(plain.line())
    for result, _, _ in ways:
        ratio, cpu = result.median_s / plain.median_s, result.median_cpu_s / plain.median_cpu_s
        disk = statistics.median(result.disk) / statistics.median(plain.disk)
        cpu_ratio = f"{cpu:.2f} x CPU, " if result.cpu_counted else ""
        print(f"{result.line()}: {ratio:.2f} x wall, {cpu_ratio}{disk:.2f} x disk")
    for result, _, session_dir in ways:
        held = len(list((session_dir / "checkouts").iterdir()))
        print(f"session folder ({result.label}) with {held} checkouts: {disk_bytes(session_dir) / MIB:,.0f} MiB")
    for result, _, _ in ways:
        steps = ", ".join(
            f"{call} {statistics.median(times) * 1000:.0f} ms"
            for call, times in sorted(result.calls.items(), key=lambda kv: -statistics.median(kv[1]))
        )
        print(f"where {result.label}'s time goes (medians): {steps}")
