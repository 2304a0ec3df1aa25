"""Recovery: the pattern table on the reference's real messages, the plans, the caps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.recovery.recovery import Recovery
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run, compile_patterns
from meta_orchestrator.config.settings import RecoverySettings, load_settings
from meta_orchestrator.messages.events import Event, EventPayload
from meta_orchestrator.messages.recovery import RecoveryPlanned, RecoveryRequested
from meta_orchestrator.messages.worker import AssignmentFinished, EventsRecorded, RunOutcome

# (cli, a real line from reference §1.5/§1.6, §2.1/§2.5/§2.6, §3.1/§3.3-§3.6, exit code, class)
REAL_MESSAGES = [
    ("claude", "Not logged in · Please run /login [authentication_failed]", 1, "auth"),
    ("claude", "Failed to authenticate. API Error: 401 mock invalid key", 1, "auth"),
    ("claude", "API Error: Request rejected (429) · rate limited [rate_limit]", 1, "rate_limit"),
    (
        "claude",
        "API Error: 500 boom. This is a server-side issue, usually temporary — try again in a moment. [server]",
        1,
        "server",
    ),
    ("claude", "API Error: Unable to connect to API (ConnectionRefused) [network]", 1, "network"),
    ("claude", "Prompt is too long · the request is ~250000 tokens (limit 200000)", 1, "context"),
    ("claude", "Reached maximum number of turns (2)", 1, "turn_cap"),
    ("claude", "No conversation found with session ID: 11111111-2222-3333-4444-555555555555", 1, "session_not_found"),
    (
        "claude",
        "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
        1,
        "root_bypass",
    ),
    ("claude", "error: unknown option '--bogus-flag'", 1, "bad_flag"),
    (
        "claude",
        "Claude requested permissions to write to /srv/other/notes.txt, but you haven't granted it yet.",
        0,
        "outside_path",
    ),
    ("claude", "Cannot write to /srv/repo/x.txt while in plan mode.", 0, "mode_too_strict"),
    (
        "codex",
        "unexpected status 401 Unauthorized: mock invalid_api_key, url: http://127.0.0.1:8080/v1/responses",
        1,
        "auth",
    ),
    ("codex", "Reconnecting... 1/5 (unexpected status 403 Forbidden: no)", 1, "auth"),
    ("codex", "Missing environment variable: `OPENAI_API_KEY`.", 1, "auth"),
    ("codex", "exceeded retry limit, last status: 429 Too Many Requests", 1, "rate_limit"),
    ("codex", "Quota exceeded. Check your plan and billing details.", 1, "rate_limit"),
    ("codex", "We’re currently experiencing high demand, which may cause temporary errors.", 1, "server"),
    ("codex", "Reconnecting... waiting for network (Connection failed: error sending request)", 1, "network"),
    ("codex", "Codex ran out of room in the model's context window. Start a new thread", 1, "context"),
    ("codex", "Not inside a trusted directory and --skip-git-repo-check was not specified.", 1, "repo_trust"),
    ("codex", "Error: No such file or directory (os error 2)", 1, "bad_workdir"),
    ("codex", "error: unexpected argument '--full-auto' found", 2, "bad_flag"),
    (
        "codex",
        "Error: thread/resume: thread/resume failed: no rollout found for thread id x (code -32600)",
        1,
        "session_not_found",
    ),
    (
        "codex",
        "2026-01-01T00:00:00Z ERROR codex_core::tools::router: error=patch rejected: "
        "writing is blocked by read-only sandbox; rejected by user approval settings",
        0,
        "outside_path",
    ),
    (
        "gemini",
        "Please set an Auth method in your /home/user/.gemini/settings.json or specify "
        "one of the following environment variables",
        41,
        "auth",
    ),
    ("gemini", "Invalid auth method selected.", 41, "auth"),
    ("gemini", '[API Error: {"error":{"code":401,"message":"mock","status":"UNAUTHENTICATED"}}]', 145, "auth"),
    ("gemini", "[API Error: You have exhausted your daily quota on this model.]", 173, "rate_limit"),
    ("gemini", '[API Error: {"error":{"code":500,"message":"x","status":"INTERNAL"}}]', 244, "server"),
    ("gemini", "[API Error: exception TypeError: fetch failed sending request]", 1, "network"),
    (
        "gemini",
        "Gemini CLI is not running in a trusted directory. To proceed, either use `--skip-trust`",
        55,
        "repo_trust",
    ),
    ("gemini", "Reached max session turns for this session. [FatalTurnLimitedError]", 53, "turn_cap"),
    ("gemini", 'Error resuming session: Invalid session identifier "x".', 42, "session_not_found"),
    ("gemini", "An unexpected critical error occurred:Error: Directory does not exist: /srv/x", 1, "bad_workdir"),
    (
        "gemini",
        'Path not in workspace: Attempted path "/srv/other/w.txt" resolves outside the '
        "allowed workspace directories: /srv/repo",
        0,
        "outside_path",
    ),
    (
        "gemini",
        'Tool "write_file" not found. Did you mean one of: "read_file" [tool_not_registered]',
        0,
        "mode_too_strict",
    ),
    ("gemini", "FatalSandboxError: Sandbox image 'x' is missing or could not be pulled.", 1, "sandbox"),
    ("claude", "executable 'claude' not found; install the CLI or set [agents.<name>] command", None, "not_installed"),
]


@pytest.mark.parametrize(
    "cli,line,code,cause", REAL_MESSAGES, ids=[f"{c}-{k}-{i}" for i, (c, _, _, k) in enumerate(REAL_MESSAGES)]
)
def test_pattern_table_classifies_the_real_messages(cli, line, code, cause):
    found = classify_run(Evidence(agent=cli, lines=(line,), returncode=code, succeeded=code == 0))
    assert found is not None and found.cause == cause, found
    assert found.evidence


@pytest.mark.parametrize(
    "code,cause",
    [(41, "auth"), (145, "auth"), (173, "rate_limit"), (244, "server"), (55, "repo_trust"), (53, "turn_cap")],
)
def test_gemini_exit_codes_alone_classify(code, cause):
    assert classify_run(Evidence(agent="gemini", returncode=code)).cause == cause


def test_a_failure_nothing_explains_is_a_crash_and_a_clean_run_is_nothing():
    crash = classify_run(Evidence(agent="claude", lines=("TypeError: x",), returncode=1, terminal_event_seen=False))
    assert crash.cause == "crash" and "TypeError" in crash.evidence
    assert classify_run(Evidence(agent="claude", returncode=0, succeeded=True)) is None
    # A successful run is only ever classed by its refusals, never as an auth error.
    assert classify_run(Evidence(agent="claude", lines=("Not logged in",), returncode=0, succeeded=True)) is None


def test_config_patterns_extend_the_table_and_are_validated():
    table = compile_patterns([{"cli": "codex", "cause": "rate_limit", "match": r"slow down"}])
    found = classify_run(Evidence(agent="codex", lines=("please slow down",), returncode=1), table)
    assert found.cause == "rate_limit" and found.source == "config"
    with pytest.raises(ValueError, match="not one of"):
        compile_patterns([{"cause": "weather", "match": "rain"}])
    with pytest.raises(ValueError, match="not a valid regex"):
        compile_patterns([{"cause": "auth", "match": "("}])
    settings = load_settings(None, {"recovery.patterns": [{"cli": "gemini", "cause": "server", "exit_codes": [99]}]})
    assert settings.recovery.patterns[0].exit_codes == (99,)


# -- the actor ---------------------------------------------------------------------------------


def _finished(
    agent: str,
    *,
    code: int | None = 1,
    error: str | None = None,
    ok: bool = False,
    stderr: tuple[str, ...] = (),
    denials: tuple[str, ...] = (),
    spawn_error: str | None = None,
    session_id: str | None = "sess-1",
    assignment: str = "implement",
) -> AssignmentFinished:
    return AssignmentFinished(
        agent=agent,
        assignment_id=assignment,
        returncode=code,
        stderr_tail=stderr,
        spawn_error=spawn_error,
        outcome=RunOutcome(
            success=ok, error=error, permission_denials=denials, session_id=session_id, terminal_event_seen=True
        ),
    )


@pytest.fixture
def recovery(tmp_path: Path, probe):
    def start(**overrides: Any):
        base = {"backoff_base_s": 1.0, "backoff_jitter": 0.5, **overrides}
        return Recovery.start(
            settings=RecoverySettings(**base),
            target=tmp_path / "repo",
            workspace=tmp_path / "ws",
            listeners=(),
            rng=lambda: 0.5,
            home=tmp_path / "home",
        )

    (tmp_path / "repo").mkdir()
    return start


def _plan(ref, probe, finished: AssignmentFinished, **extra: Any) -> RecoveryPlanned:
    ref.tell(RecoveryRequested(finished=finished, reply_to=probe.ref, **extra))
    return probe.expect(RecoveryPlanned)


def test_rate_limit_backs_off_with_jitter_then_gives_up(recovery, probe):
    ref = recovery()
    delays = []
    for _ in range(4):
        plan = _plan(ref, probe, _finished("codex", error="exceeded retry limit, last status: 429 Too Many Requests"))
        delays.append((plan.action, plan.delay_s))
    assert delays[:3] == [("retry_after", 1.25), ("retry_after", 2.5), ("retry_after", 5.0)]
    assert delays[3][0] == "give_up"
    assert plan.cause == "rate_limit" and "3 of 3" in plan.advice


def test_per_agent_cap_holds_across_classes(recovery, probe):
    ref = recovery(max_attempts_per_agent=2)
    errors = [
        "exceeded retry limit, last status: 429 Too Many Requests",
        "We’re currently experiencing high demand",
        "stream disconnected before completion",
    ]
    actions = [_plan(ref, probe, _finished("codex", error=e)).action for e in errors]
    assert actions == ["retry_after", "retry_after", "give_up"]
    # Another agent has its own budget.
    assert _plan(ref, probe, _finished("claude", error="API Error: Request rejected (429)")).action == "retry_after"


def test_auth_escalates_naming_the_variable(recovery, probe):
    ref = recovery()
    plan = _plan(ref, probe, _finished("claude", error="Not logged in · Please run /login"))
    assert (plan.cause, plan.action) == ("auth", "escalate")
    assert "ANTHROPIC_API_KEY" in plan.advice
    plan = _plan(ref, probe, _finished("codex", error="Missing environment variable: `OPENAI_API_KEY`."))
    assert "OPENAI_API_KEY" in plan.advice and plan.action == "escalate"
    assert "[agents.codex] pass_env" in plan.advice  # it may be set and withheld by the allowlist
    plan = _plan(ref, probe, _finished("gemini", code=41))
    assert "GEMINI_API_KEY" in plan.advice


def test_missing_cli_escalates_with_the_npm_package(recovery, probe):
    plan = _plan(
        recovery(),
        probe,
        _finished(
            "codex",
            code=None,
            spawn_error="executable 'codex' not found; install the CLI or set [agents.<name>] command in the config",
        ),
    )
    assert plan.cause == "not_installed" and "npm install -g @openai/codex" in plan.advice


def test_folder_refusal_relaunches_with_the_lifting_flag_once(recovery, probe):
    ref = recovery()
    launch = EventsRecorded(
        events=(
            Event(
                type="status",
                agent="codex",
                assignment_id="implement",
                payload=EventPayload(kind="launch", text="starting codex: codex exec --json -C /r prompt"),
            ),
        )
    )
    ref.tell(launch)
    refusal = "Not inside a trusted directory and --skip-git-repo-check was not specified."
    plan = _plan(ref, probe, _finished("codex", stderr=(refusal,)))
    assert (plan.action, plan.extra_args) == ("relaunch", ("--skip-git-repo-check",))
    # Refused again although the flag is there now: a person must act.
    plan = _plan(ref, probe, _finished("codex", stderr=(refusal,)), extra_args=("--skip-git-repo-check",))
    assert plan.action == "escalate" and "git init" in plan.advice


def test_outside_path_is_granted_created_and_resumed(recovery, probe, tmp_path):
    ref = recovery()
    outside = tmp_path / "other" / "notes.txt"
    denial = f"Claude requested permissions to write to {outside}, but you haven't granted it yet."
    plan = _plan(ref, probe, _finished("claude", code=0, ok=True, denials=(denial,)))
    assert plan.action == "relaunch" and plan.run_succeeded
    assert plan.extra_dirs == (str(tmp_path / "other"),) and (tmp_path / "other").is_dir()
    assert plan.resume_session_id == "sess-1" and "--add-dir" in plan.advice and plan.note
    # Granted and still refused: stop trying.
    plan = _plan(
        ref, probe, _finished("claude", code=0, ok=True, denials=(denial,)), extra_dirs=(str(tmp_path / "other"),)
    )
    assert plan.action == "none"


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/usr/lib/x.so", "{home}/secret.txt", "{tmp}/notes.txt", "{tmp}/ws/state.json"]
)
def test_outside_path_never_grants_system_home_or_parent_folders(recovery, probe, tmp_path, path):
    path = path.format(home=tmp_path / "home", tmp=tmp_path)
    text = f'Path not in workspace: Attempted path "{path}" resolves outside'
    plan = _plan(recovery(), probe, _finished("gemini", code=1, stderr=(text,)))
    assert plan.cause == "outside_path" and plan.action == "escalate", plan
    assert not plan.extra_dirs


def test_crash_is_retried_once(recovery, probe):
    ref = recovery()
    crash = _finished("claude", stderr=("TypeError: Cannot read properties of undefined",))
    assert _plan(ref, probe, crash).action == "retry_after"
    assert _plan(ref, probe, crash).action == "give_up"


def test_errors_recorded_by_the_worker_are_evidence(recovery, probe):
    ref = recovery()
    for text, kind, type_ in (
        ("starting claude: claude -p x", "launch", "status"),
        ("Failed to authenticate. API Error: 401 bad key", "api_error", "error"),
    ):
        ref.tell(
            EventsRecorded(
                events=(
                    Event(
                        type=type_,
                        agent="claude",
                        assignment_id="implement",
                        payload=EventPayload(kind=kind, text=text),
                    ),
                )
            )
        )
    plan = _plan(ref, probe, _finished("claude", error="claude run failed (exit code 1)"))
    assert plan.cause == "auth" and "401" in plan.evidence


def test_a_lost_node_relaunches_at_once_resuming_the_session_within_its_cap(recovery, probe):
    ref = recovery()
    lost = _finished(
        "claude",
        code=-9,
        # What the worker says when the run's node went; the CLI's own last words do not count.
        error="node lost: the cluster node vm-2 (10.0.0.2) running this CLI was lost (ActorDiedError: ...)",
        stderr=("API Error: Request rejected (429) · rate limited",),
        session_id="11111111-2222-3333-4444-555555555555",
    )
    first = _plan(ref, probe, lost)
    assert (first.cause, first.action, first.delay_s) == ("node_lost", "relaunch", 0.0)
    assert first.resume_session_id == "11111111-2222-3333-4444-555555555555"
    assert first.note and "lost" in first.note and "retry 1 of 2" in first.advice
    assert _plan(ref, probe, lost.model_copy(update={"outcome": lost.outcome.model_copy(update={"session_id": None})}))
    third = _plan(ref, probe, lost)
    assert third.action == "give_up" and "2 of 2 node_lost retries" in third.advice
