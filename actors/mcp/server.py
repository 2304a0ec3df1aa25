"""``orchestrate mcp``: an MCP server on stdio over one workspace, built on the official
``mcp`` SDK. Each tool is a thin wrapper of ``SessionTools`` (the subcommands' own paths);
a refusal becomes an MCP tool error carrying its reason. The launcher imports this module
only for ``orchestrate mcp``: the SDK is not loaded by any other command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from meta_orchestrator.actors.files.session_files import open_in_session
from meta_orchestrator.actors.mcp.session_tools import SessionTools, ToolRefused

INSTRUCTIONS = (
    "Drives the meta-orchestrator's sessions in one workspace: start_session starts a team of coding "
    "agents on a task (each session is its own process and outlives this server); follow it with "
    "session_events (pass back the cursor of the previous page), answer its open questions with "
    "answer_question, then apply_session (its branch into your current branch) or discard_session."
)
MAX_RESOURCE_BYTES = 20 * 1024 * 1024


def _checked(call: Any) -> Any:
    try:
        return call()
    except ToolRefused as exc:
        raise ToolError(str(exc)) from None


def build_server(tools: SessionTools) -> MCPServer:
    server: MCPServer = MCPServer(name="orchestrate", instructions=INSTRUCTIONS)

    @server.tool()
    def start_session(
        task: str,
        target: str | None = None,
        roles: dict[str, str] | None = None,
        demo: bool = False,
        include_uncommitted: bool = False,
        unattended: bool = False,
    ) -> dict[str, Any]:
        """Start a session: a team of agents on `task` in the repository or folder `target`
        (an absolute path; a demo session makes its own when none is given). `roles` maps a
        role (architect, implementer, reviewer) to an agent (claude, codex, gemini, ...).
        `unattended`: when no one can answer a question any more (its dashboard closed), it
        takes its default instead of the session saving itself to wait; while the dashboard
        is up, questions wait for answer_question.
        Returns the session id, its dashboard address and token."""
        options = {
            "task": task,
            "target": target,
            "roles": roles,
            "demo": demo,
            "include_uncommitted": include_uncommitted,
            "unattended": unattended,
        }
        return dict(_checked(lambda: tools.start(options)))

    @server.tool()
    def list_sessions() -> list[dict[str, Any]]:
        """Every session of the workspace, newest first: id, task, status, live, questions, branch."""
        return tools.list_sessions()

    @server.tool()
    def session_status(session_id: str) -> dict[str, Any]:
        """One session: status, plan, assignments, open questions, branch and diff stat, cost and tokens."""
        return dict(_checked(lambda: tools.status(session_id)))

    @server.tool()
    def session_events(session_id: str, cursor: str | None = None, limit: int = 100) -> dict[str, Any]:
        """The session's events after `cursor` (none: from the start), at most `limit`, and the
        cursor of the next page. `live` false and `more` false: nothing more will come."""
        return dict(_checked(lambda: tools.events(session_id, cursor, limit)))

    @server.tool()
    def answer_question(session_id: str, question_id: str, answer: str) -> dict[str, Any]:
        """Answer an open question (yes or no for a confirmation). A running session takes it
        at once; a session that waited for answers is resumed once none is left open."""
        return dict(_checked(lambda: tools.answer(session_id, question_id, answer)))

    @server.tool()
    def control_session(session_id: str, action: str, agent: str | None = None) -> dict[str, Any]:
        """pause, resume or stop a running session, or only its `agent` (claude, codex, ...)."""
        return dict(_checked(lambda: tools.control(session_id, action, agent)))

    @server.tool()
    def apply_session(session_id: str, squash: bool = False) -> dict[str, Any]:
        """Merge the ended session's branch into the current branch of its repository
        (`squash`: one commit); a folder without git gets its changed files written."""
        return dict(_checked(lambda: tools.apply(session_id, squash)))

    @server.tool()
    def discard_session(session_id: str) -> dict[str, Any]:
        """Remove the ended session's branch, store and checkouts; the repository stays as it was."""
        return dict(_checked(lambda: tools.discard(session_id)))

    _add_resources(server, tools)
    return server


def _add_resources(server: MCPServer, tools: SessionTools) -> None:
    """A session's state.json and its event files, read as they are on disk."""

    @server.resource("orchestrate://sessions/{session_id}/state.json", mime_type="application/json")
    def session_state(session_id: str) -> str:
        """The session's state.json as it is on disk."""
        return _read(tools, session_id, "state.json")

    @server.resource("orchestrate://sessions/{session_id}/events/{agent}", mime_type="application/x-ndjson")
    def session_event_file(session_id: str, agent: str) -> str:
        """One agent's event file (<agent>.jsonl), one JSON record per line."""
        from meta_orchestrator.actors.adapters.registry import agent_names

        if agent not in agent_names():
            raise ResourceError(f"unknown agent {agent[:40]!r}; expected one of {', '.join(agent_names())}")
        return _read(tools, session_id, f"{agent}.jsonl")


def _read(tools: SessionTools, session_id: str, name: str) -> str:
    """A file of the session, never through a symlink or out of its folder."""
    try:
        folder = tools.folder(session_id)
        with open_in_session(folder, folder / name) as f:
            data = f.read(MAX_RESOURCE_BYTES + 1)
    except ToolRefused as exc:
        raise ResourceError(str(exc)) from None
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ResourceError(f"{name} of session {session_id} cannot be read: {exc}") from None
    if len(data) > MAX_RESOURCE_BYTES:
        raise ResourceError(f"{name} is over {MAX_RESOURCE_BYTES // 2**20} MB; page it with session_events")
    return bytes(data).decode("utf-8", errors="replace")


def serve(workspace: Path, config: Path | None) -> int:
    """Serve the tools on stdin/stdout until the client closes them."""
    server = build_server(SessionTools(workspace, config))
    server.run("stdio")
    return 0
