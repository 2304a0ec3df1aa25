"""The real pinned ``claude``, ``codex`` and ``gemini`` CLIs against the scripted model server.

Two layers, both driving the real programs (tests/realcli/package.json pins the versions):

* ``test_cli_*``: hand-written command lines (reference §6/§7), raw stdout checked against
  the shapes the reference documents. If these fail, the CLI changed, not our code.
* ``test_adapter_*``: the command line comes from ``get_adapter(name).build_launch`` (only
  test-only flags added: the codex provider overrides and model names), stdout goes through
  the adapter's parser, and the unified events and ``RunOutcome`` are checked.

Every run: fresh HOME/TMPDIR/CODEX_HOME, stdin closed (or, through an adapter, the prompt
written to it and closed), its own process group, a 60 s
watchdog that kills the group and fails the test; after each test no child is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.realcli.install import BIN_ENV, RealCliUnavailable, ensure_real_clis
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

CLIS = ("claude", "codex", "gemini")
RUN_TIMEOUT_S = 60
WRITE_NAME = "hello.txt"
# Test-only model names: codex needs a model it has metadata for (else no apply_patch);
# gemini's explicit model skips the router request. Claude's default is fine.
MODELS: dict[str, str | None] = {"claude": None, "codex": "gpt-5.5", "gemini": "gemini-2.5-flash"}
ERROR_STATUSES = (401, 429, 500)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def cli_bin() -> Path:
    """``tests/realcli/node_modules/.bin``, installed with ``npm ci`` if needed, or the
    folder ``ORCHESTRATE_REAL_CLI_BIN`` names (e.g. the latest releases)."""
    try:
        return ensure_real_clis()
    except RealCliUnavailable as exc:
        reason = f"real CLIs unavailable: {exc}"
        if os.environ.get("CI") or os.environ.get(BIN_ENV):  # a folder asked for by name must be there
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_leftover_children() -> Iterator[None]:
    """After each test, no process started by it may still be a child of this one."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    deadline = time.monotonic() + 5
    while True:
        left = []
        for p in me.children(recursive=True):
            try:
                if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{p.pid} {p.name()} {' '.join(p.cmdline())[:200]}")
            except psutil.NoSuchProcess:
                pass
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"child processes left behind: {left}"


# --------------------------------------------------------------------------- running


@dataclass
class Run:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def lines(self) -> list[bytes]:
        return [line for line in self.stdout.split(b"\n") if line.strip()]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def describe(self) -> str:
        return (
            f"argv: {' '.join(self.argv)[:600]}\nexit {self.returncode} after "
            f"{self.seconds:.1f} s\n--- stdout (tail)\n"
            f"{self.stdout.decode('utf-8', 'replace')[-3000:]}\n--- stderr (tail)\n"
            f"{self.stderr_text[-2000:]}"
        )


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of the process group (zombies are dead: whoever inherited them reaps)."""
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return members


def run_process(argv: tuple[str, ...], env: dict[str, str], cwd: Path, stdin: bytes | None = None) -> Run:
    """Run to completion with a watchdog; kill the whole process group on timeout. ``stdin``
    is written to the process and closed (None: stdin closed at once)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        run = Run(tuple(argv), proc.returncode, out, err, time.monotonic() - start)
        pytest.fail(f"no exit within {RUN_TIMEOUT_S} s; process group killed\n{run.describe()}")
    run = Run(tuple(argv), proc.returncode, out, err, time.monotonic() - start)
    survivors = _group_members(proc.pid)
    details = []
    for p in survivors:
        try:
            details.append((p.pid, p.ppid(), p.status(), p.cmdline()[:8]))
        except psutil.Error as exc:
            details.append((p.pid, repr(exc)))
    if survivors:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"processes of the run outlived it: {details}\n" + run.describe())
    return run


@dataclass
class Rig:
    """One run's world: fresh HOME, TMPDIR, CODEX_HOME and workspace, pointed at the server."""

    cli: str
    bin_dir: Path
    server: ScriptedModelServer
    root: Path
    env: dict[str, str] = field(init=False)
    extra_args: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.home, self.tmp, self.codex_home, self.work = (self.root / n for n in ("home", "tmp", "codex-home", "work"))
        for d in (self.home, self.tmp, self.codex_home, self.work):
            d.mkdir(parents=True)
        self.work = self.work.resolve()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
        url = self.server.url
        if self.cli == "claude":
            self.env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="sk-ant-mock", CLAUDE_CODE_MAX_RETRIES="0")
        elif self.cli == "codex":
            self.env.update(CODEX_HOME=str(self.codex_home), MOCK_API_KEY="sk-mock")
            p = "model_providers.mock"
            self.extra_args = (
                "-c",
                "model_provider=mock",
                "-c",
                f"{p}.name=mock",
                "-c",
                f'{p}.base_url="{url}/v1"',
                "-c",
                f"{p}.wire_api=responses",
                "-c",
                f"{p}.env_key=MOCK_API_KEY",
                "-c",
                f"{p}.request_max_retries=0",
                "-c",
                f"{p}.stream_max_retries=0",
            )
        else:
            self.env.update(GOOGLE_GEMINI_BASE_URL=url, GEMINI_API_KEY="mock-gemini-key")
            settings = {"general": {"maxAttempts": 1}, "security": {"auth": {"selectedType": "gemini-api-key"}}}
            (self.home / ".gemini").mkdir()
            (self.home / ".gemini" / "settings.json").write_text(json.dumps(settings))

    @property
    def exe(self) -> str:
        return str(self.bin_dir / self.cli)

    def direct_argv(self, prompt: str) -> tuple[str, ...]:
        """The reference's command line (§6, §7), written out by hand."""
        if self.cli == "claude":
            return (
                self.exe,
                "-p",
                prompt,
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "acceptEdits",
            )
        if self.cli == "codex":
            return (
                self.exe,
                "exec",
                "--json",
                "--skip-git-repo-check",
                "-C",
                str(self.work),
                "-s",
                "workspace-write",
                "-m",
                "gpt-5.5",
                "--disable",
                "unbounded_connection_retries",
                *self.extra_args,
                prompt,
            )
        return (
            self.exe,
            "-p",
            prompt,
            "--output-format",
            "stream-json",
            "--skip-trust",
            "--approval-mode",
            "auto_edit",
            "-m",
            "gemini-2.5-flash",
        )

    def run_direct(self, prompt: str) -> Run:
        return run_process(self.direct_argv(prompt), self.env, self.work)

    def run_adapter(self, prompt: str) -> AdapterRun:
        from meta_orchestrator.actors.adapters.base import LaunchSpec
        from meta_orchestrator.actors.adapters.registry import get_adapter

        adapter = get_adapter(self.cli)
        launch = adapter.build_launch(
            LaunchSpec(
                executable=(self.exe,),
                prompt=prompt,
                workdir=self.work,
                mode="write",
                model=MODELS[self.cli],
                extra_args=self.extra_args,
                env=self.env,
            )
        )
        run = run_process(launch.argv, launch.env, launch.cwd, launch.stdin)
        parser = adapter.new_parser()
        drafts = []
        for line in run.stdout.splitlines():
            drafts.extend(parser.feed_line(line))
        tail = tuple(run.stderr_text.splitlines()[-20:])
        drafts.extend(parser.finish(run.returncode, tail))
        return AdapterRun(run, drafts, parser.outcome())


@dataclass
class AdapterRun:
    run: Run
    drafts: list[Any]
    outcome: Any

    def of(self, type_: str, kind: str | None = None) -> list[Any]:
        return [d for d in self.drafts if d.type == type_ and (kind is None or d.payload.kind == kind)]

    def describe(self) -> str:
        drafts = "\n".join(f"  {d.type} {d.payload.model_dump(exclude_none=True)}"[:400] for d in self.drafts)
        return f"{self.run.describe()}\n--- drafts\n{drafts}\n--- outcome\n{self.outcome!r}"


@pytest.fixture
def rig(request: pytest.FixtureRequest, cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> Rig:
    return Rig(request.param, cli_bin, server, tmp_path)


per_cli = pytest.mark.parametrize("rig", CLIS, indirect=True)
per_cli_error = pytest.mark.parametrize("rig,status", [(c, s) for c in CLIS for s in ERROR_STATUSES], indirect=["rig"])


# --------------------------------------------------------------------------- raw shapes


def final_text(cli: str, objects: list[dict[str, Any]]) -> str:
    """The final answer as each CLI prints it (reference §4 'final text')."""
    if cli == "claude":
        return [o for o in objects if o.get("type") == "result"][-1].get("result", "")
    if cli == "codex":
        msgs = [
            o["item"]["text"]
            for o in objects
            if o.get("type") == "item.completed" and o["item"].get("type") == "agent_message"
        ]
        return msgs[-1] if msgs else ""
    chunks: list[str] = []
    for o in objects:
        if o.get("type") == "tool_result":
            chunks = []
        elif o.get("type") == "message" and o.get("role") == "assistant":
            chunks.append(o.get("content", ""))
    return "".join(chunks)


EXPECTED_EXIT = {
    "claude": {401: 1, 429: 1, 500: 1},
    "codex": {401: 1, 429: 1, 500: 1},
    "gemini": {401: 145, 429: 173, 500: 244},  # HTTP status mod 256 (§3.6)
}


def _google_error(code: int, msg: str, status: str) -> str:
    """The error body as gemini repeats it: compact JSON."""
    return json.dumps({"error": {"code": code, "message": msg, "status": status}}, separators=(",", ":"))


def expected_error_text(cli: str, status: int, url: str) -> str:
    """A piece of the error text each CLI prints for an API error (§1.6, §2.6, §3.4/§3.6)."""
    msg = error_message(status)
    return {
        ("claude", 401): f"Failed to authenticate. API Error: 401 {msg}",
        ("claude", 429): f"API Error: Request rejected (429) · {msg}",
        ("claude", 500): f"API Error: 500 {msg}. This is a server-side issue",
        ("codex", 401): f"unexpected status 401 Unauthorized: {msg}, url: {url}/v1/responses",
        ("codex", 429): "exceeded retry limit, last status: 429 Too Many Requests",
        ("codex", 500): "We’re currently experiencing high demand, which may cause temporary errors.",
        ("gemini", 401): f"[API Error: {_google_error(401, msg, 'UNAUTHENTICATED')}]",
        ("gemini", 429): f"[API Error: {msg}]",
        ("gemini", 500): f"[API Error: {_google_error(500, msg, 'INTERNAL')}]",
    }[(cli, status)]


def assert_single_api_attempt(rig: Rig) -> None:
    """Fail-fast settings work: the failing API call was made once, never retried."""
    if rig.cli == "claude":  # claude also sends a tool-less session-title request
        main = [r for r in rig.server.recorded("anthropic") if r.body.get("tools")]
    else:
        main = rig.server.recorded("openai" if rig.cli == "codex" else "gemini")
    assert len(main) == 1, [(r.path, r.answered) for r in main]


# --------------------------------------------------------------------------- direct runs


@per_cli
def test_cli_text_answer(rig: Rig) -> None:
    run = rig.run_direct("Say hello. SCRIPT:text")
    assert run.returncode == 0, run.describe()
    assert final_text(rig.cli, run.objects) == TEXT_ANSWER, run.describe()
    if rig.cli == "claude":
        result = run.objects[-1]
        assert result["type"] == "result" and result["is_error"] is False, run.describe()
        assert run.objects[0]["subtype"] == "init"
    elif rig.cli == "codex":
        assert [o["type"] for o in run.objects][:2] == ["thread.started", "turn.started"]
        assert run.objects[-1]["type"] == "turn.completed", run.describe()
    else:
        assert run.objects[0]["type"] == "init"
        assert run.objects[-1] == {**run.objects[-1], "type": "result", "status": "success"}


@per_cli
def test_cli_writes_file_with_tool_call(rig: Rig) -> None:
    run = rig.run_direct(f"Create the file. SCRIPT:write {WRITE_NAME}")
    target = rig.work / WRITE_NAME
    assert run.returncode == 0, run.describe()
    assert target.read_text() == WRITE_CONTENT, run.describe()
    assert final_text(rig.cli, run.objects) == write_done_text(WRITE_NAME), run.describe()
    objs = run.objects
    if rig.cli == "claude":
        uses = [b for o in objs if o["type"] == "assistant" for b in o["message"]["content"] if b["type"] == "tool_use"]
        assert [(u["name"], u["input"]["file_path"]) for u in uses] == [("Write", str(target))]
        results = [
            b for o in objs if o["type"] == "user" for b in o["message"]["content"] if b.get("type") == "tool_result"
        ]
        assert len(results) == 1 and not results[0].get("is_error"), run.describe()
    elif rig.cli == "codex":
        changes = [
            o["item"]["changes"] for o in objs if o["type"] == "item.completed" and o["item"]["type"] == "file_change"
        ]
        assert changes == [[{"path": str(target), "kind": "add"}]], run.describe()
    else:
        uses = [o for o in objs if o["type"] == "tool_use"]
        assert [(u["tool_name"], u["parameters"]["file_path"]) for u in uses] == [("write_file", str(target))]
        assert [o["status"] for o in objs if o["type"] == "tool_result"] == ["success"]
    # The second model request carried the tool result (the server saw it).
    assert [r.answered for r in rig.server.recorded() if r.answered in ("tool_call", "final")] == ["tool_call", "final"]


@per_cli_error
def test_cli_api_error(rig: Rig, status: int) -> None:
    run = rig.run_direct(f"Do the thing. SCRIPT:error {status}")
    assert run.returncode == EXPECTED_EXIT[rig.cli][status], run.describe()
    expected = expected_error_text(rig.cli, status, rig.server.url)
    objs = run.objects
    if rig.cli == "claude":
        synthetic, result = objs[-2], objs[-1]
        assert synthetic["message"]["model"] == "<synthetic>", run.describe()
        assert synthetic["error"] == {401: "authentication_failed", 429: "rate_limit", 500: "server_error"}[status]
        assert result["type"] == "result" and result["subtype"] == "success"
        assert result["is_error"] is True and result["api_error_status"] == status
        assert result["result"].startswith(expected), run.describe()
    elif rig.cli == "codex":
        assert [o["type"] for o in objs] == ["thread.started", "turn.started", "error", "turn.failed"], run.describe()
        assert objs[2]["message"] == expected
        assert objs[3]["error"]["message"] == expected
    else:
        result = objs[-1]
        assert result["type"] == "result" and result["status"] == "error", run.describe()
        assert result["error"]["message"].startswith(expected), run.describe()
    assert_single_api_attempt(rig)


# --------------------------------------------------------------------------- with the adapters


@per_cli
def test_adapter_text_answer(rig: Rig) -> None:
    res = rig.run_adapter("Say hello. SCRIPT:text")
    assert res.run.returncode == 0, res.describe()
    reviews = res.of("review")
    assert [r.payload.text for r in reviews] == [TEXT_ANSWER], res.describe()
    assert res.of("milestone", "result"), res.describe()
    assert not [d for d in res.of("error") if d.payload.terminal], res.describe()
    assert res.outcome.success is True and res.outcome.terminal_event_seen
    assert res.outcome.final_text == TEXT_ANSWER
    assert res.outcome.session_id, res.describe()
    assert res.outcome.error is None


@per_cli
def test_adapter_marker_line(rig: Rig) -> None:
    res = rig.run_adapter("Report a milestone. SCRIPT:marker")
    assert res.run.returncode == 0, res.describe()
    markers = res.of("milestone", "marker")
    assert [m.payload.text for m in markers] == [MARKER_TEXT], res.describe()
    assert res.outcome.success is True
    assert res.outcome.final_text == MARKER_ANSWER, res.describe()


@per_cli
def test_adapter_file_written(rig: Rig) -> None:
    res = rig.run_adapter(f"Create the file. SCRIPT:write {WRITE_NAME}")
    target = rig.work / WRITE_NAME
    assert res.run.returncode == 0, res.describe()
    assert target.read_text() == WRITE_CONTENT, res.describe()
    written = res.of("milestone", "file_written")
    assert [Path(w.payload.file) for w in written] == [target], res.describe()
    assert [Path(f) for f in res.outcome.files_written] == [target]
    assert res.outcome.success is True
    assert res.outcome.final_text == write_done_text(WRITE_NAME), res.describe()
    assert [r.payload.text for r in res.of("review")] == [write_done_text(WRITE_NAME)]


@per_cli_error
def test_adapter_api_error(rig: Rig, status: int) -> None:
    res = rig.run_adapter(f"Do the thing. SCRIPT:error {status}")
    assert res.run.returncode == EXPECTED_EXIT[rig.cli][status], res.describe()
    terminal = [d for d in res.of("error") if d.payload.terminal]
    assert terminal, res.describe()
    expected = expected_error_text(rig.cli, status, rig.server.url)
    assert expected in (terminal[0].payload.text or ""), res.describe()
    # 401 needs new credentials; 429 and 500 are worth retrying later.
    assert terminal[0].payload.retryable is (status != 401), res.describe()
    assert not res.of("review"), res.describe()
    assert res.outcome.success is False
    assert expected in (res.outcome.error or ""), res.describe()
    assert_single_api_attempt(rig)


def test_ensure_real_clis_names_missing_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without node/npm the installer says so instead of failing obscurely."""
    import tests.realcli.install as install

    monkeypatch.delenv(BIN_ENV, raising=False)  # the pinned install, even in a run against another folder
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    with pytest.raises(RealCliUnavailable, match="node and npm not found on PATH"):
        install.ensure_real_clis()


@pytest.mark.parametrize("cli", CLIS)
def test_version_probe_of_the_real_cli(cli_bin: Path, cli: str, tmp_path: Path) -> None:
    """The preflight's probe, as the start runs it (gemini's without its relaunch), answers
    with the pinned version."""
    from meta_orchestrator.actors.adapters.registry import get_adapter
    from meta_orchestrator.actors.recovery.preflight import check_cli
    from tests.realcli.install import _pinned_versions

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    check = check_cli(cli, get_adapter(cli), (str(cli_bin / cli),), env, timeout_s=60)
    assert check.problem is None, check.problem
    pinned = _pinned_versions()[str(get_adapter(cli).package)]
    assert pinned in (check.version or ""), (check.version, pinned)
