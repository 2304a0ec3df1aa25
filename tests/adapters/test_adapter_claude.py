"""Claude adapter: the exact command line and the stream-json transcripts of the reference."""

from __future__ import annotations

from pathlib import Path

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.claude import ClaudeAdapter
from tests.adapters.test_adapter_common import kinds, replay

SESSION = "869cb918-e700-49cc-a0ff-70fd7508626d"


def _spec(**changes: object) -> LaunchSpec:
    base = dict(executable=("claude",), prompt="do it", workdir=Path("/srv/repo"), env={"PATH": "/usr/bin"})
    return LaunchSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_write_mode_argv_env_cwd() -> None:
    env = {"PATH": "/usr/bin"}
    launch = ClaudeAdapter().build_launch(_spec(env=env))
    assert launch.argv == (
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
    )
    assert launch.cwd == Path("/srv/repo")
    assert launch.stdin == b"do it"  # the prompt: -p with no prompt argument reads stdin
    assert launch.env == {
        "PATH": "/usr/bin",
        "CLAUDE_CODE_MAX_RETRIES": "3",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    assert env == {"PATH": "/usr/bin"}  # the caller's mapping is untouched


def test_caller_retry_count_wins() -> None:
    launch = ClaudeAdapter().build_launch(_spec(env={"CLAUDE_CODE_MAX_RETRIES": "0"}))
    assert launch.env["CLAUDE_CODE_MAX_RETRIES"] == "0"


def test_read_only_resume_dirs_model_extra_args() -> None:
    launch = ClaudeAdapter().build_launch(
        _spec(
            executable=("/usr/bin/python3", "-m", "meta_orchestrator.actors.agents.demo", "claude"),
            mode="read_only",
            extra_dirs=(Path("/srv/a"), Path("/srv/b")),
            model="sonnet",
            resume_session_id=SESSION,
            extra_args=("--max-turns", "40"),
        )
    )
    assert launch.argv == (
        "/usr/bin/python3",
        "-m",
        "meta_orchestrator.actors.agents.demo",
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "plan",
        "--add-dir",
        "/srv/a",
        "--add-dir",
        "/srv/b",
        "--model",
        "sonnet",
        "--resume",
        SESSION,
        "--max-turns",
        "40",
    )


def test_a_prompt_starting_with_a_dash_or_after_variadic_options_is_never_an_argument() -> None:
    launch = ClaudeAdapter().build_launch(_spec(prompt="-rf is not a flag", extra_dirs=(Path("/srv/a"),)))
    assert launch.argv[:2] == ("claude", "-p")
    assert "-rf is not a flag" not in launch.argv and "--" not in launch.argv
    assert launch.stdin == b"-rf is not a flag"


def test_normal_run_with_tool_use_and_denial() -> None:
    drafts, parser = replay("claude", "claude_normal.jsonl", 0)
    assert kinds(drafts) == [
        ("status", "init"),
        ("progress", "text"),
        ("progress", "tool_call"),
        ("progress", "tool_result"),
        ("blocker", "denial"),
        ("milestone", "result"),
        ("review", "result"),
        ("blocker", "denial"),
    ]
    init, text, call, result, denial, _, review, summary = drafts
    assert (init.payload.session_id, init.payload.model) == (SESSION, "claude-opus-4-8[1m]")
    assert text.payload.text == "I'll look at the directory first."
    assert (call.payload.tool, call.payload.tool_input) == ("Bash", {"command": "ls -la", "description": "List files"})
    assert result.payload.tool == "Bash" and "a.txt" in (result.payload.text or "")
    assert denial.payload.file == "/srv/other/notes.txt"
    assert denial.payload.text.startswith("Claude requested permissions to write to")
    assert review.payload.text == "Done: listed files; could not write outside the workspace."
    assert review.payload.cost_usd == 0.0049 and review.payload.usage["output_tokens"] == 75
    assert summary.payload.details["permission_denials"][0]["tool_name"] == "Write"
    outcome = parser.outcome()
    assert outcome.success and outcome.terminal_event_seen and outcome.error is None
    assert outcome.session_id == SESSION
    assert (outcome.cost_usd, outcome.total_tokens) == (0.0049, 435)
    # the tool_result text and the result's entry name the same tool_use: counted once
    assert outcome.permission_denials == (
        "Claude requested permissions to write to /srv/other/notes.txt, but you haven't granted it yet.",
    )


def test_markers_write_milestone_and_tasks() -> None:
    drafts, parser = replay("claude", "claude_markers.jsonl", 0)
    markers = [d for d in drafts if d.payload.kind in {"marker", "marker_error"}]
    assert [(d.type, d.payload.kind) for d in markers] == [
        ("milestone", "marker"),
        ("finding", "marker"),
        ("error", "marker_error"),
    ]
    assert (markers[0].payload.text, markers[0].payload.progress) == ("schema designed", 40)
    assert (markers[1].payload.file, markers[1].payload.line) == ("a.py", 12)
    # the marker echoed by `cat` in a tool_result is not an event of its own
    assert not [d for d in drafts if d.type == "blocker"]
    [task] = [d for d in drafts if d.type == "task"]
    assert (task.payload.tool, task.payload.text) == ("TaskCreate", "write tests")
    [written] = [d for d in drafts if d.payload.kind == "file_written"]
    assert (written.type, written.payload.file) == ("milestone", "/srv/repo/hello.txt")
    review = next(d for d in drafts if d.type == "review")
    assert review.payload.files == ("/srv/repo/hello.txt",) and review.payload.text == "All done."
    assert parser.outcome().files_written == ("/srv/repo/hello.txt",)


def test_no_credentials() -> None:
    drafts, parser = replay("claude", "claude_no_credentials.jsonl", 1)
    assert kinds(drafts) == [("error", "api_error"), ("error", "result")]
    api, end = drafts
    assert api.payload.details == {"error": "authentication_failed", "cause": "auth"}
    assert (api.payload.terminal, api.payload.retryable) == (False, False)
    assert (end.payload.terminal, end.payload.retryable) == (True, False)
    assert end.payload.text == "Not logged in · Please run /login"
    outcome = parser.outcome()
    assert not outcome.success and outcome.terminal_event_seen
    assert outcome.error == "Not logged in · Please run /login"


def test_api_errors_401_429_500() -> None:
    expected = {
        "401": ("authentication_failed", False, "auth", 401),
        "429": ("rate_limit", True, "rate_limit", 429),
        "500": ("server_error", True, "server", 500),
    }
    for status, (code, retryable, cause, http) in expected.items():
        drafts, parser = replay("claude", f"claude_api_{status}.jsonl", 1)
        api = next(d for d in drafts if d.payload.kind == "api_error")
        end = next(d for d in drafts if d.payload.terminal)
        assert api.payload.details["error"] == code
        assert (end.payload.retryable, end.payload.details["cause"]) == (retryable, cause)
        assert end.payload.details["api_error_status"] == http
        assert not parser.outcome().success and status in (parser.outcome().error or "")
        assert [d for d in drafts if d.payload.kind == "exit"] == []  # the result said it all
    drafts, _ = replay("claude", "claude_api_500.jsonl", 1)
    [retry] = [d for d in drafts if d.payload.kind == "retry"]
    assert (retry.type, retry.payload.retryable) == ("status", True)
    assert retry.payload.details["attempt"] == 1


def test_turn_cap() -> None:
    drafts, parser = replay("claude", "claude_max_turns.jsonl", 1)
    end = drafts[-1]
    assert (end.type, end.payload.kind, end.payload.terminal) == ("error", "result", True)
    assert end.payload.text == "Reached maximum number of turns (2)"
    assert end.payload.details["cause"] == "turn_cap"
    outcome = parser.outcome()
    assert not outcome.success and outcome.cost_usd == 0.00245 and outcome.total_tokens == 290


def test_resume_failure_without_init() -> None:
    drafts, parser = replay(
        "claude", "claude_resume_failure.jsonl", 1, ("No conversation found with session ID: 1111",)
    )
    [end] = drafts
    assert end.payload.details["cause"] == "session_not_found"
    assert parser.outcome().session_id == "11111111-2222-3333-4444-555555555555"
    assert parser.outcome().error.startswith("No conversation found")


def test_success_result_with_nonzero_exit_is_an_error() -> None:
    drafts, parser = replay("claude", "claude_normal.jsonl", 1, ("boom",))
    assert drafts[-1].payload.kind == "exit" and drafts[-1].payload.exit_code == 1
    assert not parser.outcome().success and "reported success" in parser.outcome().error


def test_api_error_subtype_success_is_not_success() -> None:
    parser = ClaudeAdapter().new_parser()
    [end] = parser.feed_object(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "result": "API Error: 500 x",
            "api_error_status": 500,
        }
    )
    assert end.type == "error" and end.payload.retryable is True
    parser.finish(0, ())
    assert not parser.outcome().success


def test_unknown_system_subtype_and_thinking() -> None:
    parser = ClaudeAdapter().new_parser()
    [hook] = parser.feed_object({"type": "system", "subtype": "hook_started"})
    assert (hook.type, hook.payload.kind, hook.payload.text) == ("status", "unknown", "system/hook_started")
    [think] = parser.feed_object(
        {"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "hmm"}]}}
    )
    assert (think.type, think.payload.kind) == ("progress", "reasoning")
    [rf1, rf2] = parser.feed_object(
        {
            "type": "assistant",
            "message": {
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t",
                        "name": "ReportFindings",
                        "input": {"findings": [{"file": "a.py", "line": 3, "summary": "bug"}, {"summary": "another"}]},
                    }
                ]
            },
        }
    )
    assert (rf1.type, rf1.payload.file, rf1.payload.line, rf1.payload.text) == ("finding", "a.py", 3, "bug")
    assert rf2.type == "finding"


# An assistant line of one text block is read into structs (``fast_shape``); every other line,
# and every variation of it, must come out as the dict path makes it.
_FAST_SHAPE_LINES = [
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"hello"}]},"session_id":"s1"}',
    b'{"type":"assistant","message":{"id":"m","content":[{"type":"text","text":"a\\nb","citations":[]}],"usage":{"input_tokens":3}},"parent_tool_use_id":null,"session_id":"s1","uuid":"u"}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"done\\n[[MILESTONE: api ready]]\\nnext"}]}}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":""}]},"session_id":""}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"x"}]},"session_id":null}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"x"}]},"session_id":7}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":7}]}}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}',
    b'{"type":"assistant","message":{"content":[]}}',
    b'{"type":"assistant","message":{"content":"plain"}}',
    b'{"type":"assistant","message":"not an object"}',
    b'{"type":"assistant"}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"API Error: 500"}]},"error":"server_error"}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"x"}]},"error":null}',
    b'{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"a.py"}}]}}',
    b'{"type":"assistant","message":{"content":[{"type":"thinking","thinking":"hmm"}]}}',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"\\ud800 lone"}]}}',
    b'{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}',
    b'{"type":"system","subtype":"init","session_id":"s2","model":"m"}',
    b'  {"type":"assistant","message":{"content":[{"type":"text","text":"spaced"}]}}  ',
    b'{"type":"assistant","message":{"content":[{"type":"text","text":"cut',
    b"not json",
]


def test_the_fast_shape_reads_every_line_as_the_dict_path_does(monkeypatch: object) -> None:
    import pytest

    from meta_orchestrator.actors.adapters.claude import ClaudeParser

    fast, plain = ClaudeParser(), ClaudeParser()
    assert ClaudeParser.fast_shape is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClaudeParser, "fast_shape", None)
        expected = [(plain.feed_line(line), plain.session_id) for line in _FAST_SHAPE_LINES]
    got = [(fast.feed_line(line), fast.session_id) for line in _FAST_SHAPE_LINES]
    for line, want, have in zip(_FAST_SHAPE_LINES, expected, got, strict=True):
        assert have == want, line
    assert fast._tools == plain._tools
