"""The real pinned GitHub Copilot CLI (``@github/copilot`` 1.0.102) against the scripted model
server, through its adapter: BYOK (``COPILOT_PROVIDER_TYPE=anthropic``, the server as base URL,
no GitHub login, ``COPILOT_OFFLINE``), the prompt on stdin, stdout through the adapter's parser.

Every run: fresh HOME and workspace, its own process group, a watchdog (``run_process``); the
package copilot unpacks on its first start goes to one cache folder for the module
(``XDG_CACHE_HOME``), so only the first run pays for it (~5 s).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.agents.worker import Worker
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.sandbox.bwrap import OsSandbox
from meta_orchestrator.config.settings import AgentSettings, SessionSettings
from tests.agents import test_prompt_delivery as prompt_delivery
from tests.agents.test_real_clis import (  # noqa: F401 - fixtures
    AdapterRun,
    cli_bin,
    no_leftover_children,
    run_process,
    server,
)
from tests.conftest import ProbeHandle
from tests.realcli.model_server import (
    MARKER_ANSWER,
    MARKER_TEXT,
    TEXT_ANSWER,
    WRITE_CONTENT,
    ScriptedModelServer,
    error_message,
    write_done_text,
)

pytestmark = pytest.mark.realcli

MODEL = "claude-sonnet-4.5"  # a model copilot knows (token limits); the server answers any


@pytest.fixture(scope="module")
def copilot_cache() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="copilot-cache-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class CopilotRig:
    """One run's world: fresh HOME and workspace, copilot pointed at the server (BYOK)."""

    def __init__(self, bin_dir: Path, model_server: ScriptedModelServer, root: Path, cache: Path) -> None:
        self.server = model_server
        self.exe = str(bin_dir / "copilot")
        self.home, self.work = root / "home", (root / "work").resolve()
        for folder in (self.home, self.work):
            folder.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "XDG_CACHE_HOME": str(cache),
            "COPILOT_PROVIDER_TYPE": "anthropic",
            "COPILOT_PROVIDER_BASE_URL": model_server.url,
            "COPILOT_PROVIDER_API_KEY": "sk-copilot-mock",
            "COPILOT_MODEL": MODEL,
        }

    def run(self, prompt: str, mode: str = "write", resume: str | None = None) -> AdapterRun:
        adapter = get_adapter("copilot")
        launch = adapter.build_launch(
            LaunchSpec(
                executable=(self.exe,),
                prompt=prompt,
                workdir=self.work,
                mode=mode,  # type: ignore[arg-type]
                resume_session_id=resume,
                env=self.env,
            )
        )
        assert prompt not in " ".join(launch.argv)  # any local user can read a command line
        run = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
        parser = adapter.new_parser()
        drafts = []
        for line in run.stdout.splitlines():
            drafts.extend(parser.feed_line(line))
        drafts.extend(parser.finish(run.returncode, tuple(run.stderr_text.splitlines()[-20:])))
        return AdapterRun(run, drafts, parser.outcome(writing=mode == "write"))


@pytest.fixture
def rig(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path, copilot_cache: Path) -> CopilotRig:  # noqa: F811
    return CopilotRig(cli_bin, server, tmp_path, copilot_cache)


def _classified(res: AdapterRun) -> str | None:
    """The error class Recovery would give this run (its evidence: error texts, then stderr)."""
    lines = [d.payload.text or "" for d in res.drafts if d.type in ("error", "blocker")]
    lines += [res.outcome.error or "", *res.outcome.permission_denials, *res.run.stderr_text.splitlines()]
    found = classify_run(
        Evidence(
            agent="copilot",
            lines=tuple(lines),
            returncode=res.run.returncode,
            terminal_event_seen=res.outcome.terminal_event_seen,
            succeeded=res.outcome.success,
        )
    )
    return found.cause if found else None


def test_text_answer_with_a_marker_and_a_resume(rig: CopilotRig) -> None:
    res = rig.run("Report a milestone. SCRIPT:marker")
    assert res.run.returncode == 0, res.describe()
    assert [m.payload.text for m in res.of("milestone", "marker")] == [MARKER_TEXT], res.describe()
    assert res.outcome.success and res.outcome.terminal_event_seen, res.describe()
    assert res.outcome.final_text == MARKER_ANSWER
    assert res.of("review") and MARKER_TEXT not in (res.of("review")[0].payload.text or "")
    session = res.outcome.session_id
    assert session, res.describe()
    # The prompt reached the model from stdin, whole.
    prompts = [r for r in rig.server.recorded("anthropic") if "SCRIPT:marker" in str(r.body)]
    assert prompts and all(r.headers.get("x-api-key") == "sk-copilot-mock" for r in prompts), prompts

    again = rig.run("Once more. SCRIPT:text", resume=session)
    assert again.outcome.success, again.describe()
    assert again.outcome.session_id == session
    assert again.outcome.final_text == TEXT_ANSWER
    last = rig.server.recorded("anthropic")[-1].body
    assert "SCRIPT:marker" in str(last["messages"][0]), "the resumed run carries the first turn"


def test_a_written_file(rig: CopilotRig) -> None:
    res = rig.run("Create the file. SCRIPT:write hello.txt")
    target = rig.work / "hello.txt"
    assert res.run.returncode == 0, res.describe()
    assert target.read_text() == WRITE_CONTENT, res.describe()
    written = res.of("milestone", "file_written")
    assert [Path(w.payload.file or "") for w in written] == [target], res.describe()
    assert [Path(f) for f in res.outcome.files_written] == [target]
    # The create tool is named in the sandbox policy's words.
    assert [d.payload.tool for d in res.of("progress", "tool_call")] == ["Write"], res.describe()
    assert res.outcome.success and res.outcome.final_text == write_done_text("hello.txt"), res.describe()


@pytest.mark.parametrize(
    ("status", "cause", "retryable", "attempts"),
    [(401, "auth", False, 3), (429, "rate_limit", True, 6), (500, "server", True, 6)],
)
def test_api_errors_are_classified(rig: CopilotRig, status: int, cause: str, retryable: bool, attempts: int) -> None:
    res = rig.run(f"Do the thing. SCRIPT:error {status}")
    assert res.run.returncode == 1, res.describe()
    api = res.of("error", "api_error")
    assert len(api) == 1 and api[0].payload.retryable is retryable, res.describe()
    terminal = [d for d in res.of("error") if d.payload.terminal]
    assert len(terminal) == 1 and terminal[0].payload.retryable is retryable, res.describe()
    text = terminal[0].payload.text or ""
    if status == 401:
        assert f"Authentication failed with provider at {rig.server.url} (HTTP 401)" in text, text
    else:
        assert "retried 5 times" in text and f"Last error: {status} {error_message(status)}" in text, text
    assert not res.outcome.success and not res.of("review")
    assert _classified(res) == cause, res.describe()
    # Copilot's own retries (measured): 401 three tries, 429 and 500 one plus five retries.
    assert len(rig.server.recorded("anthropic")) == attempts


def test_a_review_run_cannot_write_or_run_commands(rig: CopilotRig) -> None:
    written = rig.run("Review it. SCRIPT:write review-wrote.txt", mode="read_only")
    ran = rig.run("Review it. SCRIPT:bash touch review-ran.txt", mode="read_only")
    assert sorted(p.name for p in rig.work.iterdir()) == [], (written.describe(), ran.describe())
    for res, rule in ((written, "write"), (ran, "shell")):
        assert res.run.returncode == 0, res.describe()
        denials = res.of("blocker", "denial")
        assert [d.payload.text for d in denials] == [
            f"Permission to run this tool was denied due to the following rules: `{rule}`"
        ], res.describe()
        assert _classified(res) == "mode_too_strict", res.describe()
    assert written.outcome.success  # a review that wrote nothing still answers


def test_a_path_outside_the_workspace_is_denied_headless(rig: CopilotRig) -> None:
    # Not under /tmp: copilot lets its file tools reach the system temp folder unasked
    # (--disallow-temp-dir turns that off; inside the OS sandbox /tmp is private anyway).
    folder = Path(tempfile.mkdtemp(prefix="copilot-outside-", dir="/var/tmp"))
    outside = folder / "outside.txt"
    try:
        res = rig.run(f"Leave a note. SCRIPT:write {outside}")
        assert not outside.exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    denials = res.of("blocker", "denial")
    assert denials and "no interactive user response was available" in (denials[0].payload.text or ""), res.describe()
    assert _classified(res) == "outside_path", res.describe()


@pytest.mark.parametrize("sandboxed", [False, True])
def test_the_whole_prompt_goes_on_stdin_and_no_command_line_shows_it(
    sandboxed: bool,
    cli_bin: Path,  # noqa: F811
    server: ScriptedModelServer,  # noqa: F811
    tmp_path: Path,
    probe: ProbeHandle,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review-sized prompt, held at the server: no command line holds it, the model gets it
    whole, on a first and on a resumed run (prompt_delivery's check, for copilot)."""
    monkeypatch.setitem(prompt_delivery.API, "copilot", "anthropic")
    root = Path(tempfile.mkdtemp(prefix="orch-copilot-prompt-", dir="/var/tmp"))  # the home visible inside
    try:
        rig = CopilotRig(cli_bin, server, root, root / "cache")
        del rig.env["XDG_CACHE_HOME"]  # ~/.cache/copilot, as a user has it
        session_dir = tmp_path / "session"
        session_dir.mkdir()
        worker = Worker.start(
            agent="copilot",
            adapter=get_adapter("copilot"),
            agent_settings=AgentSettings(command=rig.exe, share_min=0.1, share_max=0.5),
            session_settings=SessionSettings(stop_grace_s=2.0, assignment_timeout_s=90),
            session_id="prompt-test",
            session_dir=session_dir,
            target=rig.work,
            base_env={**rig.env, **prompt_delivery.SECRET},
            sandbox=OsSandbox(bwrap=request.getfixturevalue("bwrap")) if sandboxed else None,
        )
        try:
            session_id = prompt_delivery._held_run(worker, probe, server, "copilot", None, sandboxed)
            assert session_id
            prompt_delivery._held_run(worker, probe, server, "copilot", session_id, sandboxed)
        finally:
            worker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
