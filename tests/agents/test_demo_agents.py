"""The demo agents behave like the real claude, codex and gemini CLIs on the wire."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

DEMO = (sys.executable, "-m", "meta_orchestrator.actors.agents.demo")
TIMEOUT = 30
SESSION = "11111111-2222-3333-4444-555555555555"


def prompt(
    kind: str = "work",
    role: str = "implementer",
    task: str = "Add a greeting helper",
    extra: str = "",
) -> str:
    return (
        f"You are one agent of a team.\nSession: s-1\nAssignment: a-1\nRole: {role}\nKind: "
        f"{kind}\nTask: {task}\n{extra}\nFollow the reporting protocol."
    )


def demo_env(scenario: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ORCHESTRATE_DEMO_") and k not in ("IS_SANDBOX", "GEMINI_CLI_TRUST_WORKSPACE")
    }
    env["ORCHESTRATE_DEMO_PACE"] = "0"
    if scenario:
        env["ORCHESTRATE_DEMO_SCENARIO"] = scenario
    env.update(extra)
    return env


def run_demo(
    agent: str, args: list[str], cwd: Path, scenario: str | None = None, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*DEMO, agent, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        env=demo_env(scenario, **extra),
        timeout=TIMEOUT,
    )


def claude_args(text: str, *more: str) -> list[str]:
    return ["-p", text, "--output-format", "stream-json", "--verbose", *more]


def codex_args(text: str, cwd: Path, *more: str) -> list[str]:
    return ["exec", "--json", "--skip-git-repo-check", "-C", str(cwd), *more, text]


def gemini_args(text: str, *more: str) -> list[str]:
    return ["-p", text, "--output-format", "stream-json", "--skip-trust", *more]


def lines(done: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert all(isinstance(o, dict) and "type" in o for o in out)
    return out


def types(objs: list[dict[str, Any]]) -> list[str]:
    return [o["type"] for o in objs]


def fenced_json(text: str) -> Any:
    match = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert match, text
    return json.loads(match.group(1))


def alive_in_group(pgid: int) -> list[int]:
    """Non-zombie processes whose process group is ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def kill_group_and_check(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    deadline = time.monotonic() + 5
    while alive_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive_in_group(proc.pid) == []


def read_until(proc: subprocess.Popen[bytes], type_: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Read stdout lines until one of ``type_``; fail if the process goes quiet for ``timeout``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    seen: list[dict[str, Any]] = []
    pending = b""
    while not seen or seen[-1]["type"] != type_:
        if b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            seen.append(json.loads(line))
            continue
        assert sel.select(timeout), f"no {type_} line within {timeout}s; got {types(seen)}"
        chunk = os.read(fd, 1 << 16)
        assert chunk, f"stdout closed before a {type_} line; got {types(seen)}"
        pending += chunk
    return seen


# --- flags, versions and usage errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "text"),
    [
        ("claude", "2.1.197 (Claude Code) [demo]"),
        ("codex", "codex-cli 0.169.0 [demo]"),
        ("gemini", "0.61.0 [demo]"),
    ],
)
def test_version(agent: str, text: str, tmp_path: Path) -> None:
    done = run_demo(agent, ["--version"], tmp_path)
    assert (done.returncode, done.stdout.decode().strip()) == (0, text)


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the refusal applies to root only")
NOT_TRUSTED = "Not inside a trusted directory and --skip-git-repo-check was not specified."
UNTRUSTED = (
    "Gemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`, set "
    "the `GEMINI_CLI_TRUST_WORKSPACE=true` environment variable, or trust this directory in "
    "interactive mode. For more details, see "
    "https://geminicli.com/docs/cli/trusted-folders/#headless-and-automated-environments"
)


@pytest.mark.parametrize(
    ("agent", "args", "stderr", "code"),
    [
        (
            "claude",
            ["-p", "hi", "--output-format", "stream-json"],
            "Error: When using --print, --output-format=stream-json requires --verbose",
            1,
        ),
        pytest.param(
            "claude",
            claude_args("hi", "--dangerously-skip-permissions"),
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            1,
            marks=ROOT_ONLY,
        ),
        pytest.param(
            "claude",
            claude_args("hi", "--permission-mode", "bypassPermissions"),
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            1,
            marks=ROOT_ONLY,
        ),
        (
            "claude",
            ["-p", "--output-format", "stream-json", "--verbose"],
            ("Error: Input must be provided either through stdin or as a prompt argument when using --print"),
            1,
        ),
        (
            "claude",
            ["-p", "--add-dir", "/x", "hi", "--output-format", "stream-json", "--verbose"],
            ("Error: Input must be provided either through stdin or as a prompt argument when using --print"),
            1,
        ),
        ("claude", claude_args("hi", "--bogus-flag"), "error: unknown option '--bogus-flag'", 1),
        (
            "claude",
            claude_args("hi", "--permission-mode", "bogus"),
            (
                "error: option '--permission-mode <mode>' argument 'bogus' is invalid. Allowed "
                "choices are acceptEdits, auto, bypassPermissions, default, dontAsk, plan."
            ),
            1,
        ),
        (
            "claude",
            claude_args("hi", "--resume", "not-a-uuid"),
            (
                "Error: --resume requires a valid session ID or session title when used with "
                "--print. Usage: claude -p "
                '--resume <session-id|title>. Provided value "not-a-uuid" is not a UUID and does '
                "not match any session title."
            ),
            1,
        ),
        ("codex", ["exec", "--json", "hi"], NOT_TRUSTED, 1),
        (
            "codex",
            ["exec", "--json", "--skip-git-repo-check", "-C", "/nonexistent/dir", "hi"],
            "Error: No such file or directory (os error 2)",
            1,
        ),
        (
            "codex",
            ["exec", "--json", "--full-auto", "--skip-git-repo-check", "hi"],
            "error: unexpected argument '--full-auto' found",
            2,
        ),
        (
            "codex",
            ["exec", "--json", "-a", "never", "--skip-git-repo-check", "hi"],
            "error: unexpected argument '-a' found",
            2,
        ),
        ("gemini", ["-p", "hi", "--output-format", "stream-json"], UNTRUSTED, 55),
        (
            "gemini",
            gemini_args("hi", "--include-directories", "/nonexistent/extra"),
            (
                "[WARN] Skipping unreadable directory: /nonexistent/extra (Directory does not "
                "exist: /nonexistent/extra)\nAn unexpected critical error occurred:Error: "
                "Directory does not exist: /nonexistent/extra"
            ),
            1,
        ),
        (
            "gemini",
            gemini_args(""),
            (
                "No input provided via stdin. Input can be provided by piping data into gemini or "
                "using the --prompt option."
            ),
            42,
        ),
        (
            "gemini",
            gemini_args("hi", "-y", "--approval-mode", "yolo"),
            ("Cannot use both --yolo (-y) and --approval-mode together. Use --approval-mode=yolo instead."),
            1,
        ),
    ],
)
def test_usage_errors_are_the_real_ones(agent: str, args: list[str], stderr: str, code: int, tmp_path: Path) -> None:
    done = run_demo(agent, args, tmp_path)
    assert done.returncode == code
    assert done.stdout == b""
    assert stderr in done.stderr.decode()


def test_claude_bypass_allowed_as_root_in_a_sandbox(tmp_path: Path) -> None:
    done = run_demo("claude", claude_args(prompt(), "--dangerously-skip-permissions"), tmp_path, IS_SANDBOX="1")
    assert done.returncode == 0
    assert lines(done)[0]["permissionMode"] == "bypassPermissions"


def test_gemini_trust_from_environment(tmp_path: Path) -> None:
    done = run_demo(
        "gemini",
        ["-p", "hi", "--output-format", "stream-json"],
        tmp_path,
        GEMINI_CLI_TRUST_WORKSPACE="true",
    )
    assert done.returncode == 0 and types(lines(done))[0] == "init"


def test_codex_in_a_git_repo_needs_no_skip_flag(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    done = run_demo("codex", ["exec", "--json", "-C", str(tmp_path), "hi"], tmp_path)
    assert done.returncode == 0 and types(lines(done))[0] == "thread.started"
    done = run_demo("codex", ["exec", "--json", "-C", str(tmp_path), "hi"], tmp_path, "not_git_repo")
    assert (done.returncode, done.stdout, done.stderr.decode().strip()) == (1, b"", NOT_TRUSTED)


# --- normal runs: formats, order, files ----------------------------------------------------


def test_claude_implementer_writes_module_and_test(tmp_path: Path) -> None:
    done = run_demo("claude", claude_args(prompt(), "--permission-mode", "acceptEdits"), tmp_path)
    assert done.returncode == 0, done.stderr
    objs = lines(done)
    assert objs[0]["type"] == "system" and objs[0]["subtype"] == "init" and objs[0]["cwd"] == str(tmp_path)
    assert objs[-1]["type"] == "result" and set(types(objs[1:-1])) == {"assistant", "user"}
    for obj in objs[1:-1]:
        if obj["type"] == "assistant":
            assert len(obj["message"]["content"]) == 1  # one content block per line
    tools = [
        o["message"]["content"][0]
        for o in objs
        if o["type"] == "assistant" and o["message"]["content"][0]["type"] == "tool_use"
    ]
    assert [t["name"] for t in tools] == ["Write", "Write", "Bash"]
    assert all(Path(t["input"]["file_path"]).is_absolute() for t in tools[:2])
    results = [o for o in objs if o["type"] == "user"]
    assert [r["message"]["content"][0]["is_error"] for r in results] == [False, False, False]
    assert (tmp_path / "app" / "greeting_helper.py").is_file()
    assert (tmp_path / "tests" / "test_greeting_helper.py").is_file()
    result = objs[-1]
    assert (result["subtype"], result["is_error"], result["permission_denials"]) == (
        "success",
        False,
        [],
    )
    assert 0 < result["total_cost_usd"] < 1 and result["usage"]["output_tokens"] > 0 and result["modelUsage"]
    assert result["result"].startswith("[demo]") and "ORCHESTRATE_EVENT" in result["result"]
    assert len({o["session_id"] for o in objs}) == 1


def test_gemini_architect_writes_design(tmp_path: Path) -> None:
    done = run_demo("gemini", gemini_args(prompt(role="architect"), "--approval-mode", "auto_edit"), tmp_path)
    assert done.returncode == 0, done.stderr
    objs = lines(done)
    assert types(objs)[:2] == ["init", "message"] and objs[1]["role"] == "user"
    assert types(objs)[-1] == "result" and objs[-1]["status"] == "success" and "stats" in objs[-1]
    assert all(o.get("timestamp") for o in objs)
    deltas = [o for o in objs if o["type"] == "message" and o["role"] == "assistant"]
    assert deltas and all(o["delta"] is True for o in deltas)
    use = next(o for o in objs if o["type"] == "tool_use")
    res = next(o for o in objs if o["type"] == "tool_result")
    assert use["tool_name"] == "write_file" and res["tool_id"] == use["tool_id"] and res["status"] == "success"
    text = "".join(o["content"] for o in deltas)
    assert text.startswith("[demo]") and '"type": "milestone"' in text
    assert "Add a greeting helper" in (tmp_path / "docs" / "DESIGN.md").read_text()


def test_codex_reviewer_reads_then_writes_review(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "thing.py").write_text("X = 1\n")
    done = run_demo("codex", codex_args(prompt(role="reviewer"), tmp_path, "-s", "workspace-write"), tmp_path)
    assert done.returncode == 0, done.stderr
    objs = lines(done)
    assert types(objs)[:2] == ["thread.started", "turn.started"] and types(objs)[-1] == "turn.completed"
    assert set(objs[-1]["usage"]) >= {"input_tokens", "cached_input_tokens", "output_tokens"}
    items = [o["item"] for o in objs if o["type"].startswith("item.")]
    commands = [i for i in items if i["type"] == "command_execution" and i["status"] == "completed"]
    assert any("X = 1" in c["aggregated_output"] for c in commands)
    changes = [i for i in items if i["type"] == "file_change"]
    assert [c["status"] for c in changes] == ["in_progress", "completed"]
    assert changes[0]["changes"] == [{"path": str(tmp_path / "docs" / "REVIEW.md"), "kind": "add"}]
    assert (tmp_path / "docs" / "REVIEW.md").is_file()
    final = [i for i in items if i["type"] == "agent_message"][-1]["text"]
    assert '"type": "finding"' in final and '"type": "milestone"' in final


def _validate_plan(text: str) -> None:
    from meta_orchestrator.messages.session import Plan

    Plan.model_validate(fenced_json(text))


def test_plan_is_valid_and_invalid_plan_recovers_on_retry(tmp_path: Path) -> None:
    args = gemini_args(prompt(kind="plan", role="architect"), "--approval-mode", "default")
    done = run_demo("gemini", args, tmp_path)
    text = "".join(o["content"] for o in lines(done) if o["type"] == "message" and o["role"] == "assistant")
    _validate_plan(text)
    plan = fenced_json(text)
    assert [a["id"] for a in plan["assignments"]] == ["design", "implement", "review"]
    assert "greeting helper" in plan["summary"]

    bad = run_demo("gemini", args, tmp_path, "invalid_plan")
    bad_text = "".join(o.get("content", "") for o in lines(bad) if o.get("role") == "assistant")
    with pytest.raises(ValueError, match="depends on unknown"):
        _validate_plan(bad_text)
    retry = prompt(
        kind="plan",
        role="architect",
        extra="Your plan failed validation: assignment 'review' depends on unknown qa",
    )
    for scenario, valid in (("invalid_plan", True), ("invalid_plan_always", False)):
        again = run_demo("gemini", gemini_args(retry), tmp_path, scenario)
        again_text = "".join(o.get("content", "") for o in lines(again) if o.get("role") == "assistant")
        if valid:
            _validate_plan(again_text)
        else:
            with pytest.raises(ValueError):
                _validate_plan(again_text)


@pytest.mark.parametrize(
    ("scenario", "verdict", "n"),
    [(None, "approve", 0), ("concern", "concern", 1), ("blocker", "blocker", 1)],
)
def test_peer_review_verdict(scenario: str | None, verdict: str, n: int, tmp_path: Path) -> None:
    done = run_demo(
        "codex",
        codex_args(prompt(kind="peer_review", role="reviewer"), tmp_path),
        tmp_path,
        scenario,
    )
    final = [
        o["item"]["text"] for o in lines(done) if o["type"] == "item.completed" and o["item"]["type"] == "agent_message"
    ][-1]
    body = fenced_json(final)
    assert (body["verdict"], len(body["findings"])) == (verdict, n)


# --- permissions -----------------------------------------------------------------------------


def _claude_tool_results(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["message"]["content"][0] for o in objs if o["type"] == "user"]


def test_claude_permission_error_is_the_real_denial(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = run_demo(
        "claude",
        claude_args(prompt(), "--permission-mode", "acceptEdits"),
        work,
        "permission_error",
    )
    objs = lines(done)
    outside = tmp_path / "work-outside" / "NOTES.md"
    first = _claude_tool_results(objs)[0]
    assert first["is_error"] is True
    assert first["content"] == f"Claude requested permissions to write to {outside}, but you haven't granted it yet."
    assert objs[-1]["permission_denials"][0]["tool_name"] == "Write"
    assert (objs[-1]["is_error"], done.returncode) == (False, 0)
    assert not outside.exists() and (work / "app" / "greeting_helper.py").exists()
    # the relaunch fix: --add-dir makes the same write succeed
    (tmp_path / "work-outside").mkdir()
    fixed = run_demo(
        "claude",
        claude_args(
            prompt(),
            "--permission-mode",
            "acceptEdits",
            "--add-dir",
            str(tmp_path / "work-outside"),
        ),
        work,
        "permission_error",
    )
    assert lines(fixed)[-1]["permission_denials"] == [] and outside.exists()


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        ("plan", "Cannot write to {p} while in plan mode."),
        (
            "default",
            "Claude requested permissions to write to {p}, but you haven't granted it yet.",
        ),
    ],
)
def test_claude_strict_modes_cannot_write(mode: str, text: str, tmp_path: Path) -> None:
    objs = lines(run_demo("claude", claude_args(prompt(), "--permission-mode", mode), tmp_path))
    first = _claude_tool_results(objs)[0]
    assert first["content"] == text.format(p=tmp_path / "app" / "greeting_helper.py")
    assert len(objs[-1]["permission_denials"]) == 2 and not (tmp_path / "app").exists()


def test_gemini_permission_error_and_default_mode(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    objs = lines(
        run_demo(
            "gemini",
            gemini_args(prompt(role="architect"), "--approval-mode", "auto_edit"),
            work,
            "permission_error",
        )
    )
    first = next(o for o in objs if o["type"] == "tool_result")
    assert first["status"] == "error" and first["error"]["type"] == "invalid_tool_params"
    assert first["output"].startswith(f'Path not in workspace: Attempted path "{tmp_path / "work-outside"}')
    assert objs[-1]["status"] == "success" and (work / "docs" / "DESIGN.md").exists()
    objs = lines(run_demo("gemini", gemini_args(prompt(role="architect"), "--approval-mode", "default"), work))
    first = next(o for o in objs if o["type"] == "tool_result")
    assert first["error"] == {
        "type": "tool_not_registered",
        "message": 'Tool "write_file" not found. Did you mean one of: "read_file", "update_topic", "grep_search"?',
    }


def test_codex_sandbox_denials_are_silent(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = run_demo(
        "codex",
        codex_args(prompt(role="reviewer"), work, "-s", "workspace-write"),
        work,
        "permission_error",
    )
    paths = [
        c["path"]
        for o in lines(done)
        if o["type"] == "item.completed" and o["item"]["type"] == "file_change"
        for c in o["item"]["changes"]
    ]
    assert paths == [str(work / "docs" / "REVIEW.md")]
    assert "codex_core::tools::router: error=patch rejected" in done.stderr.decode()
    ro = run_demo("codex", codex_args(prompt(), work), work)  # default sandbox: read-only
    assert ro.returncode == 0
    assert not [o for o in lines(ro) if o["type"].startswith("item.") and o["item"]["type"] == "file_change"]
    assert "writing is blocked by read-only sandbox; rejected by user approval settings" in ro.stderr.decode()
    assert not (work / "app").exists()


# --- failure scenarios -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "claude_text", "codex_text", "gemini_code"),
    [
        ("auth_error", "Not logged in · Please run /login", "401 Unauthorized", 41),
        (
            "rate_limit",
            "API Error: Request rejected (429)",
            "exceeded retry limit, last status: 429 Too Many Requests",
            173,
        ),
        ("server_error", "API Error: 500", "high demand", 244),
    ],
)
def test_api_error_shapes(scenario: str, claude_text: str, codex_text: str, gemini_code: int, tmp_path: Path) -> None:
    done = run_demo("claude", claude_args(prompt()), tmp_path, scenario)
    objs = lines(done)
    assert done.returncode == 1 and types(objs) == ["system", "assistant", "result"]
    assert objs[1]["message"]["model"] == "<synthetic>" and objs[1]["error"]
    assert objs[2]["is_error"] is True and objs[2]["result"].startswith(claude_text)
    done = run_demo("codex", codex_args(prompt(), tmp_path), tmp_path, scenario)
    objs = lines(done)
    assert done.returncode == 1 and types(objs)[-2:] == ["error", "turn.failed"]
    assert codex_text in objs[-1]["error"]["message"]
    done = run_demo("gemini", gemini_args(prompt()), tmp_path, scenario)
    assert done.returncode == gemini_code
    if scenario == "auth_error":
        assert done.stdout == b"" and "Please set an Auth method" in done.stderr.decode()
    else:
        assert lines(done)[-1]["status"] == "error"


def test_per_agent_scenario_wins(tmp_path: Path) -> None:
    done = run_demo(
        "claude",
        claude_args(prompt()),
        tmp_path,
        "auth_error",
        ORCHESTRATE_DEMO_SCENARIO_CLAUDE="success",
    )
    assert done.returncode == 0


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_crash_and_killed_end_without_terminal_event(agent: str, tmp_path: Path) -> None:
    args = {
        "claude": claude_args(prompt()),
        "codex": codex_args(prompt(), tmp_path),
        "gemini": gemini_args(prompt()),
    }
    terminal = {"claude": "result", "codex": "turn.completed", "gemini": "result"}[agent]
    crash = run_demo(agent, args[agent], tmp_path, "crash")
    assert crash.returncode == 1 and "TypeError" in crash.stderr.decode()
    assert terminal not in types(lines(crash)) and len(lines(crash)) >= 2
    killed = run_demo(agent, args[agent], tmp_path, "killed")
    assert killed.returncode == -signal.SIGKILL and terminal not in types(lines(killed))


@pytest.mark.parametrize("agent", ["claude", "gemini"])
def test_hang_and_result_then_hang_must_be_killed(agent: str, tmp_path: Path) -> None:
    args = claude_args(prompt()) if agent == "claude" else gemini_args(prompt())
    first = "system" if agent == "claude" else "init"
    for scenario, wait_for in (("hang", first), ("result_then_hang", "result")):
        proc = subprocess.Popen(
            [*DEMO, agent, *args],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=demo_env(scenario),
            start_new_session=True,
        )
        try:
            read_until(proc, wait_for)
            time.sleep(0.3)
            assert proc.poll() is None
        finally:
            kill_group_and_check(proc)


def test_garbage_lines_then_a_normal_run(tmp_path: Path) -> None:
    done = run_demo("claude", claude_args(prompt(), "--permission-mode", "acceptEdits"), tmp_path, "garbage")
    assert done.returncode == 0
    raw = done.stdout.split(b"\n")
    assert raw[-1] == b""
    raw = raw[:-1]
    assert json.loads(raw[0])["type"] == "system"
    bad = raw[1:5]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[1])
    with pytest.raises(UnicodeDecodeError):
        bad[2].decode("utf-8")
    assert len(bad[3]) >= 10 * 2**20 and bad[3].startswith(b"{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[3])
    rest = [json.loads(line) for line in raw[5:]]
    assert rest and rest[-1]["type"] == "result" and rest[-1]["is_error"] is False


@pytest.mark.parametrize(
    ("agent", "kind"), [("claude", "assistant"), ("codex", "item.completed"), ("gemini", "message")]
)
def test_flood(agent: str, kind: str, tmp_path: Path) -> None:
    args = {
        "claude": claude_args(prompt("peer_review")),
        "codex": codex_args(prompt("peer_review"), tmp_path),
        "gemini": gemini_args(prompt("peer_review")),
    }[agent]
    done = run_demo(agent, args, tmp_path, "flood", ORCHESTRATE_DEMO_FLOOD_LINES="3000")
    objs = lines(done)
    assert done.returncode == 0 and sum(o["type"] == kind for o in objs) >= 3000
    assert types(objs)[-1] in ("result", "turn.completed")


def test_memory_hog_and_fork_bomb_lite(tmp_path: Path) -> None:
    done = run_demo(
        "gemini",
        gemini_args(prompt("peer_review")),
        tmp_path,
        "memory_hog",
        ORCHESTRATE_DEMO_HOG_MB="64",
    )
    assert done.returncode == 0 and "64 MB" in done.stdout.decode()
    proc = subprocess.Popen(
        [*DEMO, "codex", *codex_args(prompt("peer_review"), tmp_path)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=demo_env("fork_bomb_lite", ORCHESTRATE_DEMO_CHILDREN="3"),
        start_new_session=True,
    )
    try:
        read_until(proc, "turn.completed")
        proc.wait(timeout=TIMEOUT)
        assert proc.returncode == 0
        assert len(alive_in_group(proc.pid)) == 3  # the children outlive it, in its process group
    finally:
        kill_group_and_check(proc)


def test_resume_keeps_the_session_id(tmp_path: Path) -> None:
    objs = lines(run_demo("claude", claude_args(prompt(), "--resume", SESSION), tmp_path))
    assert objs[0]["session_id"] == SESSION == objs[-1]["session_id"]
    objs = lines(
        run_demo(
            "codex",
            [
                "exec",
                "--json",
                "--skip-git-repo-check",
                "-C",
                str(tmp_path),
                "resume",
                SESSION,
                prompt(),
            ],
            tmp_path,
        )
    )
    assert objs[0] == {"type": "thread.started", "thread_id": SESSION}
    objs = lines(run_demo("gemini", gemini_args(prompt(), "--resume", SESSION), tmp_path))
    assert objs[0]["session_id"] == SESSION


def test_marker_matches_protocol_and_startup_is_light() -> None:
    from meta_orchestrator.actors.adapters.protocol import MARKER
    from meta_orchestrator.actors.agents.demo.common import MARKER as DEMO_MARKER

    assert DEMO_MARKER == MARKER
    code = (
        "import sys, meta_orchestrator.actors.agents.demo.__main__, meta_orchestrator.actors.agents.demo.claude, "
        "meta_orchestrator.actors.agents.demo.codex, meta_orchestrator.actors.agents.demo.gemini; "
        "bad = [m for m in ('pydantic', 'pykka', 'meta_orchestrator.messages') if m in "
        "sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=demo_env(), timeout=TIMEOUT)


# --- through the real adapters -------------------------------------------------------------------


def _through_adapter(agent: str, text: str, workdir: Path, mode: Any = "write", scenario: str | None = None) -> Any:
    registry = pytest.importorskip("meta_orchestrator.actors.adapters.registry")
    from meta_orchestrator.actors.adapters.base import LaunchSpec

    adapter = registry.get_adapter(agent)
    launch = adapter.build_launch(
        LaunchSpec(
            executable=(*DEMO, agent),
            prompt=text,
            workdir=workdir,
            mode=mode,
            env=demo_env(scenario),
        )
    )
    assert launch.stdin is not None and not any(text in arg for arg in launch.argv)
    done = subprocess.run(
        launch.argv,
        cwd=launch.cwd,
        env=launch.env,
        input=launch.stdin,  # the prompt, as the real CLI reads it
        capture_output=True,
        check=False,
        timeout=TIMEOUT,
    )
    parser = adapter.new_parser()
    for line in done.stdout.splitlines():
        parser.feed_line(line)
    parser.finish(done.returncode, tuple(done.stderr.decode("utf-8", "replace").splitlines()[-20:]))
    return parser.outcome()


def test_adapters_understand_the_demo_work(tmp_path: Path) -> None:
    plan = _through_adapter("gemini", prompt("plan", "architect"), tmp_path, mode="read_only")
    assert plan.success, plan.error
    _validate_plan(plan.final_text)
    design = _through_adapter("gemini", prompt(role="architect"), tmp_path)
    assert design.success and design.files_written == (str(tmp_path / "docs" / "DESIGN.md"),)
    impl = _through_adapter("claude", prompt(), tmp_path)
    assert impl.success, impl.error
    assert set(impl.files_written) == {
        str(tmp_path / "app" / "greeting_helper.py"),
        str(tmp_path / "tests" / "test_greeting_helper.py"),
    }
    assert impl.cost_usd and impl.session_id
    review = _through_adapter("codex", prompt(role="reviewer"), tmp_path)
    assert review.success and review.files_written == (str(tmp_path / "docs" / "REVIEW.md"),)
    verdict = _through_adapter("claude", prompt("peer_review", "reviewer"), tmp_path, mode="read_only")
    assert verdict.success and fenced_json(verdict.final_text)["verdict"] == "approve"


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
@pytest.mark.parametrize("scenario", ["auth_error", "crash", "permission_error"])
def test_adapters_see_failures(agent: str, scenario: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    outcome = _through_adapter(agent, prompt(role="architect"), work, scenario=scenario)
    if scenario == "permission_error":
        assert outcome.success and outcome.files_written == (str(work / "docs" / "DESIGN.md"),)
        if agent != "codex":  # codex's denial is silent on stdout (stderr only)
            assert outcome.permission_denials
    else:
        assert not outcome.success and outcome.error


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_adapters_prompt_starting_with_a_dash(agent: str, tmp_path: Path) -> None:
    outcome = _through_adapter(agent, "-rf is not a flag", tmp_path, mode="read_only")
    assert outcome.success, outcome.error
    assert "-rf is not a flag" in outcome.final_text


CONFLICTED = "a\n<<<<<<< ours\nmine\n||||||| base\nold\n=======\ntheirs\n>>>>>>> theirs\nz\n"


def test_conflict_markers_are_resolved_keeping_both_sides() -> None:
    from meta_orchestrator.actors.agents.demo.common import has_conflict_markers, resolve_conflict_markers

    assert resolve_conflict_markers(CONFLICTED) == "a\nmine\ntheirs\nz\n"
    assert has_conflict_markers(CONFLICTED) and not has_conflict_markers("a\n=======\nb\n")


@pytest.mark.parametrize("agent", ["claude", "codex", "gemini"])
def test_told_of_a_merge_conflict_the_demo_agent_resolves_it_and_reports(agent: str, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "NOTES.md").write_text(CONFLICTED)
    (tmp_path / "app.py").write_text("X = 1\n")  # not named: left alone
    note = (
        "## Notes from the orchestrator\n- Merging your work into the session branch conflicts in: docs/NOTES.md. "
        "Your checkout now has the session branch merged in, with conflict markers in those files."
    )
    outcome = _through_adapter(agent, prompt(role="implementer", extra=note), tmp_path)
    assert outcome.success, outcome.error
    assert (tmp_path / "docs" / "NOTES.md").read_text() == "a\nmine\ntheirs\nz\n"
    assert outcome.files_written == (str(tmp_path / "docs" / "NOTES.md"),)  # no other work redone
    assert "Kept both sides of the merge in: docs/NOTES.md" in outcome.final_text
