"""The Workspace actor with real git: checkouts on request, commit and merge after a run, a
conflict left in the checkout (and kept there when it is reused), failures as answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meta_orchestrator.actors.files.session_files import private_dir
from meta_orchestrator.actors.workspaces.workspace import Workspace
from meta_orchestrator.messages.workspace import (
    AssignmentMerged,
    ChangesUpdated,
    CheckoutFailed,
    CheckoutReady,
    MergeAssignment,
    PrepareCheckout,
)
from tests.workspaces.test_workspaces import _no_global_git_config, git, new_session, user_repo  # noqa: F401


def _prepare(actor: Any, probe: Any, assignment_id: str) -> CheckoutReady:
    actor.tell(PrepareCheckout(assignment_id=assignment_id, reply_to=probe.ref))
    return probe.expect(CheckoutReady, where=lambda m: m.assignment_id == assignment_id)


def _merge(actor: Any, probe: Any, assignment_id: str, agent: str = "claude") -> AssignmentMerged:
    actor.tell(MergeAssignment(assignment_id=assignment_id, agent=agent, title=assignment_id, reply_to=probe.ref))
    return probe.expect(AssignmentMerged, where=lambda m: m.assignment_id == assignment_id)


def test_checkouts_commits_merges_and_the_changes_told(user_repo: Path, tmp_path: Path, probe: Any) -> None:  # noqa: F811
    repo = new_session(private_dir(tmp_path / "ws"), user_repo)
    actor = Workspace.start(repo=repo, listeners=(probe.ref,))
    ready = _prepare(actor, probe, "implement")
    workdir = Path(ready.workdir)
    assert workdir.is_dir() and ready.base == repo.base
    assert str(Path(repo.record.common_dir) / "objects") in ready.read_only_dirs  # its sandbox reads them
    assert str(workdir) not in ready.read_only_dirs  # its own tree is the one it writes
    (workdir / "health.py").write_text("OK = True\n")
    merged = _merge(actor, probe, "implement")
    assert merged.error is None and merged.result is not None and merged.result.status == "fast_forward"
    assert merged.commit == repo.tip()
    changes = probe.expect(ChangesUpdated).changes
    assert [f.path for f in changes.files] == ["health.py"] and changes.tip == repo.tip()
    nothing = _merge(actor, probe, "implement")  # nothing new: up to date, no change told
    assert nothing.result is not None and nothing.result.status == "up_to_date" and nothing.commit == merged.commit
    probe.barrier()
    assert not [m for m in probe.drain() if isinstance(m, ChangesUpdated)]
    actor.stop()
    Workspace.start(repo=repo, listeners=(probe.ref,))  # as on resume: what the branch has so far
    assert probe.expect(ChangesUpdated).changes.tip == repo.tip()


def test_a_conflict_stays_in_its_checkout_until_its_agent_resolves_it(
    user_repo: Path,  # noqa: F811
    tmp_path: Path,
    probe: Any,
) -> None:
    repo = new_session(private_dir(tmp_path / "ws"), user_repo)
    actor = Workspace.start(repo=repo, listeners=())
    first, second = Path(_prepare(actor, probe, "one").workdir), Path(_prepare(actor, probe, "two").workdir)
    (first / "app.py").write_text("def main():\n    return 'one'\n")
    (second / "app.py").write_text("def main():\n    return 'two'\n")
    assert _merge(actor, probe, "one").result.ok
    conflict = _merge(actor, probe, "two", agent="codex")
    assert (conflict.result.status, conflict.result.conflicts) == ("conflict", ("app.py",))
    assert "<<<<<<<" in (second / "app.py").read_text()
    # Its agent runs again in the same checkout: made again, it would have lost the markers.
    again = _prepare(actor, probe, "two")
    assert Path(again.workdir) == second and "<<<<<<<" in (second / "app.py").read_text()
    still = _merge(actor, probe, "two", agent="codex")  # markers left: the same conflict
    assert (still.result.status, still.result.conflicts, still.error) == ("conflict", ("app.py",), None)
    (second / "app.py").write_text("def main():\n    return 'one and two'\n")
    resolved = _merge(actor, probe, "two", agent="codex")
    assert resolved.result.ok and resolved.result.status == "fast_forward"
    assert git(repo.store, "show", f"{repo.branch}:app.py") == "def main():\n    return 'one and two'\n"
    assert len(git(repo.store, "log", "-1", "--format=%P", repo.branch).split()) == 2  # both histories


def test_git_failing_is_an_answer_not_a_crash(user_repo: Path, tmp_path: Path, probe: Any) -> None:  # noqa: F811
    repo = new_session(private_dir(tmp_path / "ws"), user_repo)
    actor = Workspace.start(repo=repo, listeners=())
    actor.tell(PrepareCheckout(assignment_id="../escape", reply_to=probe.ref))
    failed = probe.expect(CheckoutFailed)
    assert failed.assignment_id == "../escape" and "is not valid" in failed.error
    merged = _merge(actor, probe, "never-prepared")
    assert merged.result is None and "has no checkout" in (merged.error or "")
    assert actor.is_alive()
