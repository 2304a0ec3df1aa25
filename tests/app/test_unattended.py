"""No question waits on nobody; a session survives losing an agent.

Real launcher processes with stdin closed or a pipe, the demo agents as the CLIs; the
state on disk and the exit codes are what is checked.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.console.console import ConsoleView
from meta_orchestrator.actors.session.coordinator import Coordinator
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.history.resume import AnswerError, record_answer
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.config.settings import load_settings
from meta_orchestrator.messages.session import (
    GetSessionState,
    Question,
    SessionSnapshot,
    SessionStateChanged,
    StartSession,
)
from tests.conftest import PROJECT_ROOT, kill_tree, wait_for

FAST = {
    "review.debounce_s": 0.2,
    "recovery.backoff_base_s": 0.05,
    "recovery.backoff_jitter": 0.5,
    "limits.enabled": False,
}
CONCERNS = {"ORCHESTRATE_DEMO_SCENARIO_CODEX": "concern", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "concern"}
# gemini designs and implements: its CLI echoes the prompt, so a note can be seen in its log.
GEMINI_BUILDS = '[session]\nroles = { architect = "gemini", implementer = "gemini", reviewer = "codex" }\n'


def _orchestrate(args: list[str], env: dict[str, str], stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "meta_orchestrator.actors.app.launcher", *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    return proc.returncode, out, err


def _session(workspace: Path) -> tuple[Path, dict[str, Any]]:
    folder = next(p for p in workspace.iterdir() if p.is_dir())
    return folder, json.loads((folder / "state.json").read_text())


def _open_questions(workspace: Path) -> list[dict[str, Any]]:
    """The open questions of the only session in ``workspace`` (none before its state exists)."""
    try:
        state = _session(workspace)[1]
    except (StopIteration, FileNotFoundError, ValueError):
        return []
    return [q for q in state.get("questions", []) if q["status"] == "open"]


def _config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[review]\ndebounce_s = 0.2\nphase_end_roles = ["architect"]\non_milestone = false\n{text}')
    return path


# -- headless: stdin closed ------------------------------------------------------------------------


def test_headless_two_concerns_exit_3_then_answer_and_resume_complete(tmp_path, demo_env):
    env = {**demo_env, **CONCERNS}
    ws = tmp_path / "ws"
    # By gemini's stream: the last check reads its echo of the prompt, which over ACP nothing prints.
    config = _config(tmp_path, GEMINI_BUILDS + '[agents.gemini]\nprotocol = "stream"\n')
    code, _, err = _finish(
        _orchestrate(
            ["Add a /health endpoint", "--demo", "--no-dashboard", "--workspace", str(ws), "--config", str(config)], env
        )
    )
    assert code == 3, err
    folder, state = _session(ws)
    sid = state["session_id"]
    assert state["status"] == "waiting" and state["exit_code"] == 3
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert question["kind"] == "clarification"
    # The way back is printed: the exact commands.
    assert f"orchestrate answer {sid} {question['id']}" in err and f"orchestrate resume {sid}" in err
    assert next(a for a in state["assignments"] if a["id"] == "implement")["status"] == "pending"

    shown = subprocess.run(
        [sys.executable, "-m", "meta_orchestrator.actors.app.launcher", "show", sid, "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert question["id"] in shown.stdout and "open questions" in shown.stdout

    answer = ["answer", sid, question["id"], "Validate", "input", "with", "a", "regex.", "--workspace", str(ws)]
    code, out, err = _finish(_orchestrate(answer, env))
    assert code == 0 and "recorded" in out and f"orchestrate resume {sid}" in out
    code, _, err = _finish(_orchestrate(answer, env))
    assert code == 2 and "already answered" in err

    code, _, err = _finish(_orchestrate(["resume", sid, "--no-dashboard", "--workspace", str(ws)], env))
    assert code == 0, err
    _, state = _session(ws)
    assert state["status"] == "completed"
    [answered] = [q for q in state["questions"] if q["id"] == question["id"]]
    assert (answered["status"], answered["answered_by"]) == ("answered", "command")
    assert any("Validate input with a regex." in n for n in state["notes"])
    prompts = [
        r.get("raw") or "" for r in read_jsonl(folder / "gemini.jsonl").records if r.get("assignment_id") == "implement"
    ]
    assert any("Validate input with a regex." in p for p in prompts)  # echoed by the CLI


def test_end_of_file_on_stdin_mid_question_ends_the_session_by_itself(tmp_path, demo_env):
    ws = tmp_path / "ws"
    proc = _orchestrate(
        [
            "Add a /health endpoint",
            "--demo",
            "--no-dashboard",
            "--workspace",
            str(ws),
            "--config",
            str(_config(tmp_path)),
        ],
        {**demo_env, **CONCERNS},
        stdin=subprocess.PIPE,
    )
    try:
        # The pipe is open (not at end of file): the question waits for someone.
        wait_for(lambda: ws.is_dir() and _open_questions(ws), timeout=60, message="an open question")
        assert proc.poll() is None and _session(ws)[1]["status"] == "paused"
        proc.stdin.close()  # end of file: nobody can answer any more
        proc.stdin = None  # communicate() must not flush it again
    except BaseException:
        kill_tree(proc)
        raise
    code, _, err = _finish(proc)
    assert code == 3, err
    assert _session(ws)[1]["status"] == "waiting"
    assert "console went away" in err


def test_an_answer_typed_into_the_pipe_is_taken(tmp_path, demo_env):
    ws = tmp_path / "ws"
    proc = _orchestrate(
        [
            "Add a /health endpoint",
            "--demo",
            "--no-dashboard",
            "--workspace",
            str(ws),
            "--config",
            str(_config(tmp_path)),
        ],
        {**demo_env, **CONCERNS},
        stdin=subprocess.PIPE,
    )
    try:
        wait_for(lambda: ws.is_dir() and _open_questions(ws), timeout=60, message="an open question")
        proc.stdin.write("Keep it small.\n")
        proc.stdin.flush()
        wait_for(
            lambda: not _open_questions(ws) and _session(ws)[1]["status"] in ("running", "reviewing", "completed"),
            timeout=60,
        )
        proc.stdin.close()  # no question is open now: end of file changes nothing
        proc.stdin = None
    except BaseException:
        kill_tree(proc)
        raise
    code, _, err = _finish(proc)
    assert code == 0, err
    state = _session(ws)[1]
    [question] = state["questions"]
    assert (question["status"], question["answer"], question["answered_by"]) == (
        "answered",
        "Keep it small.",
        "console",
    )


# -- each kind, each unattended mode (in-process sessions, no console, no dashboard) ----------------


def _run(tmp_path: Path, env: dict[str, str], **overrides: Any) -> tuple[int, Path, dict[str, Any]]:
    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), **FAST, **overrides})
    code = run(
        settings,
        LaunchRequest(task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=env),
    )
    folder, state = _session(tmp_path / "ws")
    return code, folder, state


@pytest.mark.session
def test_defaults_a_clarification_continues_with_an_unanswered_note(tmp_path, demo_env):
    code, _, state = _run(tmp_path, {**demo_env, **CONCERNS}, **{"questions.unattended": "defaults"})
    assert code == 0
    question = next(q for q in state["questions"] if q["kind"] == "clarification")
    assert (question["status"], question["answered_by"], question["answer"]) == ("expired", "unattended", "continue")
    assert any("unanswered" in n for n in state["notes"])
    assert "default answer" in state["decisions"][0]["applied"]


@pytest.mark.session
def test_stop_an_escalation_waits_then_continue_resumes_it(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "blocker"}
    code, folder, state = _run(tmp_path, env)
    assert code == 3 and state["status"] == "waiting"
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert question["kind"] == "escalation"
    with pytest.raises(AnswerError, match="no question"):
        record_answer(folder, "q-nope", "continue")
    record_answer(folder, question["id"], "continue")
    assert (folder / "launcher.lock").stat().st_mode & 0o777 == 0o600  # private, whatever the umask
    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    answered = [question["id"]]
    # claude blocks in every review it gives: a later review it takes part in (a milestone of
    # the reviewer's own work, say) escalates again, and is answered the same way.
    for _ in range(3):
        options = LaunchRequest(task="", target=None, dashboard=False, console=False, env=env, resume=folder.name)
        code = run(settings, options)
        state = json.loads((folder / "state.json").read_text())
        first = next(q for q in state["questions"] if q["id"] == answered[0])
        assert (first["status"], first["answer"]) == ("answered", "continue")  # applied on resume
        if code != 3:
            break
        [again] = [q for q in state["questions"] if q["status"] == "open"]
        assert again["kind"] == "escalation" and again["id"] not in answered
        record_answer(folder, again["id"], "continue")
        answered.append(again["id"])
    assert code == 0 and state["status"] == "completed"


@pytest.mark.session
def test_high_risk_call_confirmation_with_nobody_there(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "risky_call"}
    code, folder, state = _run(tmp_path / "stop", env)
    assert code == 3
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert (question["kind"], question["asked_by"]) == ("confirmation", "sandbox")
    with pytest.raises(AnswerError, match="yes or no"):
        record_answer(folder, question["id"], "perhaps")
    # defaults: denied, and the agent goes on without it
    code, folder, state = _run(tmp_path / "defaults", env, **{"questions.unattended": "defaults"})
    assert code == 0
    question = next(q for q in state["questions"] if q["kind"] == "confirmation")
    assert (question["approve"], question["answered_by"]) == (False, "unattended")
    denied = [d for d in state["decisions"] if d.get("kind") == "tool_call_denied"]
    assert denied and denied[0]["rule"] == "git_push" and denied[0]["decided_by"] == "unavailable"


@pytest.mark.session
def test_suspicious_call_pause_with_nobody_there(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "suspicious_call"}
    code, folder, state = _run(tmp_path / "stop", env)
    assert code == 3
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert question["asked_by"] == "sandbox" and "Let it go on?" in question["text"]
    # defaults: "no" stops the agent; its assignment fails
    code, _, state = _run(tmp_path / "defaults", env, **{"questions.unattended": "defaults"})
    assert code == 1
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert implement["status"] == "failed" and "security finding" in implement["error"]


@pytest.mark.session
def test_folder_grant_confirmation_waits_then_yes_on_resume_grants_it(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "permission_error"}
    code, folder, state = _run(tmp_path, env, **{"sandbox.enabled": False})
    assert code == 3
    [question] = [q for q in state["questions"] if q["status"] == "open"]
    assert question["id"].startswith("grant-") and question["subject"]["type"] == "folder_grant"
    record_answer(folder, question["id"], "yes")
    settings = load_settings(None, {"workspace": str(tmp_path / "ws")})
    code = run(
        settings, LaunchRequest(task="", target=None, dashboard=False, console=False, env=env, resume=folder.name)
    )
    state = json.loads((folder / "state.json").read_text())
    assert code == 0, state["summary"]
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert (Path(implement["workdir"] + "-outside") / "NOTES.md").is_file()  # written on the granted run


@pytest.mark.session
def test_a_question_timeout_per_kind_takes_the_default(tmp_path, demo_env):
    settings = load_settings(
        None, {"workspace": str(tmp_path / "ws"), **FAST, "questions.timeout_s": {"clarification": 0.3}}
    )
    code = run(
        settings,
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=False,
            console=False,
            env={**demo_env, **CONCERNS},
            answer_channels=("program",),  # someone could answer, but nobody does
        ),
    )
    state = _session(tmp_path / "ws")[1]
    assert code == 0
    question = next(q for q in state["questions"] if q["kind"] == "clarification")
    assert (question["status"], question["answered_by"]) == ("expired", "timeout")


# -- role fallback ----------------------------------------------------------------------------------


@pytest.mark.session
def test_gemini_refusing_the_licence_hands_the_architect_role_over(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_GEMINI": "license_refused"}
    code, _, state = _run(tmp_path, env)
    assert code == 0, state["summary"]
    assert state["plan_source"] == "architect"  # a real plan, by the fallback agent
    assert {a["id"]: a["agent"] for a in state["assignments"]}["design"] == "claude"
    [hand_over] = [d for d in state["decisions"] if d.get("kind") == "role_fallback"]
    assert hand_over["agent"] == "gemini" and "GEMINI_API_KEY" in hand_over["reason"]
    assert "Vertex AI" in state["agents_out"]["gemini"]
    recovery = next(r for r in state["recoveries"] if r.get("agent") == "gemini" and r.get("cause") == "account")
    assert recovery["cause"] == "account" and "#3501" in recovery["evidence"]
    assert "gemini could not serve" in state["summary"]


@pytest.mark.session
def test_a_missing_cli_among_several_hands_its_roles_over(tmp_path, demo_env):
    target = tmp_path / "app"
    target.mkdir()
    demo = f"{sys.executable} -m meta_orchestrator.actors.agents.demo"
    settings = load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            **FAST,
            "agents": {
                "gemini": {"command": str(tmp_path / "no-such-gemini")},
                "codex": {"command": f"{demo} codex"},
                "claude": {"command": f"{demo} claude"},
            },
        },
    )
    code = run(
        settings,
        LaunchRequest(task="Add a /health endpoint", target=target, dashboard=False, console=False, env=demo_env),
    )
    state = _session(tmp_path / "ws")[1]
    assert code == 0, state["summary"]
    assert "not_installed" in state["agents_out"]["gemini"]
    assert {a["agent"] for a in state["assignments"]} <= {"claude", "codex"}


# -- the pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line,code",
    [
        (
            '[API Error: {"error":{"code":403,"message":"You do not have a valid license of this product. (#3501)",'
            '"status":"PERMISSION_DENIED"}}]',
            147,
        ),
        ("This client is no longer supported for Gemini Code Assist for individuals.", 41),
        ("Account validation required: Verify your account to continue.", 1),
    ],
)
def test_gemini_account_refusals_are_their_own_class(line, code):
    found = classify_run(Evidence(agent="gemini", lines=(line,), returncode=code))
    assert found is not None and found.cause == "account"


def test_help_names_every_subcommand():
    done = subprocess.run(
        [sys.executable, "-m", "meta_orchestrator.actors.app.launcher", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
    )
    for name in ("sessions", "show", "answer", "resume", "--unattended"):
        assert name in done.stdout
    assert "3 waiting" in done.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_new_question_rings_the_bell_once():
    out = _Terminal()
    view = ConsoleView.start(stream=out)
    question = Question(id="q1", kind="confirmation", text="may I?", asked_by="test")
    snapshot = SessionSnapshot(
        session_id="s", task="t", target="/t", workspace="/w", created_at="x", updated_at="x", questions=(question,)
    )
    view.ask(SessionStateChanged(snapshot=snapshot), timeout=5)
    view.ask(SessionStateChanged(snapshot=snapshot), timeout=5)
    assert out.getvalue().count("\a") == 1 and "q1" in out.getvalue()


@pytest.mark.session
def test_closing_the_dashboard_while_a_question_is_open_ends_the_wait(tmp_path, demo_env):
    """The dashboard is an answer channel while it runs; closed from the page, it is gone."""
    import threading
    import urllib.request

    closed: list[int] = []

    def close_when_asked(running: Any) -> None:
        def close() -> None:
            wait_for(
                lambda: any(
                    q.status == "open" for q in running.coordinator.ask(GetSessionState(), timeout=5).questions
                ),
                timeout=60,
                message="an open question",
            )
            assert running.coordinator.ask(GetSessionState(), timeout=5).status == "paused"  # it waits for someone
            req = urllib.request.Request(running.dashboard_url.split("?")[0] + "api/close", data=b"{}", method="POST")
            req.add_header("X-Orchestrate-Token", running.token)
            req.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(req, timeout=10) as response:
                closed.append(response.status)

        threading.Thread(target=close, name="test-user", daemon=True).start()

    settings = load_settings(None, {"workspace": str(tmp_path / "ws"), **FAST, "web.port": 0})
    code = run(
        settings,
        LaunchRequest(
            task="Add a /health endpoint",
            target=None,
            demo=True,
            dashboard=True,
            console=False,
            env={**demo_env, **CONCERNS},
            on_started=close_when_asked,
            print_url=lambda url: None,
        ),
    )
    assert closed == [202]
    assert code == 3 and _session(tmp_path / "ws")[1]["status"] == "waiting"


def test_a_worker_crashing_past_its_restarts_hands_planning_over(tmp_path, probe):
    from meta_orchestrator.messages.supervision import SupervisionFailed
    from meta_orchestrator.messages.worker import StartAssignment
    from tests.conftest import ProbeHandle

    settings = load_settings(None, {"workspace": str(tmp_path)})
    workers = {name: ProbeHandle() for name in ("gemini", "codex", "claude")}
    coordinator = Coordinator.start(
        settings=settings,
        session_id="s1",
        session_dir=tmp_path,
        task="Add a /health endpoint",
        target=tmp_path,
        workers={name: handle.ref for name, handle in workers.items()},
        listeners=(probe.ref,),
        answer_channels=(),
    )
    coordinator.tell(StartSession(reply_to=probe.ref))
    first = workers["gemini"].expect(StartAssignment)
    assert first.assignment_id == "@plan"
    coordinator.tell(SupervisionFailed(name="worker:gemini", error="boom", restarts_in_window=4))
    second = workers["claude"].expect(StartAssignment)  # role_fallback: architect -> claude
    assert second.prompt == first.prompt and second.mode == "read_only"
    state = coordinator.ask(GetSessionState(), timeout=5)
    assert "crashed past its restarts" in state.agents_out["gemini"]
    assert state.decisions[-1].kind == "role_fallback"


# -- the real pinned gemini against the scripted model server ----------------------------------------

try:
    from tests.agents.test_real_clis import Rig, cli_bin, server  # noqa: F401 - fixtures
except Exception:  # noqa: BLE001 - the real-CLI tier is optional
    Rig = None  # type: ignore[assignment,misc]


@pytest.mark.realcli
def test_real_gemini_prints_the_licence_refusal_and_it_is_the_account_class(cli_bin, server, tmp_path):
    from meta_orchestrator.actors.recovery.error_patterns import builtin_patterns

    rig = Rig("gemini", cli_bin, server, tmp_path)
    res = rig.run_adapter("Do the thing. SCRIPT:error 403")
    assert res.run.returncode == 147, res.describe()  # 403 mod 256 (reference §3.6)
    result = res.run.objects[-1]
    assert result["type"] == "result" and result["status"] == "error"
    assert "(#3501)" in result["error"]["message"]
    lines = tuple(d.payload.text or "" for d in res.drafts if d.type == "error")
    found = classify_run(Evidence(agent="gemini", lines=lines, returncode=147), builtin_patterns())
    assert found is not None and found.cause == "account", (lines, res.describe())


@pytest.mark.session
def test_defaults_a_folder_grant_is_not_given(tmp_path, demo_env):
    env = {**demo_env, "ORCHESTRATE_DEMO_SCENARIO_CLAUDE_WORK": "permission_error"}
    code, _, state = _run(tmp_path, env, **{"sandbox.enabled": False, "questions.unattended": "defaults"})
    question = next(q for q in state["questions"] if q["id"].startswith("grant-"))
    assert (question["approve"], question["answered_by"]) == (False, "unattended")
    recovery = next(r for r in state["recoveries"] if r.get("cause") == "outside_path")
    assert recovery["action"] == "escalate" and "was not granted" in recovery["advice"]
    implement = next(a for a in state["assignments"] if a["id"] == "implement")
    assert not (Path(implement["workdir"] + "-outside") / "NOTES.md").exists()
    assert code == 0  # the run itself succeeded without the refused write; the advice is recorded


def test_answer_refuses_a_running_session(tmp_path, demo_env):
    folder = tmp_path / "ws" / "s1"
    folder.mkdir(parents=True)
    question = {"id": "q1", "kind": "clarification", "text": "which?", "asked_by": "test", "status": "open"}
    # This test process stands in for a live orchestrator.
    state = {
        "session_id": "s1",
        "status": "paused",
        "orchestrator_pid": __import__("os").getpid(),
        "questions": [question],
    }
    (folder / "state.json").write_text(json.dumps(state))
    code, _, err = _finish(
        _orchestrate(["answer", "s1", "q1", "sqlite", "--workspace", str(tmp_path / "ws")], demo_env)
    )
    assert code == 2 and "is running" in err
    assert not (folder / "answers.json").exists()
    code, _, err = _finish(_orchestrate(["answer", "nope", "q1", "x", "--workspace", str(tmp_path / "ws")], demo_env))
    assert code == 2 and "no session nope" in err
