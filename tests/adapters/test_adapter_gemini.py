"""Gemini adapter: the exact command line and the stream-json transcripts of the reference."""

from __future__ import annotations

from pathlib import Path

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.gemini import GeminiAdapter
from tests.adapters.test_adapter_common import kinds, replay

SESSION = "a2026799-7bae-4d3d-977a-e7e663645849"


def _spec(**changes: object) -> LaunchSpec:
    base = dict(executable=("gemini",), prompt="do it", workdir=Path("/srv/repo"), env={"GEMINI_API_KEY": "k"})
    return LaunchSpec(**{**base, **changes})  # type: ignore[arg-type]


def test_write_mode_argv_env_cwd() -> None:
    env = {"GEMINI_API_KEY": "k"}
    launch = GeminiAdapter().build_launch(_spec(env=env))
    assert launch.argv == (
        "gemini",
        "-p",
        "",
        "--output-format",
        "stream-json",
        "--skip-trust",
        "--approval-mode",
        "auto_edit",
    )
    assert launch.stdin == b"do it"  # headless gemini reads stdin and joins the empty -p to it
    assert launch.env == {"GEMINI_API_KEY": "k", "GEMINI_CLI_TRUST_WORKSPACE": "true"}
    assert env == {"GEMINI_API_KEY": "k"} and launch.cwd == Path("/srv/repo")


def test_read_only_dirs_model_resume(tmp_path: Path) -> None:
    present, missing = tmp_path / "docs", tmp_path / "gone"
    present.mkdir()
    launch = GeminiAdapter().build_launch(
        _spec(
            mode="read_only",
            extra_dirs=(present, missing),
            model="gemini-2.5-flash",
            resume_session_id=SESSION,
            extra_args=("--debug",),
        )
    )
    assert launch.argv == (
        "gemini",
        "-p",
        "",
        "--output-format",
        "stream-json",
        "--skip-trust",
        "--approval-mode",
        "default",
        "--include-directories",
        str(present),
        "-m",
        "gemini-2.5-flash",
        "--resume",
        SESSION,
        "--debug",
    )  # the missing dir is dropped


def test_a_prompt_starting_with_a_dash_is_never_an_argument() -> None:
    launch = GeminiAdapter().build_launch(_spec(prompt="-y delete all"))
    assert launch.argv[1:3] == ("-p", "") and not any("delete all" in a for a in launch.argv)
    assert launch.stdin == b"-y delete all"


def test_yolo_run_with_path_not_in_workspace() -> None:
    drafts, parser = replay("gemini", "gemini_yolo.jsonl", 0)
    assert kinds(drafts) == [
        ("status", "init"),
        ("status", "prompt_echo"),
        ("progress", "tool_call"),
        ("blocker", "denial"),
        ("progress", "tool_call"),
        ("blocker", "denial"),
        ("progress", "tool_call"),
        ("progress", "tool_result"),
        ("milestone", "file_written"),
        ("progress", "tool_call"),
        ("progress", "tool_result"),
        ("progress", "text"),
        ("milestone", "result"),
        ("review", "result"),
    ]
    assert (drafts[0].payload.session_id, drafts[0].payload.model) == (SESSION, "gemini-2.5-flash")
    read_denied, write_denied = drafts[3], drafts[5]
    assert read_denied.payload.text.startswith('Path not in workspace: Attempted path "/srv/other/secret.txt"')
    assert (write_denied.payload.tool, write_denied.payload.file) == ("write_file", "/srv/other/w.txt")
    assert drafts[8].payload.file == "hello.txt"  # kept as the model gave it
    assert drafts[10].payload.text == "hi from shell"
    review = drafts[-1]
    assert review.payload.text == "Scenario B finished." and review.payload.files == ("hello.txt",)
    assert review.payload.usage["total_tokens"] == 4650
    outcome = parser.outcome()
    assert outcome.success and outcome.session_id == SESSION and outcome.total_tokens == 4650
    assert outcome.final_text == "Scenario B finished."
    assert len(outcome.permission_denials) == 2


def test_401_result() -> None:
    drafts, parser = replay("gemini", "gemini_401.jsonl", 145)
    end = drafts[-1]
    assert (end.type, end.payload.kind, end.payload.terminal) == ("error", "result", True)
    assert (end.payload.retryable, end.payload.details["cause"]) == (False, "auth")
    assert "mock UNAUTHENTICATED" in end.payload.text
    assert [d for d in drafts if d.payload.kind == "exit"] == []  # the result already said it
    outcome = parser.outcome()
    assert not outcome.success and outcome.terminal_event_seen and "401" in outcome.error


def test_turn_cap() -> None:
    drafts, parser = replay("gemini", "gemini_turn_cap.jsonl", 53)
    end = drafts[-1]
    assert end.payload.details == {"error_type": "FatalTurnLimitedError", "cause": "turn_cap"}
    assert parser.outcome().total_tokens == 1860 and not parser.outcome().success


def test_split_marker_and_final_text_of_last_turn() -> None:
    drafts, parser = replay("gemini", "gemini_markers.jsonl", 0)
    markers = [d for d in drafts if d.payload.kind == "marker"]
    assert [(d.type, d.payload.text) for d in markers] == [("milestone", "split marker"), ("review", "please review")]
    assert markers[0].payload.progress == 60
    # the marker the shell echoed in its tool_result is not an event
    assert not [d for d in drafts if d.type == "blocker"]
    # the last marker has no newline after it: flushed at the result, before the milestone
    types = kinds(drafts)
    assert types.index(("review", "marker")) < types.index(("milestone", "result"))
    assert parser.outcome().final_text.startswith("Final answer.\nORCHESTRATE_EVENT")


def test_marker_at_end_of_stream_is_flushed_by_finish() -> None:
    parser = GeminiAdapter().new_parser()
    parser.feed_object(
        {"type": "message", "role": "assistant", "delta": True, "content": 'ORCHESTRATE_EVENT {"type": "blocker", '}
    )
    assert (
        parser.feed_object({"type": "message", "role": "assistant", "delta": True, "content": '"text": "stuck"}'})[1:]
        == []
    )
    drafts = parser.finish(-9, ())
    assert kinds(drafts) == [("blocker", "marker"), ("error", "exit")]


def test_tool_errors_error_event_and_todos() -> None:
    parser = GeminiAdapter().new_parser()
    parser.feed_object(
        {"type": "tool_use", "tool_name": "write_file", "tool_id": "w", "parameters": {"file_path": "x.txt"}}
    )
    [unregistered] = parser.feed_object(
        {
            "type": "tool_result",
            "tool_id": "w",
            "status": "error",
            "error": {"type": "tool_not_registered", "message": 'Tool "write_file" not found.'},
        }
    )
    assert (unregistered.type, unregistered.payload.kind) == ("blocker", "denial")
    [other] = parser.feed_object(
        {
            "type": "tool_result",
            "tool_id": "w",
            "status": "error",
            "error": {"type": "invalid_tool_params", "message": "bad"},
        }
    )
    assert (other.type, other.payload.details["is_error"]) == ("progress", True)
    [loop] = parser.feed_object(
        {"type": "error", "severity": "warning", "message": "Loop detected, stopping execution"}
    )
    assert (loop.type, loop.payload.terminal, loop.payload.severity) == ("error", False, "warning")
    [todo] = parser.feed_object(
        {"type": "tool_use", "tool_name": "write_todos", "tool_id": "t", "parameters": {"todos": []}}
    )
    assert (todo.type, todo.payload.kind) == ("task", "todo")
    assert parser.files_written == []  # the write never succeeded


def test_quota_result_is_retryable() -> None:
    # the text the pinned gemini printed for an HTTP 429 from the scripted server
    parser = GeminiAdapter().new_parser()
    [end] = parser.feed_object(
        {
            "type": "result",
            "status": "error",
            "error": {
                "type": "unknown",
                "message": "[API Error: mock rate limited]\nPlease wait and try again "
                "later. To increase your limits, request a quota increase through AI Studio, or switch "
                "to another /auth method",
            },
        }
    )
    assert (end.payload.retryable, end.payload.details["cause"]) == (True, "rate_limit")
    parser.finish(173, ())
    assert not parser.outcome().success
