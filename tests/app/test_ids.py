"""Ids from the command line and the APIs are one path component, or refused before any file is touched.

``orchestrate answer ../x q a`` used to write ``answers.json`` outside the workspace, ``show
../x`` read there and ``discard ../x`` ended in a traceback. The launcher runs here as the user
runs it, a real process, against a workspace with a session-like folder beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meta_orchestrator.messages.gateway import AnswerBody
from meta_orchestrator.messages.ids import InvalidId, check_question_id, check_session_id, is_session_id
from tests.conftest import PROJECT_ROOT

HOSTILE_SESSION_IDS = ["../x", "..", ".", "a/b", "/etc", "x/../../x", "-rf", ".hidden", "x.lock", "", "a" * 101, "é"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace, and beside it a folder that looks like a waiting session (the bait)."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    bait = tmp_path / "x"
    bait.mkdir()
    state = {
        "session_id": "x",
        "status": "waiting",
        "task": "bait",
        "questions": [{"id": "q1", "kind": "clarification", "status": "open", "text": "SECRET-BAIT-TEXT"}],
        "assignments": [],
    }
    (bait / "state.json").write_text(json.dumps(state))
    return workspace, bait


def _orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meta_orchestrator.actors.app.launcher", *args],
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        ["show", "../x"],
        ["show", "../x", "--json"],
        ["show", "../x", "--follow"],
        ["answer", "../x", "q1", "yes"],
        ["answer", "ok-id", "../q1", "yes"],
        ["resume", "../x", "--no-dashboard"],
        ["apply", "../x"],
        ["discard", "../x"],
    ],
)
def test_a_path_for_an_id_is_refused_with_exit_2_and_nothing_read_or_written(
    world: tuple[Path, Path], command: list[str]
) -> None:
    workspace, bait = world
    before, workspace_before = _tree(bait.parent), sorted(workspace.iterdir())
    done = _orchestrate(*command, "--workspace", str(workspace))
    assert done.returncode == 2, done
    assert "is not valid" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "SECRET-BAIT-TEXT" not in done.stdout + done.stderr
    assert _tree(bait.parent) == before  # nothing written beside the workspace, nothing added
    assert sorted(workspace.iterdir()) == workspace_before


def test_the_main_run_refuses_a_hostile_session_id_before_making_a_folder(tmp_path: Path) -> None:
    from meta_orchestrator.actors.app.system import PreflightError, LaunchRequest, prepare
    from meta_orchestrator.config.settings import load_settings

    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    for hostile in ("../escape", "a/b"):
        with pytest.raises(PreflightError, match="is not valid"):
            prepare(settings, LaunchRequest(task="t", target=None, demo=True, session_id=hostile))
        with pytest.raises(PreflightError, match="is not valid"):
            prepare(settings, LaunchRequest(task="", target=None, resume=hostile))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "ws").exists()


@pytest.mark.parametrize("value", HOSTILE_SESSION_IDS)
def test_session_ids_are_one_folder_name(value: str) -> None:
    with pytest.raises(InvalidId):
        check_session_id(value)
    assert not is_session_id(value)


@pytest.mark.parametrize("value", ["20261206-201336-a1b2c3", "my_session.2", "S1"])
def test_real_session_ids_pass(value: str) -> None:
    assert check_session_id(value) == value


@pytest.mark.parametrize("value", ["q-rev-001", "grant-rec-001", "conflict-a1-2", "sbx-finding-1a2b3c4d", "q1"])
def test_question_ids_the_session_makes_pass_and_paths_do_not(value: str) -> None:
    assert check_question_id(value) == value
    assert AnswerBody(question_id=value).question_id == value
    for hostile in ("../x", "a/b", "..", "/etc/passwd", "\n"):
        with pytest.raises(InvalidId):
            check_question_id(hostile)
        with pytest.raises(ValueError, match="question id"):
            AnswerBody(question_id=hostile)
