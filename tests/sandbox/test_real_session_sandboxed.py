"""A whole session with the three real pinned CLIs, as root, inside the OS sandbox.

Gemini plans and designs, claude implements, codex reviews (the default team), each a real
CLI against the scripted model server, each confined by bubblewrap and Landlock, each on its
private copy of its CLI state, each with its prompt on stdin and only its allowlisted
environment. One prompt makes each CLI write a file of its own name (``{cli}``): all three
must be on the session branch, codex's included (its own sandbox cannot run inside ours as
root, so inside ours it runs with its own off).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.config.settings import load_settings
from tests.conftest import session_store
from tests.realcli.model_server import WRITE_CONTENT, ScriptedModelServer
from tests.agents.test_real_clis import MODELS, cli_bin, server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.session, pytest.mark.realcli]
SESSION = "real-three"


@pytest.fixture
def root() -> Iterator[Path]:
    # Outside /tmp: inside the sandbox /tmp is private, and HOME, the target and the workspace live here.
    folder = Path(tempfile.mkdtemp(prefix="orch-real-session-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout


def _target(root: Path) -> Path:
    target = root / "app"
    target.mkdir()
    (target / "README.md").write_text("# app\n")
    _git(target, "init", "-q", "-b", "main")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "start")
    return target


def _environment(root: Path, url: str) -> dict[str, str]:
    home = root / "home"
    (home / ".gemini").mkdir(parents=True)
    gemini = {"general": {"maxAttempts": 1}, "security": {"auth": {"selectedType": "gemini-api-key"}}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(gemini))
    (root / "codex-home").mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-mock",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CODEX_HOME": str(root / "codex-home"),
        "MOCK_API_KEY": "sk-mock",
        "GOOGLE_GEMINI_BASE_URL": url,
        "GEMINI_API_KEY": "mock-gemini-key",
        "GITHUB_TOKEN": "must-not-reach-an-agent",
    }


def _codex_provider(url: str) -> list[str]:
    p = "model_providers.mock"
    pairs = (
        "model_provider=mock",
        f"{p}.name=mock",
        f'{p}.base_url="{url}/v1"',
        f"{p}.wire_api=responses",
        f"{p}.env_key=MOCK_API_KEY",
        f"{p}.request_max_retries=0",
        f"{p}.stream_max_retries=0",
    )
    return [arg for pair in pairs for arg in ("-c", pair)]


def test_the_three_real_clis_each_put_their_own_file_on_the_session_branch(
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    bwrap: str,
    root: Path,
) -> None:
    target = _target(root)
    agents = {
        name: {"command": str(cli_bin / name), **({"model": MODELS[name]} if MODELS[name] else {})}
        for name in ("claude", "codex", "gemini")
    }
    agents["codex"]["extra_args"] = _codex_provider(server.url)
    overrides = {
        "workspace": str(root / "workspace"),
        "review.enabled": False,
        "limits.enabled": False,
        "questions.unattended": "defaults",
        "session.assignment_timeout_s": 120,
        **{f"agents.{name}.{key}": value for name, table in agents.items() for key, value in table.items()},
    }
    settings = load_settings(None, overrides)
    assert settings.sandbox.os == "bwrap"
    options = LaunchRequest(
        task="SCRIPT:write own-{cli}.txt (one file per agent)",
        target=target,
        dashboard=False,
        console=False,
        session_id=SESSION,
        env=_environment(root, server.url),
    )
    code = run(settings, options)
    state = json.loads((root / "workspace" / SESSION / "state.json").read_text())
    done = {a["id"]: (a["agent"], a["status"], a.get("error")) for a in state["assignments"]}
    assert code == 0, (code, json.dumps(state["assignments"], indent=1)[:6000])
    branch = f"orchestrate/{SESSION}"
    store = session_store(root / "workspace" / SESSION)  # the branch is in the session's store
    on_branch = set(_git(store, "ls-tree", "-r", "--name-only", branch).split())
    for cli in ("claude", "codex", "gemini"):
        assert f"own-{cli}.txt" in on_branch, (on_branch, done)
        assert _git(store, "show", f"{branch}:own-{cli}.txt") == WRITE_CONTENT
    assert _git(target, "for-each-ref", "refs/heads/orchestrate/") == ""  # nothing in the user's repository
    assert sorted(p.name for p in target.iterdir()) == [".git", "README.md"]  # the user's tree as it was
    served = {r.api for r in server.requests}
    assert {"anthropic", "openai"} <= served and any(api.startswith("gemini") for api in served)
