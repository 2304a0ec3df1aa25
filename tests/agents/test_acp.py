"""A CLI driven over ACP: the bridge (our ACP client) on the tests' own ACP agent, its parser,
a CLI made an agent by configuration alone, and such an agent on a whole demo session's team."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from meta_orchestrator.actors.adapters import registry
from meta_orchestrator.actors.adapters.acp import AcpDriven, AcpParser, ConfiguredAcpAdapter, bridge_launch
from meta_orchestrator.actors.agents.acp_bridge import PolicyCall, policy_call
from meta_orchestrator.actors.agents.cli_launch import confinement, launch_spec
from meta_orchestrator.actors.recovery.error_patterns import Evidence, classify_run
from meta_orchestrator.actors.adapters.base import POLICY_FILE_ENV, POLICY_SHA256_ENV, Draft, LaunchSpec
from meta_orchestrator.actors.app.prepare import PreflightError, check_agents, demo_settings
from meta_orchestrator.actors.app.system import LaunchRequest, run
from meta_orchestrator.actors.files.session_files import read_jsonl
from meta_orchestrator.actors.history.event_pages import read_events_page, read_reviews
from meta_orchestrator.actors.history.replay import Timeline, snapshot_at
from meta_orchestrator.actors.sandbox.bwrap import DEFAULT_CONNECT_PORTS, OsSandbox
from meta_orchestrator.config.settings import AgentSettings, load_settings
from meta_orchestrator.messages.worker import StartAssignment
from tests.conftest import branch_files, session_store

FIXTURE = Path(__file__).with_name("acp_agent.py")
PYTHON = sys.executable


def fixture_command(tag: str = "") -> tuple[str, ...]:
    """The fixture agent's command; ``tag`` marks its process so a test can look for leftovers."""
    return (PYTHON, str(FIXTURE), *((f"--tag={tag}",) if tag else ()))


def bridge(
    prompt: str, cwd: Path, *options: str, tag: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """The bridge as the worker runs it (``python -I -m ...``), on the fixture agent."""
    argv = [PYTHON, "-I", "-m", "meta_orchestrator.actors.agents.acp_bridge", "--agent", "fixture", *options]
    return subprocess.run(
        [*argv, "--", *fixture_command(tag)],
        input=prompt.encode(),
        cwd=cwd,
        capture_output=True,
        env={**(env or {}), "ORCHESTRATE_DEMO_PACE": "0", "PATH": "/usr/bin:/bin"},
        timeout=timeout,
        check=False,
        start_new_session=True,
    )


def parse(stdout: bytes, returncode: int) -> tuple[AcpParser, list[Draft]]:
    parser = ConfiguredAcpAdapter("fixture", "x").new_parser()
    drafts = [d for line in stdout.splitlines() for d in parser.feed_line(line)]
    return parser, drafts + parser.finish(returncode, ())


def lines(stdout: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def no_process_tagged(tag: str) -> bool:
    return not [p for p in psutil.process_iter(["cmdline"]) if f"--tag={tag}" in (p.info["cmdline"] or [])]


def test_a_prompt_over_acp_gives_the_same_drafts_as_a_stream(tmp_path):
    prompt = "Do the thing.\nACP:plan\nACP:write notes/a.txt\nACP:bash echo hi > b.txt\n"
    done = bridge(prompt, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "notes" / "a.txt").is_file() and (tmp_path / "b.txt").read_text() == "hi\n"
    said = lines(done.stdout)
    # The prompt is never on the command line; it reached the agent over ACP.
    assert said[0]["result"]["agentInfo"]["name"] == "acp-fixture"
    [permission] = [s for s in said if s.get("bridge") == "permission"]
    assert permission["tool"] == "Bash" and permission["tool_input"] == {"command": "echo hi > b.txt"}
    assert (permission["decision"], permission["optionId"]) == ("allow", "yes-once")
    parser, drafts = parse(done.stdout, done.returncode)
    kinds = [(d.type, d.payload.kind) for d in drafts]
    assert ("progress", "plan") in kinds
    assert ("milestone", "marker") in kinds and ("progress", "marker") in kinds  # markers cut across chunks
    calls = [d.payload for d in drafts if d.payload.kind == "tool_call"]
    assert [c.tool for c in calls] == ["Write", "Bash"] and calls[0].file == str(tmp_path / "notes" / "a.txt")
    assert [d.payload.file for d in drafts if d.payload.kind == "file_written"] == [str(tmp_path / "notes" / "a.txt")]
    outcome = parser.outcome(writing=True)
    assert outcome.success and outcome.session_id and outcome.total_tokens and outcome.total_tokens > 0
    assert outcome.files_written == (str(tmp_path / "notes" / "a.txt"),)
    assert "All done." in outcome.final_text and "ORCHESTRATE_EVENT" not in drafts[-1].payload.text


def test_a_read_only_run_refuses_a_write_the_agent_asks_about(tmp_path):
    done = bridge("ACP:ask-write out.txt\n", tmp_path, "--read-only")
    assert done.returncode == 0
    assert not (tmp_path / "out.txt").exists()
    parser, drafts = parse(done.stdout, done.returncode)
    [denial] = [d for d in drafts if d.type == "blocker"]
    assert denial.payload.kind == "denial" and "read-only" in (denial.payload.text or "")
    assert parser.outcome().permission_denials and parser.outcome().success


def test_a_request_the_client_does_not_offer_gets_an_error_answer_and_the_run_goes_on(tmp_path):
    done = bridge("ACP:unknown-request\n", tmp_path)
    assert done.returncode == 0
    said = lines(done.stdout)
    assert any(s.get("bridge") == "notice" and "fs/mystery" in s["text"] for s in said)
    parser, _ = parse(done.stdout, done.returncode)
    assert "-32601" in parser.outcome().final_text


@pytest.mark.parametrize(
    ("keyword", "kind", "words"),
    [
        ("ACP:garbage", "garbage", "not JSON-RPC"),
        ("ACP:die", "agent_exited", "exit code 3"),
    ],
)
def test_garbage_or_an_agent_dying_mid_prompt_ends_the_run_clearly(tmp_path, keyword, kind, words):
    tag = uuid.uuid4().hex
    done = bridge(f"Start.\n{keyword}\nACP:bash echo late > late.txt\n", tmp_path, tag=tag, timeout=30)
    assert done.returncode == 1
    last = lines(done.stdout)[-1]  # the agent's stray line is not passed on: the bridge says what it was
    assert (last["bridge"], last["kind"]) == ("error", kind) and words in last["text"]
    assert not (tmp_path / "late.txt").exists()
    assert no_process_tagged(tag)  # the agent is not left running
    parser, drafts = parse(done.stdout, done.returncode)
    outcome = parser.outcome()
    assert not outcome.success and words in (outcome.error or "")
    [ended] = [d for d in drafts if d.payload.kind == "acp"]
    assert ended.payload.terminal and ended.payload.details["cause"] == "crash"


def test_an_agents_error_answer_is_classified_through_its_error_rows(tmp_path):
    done = bridge("ACP:auth-error\n", tmp_path)
    assert done.returncode == 1
    parser, drafts = parse(done.stdout, done.returncode)
    [ended] = [d for d in drafts if d.payload.kind == "acp"]
    assert ended.payload.terminal and ended.payload.details["cause"] == "auth"
    # Recovery reads the same words the same way, for gemini over ACP as for a configured CLI.
    found = classify_run(Evidence(agent="gemini", lines=(ended.payload.text,), returncode=1))
    assert found is not None and found.cause == "auth"
    assert "Authentication required" in (parser.outcome().error or "")


def test_a_stop_reason_other_than_end_turn_is_a_failed_run(tmp_path):
    done = bridge("ACP:stop max_turn_requests\n", tmp_path)
    parser, drafts = parse(done.stdout, done.returncode)
    assert done.returncode == 0 and not parser.outcome().success
    [ended] = [d for d in drafts if d.payload.kind == "result"]
    assert ended.type == "error" and ended.payload.details["cause"] == "turn_cap"


def test_resuming_loads_the_session_without_replaying_it_as_this_runs_events(tmp_path):
    first = bridge("Hello.\n", tmp_path)
    session_id = next(s["sessionId"] for s in lines(first.stdout) if s.get("bridge") == "session")
    again = bridge("Go on.\n", tmp_path, "--resume", session_id)
    assert again.returncode == 0
    [session] = [s for s in lines(again.stdout) if s.get("bridge") == "session"]
    assert session == {"bridge": "session", "sessionId": session_id, "loaded": True, "replayed": 1}
    assert b"an earlier turn" not in again.stdout
    assert parse(again.stdout, 0)[0].outcome().session_id == session_id


def test_qwens_large_commands_update_reaches_the_events_with_the_command_names_alone(tmp_path):
    """qwen's available_commands_update carries every skill's body (about 560 KB a run): the
    bridge prints the commands' names alone, so each run's events do not record it."""
    done = bridge("ACP:commands 600\nACP:write a.txt\n", tmp_path)
    assert done.returncode == 0, done.stderr
    [line] = [li for li in done.stdout.splitlines() if b"available_commands_update" in li]
    update = json.loads(line)["params"]["update"]
    names = ["init", "summary", "compress", "memory", "tools", "review"]
    assert update == {"sessionUpdate": "available_commands_update", "availableCommands": [{"name": n} for n in names]}
    assert len(line) < 1024 and len(done.stdout) < 32 * 1024  # of the 600 KB the agent sent
    parser, drafts = parse(done.stdout, done.returncode)
    assert ("status", "acp_update") in [(d.type, d.payload.kind) for d in drafts]
    assert parser.outcome(writing=True).success and (tmp_path / "a.txt").is_file()  # the run went on


def test_a_model_the_agent_cannot_choose_is_a_notice_and_the_run_goes_on(tmp_path):
    done = bridge("Hello.\n", tmp_path, "--model", "big-model")
    assert done.returncode == 0
    [notice] = [s for s in lines(done.stdout) if s.get("bridge") == "notice"]
    assert notice["kind"] == "model_not_set" and "session/set_model" in notice["text"]
    assert parse(done.stdout, 0)[0].outcome().success


def test_bad_setup_is_a_clear_line_and_no_agent_is_started(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text("{}")
    done = bridge("Hello.\n", tmp_path, "--policy", str(policy), "--policy-sha256", "0" * 64)
    assert done.returncode == 2
    [said] = lines(done.stdout)
    assert said["bridge"] == "error" and "was changed" in said["text"]


# -- adapters ---------------------------------------------------------------------------------------


def test_the_launch_is_the_bridge_with_the_prompt_on_stdin_and_the_policy_out_of_the_agents_env(tmp_path):
    spec = LaunchSpec(
        executable=("myagent", "acp"),
        prompt="secret prompt",
        workdir=tmp_path,
        mode="read_only",
        resume_session_id="s-1",
        model="m-1",
        extra_args=("--fast",),
        env={POLICY_FILE_ENV: "/p.json", POLICY_SHA256_ENV: "ab", "HOME": "/h"},
    )
    launch = ConfiguredAcpAdapter("mine", "myagent acp").build_launch(spec)
    argv = list(launch.argv)
    assert argv[:4] == [sys.executable, "-I", "-m", "meta_orchestrator.actors.agents.acp_bridge"]
    assert argv[argv.index("--") :] == ["--", "myagent", "acp", "--fast"]
    assert {"--read-only", "--policy", "/p.json", "--policy-sha256", "ab", "--resume", "s-1", "--model", "m-1"} <= set(
        argv
    )
    assert "secret prompt" not in " ".join(argv) and launch.stdin == b"secret prompt"
    assert launch.env == {"HOME": "/h"} and launch.cwd == tmp_path
    assert bridge_launch("x", spec, ("a",)).argv[-2:] == ("--", "a")


def test_gemini_over_acp_keeps_what_its_adapter_knows(tmp_path):
    gemini = registry.get_adapter("gemini")
    driven = registry.driven("gemini", "acp")
    assert isinstance(driven, AcpDriven) and driven.state_places == gemini.state_places
    assert set(gemini.error_patterns) <= set(driven.error_patterns) and driven.hook_settings_flag is None
    launch = driven.build_launch(
        LaunchSpec(executable=("gemini",), prompt="p", workdir=tmp_path, extra_dirs=(tmp_path,))
    )
    cut = launch.argv.index("--")
    assert launch.argv[cut:] == ("--", "gemini", "--acp", "--skip-trust", "--include-directories", str(tmp_path))
    # ACP is its default; its stream is the second way.
    assert isinstance(registry.driven("gemini", None), AcpDriven) and registry.driven("gemini", "stream") is gemini
    with pytest.raises(ValueError, match="cannot be driven by 'acp'"):
        registry.driven("claude", "acp")


def test_a_resumed_gemini_run_goes_by_its_stream_and_qwen_stays_on_acp(tmp_path):
    """gemini 0.61's session/load finds none of its ACP sessions; its stream's ``--resume`` does."""
    env = {POLICY_FILE_ENV: "/p.json", POLICY_SHA256_ENV: "ab", "HOME": "/h"}
    gemini = registry.driven("gemini", None)
    assert gemini.run_protocol(None, resuming=False) == "acp" and gemini.run_protocol("acp", resuming=True) == "stream"
    spec = LaunchSpec(executable=("gemini",), prompt="p", workdir=tmp_path, resume_session_id="s-1", env=env)
    launch = gemini.build_launch(spec)
    assert "acp_bridge" not in " ".join(launch.argv) and "--acp" not in launch.argv
    assert launch.argv[launch.argv.index("--resume") + 1] == "s-1" and "--output-format" in launch.argv
    assert not {POLICY_FILE_ENV, POLICY_SHA256_ENV} & set(launch.env)  # no bridge to judge by
    assert type(gemini.parser_for("stream")) is type(registry.get_adapter("gemini").new_parser())
    assert isinstance(gemini.parser_for("acp"), AcpParser)
    qwen = registry.driven("qwen", None)
    assert qwen.run_protocol(None, resuming=True) == "acp"
    argv = qwen.build_launch(
        LaunchSpec(executable=("qwen",), prompt="p", workdir=tmp_path, resume_session_id="s-1")
    ).argv
    assert "acp_bridge" in " ".join(argv) and argv[argv.index("--resume") + 1] == "s-1"


@pytest.fixture
def forget_configured() -> Iterator[None]:
    before = set(registry.agent_names())
    yield
    for name in set(registry.agent_names()) - before:
        registry.unregister(name)


@pytest.mark.usefixtures("forget_configured")
def test_an_acp_cli_is_an_agent_by_configuration_alone(tmp_path):
    settings = load_settings(
        None,
        {
            "agents.helper": {
                "share_min": 0.1,
                "share_max": 0.5,
                "protocol": "acp",
                "command": "helper-cli --acp",
                "state_dirs": [".helper"],
                "state_copy": ["config.json"],
                "install_hint": "pipx install helper-cli",
            }
        },
    )
    check_agents(settings)
    adapter = registry.get_adapter("helper")
    assert isinstance(adapter, ConfiguredAcpAdapter) and adapter.protocols == ("acp",)
    assert adapter.install_hint() == "pipx install helper-cli" and adapter.default_executable == "helper-cli"
    [place] = adapter.cli_state({"HOME": str(tmp_path)}).places
    assert place.real == tmp_path / ".helper" and place.copied == ("config.json",)
    # The demo agents speak what their CLI speaks: a demo goes the way each CLI is configured.
    demo = demo_settings(load_settings(None, {"agents.gemini.protocol": "stream", "agents.qwen.protocol": "acp"}))
    assert (demo.agents["gemini"].protocol, demo.agents["qwen"].protocol) == ("stream", "acp")
    with pytest.raises(PreflightError, match='no adapter knows.*protocol = "acp"'):
        check_agents(load_settings(None, {"agents.stranger": {"share_min": 0.1, "share_max": 0.5}}))
    with pytest.raises(PreflightError, match="needs the command"):
        check_agents(load_settings(None, {"agents.nocmd": {"share_min": 0.1, "share_max": 0.5, "protocol": "acp"}}))
    with pytest.raises(PreflightError, match="claude cannot be driven by 'acp'"):
        check_agents(load_settings(None, {"agents.claude.protocol": "acp"}))
    with pytest.raises(Exception, match="relative to"):
        load_settings(None, {"agents.helper": {"share_min": 0, "share_max": 1, "state_dirs": ["/etc"]}})


# -- on a team --------------------------------------------------------------------------------------


def acp_team_settings(tmp_path: Path, **overrides: Any):
    return load_settings(
        None,
        {
            "workspace": str(tmp_path / "ws"),
            "agents.fixture": {
                "share_min": 0.3,
                "share_max": 0.7,
                "protocol": "acp",
                "command": " ".join(fixture_command()),
            },
            "agents.gemini.enabled": False,
            "session.roles.architect": "fixture",
            "session.roles.implementer": "fixture",
            **overrides,
        },
    )


@pytest.mark.session
@pytest.mark.usefixtures("forget_configured")
def test_a_configured_acp_agent_plays_its_roles_in_a_whole_demo_session(tmp_path, demo_env):
    code = run(
        acp_team_settings(tmp_path),
        LaunchRequest(
            task="Add a /health endpoint", target=None, demo=True, dashboard=False, console=False, env=demo_env
        ),
    )
    assert code == 0
    (session,) = [p for p in (tmp_path / "ws").iterdir() if p.is_dir()]
    state = json.loads((session / "state.json").read_text())
    assert state["status"] == "completed"
    by_id = {a["id"]: a for a in state["assignments"]}
    assert by_id["implement"]["agent"] == "fixture" and by_id["implement"]["status"] == "completed"
    assert any(f.endswith(".py") for f in by_id["implement"]["files_written"])
    written = branch_files(session_store(session), f"orchestrate/{state['session_id']}")
    assert "docs/DESIGN.md" in written and any(f.startswith("app/") and f != "app/main.py" for f in written)
    records = read_jsonl(session / "fixture.jsonl").records
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = {(r["type"], r["payload"].get("kind")) for r in records}
    assert {("status", "init"), ("progress", "tool_call"), ("milestone", "file_written"), ("review", "result")} <= kinds
    assert ("status", "permission") in kinds  # its shell call was decided by the broker before it ran
    launch = next(r for r in records if r["payload"].get("kind") == "launch")
    assert "acp_bridge" in launch["payload"]["text"] and "--policy" in launch["payload"]["text"]
    # Its work was reviewed by a peer, as a built-in CLI's is.
    reviews = read_reviews(session)
    assert reviews and any("fixture" in json.dumps(r["files"]) for r in reviews)
    # The dashboard's history API serves its events like any agent's.
    page = read_events_page(session, None, agent="fixture")
    assert page["events"] and {e["agent"] for e in page["events"]} == {"fixture"}
    # The dashboard's snapshot (as a browser opening the finished session gets it) shows it.
    with Timeline(session, registry.agent_names()) as timeline:
        start, end = timeline.bounds()  # type: ignore[misc]
        text, _page, _seq = snapshot_at(timeline, end, start)
    snapshot = json.loads(text)["data"]
    assert "fixture" in {w["agent"] for w in snapshot["workers"]}
    assert any(e["agent"] == "fixture" for e in snapshot["events"])


def test_qwen_and_opencode_over_acp_ask_before_every_edit_and_shell_command(tmp_path):
    """Their own defaults would run calls unasked over ACP (qwen's ``auto`` classifier, opencode's
    allow-all): driven over ACP they ask, so the broker decides; a review refuses edits itself."""

    def launched(name: str, mode: str, env: dict[str, str] | None = None):
        spec = LaunchSpec(executable=(name,), prompt="p", workdir=tmp_path, mode=mode, env=env or {})
        launch = registry.driven(name, "acp").build_launch(spec)
        return launch.argv[launch.argv.index("--") :], launch.env

    assert launched("qwen", "write")[0] == ("--", "qwen", "--acp", "--approval-mode", "default")
    assert launched("qwen", "read_only")[0] == ("--", "qwen", "--acp", "--approval-mode", "plan")
    argv, env = launched("copilot", "write", {"COPILOT_ALLOW_ALL": "true", "COPILOT_PROVIDER_BASE_URL": "http://h"})
    assert argv[:4] == ("--", "copilot", "--acp", "--no-auto-update") and "--allow-all-tools" not in argv
    assert "COPILOT_ALLOW_ALL" not in env and env["COPILOT_OFFLINE"] == "true"
    user = json.dumps({"provider": {"anthropic": {"options": {"baseURL": "http://127.0.0.1:1/v1"}}}})
    argv, env = launched("opencode", "write", {"OPENCODE_CONFIG_CONTENT": user, "HOME": "/h"})
    assert argv == ("--", "opencode", "acp") and env["HOME"] == "/h"
    granted = registry.driven("opencode", "acp").build_launch(
        LaunchSpec(executable=("opencode",), prompt="p", workdir=tmp_path, extra_dirs=(tmp_path,))
    )
    assert "--dir" not in granted.argv  # `opencode acp` has none: the folder is granted by its rules
    assert json.loads(granted.env["OPENCODE_PERMISSION"])["external_directory"][f"{tmp_path}/*"] == "allow"
    assert json.loads(env["OPENCODE_PERMISSION"]) == {"edit": "ask", "bash": "ask"}
    assert json.loads(env["OPENCODE_CONFIG_CONTENT"])["provider"] == json.loads(user)["provider"]
    assert json.loads(launched("opencode", "read_only")[1]["OPENCODE_PERMISSION"]) == {"edit": "deny", "bash": "deny"}
    # The stream path is untouched: qwen's stream run still approves edits itself.
    stream = registry.get_adapter("qwen").build_launch(LaunchSpec(executable=("qwen",), prompt="p", workdir=tmp_path))
    assert "auto-edit" in stream.argv and "--acp" not in stream.argv


def test_opencode_over_acp_in_the_os_sandbox_serves_itself_on_a_port_only_its_run_may_reach(tmp_path):
    """`opencode acp` is the client of an HTTP server it starts on 127.0.0.1 (default ``--port 0``,
    which Landlock refused): a confined run names a free port and may connect to that one."""
    sandbox = OsSandbox(bwrap="bwrap", allow_connect=())  # Landlock on

    def planned(name: str, confined: bool, protocol: str | None = None):
        adapter = registry.driven(name, protocol)
        spec = launch_spec(
            adapter,
            AgentSettings(protocol=protocol, share_min=0.1, share_max=0.5),
            StartAssignment(assignment_id="a", prompt="p"),
            session_id="s",
            workdir=tmp_path,
            extra_dirs=(),
            base_env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            confined=confined,
        )
        reach = confinement(adapter, sandbox, spec, private=())
        return spec, adapter.build_launch(spec).argv, reach.connect_ports if reach else None

    spec, argv, ports = planned("opencode", confined=True)
    assert spec.serve_port and argv[-3:] == ("acp", "--port", str(spec.serve_port))
    assert ports == (*DEFAULT_CONNECT_PORTS, spec.serve_port)
    # Outside the OS sandbox its own default stays; by its stream (no server) and for any other
    # CLI nothing is chosen and no port is added.
    spec, argv, _ = planned("opencode", confined=False)
    assert spec.serve_port is None and "--port" not in argv
    for name, protocol in (("opencode", "stream"), ("gemini", None), ("qwen", None), ("copilot", None)):
        spec, argv, ports = planned(name, confined=True, protocol=protocol)
        assert spec.serve_port is None and "--port" not in argv and ports == DEFAULT_CONNECT_PORTS, name


def test_a_write_named_only_by_copilots_file_name_is_judged_by_that_path():
    """copilot 1.0.102 names the file of an edit in ``rawInput.fileName``."""
    call = policy_call({"kind": "edit", "title": "Create file", "rawInput": {"fileName": "/w/out.txt", "diff": "+x"}})
    assert call == PolicyCall("Write", {"file_path": "/w/out.txt"})
    # Every CLI's shell command as the pinned versions send it: rawInput.command.
    for raw in ({"command": "touch ran.txt"}, {"command": "touch ran.txt", "commands": ["touch ran.txt"]}):
        assert policy_call({"kind": "execute", "title": "Run", "rawInput": raw}) == PolicyCall(
            "Bash", {"command": "touch ran.txt"}
        )


def test_qwens_usage_on_its_text_chunks_is_the_runs_token_count():
    """qwen 0.24.4 reports each model response's usage on a text chunk's ``_meta``, not on the result."""
    parser = registry.driven("qwen", "acp").new_parser()

    def chunk(text: str, total: int | None) -> bytes:
        update: dict[str, Any] = {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": text}}
        if total is not None:
            update["_meta"] = {"usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": total}}
        message = {"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "s", "update": update}}
        return json.dumps(message).encode()

    for line in (
        json.dumps({"bridge": "session", "sessionId": "s", "loaded": False}).encode(),
        chunk("Hello", None),
        chunk("", 145),
        chunk("", 290),
        json.dumps({"bridge": "result", "sessionId": "s", "stopReason": "end_turn", "usage": None}).encode(),
    ):
        parser.feed_line(line)
    parser.finish(0, ())
    assert parser.outcome().total_tokens == 435 and parser.outcome().final_text == "Hello"
