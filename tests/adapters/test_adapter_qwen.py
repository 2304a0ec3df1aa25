"""qwen adapter: the exact command line, and lines the real qwen-code 0.24.4 printed
(against the scripted model server; ids shortened, tool and slash-command lists cut)."""

from __future__ import annotations

from pathlib import Path

from meta_orchestrator.actors.adapters.base import Draft, LaunchSpec
from meta_orchestrator.actors.adapters.qwen import QwenAdapter
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from tests.adapters.test_adapter_common import kinds

S = "97bd9b39-c6ec-475e-ad1f-b1f35daafcbe"
INIT = (
    '{"type":"system","subtype":"init","uuid":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","cwd":"/srv/repo","tools":["read_file",'
    '"write_file"],"mcp_servers":[],"model":"claude-sonnet-4-5","permission_mode":"auto-edit",'
    '"slash_commands":["review"],"qwen_code_version":"0.24.4","agents":["general-purpose"]}'
)
GOAL = (
    '{"type":"stream_event","uuid":"u1","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"event":{"type":"goal_state",'
    '"goal_state":{"v":2,"goal":null,"activity":"idle"}}}'
)
WRITE = (
    '{"type":"assistant","uuid":"u2","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"message":{"id":"u2","type":'
    '"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"toolu_1",'
    '"name":"write_file","input":{"file_path":"/srv/repo/hello.txt","content":"hi\\n"}}],"stop_reason":"tool_use",'
    '"usage":{"input_tokens":120,"output_tokens":25,"cache_read_input_tokens":0,"total_tokens":145}}}'
)
WRITTEN = (
    '{"type":"user","uuid":"u3","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"message":{"role":"user","content":'
    '[{"type":"tool_result","tool_use_id":"toolu_1","is_error":false,"content":"Successfully created and wrote '
    'to new file: /srv/repo/hello.txt."}]}}'
)
DENIED = (
    '{"type":"user","uuid":"u3","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"message":{"role":"user","content":'
    '[{"type":"tool_result","tool_use_id":"toolu_1","is_error":true,"content":"Qwen Code requires permission to '
    'use \\"write_file\\", but that permission was declined. Matching deny rule: \\"edit\\"."}]}}'
)
TEXT = (
    '{"type":"assistant","uuid":"u4","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"message":{"id":"u4","type":'
    '"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Wrote it.\\n'
    'ORCHESTRATE_EVENT {\\"type\\":\\"milestone\\",\\"text\\":\\"done\\"}"}],"stop_reason":null,"usage":'
    '{"input_tokens":120,"output_tokens":25,"cache_read_input_tokens":0,"total_tokens":145}}}'
)
RESULT = (
    '{"type":"result","subtype":"success","uuid":"u5","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","is_error":false,"duration_ms":1011,'
    '"duration_api_ms":561,"num_turns":2,"result":"Wrote it.\\nORCHESTRATE_EVENT {\\"type\\":\\"milestone\\",'
    '\\"text\\":\\"done\\"}","usage":{"input_tokens":240,"output_tokens":50,"cache_read_input_tokens":0,'
    '"total_tokens":290},"permission_denials":[]}'
)
RETRY = (
    '{"type":"system","subtype":"retry","uuid":"u6","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"data":{"reason":'
    '"retry","attempt":1,"maxRetries":10,"delayMs":60000,"discardedToolCalls":0,"preserveText":false}}'
)
API_401 = (
    '[API Error: 401 {\\"type\\":\\"error\\",\\"error\\":{\\"type\\":\\"authentication_error\\",\\"message\\":'
    '\\"mock invalid api key\\"},\\"request_id\\":\\"req_mock1\\"}]'
)
ERROR_TEXT = (
    '{"type":"assistant","uuid":"u7","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","parent_tool_use_id":null,"message":{"id":"u7","type":'
    '"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"' + API_401 + '"}],'
    '"stop_reason":null,"usage":{"input_tokens":0,"output_tokens":0}}}'
)
ERROR_RESULT = (
    '{"type":"result","subtype":"error_during_execution","uuid":"u8","session_id":"97bd9b39-c6ec-475e-ad1f-b1f35daafcbe","is_error":true,'
    '"duration_ms":2830,"duration_api_ms":0,"num_turns":1,"usage":{"input_tokens":0,"output_tokens":0,'
    '"cache_read_input_tokens":0},"permission_denials":[],"error":{"message":"' + API_401 + '"}}'
)


def _replay(lines: list[str], returncode: int, stderr: tuple[str, ...] = ()) -> tuple[list[Draft], object]:
    parser = QwenAdapter().new_parser()
    drafts = [d for line in lines for d in parser.feed_line(line.encode())]
    drafts += [d for line in stderr for d in parser.feed_stderr(line)]
    drafts += parser.finish(returncode, stderr)
    return drafts, parser


def test_write_and_review_command_lines_keep_the_prompt_on_stdin(tmp_path: Path) -> None:
    spec = LaunchSpec(executable=("qwen",), prompt="do it", workdir=tmp_path, model="m", extra_dirs=(tmp_path / "x",))
    launch = QwenAdapter().build_launch(spec)
    assert launch.argv == (
        "qwen",
        "-o",
        "stream-json",
        "--approval-mode",
        "auto-edit",
        "--include-directories",
        str(tmp_path / "x"),
        "-m",
        "m",
    )
    assert launch.stdin == b"do it" and launch.cwd == tmp_path
    review = QwenAdapter().build_launch(
        LaunchSpec(executable=("qwen",), prompt="p", workdir=tmp_path, mode="read_only")
    )
    assert review.argv[3:5] == ("--approval-mode", "plan")
    resumed = QwenAdapter().build_launch(
        LaunchSpec(executable=("qwen",), prompt="p", workdir=tmp_path, resume_session_id=S)
    )
    assert resumed.argv[-2:] == ("--resume", S)


def test_a_yolo_flag_is_dropped_before_launch_with_qwens_own_words() -> None:
    fixed = QwenAdapter().fix_before_launch(("--yolo", "--debug"), allow_bypass=True, env={}, euid=0)
    assert fixed is not None and fixed.extra_args == ("--debug",) and fixed.cause == "bad_flag"
    assert QwenAdapter().bypass_flags_in(["--approval-mode=yolo"]) == ["--approval-mode=yolo"]


def test_a_run_that_writes_a_file_and_reports_a_marker() -> None:
    drafts, parser = _replay([INIT, GOAL, WRITE, WRITTEN, TEXT, RESULT], 0)
    assert kinds(drafts) == [
        ("status", "init"),
        ("status", "stream_event"),
        ("progress", "tool_call"),
        ("progress", "tool_result"),
        ("milestone", "file_written"),
        ("progress", "text"),
        ("milestone", "marker"),
        ("milestone", "result"),
        ("review", "result"),
    ]
    outcome = parser.outcome(writing=True)  # type: ignore[attr-defined]
    assert outcome.success and outcome.session_id == S and outcome.total_tokens == 290
    assert outcome.files_written == ("/srv/repo/hello.txt",) and outcome.final_text.startswith("Wrote it.")
    assert drafts[-1].payload.text == "Wrote it."  # the marker is an event, not review text


def test_a_refused_write_is_a_denial_and_a_mode_too_strict_run() -> None:
    drafts, parser = _replay([INIT, WRITE, DENIED, RESULT], 0)
    denial = [d for d in drafts if d.type == "blocker"]
    assert [(d.payload.kind, d.payload.tool) for d in denial] == [("denial", "write_file")]
    outcome = parser.outcome(writing=True)  # type: ignore[attr-defined]
    assert not outcome.files_written and outcome.permission_denials
    evidence = Evidence("qwen", outcome.permission_denials, 0, succeeded=True)
    assert classify_run(evidence).cause == "mode_too_strict"  # type: ignore[union-attr]


def test_an_api_error_after_the_retries_ends_the_run_classified() -> None:
    drafts, parser = _replay([INIT, RETRY, ERROR_TEXT, ERROR_RESULT], 1)
    assert kinds(drafts) == [("status", "init"), ("status", "retry"), ("error", "api_error"), ("error", "result")]
    assert drafts[1].payload.text == "retrying the API request in 60 s (1/10)"
    terminal = drafts[-1]
    assert terminal.payload.terminal and terminal.payload.retryable is False
    assert terminal.payload.details == {"subtype": "error_during_execution", "api_error_status": 401, "cause": "auth"}
    outcome = parser.outcome()  # type: ignore[attr-defined]
    assert not outcome.success and outcome.error.startswith("[API Error: 401 ")
    assert classify_run(Evidence("qwen", (outcome.error,), 1)).cause == "auth"  # type: ignore[union-attr]


def test_an_untrusted_folder_is_a_blocker_from_stderr() -> None:
    said = 'Approval mode overridden to "default" because the current folder is not trusted.'
    drafts, _ = _replay([INIT, RESULT], 0, (said,))
    assert [(d.type, d.payload.kind) for d in drafts if d.type == "blocker"] == [("blocker", "trust")]
    assert classify_run(Evidence("qwen", (said,), 1)).cause == "repo_trust"  # type: ignore[union-attr]


def test_its_state_is_the_qwen_folder_with_this_folders_sessions(tmp_path: Path) -> None:
    (place,) = QwenAdapter().cli_state({"HOME": str(tmp_path)}, (Path("/srv/my repo"),)).places
    assert place.real == tmp_path / ".qwen" and "settings.json" in place.settings
    assert "projects/-srv-my-repo" in place.copied and "oauth_creds.json" in place.credentials
    (moved,) = QwenAdapter().cli_state({"HOME": str(tmp_path), "QWEN_HOME": "/cfg/qwen"}).places
    assert moved.real == Path("/cfg/qwen")


def test_an_api_error_in_a_text_block_is_not_taken_for_text_by_the_fast_shape() -> None:
    from meta_orchestrator.actors.adapters.qwen import QwenParser

    line = b'{"type":"assistant","message":{"content":[{"type":"text","text":"[API Error: 401 bad key]"}]}}'
    assert [d.type for d in QwenParser().feed_line(line)] == ["error"]
