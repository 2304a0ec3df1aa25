"""Codex adapter: the exact command line and the ``exec --json`` transcripts of the reference."""

from __future__ import annotations

from pathlib import Path

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.codex import CodexAdapter
from tests.adapters.test_adapter_common import kinds, replay

THREAD = "01a20ab5-3eec-7052-8dac-4a8d4884ba65"


def _spec(**changes: object) -> LaunchSpec:
    base = dict(executable=("codex",), prompt="do it", workdir=Path("/srv/repo"), env={"CODEX_API_KEY": "k"})
    return LaunchSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_write_mode_argv_env_cwd() -> None:
    env = {"CODEX_API_KEY": "k"}
    launch = CodexAdapter().build_launch(_spec(env=env))
    assert launch.argv == (
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-C",
        "/srv/repo",
        "-s",
        "workspace-write",
        "--disable",
        "unbounded_connection_retries",
        "-",
    )
    assert launch.stdin == b"do it"  # "-": codex exec reads the prompt from stdin
    assert launch.env == env and launch.env is not env
    assert launch.cwd == Path("/srv/repo")
    assert "--full-auto" not in launch.argv and "-a" not in launch.argv


def test_read_only_dirs_model_extra_args() -> None:
    launch = CodexAdapter().build_launch(
        _spec(
            mode="read_only",
            extra_dirs=(Path("/srv/a"), Path("/srv/b")),
            model="gpt-5.5",
            extra_args=("-c", "model_provider=mock"),
        )
    )
    assert launch.argv == (
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "-C",
        "/srv/repo",
        "-s",
        "read-only",
        "--add-dir",
        "/srv/a",
        "--add-dir",
        "/srv/b",
        "-m",
        "gpt-5.5",
        "--disable",
        "unbounded_connection_retries",
        "-c",
        "model_provider=mock",
        "-",
    )


def test_resume_puts_thread_and_the_stdin_dash_last() -> None:
    launch = CodexAdapter().build_launch(_spec(resume_session_id=THREAD, executable=("node", "codex.js")))
    assert launch.argv[:2] == ("node", "codex.js")
    assert launch.argv[-3:] == ("resume", THREAD, "-") and launch.stdin == b"do it"
    assert launch.argv.index("-s") < launch.argv.index("resume")  # exec options apply


def test_a_prompt_starting_with_a_dash_is_never_an_argument() -> None:
    launch = CodexAdapter().build_launch(_spec(prompt="-"))
    assert launch.argv[-1] == "-" and launch.stdin == b"-"  # the prompt "-" itself, on stdin
    resumed = CodexAdapter().build_launch(_spec(prompt="--help me", resume_session_id=THREAD))
    assert resumed.argv[-3:] == ("resume", THREAD, "-") and "--help me" not in resumed.argv
    assert resumed.stdin == b"--help me"


def test_a_providers_key_variable_named_in_extra_args_passes() -> None:
    adapter = CodexAdapter()
    inline = 'model_providers.gw={name="gw", base_url="http://h/v1", env_key="GW_KEY", wire_api="responses"}'
    assert "MOCK_API_KEY" in adapter.env_patterns({}, ("-c", "model_providers.mock.env_key=MOCK_API_KEY"))
    assert "GW_KEY" in adapter.env_patterns({}, ("-c", inline))
    assert "GW_KEY" not in adapter.env_patterns({}, ())


def test_normal_run() -> None:
    drafts, parser = replay("codex", "codex_normal.jsonl", 0)
    assert kinds(drafts) == [
        ("status", "init"),
        ("status", "turn_started"),
        ("progress", "reasoning"),
        ("progress", "text"),
        ("progress", "tool_call"),
        ("progress", "tool_result"),
        ("progress", "tool_result"),
        ("progress", "tool_call"),
        ("milestone", "file_written"),
        ("progress", "text"),
        ("milestone", "result"),
        ("review", "result"),
    ]
    assert drafts[0].payload.session_id == THREAD
    call, done, failed = drafts[4:7]
    assert call.payload.tool_input == {"command": "/bin/bash -lc 'ls -la'"}
    assert done.payload.exit_code == 0 and "a.txt" in (done.payload.text or "")
    assert failed.payload.exit_code == 2 and failed.payload.details["status"] == "failed"
    assert drafts[8].payload.file == "/srv/repo/hello.txt"
    review = drafts[-1]
    assert review.payload.text == "Done: listed files, created hello.txt."
    assert review.payload.files == ("/srv/repo/hello.txt",)
    assert review.payload.usage["cached_input_tokens"] == 800
    outcome = parser.outcome()
    assert outcome.success and outcome.session_id == THREAD
    assert outcome.final_text == "Done: listed files, created hello.txt."
    assert outcome.total_tokens == 4960 and outcome.files_written == ("/srv/repo/hello.txt",)


def test_usage_is_replaced_not_added() -> None:
    parser = CodexAdapter().new_parser()
    for total in (100, 250):
        parser.feed_object({"type": "turn.completed", "usage": {"input_tokens": total, "output_tokens": 10}})
    assert parser.usage == {"input_tokens": 250, "output_tokens": 10}
    assert parser.total_tokens == 260


def test_401() -> None:
    drafts, parser = replay("codex", "codex_401.jsonl", 1)
    assert kinds(drafts) == [
        ("status", "init"),
        ("status", "turn_started"),
        ("status", "retry"),
        ("error", "api_error"),
        ("error", "turn_failed"),
    ]
    assert drafts[2].payload.retryable is True
    assert (drafts[3].payload.terminal, drafts[3].payload.details["cause"]) == (False, "auth")
    end = drafts[-1]
    assert (end.payload.terminal, end.payload.retryable) == (True, False)
    assert end.payload.text.startswith("unexpected status 401 Unauthorized")
    outcome = parser.outcome()
    assert not outcome.success and outcome.terminal_event_seen
    assert "401 Unauthorized" in outcome.error


def test_429() -> None:
    drafts, parser = replay("codex", "codex_429.jsonl", 1)
    end = drafts[-1]
    assert (end.type, end.payload.kind, end.payload.terminal) == ("error", "turn_failed", True)
    assert (end.payload.retryable, end.payload.details["cause"]) == (True, "rate_limit")
    assert parser.outcome().error == "exceeded retry limit, last status: 429 Too Many Requests"


def test_network_hang_killed_by_watchdog() -> None:
    drafts, parser = replay("codex", "codex_network.jsonl", -15)
    assert kinds(drafts)[2:] == [
        ("status", "retry"),
        ("status", "warning"),
        ("status", "retry"),
        ("status", "retry"),
        ("error", "exit"),
    ]
    end = drafts[-1]
    assert end.payload.terminal and end.payload.exit_code == -15
    assert "killed by signal 15" in end.payload.text
    assert not parser.outcome().success and not parser.outcome().terminal_event_seen


def test_markers_and_todos() -> None:
    drafts, parser = replay("codex", "codex_markers.jsonl", 0)
    markers = [d for d in drafts if d.payload.kind == "marker"]
    assert [(d.type, d.payload.text) for d in markers] == [("progress", "half way"), ("milestone", "all written")]
    assert markers[0].payload.progress == 50 and markers[1].payload.file == "hello.txt"
    assert not [d for d in drafts if d.type == "blocker"]  # the command output's marker
    todos = [d for d in drafts if d.type == "task"]
    assert [d.payload.text for d in todos] == ["0/2 todos done", "1/2 todos done"]
    [done] = [d for d in drafts if d.payload.kind == "todo_done"]
    assert (done.type, done.payload.text) == ("milestone", "read")
    assert parser.outcome().final_text.startswith("Done.")


def test_stderr_sandbox_refusal_is_a_blocker() -> None:
    line = (
        "2026-11-23T23:19:00Z ERROR codex_core::tools::router: error=patch rejected: writing "
        "is blocked by read-only sandbox; rejected by user approval settings"
    )
    drafts, parser = replay("codex", "codex_normal.jsonl", 0, (line,))
    [blocker] = [d for d in drafts if d.type == "blocker"]
    assert blocker.payload.kind == "denial" and blocker.payload.text.startswith("patch rejected")
    assert parser.outcome().success and parser.outcome().permission_denials


def test_declined_command_and_question_and_plan_delta() -> None:
    parser = CodexAdapter().new_parser()
    [declined] = parser.feed_object(
        {
            "type": "item.completed",
            "item": {"id": "i", "type": "command_execution", "command": "rm -rf /", "status": "declined"},
        }
    )
    assert (declined.type, declined.payload.kind) == ("blocker", "denial")
    [question] = parser.feed_object(
        {"type": "request_user_input", "id": "1", "call_id": "c", "questions": [{"question": "Which DB?"}]}
    )
    assert (question.type, question.payload.text) == ("blocker", "Which DB?")
    [plan] = parser.feed_object({"type": "item.plan.delta", "item_id": "p", "delta": "1. x"})
    assert (plan.type, plan.payload.kind, plan.payload.text) == ("task", "plan", "1. x")
    [legacy] = parser.feed_object({"id": "0", "msg": {"type": "task_started"}})
    assert legacy.payload.kind == "unknown"


def test_inside_the_os_sandbox_codex_runs_with_its_own_sandbox_off_set_once() -> None:
    adapter = CodexAdapter()
    for mode in ("write", "read_only"):
        argv = adapter.build_launch(_spec(mode=mode, confined=True, extra_args=("-s", "workspace-write"))).argv
        assert argv.count("-s") == 1 and argv[argv.index("-s") + 1] == "danger-full-access"
    argv = adapter.build_launch(_spec(confined=True, extra_args=("--sandbox=read-only", "-m", "x"))).argv
    assert "--sandbox=read-only" not in argv and argv[argv.index("-m") + 1] == "x"
    assert adapter.build_launch(_spec(mode="read_only")).argv[7] == "read-only"  # unconfined: its own


def _lines(*objects: dict[str, object]) -> list[bytes]:
    import json

    return [json.dumps(o).encode() for o in objects]


def _command(exit_code: int, output: str, status: str) -> dict[str, object]:
    item = {"id": "i1", "type": "command_execution", "command": "ls", "aggregated_output": output}
    return {"type": "item.completed", "item": {**item, "exit_code": exit_code, "status": status}}


UID_MAP = "bwrap: setting up uid map: Operation not permitted\n"
END = {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}}


def test_a_writing_run_whose_every_tool_call_failed_is_not_a_success() -> None:
    from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run

    parser = CodexAdapter().new_parser()
    for line in _lines({"type": "thread.started", "thread_id": THREAD}, _command(1, UID_MAP, "failed"), END):
        parser.feed_line(line)
    parser.finish(0, ())
    assert parser.succeeded  # codex's own account: the turn completed, exit 0
    outcome = parser.outcome(writing=True)
    assert not outcome.success and "every tool call failed (1)" in (outcome.error or "")
    found = classify_run(Evidence(agent="codex", lines=(outcome.error or "",), returncode=0, succeeded=False))
    assert found is not None and found.cause == "sandbox"
    assert parser.outcome(writing=False).success  # a review that only read: its commands decide nothing


def test_one_tool_call_that_worked_keeps_the_run_a_success() -> None:
    parser = CodexAdapter().new_parser()
    for line in _lines(_command(1, "grep: no match", "failed"), _command(0, "a.txt", "completed"), END):
        parser.feed_line(line)
    parser.finish(0, ())
    assert parser.outcome(writing=True).success
