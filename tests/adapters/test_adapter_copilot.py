"""The copilot adapter: its command line, state places, error rows, and its parser on stored
stdout of the real Copilot CLI 1.0.102 (tests/transcripts/copilot_*.jsonl, recorded against
the scripted model server) and on the demo copilot's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meta_orchestrator.actors.adapters.base import LaunchSpec
from meta_orchestrator.actors.adapters.copilot import CopilotAdapter
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from tests.adapters.test_adapter_common import kinds, replay

PROMPT = "--help me; SCRIPT:text"


def _launch(**fields: object) -> tuple[tuple[str, ...], dict[str, str], bytes | None]:
    spec = LaunchSpec(executable=("copilot",), prompt=PROMPT, workdir=Path("/w"), **fields)  # type: ignore[arg-type]
    launch = CopilotAdapter().build_launch(spec)
    return launch.argv, launch.env, launch.stdin


def test_the_prompt_goes_on_stdin_never_in_argv() -> None:
    argv, env, stdin = _launch(env={"COPILOT_PROVIDER_BASE_URL": "http://127.0.0.1:1"})
    assert stdin == PROMPT.encode() and PROMPT not in argv and "-p" not in argv
    assert argv[:5] == ("copilot", "--output-format", "json", "--allow-all-tools", "--no-auto-update")
    assert "--secret-env-vars=COPILOT_PROVIDER_API_KEY,COPILOT_PROVIDER_BEARER_TOKEN,COPILOT_GITHUB_TOKEN" in argv
    assert not [a for a in argv if a.startswith("--deny-tool")]
    assert env["COPILOT_AUTO_UPDATE"] == "false" and env["COPILOT_OFFLINE"] == "true"


def test_a_github_login_is_not_made_offline_and_the_folder_is_never_trusted() -> None:
    _argv, env, _stdin = _launch(env={"COPILOT_GITHUB_TOKEN": "t", "COPILOT_ALLOW_ALL": "true"})
    assert "COPILOT_OFFLINE" not in env  # offline mode refuses to run without a provider of one's own
    assert "COPILOT_ALLOW_ALL" not in env  # "true" would load the checkout's hooks and MCP servers


def test_review_runs_deny_every_write_and_shell_rule_and_the_rest_is_passed() -> None:
    argv, _env, _stdin = _launch(
        mode="read_only", extra_dirs=(Path("/scratch"),), model="m1", resume_session_id="abc", extra_args=("--x",)
    )
    assert argv[-9:] == (
        "--deny-tool=write",
        "--deny-tool=shell",
        "--add-dir",
        "/scratch",
        "--model",
        "m1",
        "--resume",
        "abc",
        "--x",
    )


def test_state_places_follow_copilot_home_and_the_cache_folder() -> None:
    adapter = CopilotAdapter()
    home, cache = adapter.cli_state({"HOME": "/h"}).places
    assert (home.real, cache.real) == (Path("/h/.copilot"), Path("/h/.cache/copilot"))
    assert "mcp-config.json" in home.settings and "hooks/" in home.settings
    assert cache.copied == ()  # copilot unpacks its package into the private copy itself
    moved = adapter.cli_state({"HOME": "/h", "COPILOT_HOME": "/c", "XDG_CACHE_HOME": "/x"}).places
    assert [p.real for p in moved] == [Path("/c"), Path("/x/copilot")]


def test_a_marker_run() -> None:
    drafts, parser = replay("copilot", "copilot_marker.jsonl")
    assert ("milestone", "marker") in kinds(drafts) and ("review", "result") in kinds(drafts)
    assert sum(1 for d in drafts if d.payload.kind == "ephemeral") == 9  # skills, tools, deltas, model calls, idle...
    outcome = parser.outcome()
    assert outcome.success and outcome.session_id == "bdcdf3ca-8cd2-4f6c-af46-fc4c767131b9"
    assert outcome.final_text.startswith("Starting the scripted work.")


def test_a_written_file() -> None:
    drafts, parser = replay("copilot", "copilot_write.jsonl")
    [call] = [d for d in drafts if d.payload.kind == "tool_call"]
    assert (call.payload.tool, call.payload.details["copilot_tool"]) == ("Write", "create")
    [written] = [d for d in drafts if d.payload.kind == "file_written"]
    assert written.payload.file == "/tmp/cp/wt/hello.txt"
    outcome = parser.outcome(writing=True)
    assert outcome.success and outcome.files_written == ("/tmp/cp/wt/hello.txt",)
    assert outcome.final_text == "Wrote hello.txt as scripted."


def test_a_500_after_copilot_s_retries_is_a_retryable_server_error() -> None:
    drafts, parser = replay("copilot", "copilot_error_500.jsonl", returncode=1)
    [api] = [d for d in drafts if d.payload.kind == "api_error"]
    assert api.payload.details == {"error_type": "query", "status_code": 500, "cause": "server"}
    [end] = [d for d in drafts if d.type == "error" and d.payload.terminal]
    assert end.payload.retryable is True and "Last error: 500 mock internal error" in (end.payload.text or "")
    outcome = parser.outcome()
    assert not outcome.success and outcome.terminal_event_seen
    found = classify_run(Evidence(agent="copilot", lines=(outcome.error or "",), returncode=1))
    assert found is not None and found.cause == "server"


def test_a_denied_shell_in_a_review_is_a_blocker() -> None:
    drafts, parser = replay("copilot", "copilot_review_shell_denied.jsonl")
    [denial] = [d for d in drafts if d.type == "blocker"]
    assert denial.payload.tool == "Bash" and "following rules: `shell`" in (denial.payload.text or "")
    outcome = parser.outcome()
    assert outcome.success and outcome.permission_denials == (denial.payload.text,)
    assert not parser.outcome(writing=True).success  # as a writing run: its only tool call failed


@pytest.mark.parametrize(
    ("line", "returncode", "cause"),
    [
        ("Authentication failed with provider at http://h (HTTP 401).", 1, "auth"),
        ("Offline mode requires a local model provider. Set COPILOT_PROVIDER_BASE_URL to configure one.", 1, "auth"),
        ("Failed to get response from the AI model; retried 5 times (...) Last error: 429 slow down", 1, "rate_limit"),
        ("Error: No session, task, or name matched 'abc'.", 1, "session_not_found"),
        ("error: unexpected argument '--bogus' found", 1, "bad_flag"),
        ("Failed to extract bundled package: Error: ENOENT: no such file or directory, mkdir", 1, "sandbox"),
    ],
)
def test_the_real_messages_are_classified(line: str, returncode: int, cause: str) -> None:
    found = classify_run(Evidence(agent="copilot", lines=(line,), returncode=returncode))
    assert found is not None and found.cause == cause


@pytest.mark.parametrize(
    ("scenario", "cause"), [("auth_error", "auth"), ("rate_limit", "rate_limit"), ("server_error", "server")]
)
def test_the_demo_copilot_fails_as_the_real_one_does(tmp_path: Path, scenario: str, cause: str) -> None:
    argv, env, stdin = _launch(env={"COPILOT_PROVIDER_BASE_URL": "http://127.0.0.1:1"})
    done = subprocess.run(
        [sys.executable, "-m", "meta_orchestrator.actors.agents.demo", "copilot", *argv[1:]],
        input=stdin,
        capture_output=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "ORCHESTRATE_DEMO_PACE": "0", "ORCHESTRATE_DEMO_SCENARIO": scenario, **env},
        timeout=60,
        check=False,
    )
    parser = CopilotAdapter().new_parser()
    drafts = [d for line in done.stdout.splitlines() for d in parser.feed_line(line)]
    drafts += parser.finish(done.returncode, ())
    assert done.returncode == 1 and not [d for d in drafts if d.payload.kind == "parse_error"], drafts
    outcome = parser.outcome()
    assert outcome.terminal_event_seen and not outcome.success
    found = classify_run(Evidence(agent="copilot", lines=(outcome.error or "",), returncode=1))
    assert found is not None and found.cause == cause, outcome.error
