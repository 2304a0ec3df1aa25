"""Running git for the workspaces: one child per call, in its own process group, with a
timeout; a failure is a ``WorkspaceError`` whose message says what failed and why.

The environment is cleaned of the variables that would point git at another repository
(``GIT_DIR``, ``GIT_INDEX_FILE``... as when orchestrate runs from a git hook), messages are
in English (``LC_ALL=C``: some outputs are read), nothing prompts, and no optional lock is
taken (a ``git status`` in the user's repository must not rewrite their index).
"""

from __future__ import annotations

import contextlib
import copy
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from meta_orchestrator.actors.sandbox.bwrap import Confinement, bwrap_argv, under_private_tmp

DEFAULT_TIMEOUT_S = 300.0
# What `git rev-parse --local-env-vars` lists: each would make a call act on another repository.
_REPOSITORY_ENV = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY",
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_SHALLOW_FILE",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH",
)
_FIXED_ENV = {
    "LC_ALL": "C",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",
    "GIT_PAGER": "cat",
    "GIT_EDITOR": ":",
    "GIT_MERGE_AUTOEDIT": "no",
}
# The tool's own identity for the commits it makes: the user's git config is not needed.
TOOL_IDENTITY = {
    "GIT_AUTHOR_NAME": "orchestrate",
    "GIT_AUTHOR_EMAIL": "orchestrate@localhost",
    "GIT_COMMITTER_NAME": "orchestrate",
    "GIT_COMMITTER_EMAIL": "orchestrate@localhost",
}
_STDERR_TAIL = 2000
# Every git call over a tree an agent could write (an assignment's checkout, a node's
# checkout): nothing the agent wrote may run, and git goes into no other repository. The
# repository's own config is the orchestrator's (digest-checked; it holds the storage settings
# of the user's repository config, storage_config.py); the user's global and system config
# stay (their LFS or git-crypt filters are theirs: an agent's .gitattributes may select what
# the user defined, never define a driver), but nothing there that
# starts a program by itself: hooks, the fsmonitor, a pager, a signing program. Never into
# a nested repository or submodule: an agent's `git init` there brings its own config
# (filters, fsmonitor), which `git status` would honour when it looks inside.
HOSTILE_TREE_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.pager=cat",
    "core.sshCommand=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "diff.ignoreSubmodules=all",
    "status.submoduleSummary=false",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "safe.bareRepository=explicit",
    "protocol.allow=never",
    "protocol.file.allow=always",
    "gc.auto=0",
    "maintenance.auto=false",
)
# git's options that keep its output plain data whatever a .gitattributes names.
NO_DRIVERS = ("--no-ext-diff", "--no-textconv")


class WorkspaceError(Exception):
    """A git step of the workspace failed; ``str()`` is the message to show."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class GitResult:
    """A finished git call: its exit code, its output, and whether the output was cut."""

    returncode: int
    stdout: bytes
    stderr: str
    truncated: bool = False

    @property
    def text(self) -> str:
        """stdout as text, without the last newline."""
        return self.stdout.decode("utf-8", "surrogateescape").rstrip("\n")

    @property
    def fields(self) -> list[str]:
        """stdout split on NUL (the ``-z`` formats), without the empty last field."""
        parts = self.stdout.decode("utf-8", "surrogateescape").split("\0")
        return parts[:-1] if parts and parts[-1] == "" else parts


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, cleaned and fixed for git (see the module's docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in _REPOSITORY_ENV}
    env.update(_FIXED_ENV)
    if extra:
        env.update(extra)
    return env


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output: int | None = None,
    umask: int = -1,
) -> GitResult:
    """Run ``argv`` with stdin closed, in a process group of its own, and reap it.
    ``umask``: the child's (-1: this process's).

    ``max_output``: stop reading after that many bytes of stdout and end the group (the
    result says ``truncated``). On timeout the whole group is killed.

    Raises:
        WorkspaceError: the program is missing, or it ran past ``timeout_s``.
    """
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=dict(env) if env is not None else git_env(),
                cwd=cwd,
                start_new_session=True,
                umask=umask,
            )
        except FileNotFoundError as exc:
            raise WorkspaceError(f"{argv[0]} is not installed (not found on PATH)") from exc
        try:
            stdout, truncated = _read_stdout(proc, timeout_s, max_output)
        except BaseException:
            _end_group(proc)
            raise
        returncode = proc.wait()
        errors.seek(0)
        stderr = errors.read()[-_STDERR_TAIL:].decode("utf-8", "replace").strip()
    if truncated:
        returncode = 0  # we ended it: what was read is the answer
    return GitResult(returncode=returncode, stdout=stdout, stderr=stderr, truncated=truncated)


def _shown(args: object) -> str:
    """The start of a command line, for a message (Popen keeps its ``args`` as given)."""
    words = args if isinstance(args, (list, tuple)) else [args]
    return " ".join(str(a) for a in words[:4])


def _read_stdout(proc: subprocess.Popen[bytes], timeout_s: float, max_output: int | None) -> tuple[bytes, bool]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    size = 0
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector, proc.stdout:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkspaceError(f"{_shown(proc.args)}... took longer than {timeout_s:g}s and was ended")
            if not selector.select(left):
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                return b"".join(chunks), False
            chunks.append(data)
            size += len(data)
            if max_output is not None and size > max_output:
                _end_group(proc)
                return b"".join(chunks)[:max_output], True


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def confined_git(
    bwrap: str, writable: Sequence[str], readable: Sequence[str] = (), hidden: Sequence[str] = ()
) -> Confinement:
    """The OS sandbox a git call over an agent's tree runs in, as the agent's own runs do:
    the filesystem read-only but ``writable``, ``hidden`` an empty tmpfs (the workspace),
    ``readable`` bound back, a private ``/tmp`` and no network. A program a setting or an
    attribute slipped past the hardening would start can then write nothing outside."""
    home = os.path.expanduser("~")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    configs = [os.environ.get("GIT_CONFIG_GLOBAL", ""), os.path.join(home, ".gitconfig"), os.path.join(xdg, "git")]
    # A folder to read inside one to write (the user's objects, in the git folder a fetch
    # writes) stays writable: bwrap would bind the deeper one read-only over it.
    written = [Path(os.path.realpath(p)) for p in writable]
    readable = [p for p in readable if not any(Path(os.path.realpath(p)).is_relative_to(w) for w in written)]
    return Confinement(
        bwrap=bwrap,
        writable=tuple(writable),
        hidden=tuple(hidden),
        readable=(*readable, *under_private_tmp(configs)),  # the user's config, where /tmp would hide it
        network=False,
    )


class Git:
    """git bound to one repository: ``prefix`` (e.g. ``-C <dir>`` or ``--git-dir``) and
    ``config`` (``-c`` pairs) go before every subcommand; with ``confine`` each call runs
    inside that OS sandbox; ``cwd``: where it runs (a git folder, for calls that read no
    working tree: git takes the current folder for one otherwise); ``private``: what it writes
    is the session's (a store, a checkout), readable by this user alone (umask 077)."""

    def __init__(
        self,
        prefix: Sequence[str],
        *,
        config: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        confine: Confinement | None = None,
        cwd: Path | None = None,
        private: bool = False,
    ) -> None:
        self._argv = ["git", *prefix]
        self._umask = 0o077 if private else -1
        for pair in config:
            self._argv += ["-c", pair]
        self._env = git_env(env)
        self.timeout_s = timeout_s
        self.confine = replace(confine, chdir=str(cwd)) if confine is not None and cwd is not None else confine
        self._cwd = cwd

    def also_writable(self, *paths: Path | str) -> Git:
        """The same git, with ``paths`` writable too inside its sandbox (e.g. a private index)."""
        if self.confine is None:
            return self
        twin = copy.copy(self)
        twin.confine = replace(self.confine, writable=(*self.confine.writable, *(str(p) for p in paths)))
        return twin

    def run(
        self,
        *args: str,
        ok: tuple[int, ...] = (0,),
        env: Mapping[str, str] | None = None,
        max_output: int | None = None,
    ) -> GitResult:
        """``git <prefix> <args>``; an exit code outside ``ok`` is an error.

        Raises:
            WorkspaceError: git failed (its message is quoted) or timed out.
        """
        argv = [*self._argv, *args]
        result = run_command(
            bwrap_argv(self.confine, argv) if self.confine is not None else argv,
            env={**self._env, **env} if env else self._env,
            cwd=self._cwd,
            timeout_s=self.timeout_s,
            max_output=max_output,
            umask=self._umask,
        )
        if result.returncode not in ok:
            said = result.stderr or result.text or "no message"
            raise WorkspaceError(
                f"git {' '.join(args[:3])} failed (exit {result.returncode}): {said}",
                returncode=result.returncode,
                stderr=result.stderr,
            )
        return result

    def out(self, *args: str, env: Mapping[str, str] | None = None) -> str:
        """The text git printed (the call must succeed)."""
        return self.run(*args, env=env).text


def add_all(git: Git, tree: Path, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``git add -A`` of an agent's tree (untracked files too, ignored ones not), but never a
    nested repository: an untracked folder holding one (git would record a gitlink to a
    commit nobody else has) and every gitlink already in the index (a submodule of the base
    stays at the base's commit). Returns the nested repositories the tree holds, left out:
    they stay in the tree only."""
    untracked = [f[:-1] for f in git.run("ls-files", "-o", "-z", "--exclude-standard", env=env).fields if f[-1:] == "/"]
    staged = git.run("ls-files", "-s", "-z", env=env).fields
    linked = [f.split("\t", 1)[1] for f in staged if f.startswith("160000 ") and "\t" in f]
    skip = [f":(top,literal,exclude){path}" for path in (*untracked, *linked)]
    git.run("add", "-A", "--", ":(top)", *skip, env=env)
    made = [path for path in linked if os.path.lexists(tree / path / ".git")]
    return tuple(sorted({*untracked, *made}))


def commit_staged(git: Git, git_dir: Path, *message: str) -> None:
    """``git commit`` (hooks skipped) of what is staged, when the index differs from HEAD or a
    merge is under way; nothing staged, no ``git commit``: its "nothing to commit" status would
    look into submodules as a ``.gitmodules`` in an agent's tree says."""
    staged = git.run("diff-index", "--cached", "--quiet", "HEAD", "--", ok=(0, 1)).returncode == 1
    if staged or (git_dir / "MERGE_HEAD").exists():
        git.run("commit", "-q", "--no-verify", *message)
