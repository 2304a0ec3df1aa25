"""``orchestrate mcp`` driven by the MCP SDK's own client over stdio: a real server process,
real launcher processes for the sessions, the demo agents as the CLIs, a real git repository."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.session

CONCERNS = {"ORCHESTRATE_DEMO_SCENARIO_CODEX": "concern", "ORCHESTRATE_DEMO_SCENARIO_CLAUDE": "concern"}
# gemini designs and implements, codex reviews (its concern becomes a question to the person)
ROLES = {"architect": "gemini", "implementer": "gemini", "reviewer": "codex"}
DEADLINE_S = 90.0


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[review]\ndebounce_s = 0.2\nphase_end_roles = ["architect"]\non_milestone = false\n'
        "[recovery]\nbackoff_base_s = 0.05\n[limits]\nenabled = false\n"
    )
    return path


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.email", "t@example.com"],
        ["git", "config", "user.name", "T"],
        ["git", "config", "commit.gpgSign", "false"],
    ):
        subprocess.run(cmd, cwd=repo, check=True, timeout=30)
    (repo / "README.md").write_text("# app\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True, timeout=30)
    subprocess.run(["git", "commit", "-q", "-m", "first"], cwd=repo, check=True, timeout=30)
    return repo


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True, timeout=30).stdout


def _server(workspace: Path, config: Path, env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "meta_orchestrator.actors.app.launcher",
            "mcp",
            "--workspace",
            str(workspace),
            "--config",
            str(config),
        ],
        env=env,
        cwd=str(PROJECT_ROOT),
    )


@contextlib.asynccontextmanager
async def _client(server: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """The SDK's own client over stdio, initialised."""
    async with stdio_client(server) as streams, ClientSession(*streams) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """The tool's structured result; an MCP error is raised as AssertionError with its text."""
    result = await session.call_tool(tool, arguments)
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error if hasattr(result, "is_error") else result.isError:
        raise ToolFailed(text)
    structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
    if structured is not None:
        return structured.get("result", structured) if set(structured) == {"result"} else structured
    return json.loads(text)


class ToolFailed(Exception):
    pass


async def _until(condition: Any, what: str, timeout: float = DEADLINE_S) -> Any:
    """Poll an async condition with a deadline (no fixed sleep hides a race)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def _gone(state_path: Path) -> bool:
    state = json.loads(state_path.read_text())
    pid = state.get("orchestrator_pid")
    return not pid or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_client_starts_follows_answers_applies_and_discards_a_demo_session(tmp_path, demo_env):
    repo, ws = _repo(tmp_path), tmp_path / "ws"

    async def scenario() -> None:
        async with _client(_server(ws, _config(tmp_path), {**demo_env, **CONCERNS})) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert names == {
                "start_session",
                "list_sessions",
                "session_status",
                "session_events",
                "answer_question",
                "control_session",
                "apply_session",
                "discard_session",
            }
            started = await _call(
                session, "start_session", task="Add a /health endpoint", target=str(repo), demo=True, roles=ROLES
            )
            sid = started["session_id"]
            assert started["dashboard_url"].startswith("http://127.0.0.1:") and started["token"]
            assert started["token"] in started["dashboard_url"]
            assert [s["session_id"] for s in await _call(session, "list_sessions")] == [sid]

            seen: list[tuple[str, int]] = []
            cursor: list[str | None] = [None]

            async def page() -> dict[str, Any]:
                got = await _call(session, "session_events", session_id=sid, cursor=cursor[0], limit=5)
                seen.extend((e["agent"], e["seq"]) for e in got["events"])
                cursor[0] = got["cursor"]
                return got

            async def question() -> Any:
                await page()
                status = await _call(session, "session_status", session_id=sid)
                return status["open_questions"]

            [asked] = await _until(question, "the reviewer's concern as a question")
            assert asked["kind"] == "clarification"
            answered = await _call(
                session, "answer_question", session_id=sid, question_id=asked["id"], answer="Validate with a regex."
            )
            assert answered["answered"] == "live"

            async def ended() -> bool:
                got = await page()
                return not got["live"] and not got["more"]

            await _until(ended, "the session's end, every event read")
            assert len(seen) == len(set(seen)) and len(seen) > 10  # paged by cursor: none twice
            status = await _call(session, "session_status", session_id=sid)
            assert status["status"] == "completed", status
            [done] = [q for q in json.loads((ws / sid / "state.json").read_text())["questions"]]
            assert (done["status"], done["answer"]) == ("answered", "Validate with a regex.")
            assert status["branch"] == f"orchestrate/{sid}" and "file" in status["diff_stat"]

            state = await session.read_resource(f"orchestrate://sessions/{sid}/state.json")
            assert json.loads(state.contents[0].text)["session_id"] == sid
            events = await session.read_resource(f"orchestrate://sessions/{sid}/events/gemini")
            assert len(events.contents[0].text.splitlines()) >= 1

            applied = await _call(session, "apply_session", session_id=sid, squash=True)
            assert "one squashed commit" in applied["output"]
            assert len(_git(repo, "log", "--format=%H", "main").split()) == 2  # first, and the squash
            assert _git(repo, "status", "--porcelain") == ""
            again = await _call(session, "apply_session", session_id=sid, squash=True)
            assert "nothing to do" in again["output"] or "already" in again["output"]

            discarded = await _call(session, "discard_session", session_id=sid)
            assert f"orchestrate/{sid}" in discarded["output"]
            assert f"orchestrate/{sid}" not in _git(repo, "branch", "--list")

        assert _gone(ws / sid / "state.json")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("tool", "arguments", "reason"),
    [
        ("session_status", {"session_id": "20990101-000000-abcdef"}, "no session 20990101-000000-abcdef"),
        ("session_status", {"session_id": "../../etc"}, "session id"),
        ("session_events", {"session_id": "a/b"}, "session id"),
        ("answer_question", {"session_id": "..", "question_id": "q1", "answer": "x"}, "session id"),
        ("apply_session", {"session_id": "/etc/passwd"}, "session id"),
        ("discard_session", {"session_id": ".mcp"}, "is not valid"),
        ("start_session", {"task": "  ", "demo": True}, "task is empty"),
        ("start_session", {"task": "x", "target": "relative/dir"}, "absolute path"),
        ("start_session", {"task": "x"}, "target is required"),
        ("start_session", {"task": "x", "target": "/"}, "/"),
        ("start_session", {"task": "x", "target": "/nonexistent/dir"}, "/nonexistent/dir"),
        ("start_session", {"task": "x", "demo": True, "roles": {"architect": "nobody"}}, "nobody"),
        ("control_session", {"session_id": "20990101-000000-abcdef", "action": "explode"}, "unknown action"),
    ],
)
def test_bad_input_is_an_mcp_error_with_the_reason(tmp_path, demo_env, tool, arguments, reason):
    ws = tmp_path / "ws"

    async def scenario() -> None:
        async with _client(_server(ws, _config(tmp_path), demo_env)) as session:
            with pytest.raises(ToolFailed) as failed:
                await _call(session, tool, **arguments)
            assert reason in str(failed.value)

    asyncio.run(scenario())
    assert not [p for p in ws.iterdir() if (p / "state.json").exists()]  # nothing was started


def test_a_resource_out_of_the_workspace_is_refused(tmp_path, demo_env):
    ws = tmp_path / "ws"
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "state.json").write_text('{"session_id": "secret"}')

    async def scenario() -> None:
        async with _client(_server(ws, _config(tmp_path), demo_env)) as session:
            for uri in (
                "orchestrate://sessions/../secret/state.json",  # no match: the id is one segment
                "orchestrate://sessions/../state.json",
                "orchestrate://sessions/..%2Fsecret/state.json",
                "orchestrate://sessions/secret/events/..%2Fstate.json",
            ):
                with pytest.raises(MCPError) as failed:
                    await session.read_resource(uri)
                said = str(failed.value)
                assert '"session_id"' not in said
                assert "Unknown resource" in said or "session id" in said or "no session" in said, said

    asyncio.run(scenario())


def test_a_session_outlives_its_client_and_is_stopped_by_another(tmp_path, demo_env):
    repo, ws, config = _repo(tmp_path), tmp_path / "ws", _config(tmp_path)
    env = {**demo_env, **CONCERNS}

    async def start() -> str:
        async with _client(_server(ws, config, env)) as session:
            started = await _call(
                session, "start_session", task="Add a /health endpoint", target=str(repo), demo=True, roles=ROLES
            )

            async def asking() -> Any:
                return (await _call(session, "session_status", session_id=started["session_id"]))["open_questions"]

            await _until(asking, "a question the session waits on")
            return str(started["session_id"])

    sid = asyncio.run(start())
    # The client and its server are gone; the session still runs, waiting on its question.
    state = json.loads((ws / sid / "state.json").read_text())
    assert state["status"] not in ("completed", "failed", "stopped") and not _gone(ws / sid / "state.json")

    async def stop() -> None:
        async with _client(_server(ws, config, env)) as session:
            with pytest.raises(ToolFailed, match="the session refused"):
                await _call(session, "control_session", session_id=sid, action="pause", agent="nobody")

            async def status_is(wanted: str) -> Any:
                return (await _call(session, "session_status", session_id=sid))["status"] == wanted

            await _call(session, "control_session", session_id=sid, action="pause")
            await _until(lambda: status_is("paused"), "the paused session")
            await _call(session, "control_session", session_id=sid, action="resume")

            async def not_paused() -> bool:
                return not await status_is("paused")

            await _until(not_paused, "the resumed session")
            stopped = await _call(session, "control_session", session_id=sid, action="stop")
            assert stopped["accepted"]

            async def ended() -> bool:
                return (await _call(session, "session_status", session_id=sid))["status"] == "stopped"

            await _until(ended, "the stopped session")

    asyncio.run(stop())

    asyncio.run(_until(_async(lambda: _gone(ws / sid / "state.json")), "the session's process to end"))


def test_answering_a_session_that_waits_with_nobody_there_resumes_it(tmp_path, demo_env):
    """A session from a terminal with no dashboard and nobody at its console saves itself,
    waiting (exit 3); the answer over MCP is recorded and, none being left open, the session
    goes on in its own process to its end."""
    repo, ws, config = _repo(tmp_path), tmp_path / "ws", _config(tmp_path)
    roles = tmp_path / "roles.toml"
    roles.write_text(
        config.read_text() + '[session]\nroles = { architect = "gemini", implementer = "gemini", reviewer = "codex" }\n'
    )
    env = {**demo_env, **CONCERNS}
    launcher = [sys.executable, "-m", "meta_orchestrator.actors.app.launcher"]
    waited = subprocess.run(
        [*launcher, "Add a /health endpoint", "--demo", "--no-dashboard", "--target", str(repo)]
        + ["--workspace", str(ws), "--config", str(roles)],
        env=env,
        cwd=PROJECT_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        start_new_session=True,
    )
    assert waited.returncode == 3, waited.stderr
    [folder] = [p for p in ws.iterdir() if (p / "state.json").is_file()]
    sid = folder.name

    async def scenario() -> None:
        async with _client(_server(ws, config, env)) as session:
            status = await _call(session, "session_status", session_id=sid)
            assert status["status"] == "waiting" and not status["live"]
            [asked] = status["open_questions"]
            with pytest.raises(ToolFailed, match="session is not running|not running"):
                await _call(session, "control_session", session_id=sid, action="pause")
            with pytest.raises(ToolFailed, match="has no question"):
                await _call(session, "answer_question", session_id=sid, question_id="q-nope", answer="x")
            answered = await _call(
                session, "answer_question", session_id=sid, question_id=asked["id"], answer="Validate with a regex."
            )
            assert answered["answered"] == "recorded" and answered["resumed"]["pid"]

            async def completed() -> bool:
                return (await _call(session, "session_status", session_id=sid))["status"] == "completed"

            await _until(completed, "the resumed session's end")
            state = json.loads((folder / "state.json").read_text())
            [done] = [q for q in state["questions"] if q["id"] == asked["id"]]
            assert (done["status"], done["answered_by"]) == ("answered", "command")

    asyncio.run(scenario())
    asyncio.run(_until(_async(lambda: _gone(folder / "state.json")), "the resumed session's process to end"))


def _async(condition: Any) -> Any:
    async def check() -> Any:
        return condition()

    return check
