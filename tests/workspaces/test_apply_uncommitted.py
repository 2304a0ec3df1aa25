"""``--include-uncommitted`` and ``orchestrate apply``, through the launcher with real git: apply
brings in the session's own changes only (never the snapshot of the user's work in progress),
whatever the user did with that work meanwhile (kept it, stashed it, committed it); a
repository mid-merge, mid-rebase... is refused before anything starts; apply never makes an
empty commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from meta_orchestrator.actors.agents.demo.common import SHARED_FILE_ENV
from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspace_apply import few
from meta_orchestrator.actors.workspaces.workspaces import open_session_repo
from meta_orchestrator.actors.sandbox.bwrap import Confinement, bwrap_argv
from tests.conftest import branch_file, git_folder_bytes, session_store
from tests.workspaces.test_workspace_sessions import _demo, _orchestrate
from tests.workspaces.test_workspaces import _no_global_git_config, git, user_repo, user_state  # noqa: F401

USER = ("-c", "user.name=User", "-c", "user.email=user@example.com")
WIP = {"README.md": "# project\n\nthe user's own note\n", "lib/util.py": "VALUE = 2  # staged by the user\n"}


def _base(folder: Path) -> str:
    return json.loads((folder / "workspace.json").read_text())["base"]


def _own_changes(folder: Path) -> set[str]:
    """The files the session itself changed: from its base (the snapshot) to its tip."""
    return set(git(session_store(folder), "diff", "--name-only", _base(folder), f"orchestrate/{folder.name}").split())


def _apply(folder: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return _orchestrate(["apply", folder.name, "--workspace", str(folder.parent), *extra], env)


def _refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def _commit_files(repo: Path, commit: str = "HEAD") -> set[str]:
    return set(git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).split())


def _session_with_wip(repo: Path, tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict, set[str]]:
    """A demo session with --include-uncommitted on the user's work in progress, which it
    leaves exactly as it was: its folder, the user's state, the files the session changed."""
    before = user_state(repo)
    done, folder = _demo(repo, tmp_path / "ws", env, "--include-uncommitted")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 uncommitted files of yours are in the session's base" in done.stderr
    assert "the snapshot of your uncommitted files, which stay yours" in done.stdout  # what apply will do
    assert user_state(repo) == before
    own = _own_changes(folder)
    assert {"docs/DESIGN.md", "docs/REVIEW.md", "app/health_endpoint.py"} <= own
    assert not own & {"README.md", "lib/util.py", "notes.txt"}  # the snapshot is not the session's change
    return folder, before, own


def test_apply_with_the_work_in_progress_still_uncommitted_brings_the_session_change_only(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    folder, before, own = _session_with_wip(user_repo, tmp_path, demo_env)
    refs = _refs(user_repo)
    applied = _apply(folder, env=demo_env)
    assert applied.returncode == 0, applied.stderr
    assert "(one commit " in applied.stdout and "only the session's own changes came in" in applied.stdout
    assert git(user_repo, "rev-parse", "HEAD~1") == before["head"]  # one commit on their HEAD
    assert _commit_files(user_repo) == own  # none of their work in progress
    assert git(user_repo, "show", "HEAD:README.md") == "# project\n"
    assert "notes.txt" not in git(user_repo, "ls-tree", "-r", "--name-only", "HEAD")
    after = user_state(user_repo)
    for name in ("README.md", "notes.txt", "debug.log", "lib/util.py"):  # their work: still there, uncommitted
        assert after["files"][name] == before["files"][name]
    assert after["cached"] == before["cached"]  # lib/util.py still staged, as it was
    assert after["unstaged"] == before["unstaged"]
    assert after["stash"] == before["stash"] and after["branch"] == before["branch"]
    gained = set(_refs(user_repo).splitlines()) - set(refs.splitlines())
    assert gained == {f"refs/heads/main {git(user_repo, 'rev-parse', 'HEAD').strip()}"}  # no other ref came in
    head = git(user_repo, "rev-parse", "HEAD")
    for extra in ((), ("--squash",)):  # again, either way: nothing to do, no empty commit
        again = _apply(folder, *extra, env=demo_env)
        assert again.returncode == 0 and "is already in main; nothing to do" in again.stdout, again.stderr
    assert git(user_repo, "rev-parse", "HEAD") == head


def test_apply_after_git_stash_commits_no_work_in_progress_and_stash_pop_works(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    folder, before, own = _session_with_wip(user_repo, tmp_path, demo_env)
    git(user_repo, *USER, "stash", "push", "-q", "--include-untracked", "-m", "work in progress")
    assert git(user_repo, "status", "--porcelain") == ""  # their tree: clean at HEAD
    applied = _apply(folder, "--squash", env=demo_env)
    assert applied.returncode == 0, applied.stderr
    assert _commit_files(user_repo) == own
    assert "the user's own note" not in git(user_repo, "show", "HEAD")
    git(user_repo, "stash", "pop", "-q")  # check=True: it must work
    for name, text in WIP.items():
        assert (user_repo / name).read_text() == text
    assert (user_repo / "notes.txt").read_text() == "the user's untracked notes\n"
    assert git(user_repo, "stash", "list") == before["stash"][0]  # the older entry only, as before
    assert git(user_repo, "symbolic-ref", "HEAD") == before["branch"]
    again = _apply(folder, env=demo_env)  # their work back in the tree: still nothing to do
    assert again.returncode == 0 and "already in main" in again.stdout, again.stderr


def test_a_session_that_built_on_the_work_in_progress_applies_once_the_user_commits_it(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    """The agents append to README.md, which the user's work in progress changed: with that
    work uncommitted apply refuses (naming the file); once committed, the session's lines
    come on top, as one commit of the session's change only."""
    env = {**demo_env, SHARED_FILE_ENV: "README.md"}
    before = user_state(user_repo)
    done, folder = _demo(user_repo, tmp_path / "ws", env, "--include-uncommitted")
    assert done.returncode == 0, done.stderr[-3000:]
    on_branch = branch_file(session_store(folder), f"orchestrate/{folder.name}", "README.md")
    assert on_branch.startswith(WIP["README.md"]) and "- implementer" in on_branch
    refused = _apply(folder, env=env)
    assert refused.returncode == 1 and "README.md" in refused.stderr and "commit" in refused.stderr
    assert len(refused.stderr) < 800 and "Traceback" not in refused.stderr
    assert user_state(user_repo) == before  # nothing moved
    git(user_repo, "add", "-A")
    git(user_repo, *USER, "commit", "-q", "-m", "my work in progress")
    mine = git(user_repo, "rev-parse", "HEAD").strip()
    applied = _apply(folder, env=env)
    assert applied.returncode == 0, applied.stderr
    assert git(user_repo, "rev-parse", "HEAD~1").strip() == mine
    assert (user_repo / "README.md").read_text() == on_branch
    added = git(user_repo, "diff", "HEAD~1", "HEAD", "--", "README.md")
    assert "+- implementer" in added and "+the user's own note" not in added  # their line is theirs
    assert git(user_repo, "status", "--porcelain") == ""


def test_apply_names_a_few_files_and_the_count_never_the_whole_list(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    wip = user_repo / "wip"
    wip.mkdir()
    for number in range(2000):
        (wip / f"draft-{number:04}.txt").write_text(f"draft {number}\n")
    done, folder = _demo(user_repo, tmp_path / "ws", demo_env, "--include-uncommitted")
    assert done.returncode == 0, done.stderr[-3000:]
    (user_repo / "docs").mkdir()
    (user_repo / "docs" / "DESIGN.md").write_text("the user's own design, written meanwhile\n")
    state = user_state(user_repo)
    refused = _apply(folder, env=demo_env)
    assert refused.returncode == 1
    assert "docs/DESIGN.md" in refused.stderr and "draft-" not in refused.stderr and len(refused.stderr) < 800
    assert user_state(user_repo) == state
    (user_repo / "docs" / "DESIGN.md").unlink()
    applied = _apply(folder, env=demo_env)  # 2,000 files of work in progress stay theirs
    assert applied.returncode == 0, applied.stderr
    assert not [n for n in _commit_files(user_repo) if n.startswith("wip/")]
    assert len(list(wip.iterdir())) == 2000
    assert few([f"f{n}" for n in range(5000)]) == "f0, f1, f2, f3, f4 and 4,995 more (5,000 files)"
    assert few(["a", "b"]) == "a, b"


# -- a repository in the middle of an operation ---------------------------------------------


@pytest.fixture
def two_sides(tmp_path: Path) -> Path:
    """main and side each changed the same line of f.txt (any operation between them conflicts)."""
    repo = tmp_path / "mid"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for message, text, branch in (("a", "a\n", None), ("b", "b\n", "side"), ("c", "c\n", "main")):
        if branch == "side":
            git(repo, "checkout", "-q", "-b", "side")
        elif branch == "main":
            git(repo, "checkout", "-q", "main")
        (repo / "f.txt").write_text(text)
        git(repo, "add", "f.txt")
        git(repo, *USER, "commit", "-q", "-m", message)
    (repo / "note.txt").write_text("the user's untracked note\n")
    return repo


def _conflicted(repo: Path, *args: str) -> None:
    done = subprocess.run(
        ["git", "-C", str(repo), *USER, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode != 0, done  # it stopped half-way, as wanted


def _am(repo: Path) -> None:
    patch = subprocess.run(
        ["git", "-C", str(repo), "format-patch", "-1", "--stdout", "side"], capture_output=True, check=True, timeout=60
    ).stdout
    done = subprocess.run(["git", "-C", str(repo), *USER, "am"], input=patch, capture_output=True, timeout=60)
    assert done.returncode != 0, done


STATES = {
    "merge": (lambda repo: _conflicted(repo, "merge", "side"), "a merge", "git merge --abort"),
    "rebase": (lambda repo: _conflicted(repo, "rebase", "side"), "a rebase", "git rebase --abort"),
    "cherry-pick": (lambda repo: _conflicted(repo, "cherry-pick", "side"), "a cherry-pick", "--abort"),
    "revert": (lambda repo: _conflicted(repo, "revert", "--no-edit", "HEAD~1"), "a revert", "git revert --abort"),
    "am": (_am, "a git am", "git am --abort"),
    "bisect": (lambda repo: git(repo, "bisect", "start", "HEAD", "HEAD~1"), "a bisect", "git bisect reset"),
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_include_uncommitted_mid_operation_is_refused_before_anything_starts(
    two_sides: Path, tmp_path: Path, demo_env: dict[str, str], state: str
) -> None:
    make, what, fix = STATES[state]
    make(two_sides)
    before = (git_folder_bytes(two_sides), (two_sides / "f.txt").read_bytes(), git(two_sides, "status", "-z"))
    ws = tmp_path / "ws"
    done = _orchestrate(
        ["x", "--demo", "--target", str(two_sides), "--no-dashboard", "--workspace", str(ws), "--include-uncommitted"],
        demo_env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert f"is in the middle of {what}" in done.stderr and fix in done.stderr and "Nothing was started" in done.stderr
    assert not ws.exists() or not list(ws.iterdir())  # no session folder, half-made or not
    assert (git_folder_bytes(two_sides), (two_sides / "f.txt").read_bytes(), git(two_sides, "status", "-z")) == before


def test_unmerged_files_without_an_operation_are_refused_by_name(
    two_sides: Path, tmp_path: Path, demo_env: dict[str, str]
) -> None:
    (two_sides / "f.txt").write_text("stashed\n")
    git(two_sides, *USER, "stash", "-q")
    git(two_sides, "checkout", "-q", "side")
    _conflicted(two_sides, "stash", "pop")  # unmerged f.txt, no MERGE_HEAD
    ws = tmp_path / "ws"
    args = ["x", "--demo", "--target", str(two_sides), "--no-dashboard", "--workspace", str(ws)]
    done = _orchestrate([*args, "--include-uncommitted"], demo_env)
    assert done.returncode == 2 and "has unmerged files" in done.stderr and "f.txt" in done.stderr, done.stderr
    assert not ws.exists() or not list(ws.iterdir())


def test_without_include_uncommitted_a_session_mid_merge_starts_from_head_and_says_so(
    two_sides: Path, tmp_path: Path, demo_env: dict[str, str]
) -> None:
    _conflicted(two_sides, "merge", "side")
    head = git(two_sides, "rev-parse", "HEAD").strip()
    before = git_folder_bytes(two_sides)
    done, folder = _demo(two_sides, tmp_path / "ws", demo_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "your repository is in the middle of a merge" in done.stderr
    assert f"the session starts from HEAD {head[:10]} (on main)" in done.stderr
    assert _base(folder) == head
    assert "<<<<<<<" not in branch_file(session_store(folder), f"orchestrate/{folder.name}", "f.txt")
    assert git_folder_bytes(two_sides) == before  # MERGE_HEAD and the rest: as they were


# -- apply never makes an empty commit --------------------------------------------------------


def test_apply_twice_squash_twice_and_plain_after_squash_add_nothing(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    demo_env: dict[str, str],
) -> None:
    other = tmp_path / "other"
    shutil.copytree(user_repo, other, symlinks=True)  # the same start, for the squash
    for repo, first_how in ((user_repo, ()), (other, ("--squash",))):
        done, folder = _demo(repo, tmp_path / f"ws-{repo.name}", demo_env)
        assert done.returncode == 0, done.stderr[-3000:]
        first = _apply(folder, *first_how, env=demo_env)
        said = "one squashed commit" if first_how else "(fast-forward "
        assert first.returncode == 0 and said in first.stdout, first.stderr
        head = git(repo, "rev-parse", "HEAD")
        assert (repo / "docs" / "REVIEW.md").is_file()
        for how in ((), ("--squash",)):  # a plain apply after a squash too: no empty merge commit
            again = _apply(folder, *how, env=demo_env)
            assert again.returncode == 0 and "is already in main; nothing to do" in again.stdout, again.stderr
        assert git(repo, "rev-parse", "HEAD") == head  # no commit at all


# -- submodules in the checkouts ---------------------------------------------------------------


@pytest.fixture
def with_submodules(tmp_path: Path) -> Path:
    """A repository with two submodules (file:// URLs): vendor/lib checked out, vendor/other
    never initialized here (its folder is empty in the user's tree too)."""
    for name in ("lib", "other"):
        source = tmp_path / f"{name}-source"
        source.mkdir()
        git(source, "init", "-q", "-b", "main")
        (source / f"{name}.py").write_text(f"NAME = {name!r}\n")
        git(source, "add", "-A")
        git(source, *USER, "commit", "-q", "-m", name)
    repo = tmp_path / "super"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("import vendor.lib.lib\n")
    for name in ("lib", "other"):
        source = (tmp_path / f"{name}-source").as_uri()
        git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", source, f"vendor/{name}")
    git(repo, "add", "-A")
    git(repo, *USER, "commit", "-q", "-m", "with submodules")
    git(repo, "submodule", "deinit", "-q", "-f", "vendor/other")
    return repo


def _gitlinks(repo: Path, commit: str) -> str:
    return git(repo, "ls-tree", commit, "vendor/")


def test_checkouts_hold_the_user_submodules_read_only_and_name_the_empty_ones(
    with_submodules: Path, tmp_path: Path, bwrap: str
) -> None:
    sid = "20260101-120000-abc123"
    opened = open_session_repo(with_submodules, private_dir(private_dir(tmp_path / "ws") / sid), sid)
    assert opened.repo is not None, opened.message
    assert "submodule folder vendor/lib is filled read-only in the checkouts" in opened.message
    assert "submodule folder vendor/other is empty in the checkouts" in opened.message
    made = opened.repo
    checkout = made.checkout("implement")
    lib = checkout.path / "vendor" / "lib"
    assert (lib / "lib.py").read_text() == "NAME = 'lib'\n" and not (lib / ".git").exists()
    assert not os.stat(lib / "lib.py").st_mode & 0o222 and not os.stat(lib).st_mode & 0o222
    assert list((checkout.path / "vendor" / "other").iterdir()) == []
    assert checkout.note is not None and "vendor/lib hold the files" in checkout.note
    assert "vendor/other are empty here" in checkout.note
    writable, readable = checkout.sandbox_paths()
    assert str(lib) in readable
    # In the sandbox the agents run in, the filled folder is read-only even to root.
    confinement = Confinement(bwrap=bwrap, writable=writable, readable=readable, chdir=str(checkout.path))
    tried = subprocess.run(
        bwrap_argv(confinement, ["sh", "-c", "echo x > vendor/lib/lib.py || exit 7; echo y > mine.txt"]),
        capture_output=True,
        timeout=60,
    )
    assert tried.returncode == 7 and b"Read-only file system" in tried.stderr, tried
    (checkout.path / "app.py").write_text("import vendor.lib.lib  # used\n")
    assert made.commit_assignment("implement", "claude", "use the library") is not None
    assert made.merge_assignment("implement").ok
    tip = made.tip()
    assert _gitlinks(made.store, tip) == _gitlinks(with_submodules, "HEAD")  # gitlinks as they were
    assert "mine.txt" not in git(made.store, "ls-tree", "--name-only", tip)  # the script stopped at the refusal
    view = made.readonly_checkout("plan", tip)
    assert (view.path / "vendor" / "lib" / "lib.py").is_file()
    assert made.cleanup() == []  # the read-only folders went with their checkouts
    assert not list((tmp_path / "ws" / sid / "checkouts").iterdir()) and not (view.path).exists()


def test_a_demo_session_on_a_repository_with_submodules_tells_the_agents_and_applies(
    with_submodules: Path, tmp_path: Path, demo_env: dict[str, str]
) -> None:
    before = git_folder_bytes(with_submodules)
    # gemini by its stream: the prompt is read off its echo there (over ACP nothing echoes it).
    config = tmp_path / "stream.toml"
    config.write_text('[agents.gemini]\nprotocol = "stream"\n')
    done, folder = _demo(with_submodules, tmp_path / "ws", demo_env, "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submodule folder vendor/lib is filled read-only" in done.stderr
    prompts = (folder / "gemini.jsonl").read_text()  # the architect's launch, its prompt in full
    assert "vendor/lib hold the files of the commit the repository records" in prompts
    assert git_folder_bytes(with_submodules) == before
    applied = _apply(folder, env=demo_env)
    assert applied.returncode == 0, applied.stderr
    assert _gitlinks(with_submodules, "HEAD") == _gitlinks(with_submodules, "HEAD~1")
    assert (with_submodules / "vendor" / "lib" / "lib.py").is_file()
    assert git(with_submodules, "status", "--porcelain") == ""
