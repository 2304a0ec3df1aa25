"""The real pinned ``opencode`` (opencode-ai 1.18.33) against the scripted model server,
through its adapter: the command line from ``build_launch`` (the prompt on stdin), stdout
through its parser, failures through Recovery's table.

Its provider is opencode's own ``anthropic`` with ``baseURL`` at the server, given the way a
user would give it (``OPENCODE_CONFIG_CONTENT`` in ``[agents.opencode] env``, which the adapter
merges its own settings into). ``~/.config/opencode/.npmrc`` with ``offline=true`` keeps its
plugin install off the npm registry; the adapter turns its models.dev fetch and updater off.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.registry import get_adapter
from meta_orchestrator.actors.limits.limit_rules import Liveness, idle_over
from meta_orchestrator.actors.processes.folder_writes import newest_write
from meta_orchestrator.actors.processes.process_tree import TreeReader
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.config.settings import AgentLimits
from tests.agents.test_real_clis import Run, cli_bin, no_leftover_children, run_process, server  # noqa: F401
from tests.realcli.model_server import (
    MARKER_ANSWER,
    MARKER_TEXT,
    WRITE_CONTENT,
    ScriptedModelServer,
    error_message,
    write_done_text,
)

pytestmark = pytest.mark.realcli

MODEL = "anthropic/claude-sonnet-4-5"
STALL_DEADLINE_S = 90  # the most it waits for the first retry (its start and back-off are slow on a busy machine)
RETRY_WATCHED_S = 20  # its retry loop is read this long, as the resource monitor reads it


@dataclass
class OpencodeRun:
    run: Run
    drafts: list[Any]
    outcome: Any

    def of(self, type_: str, kind: str | None = None) -> list[Any]:
        return [d for d in self.drafts if d.type == type_ and (kind is None or d.payload.kind == kind)]

    def classify(self) -> Any:
        lines = (self.outcome.error or "", *self.run.stderr_text.splitlines(), *map(bytes.decode, self.run.lines))
        return classify_run(
            Evidence(
                agent="opencode",
                lines=lines,
                returncode=self.run.returncode,
                terminal_event_seen=self.outcome.terminal_event_seen,
                succeeded=self.outcome.success,
            )
        )

    def describe(self) -> str:
        drafts = "\n".join(f"  {d.type} {d.payload.model_dump(exclude_none=True)}"[:400] for d in self.drafts)
        return f"{self.run.describe()}\n--- drafts\n{drafts}\n--- outcome\n{self.outcome!r}"


class OpencodeRig:
    """A fresh HOME (the user's opencode folders empty but for npm's offline switch) and a git checkout."""

    def __init__(self, bin_dir: Path, model_server: ScriptedModelServer, root: Path) -> None:
        self.exe = str(bin_dir / "opencode")
        self.server = model_server
        self.home, self.work = root / "home", (root / "work")
        (self.home / ".config" / "opencode").mkdir(parents=True)
        (self.home / ".config" / "opencode" / ".npmrc").write_text("offline=true\n")
        self.work.mkdir()
        self.work = self.work.resolve()
        subprocess.run(["git", "init", "-q", str(self.work)], check=True)
        provider = {"anthropic": {"options": {"baseURL": f"{model_server.url}/v1"}}}
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "TMPDIR": str(root),
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "TERM": "dumb",
            "ANTHROPIC_API_KEY": "sk-ant-mock",
            "OPENCODE_CONFIG_CONTENT": json.dumps({"provider": provider}),
        }

    def launch(self, prompt: str, mode: str = "write", resume: str | None = None) -> Any:
        adapter = get_adapter("opencode")
        return adapter.build_launch(
            LaunchSpec(
                executable=(self.exe,),
                prompt=prompt,
                workdir=self.work,
                mode=mode,  # type: ignore[arg-type]
                model=MODEL,
                resume_session_id=resume,
                env=self.env,
            )
        )

    def run(self, prompt: str, mode: str = "write", resume: str | None = None) -> OpencodeRun:
        launch = self.launch(prompt, mode, resume)
        assert prompt.encode() == launch.stdin and not any(prompt in arg for arg in launch.argv)
        return parse(run_process(launch.argv, launch.env, launch.cwd, launch.stdin), mode)


def parse(run: Run, mode: str) -> OpencodeRun:
    parser = get_adapter("opencode").new_parser()
    drafts = [d for line in run.stdout.splitlines() for d in parser.feed_line(line)]
    stderr = tuple(run.stderr_text.splitlines())
    for line in stderr:
        drafts += parser.feed_stderr(line)
    drafts += parser.finish(run.returncode, stderr[-20:])
    return OpencodeRun(run, drafts, parser.outcome(writing=mode == "write"))


@pytest.fixture
def rig(cli_bin: Path, server: ScriptedModelServer, tmp_path: Path) -> OpencodeRig:  # noqa: F811
    return OpencodeRig(cli_bin, server, tmp_path)


def test_a_text_answer_with_a_marker_and_its_session(rig: OpencodeRig) -> None:
    res = rig.run("Report a milestone. SCRIPT:marker")
    assert res.run.returncode == 0, res.describe()
    assert [m.payload.text for m in res.of("milestone", "marker")] == [MARKER_TEXT], res.describe()
    assert res.outcome.success is True and res.outcome.error is None, res.describe()
    assert res.outcome.final_text == MARKER_ANSWER
    assert res.outcome.session_id and res.outcome.session_id.startswith("ses_")
    assert res.outcome.total_tokens and res.outcome.total_tokens > 0
    # Nothing but the scripted server was asked (its title request and the turn).
    assert {r.api for r in rig.server.recorded()} == {"anthropic"}
    # -s resumes that session: the second run's request carries the first exchange.
    again = rig.run("Again. SCRIPT:text", resume=res.outcome.session_id)
    assert again.outcome.success is True and again.outcome.session_id == res.outcome.session_id, again.describe()
    turns = [r for r in rig.server.recorded("anthropic") if r.body.get("tools")]
    assert any("Report a milestone" in json.dumps(r.body.get("messages")) for r in turns[1:]), "resume lost the session"


def test_a_written_file(rig: OpencodeRig) -> None:
    res = rig.run("Create the file. SCRIPT:write hello.txt")
    target = rig.work / "hello.txt"
    assert res.run.returncode == 0, res.describe()
    assert target.read_text() == WRITE_CONTENT, res.describe()
    assert [Path(w.payload.file) for w in res.of("milestone", "file_written")] == [target], res.describe()
    assert res.outcome.success is True and [Path(f) for f in res.outcome.files_written] == [target]
    assert res.outcome.final_text == write_done_text("hello.txt")
    assert [r.payload.text for r in res.of("review")] == [write_done_text("hello.txt")]


def test_a_review_run_cannot_write(rig: OpencodeRig) -> None:
    res = rig.run("Create the file. SCRIPT:write hello.txt", mode="read_only")
    assert not (rig.work / "hello.txt").exists(), res.describe()
    # The denied tools are not offered at all; the model's call of one is refused.
    offered = {t["name"] for r in rig.server.recorded("anthropic") for t in r.body.get("tools") or []}
    assert offered and not offered & {"write", "edit", "bash"}, offered
    assert res.outcome.permission_denials and "unavailable tool 'write'" in res.outcome.permission_denials[0]
    assert res.of("blocker", "denial"), res.describe()
    found = res.classify()
    assert found is not None and found.cause == "mode_too_strict", found


def test_a_call_its_rules_ask_about_is_rejected(rig: OpencodeRig, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "note.txt"
    outside.parent.mkdir()
    res = rig.run(f"Write a note. SCRIPT:write {outside}")
    assert not outside.exists(), res.describe()
    assert "auto-rejecting" in res.run.stderr_text, res.describe()
    assert len(res.outcome.permission_denials) == 2, res.describe()  # the tool's error and stderr's line
    assert {d.payload.kind for d in res.of("blocker")} == {"denial"}


@pytest.mark.parametrize(("status", "cause", "retryable"), [(401, "auth", False), (429, "rate_limit", True)])
def test_api_errors_are_classified(rig: OpencodeRig, status: int, cause: str, retryable: bool) -> None:
    res = rig.run(f"Do the thing. SCRIPT:error {status}")
    assert res.run.returncode == 1, res.describe()
    (terminal,) = [d for d in res.of("error") if d.payload.terminal]
    assert terminal.payload.text == f"APIError: {error_message(status)} (HTTP {status})", res.describe()
    assert terminal.payload.retryable is retryable
    assert res.outcome.success is False and not res.of("review")
    found = res.classify()
    assert found is not None and found.cause == cause, found
    # The turn's requests (its session-title request, without tools, fails once beside them).
    attempts = [r for r in rig.server.recorded("anthropic") if r.status == status and r.body.get("tools")]
    assert (len(attempts) == 1) if status == 401 else (len(attempts) > 1), [r.answered for r in attempts]


def test_a_500_is_retried_without_end_and_only_the_stall_rule_ends_it(rig: OpencodeRig, tmp_path: Path) -> None:
    """It prints nothing, writes nothing in its folder and, between its retries, uses next to
    no CPU: its tree, read as the resource monitor reads it, is idle by the stall rule's
    default threshold (the CPU it does use is printed beside it)."""
    launch = rig.launch("Do the thing. SCRIPT:error 500")
    start = time.monotonic()
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen(
            launch.argv, cwd=launch.cwd, env=launch.env, stdin=subprocess.PIPE, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
    samples: list[tuple[float, float]] = []
    try:
        assert proc.stdin is not None
        proc.stdin.write(launch.stdin or b"")
        proc.stdin.close()
        reader = TreeReader(proc.pid)
        # The retry loop from its second attempt on (its start-up is no part of it), read
        # once a second as the monitor does, for RETRY_WATCHED_S.
        deadline = time.monotonic() + STALL_DEADLINE_S
        while len([r for r in rig.server.recorded("anthropic") if r.status == 500]) < 2:
            assert time.monotonic() < deadline, "opencode did not retry its 500 in time"
            _still_running(proc, 0.2)
        retrying = time.monotonic()
        while (now := time.monotonic()) - retrying < RETRY_WATCHED_S:
            figures = reader.read()
            assert figures is not None, "opencode ended on a 500"
            samples.append((now - retrying, figures.cpu_time_s))
            _still_running(proc, 1.0)
        written = newest_write(rig.work, until=time.time())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # what the stall rule does to it
        proc.wait()
    window = samples[-1][0] - samples[0][0]
    live = Liveness(silent_s=window, written_s=None if written is None else time.time() - written, cpu=samples)
    threshold = AgentLimits().stall_cpu_percent
    idle, used = idle_over(live, window, threshold)
    print(f"opencode retrying a 500: {used:.2f}% of a core over {window:.0f} s (stall threshold {threshold:g}%)")
    assert idle, (used, live.written_s)
    out_bytes, err_bytes = (tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes()
    res = parse(Run(tuple(launch.argv), proc.returncode, out_bytes, err_bytes, time.monotonic() - start), "write")
    assert not res.run.lines, res.describe()  # silent the whole time: only a stall rule sees it
    attempts = [r for r in rig.server.recorded("anthropic") if r.status == 500]
    assert len(attempts) >= 3, [r.answered for r in rig.server.recorded()]
    assert res.outcome.success is False and res.outcome.terminal_event_seen is False
    (ended,) = [d for d in res.of("error") if d.payload.terminal]
    assert "killed by signal 9" in (ended.payload.text or "") and ended.payload.retryable is True
    # no_leftover_children checks that killing its group left nothing running.


def _still_running(proc: subprocess.Popen[bytes], wait_s: float) -> None:
    """Wait up to ``wait_s`` for it to end, which it must not."""
    try:
        code = proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        return
    pytest.fail(f"opencode ended on a 500 (exit {code})")


def test_it_contacts_nothing_but_the_model_server(rig: OpencodeRig, tmp_path: Path) -> None:
    """Every connect(2) of a whole run (strace) goes to the server's port on 127.0.0.1."""
    strace = shutil.which("strace")
    if strace is None:
        if os.environ.get("CI"):
            pytest.fail("strace is not installed")
        pytest.skip("strace is not installed")
    launch = rig.launch("Create the file. SCRIPT:write hello.txt")
    trace = tmp_path / "connects.txt"
    argv = (strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *launch.argv)
    res = parse(run_process(argv, launch.env, launch.cwd, launch.stdin), "write")
    assert res.outcome.success is True, res.describe()
    inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert inet, "no connect was traced"
    mine = f'sin_port=htons({rig.server.port}), sin_addr=inet_addr("127.0.0.1")'
    assert all(mine in line for line in inet), "\n".join(line for line in inet if mine not in line)
