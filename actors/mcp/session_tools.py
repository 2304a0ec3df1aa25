"""What each MCP tool does, apart from the protocol: the same paths the subcommands take.

Reading a session is ``orchestrate show`` / ``sessions`` / the dashboard's event pages;
``apply`` and ``discard`` are the subcommands' own functions (their words captured, since
stdout is the MCP channel here); answers and controls for a running session go to its
dashboard's API with its token, exactly as the page sends them; an answer for a session
that waits with nobody there is recorded as ``orchestrate answer`` does, and once none is
left open the session is resumed in its own process as ``orchestrate resume`` would.
Every refusal is a ``ToolRefused`` whose message is the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.files.session_files import open_private, private_dir, read_json
from meta_orchestrator.actors.history.event_pages import read_events_page
from meta_orchestrator.actors.history.resume import AnswerError, record_answer
from meta_orchestrator.actors.history.session_index import (
    is_live,
    list_sessions,
    summarize,
)
from meta_orchestrator.actors.mcp.launch import (
    LAUNCH_DIR,
    LaunchError,
    launcher_argv,
    remembered_dashboard,
    start_session_process,
)
from meta_orchestrator.actors.mcp.toml_text import toml_text
from meta_orchestrator.actors.workspaces.git_command import NO_DRIVERS, Git, WorkspaceError
from meta_orchestrator.actors.workspaces.workspace_commands import apply_command, discard_command
from meta_orchestrator.actors.workspaces.workspaces import workspace_summary
from meta_orchestrator.config.settings import ConfigError, with_overrides
from meta_orchestrator.messages.ids import InvalidId, check_question_id, check_session_id
from meta_orchestrator.webui.security import TOKEN_HEADER

CONTROL_ACTIONS = ("pause", "resume", "stop")
HTTP_TIMEOUT_S = 10.0
# apply and discard print as the subcommands do; the capture swaps sys.stdout for everyone.
_CAPTURE = threading.Lock()


class ToolRefused(Exception):
    """Bad input or a refused action: the message is what the client is told."""


class SessionTools:
    """The tools over one workspace. ``config``: the TOML file new sessions start with;
    ``env``: the environment of the sessions started (None: this process's)."""

    def __init__(self, workspace: Path, config: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.workspace = workspace
        self.config = config
        self.env = env

    # -- reading ----------------------------------------------------------------------------

    def folder(self, session_id: str) -> Path:
        """The session's folder; refused for an id that is no folder name or no session here."""
        try:
            check_session_id(session_id)
        except InvalidId as exc:
            raise ToolRefused(str(exc)) from None
        folder = self.workspace / session_id
        if not (folder / "state.json").is_file():
            raise ToolRefused(f"no session {session_id} in {self.workspace}")
        return folder

    def state(self, session_id: str) -> dict[str, Any]:
        folder = self.folder(session_id)
        try:
            state = read_json(folder / "state.json")
        except (OSError, ValueError) as exc:
            raise ToolRefused(f"{folder / 'state.json'} cannot be read: {exc}") from None
        return dict(state)

    def list_sessions(self) -> list[dict[str, Any]]:
        return list_sessions(self.workspace)

    def status(self, session_id: str) -> dict[str, Any]:
        """What ``orchestrate show`` prints, as data: status, plan, assignments, open
        questions, branch and its diff stat, cost and tokens, the dashboard while it runs."""
        folder, state = self.folder(session_id), self.state(session_id)
        row = summarize(folder, state)
        keys = ("session_id", "task", "target", "status", "exit_code", "plan_source", "plan_summary", "summary")
        return {
            **{key: state.get(key) for key in keys},
            "live": row["live"],
            "assignments": [
                {k: a.get(k) for k in ("id", "agent", "status", "title", "error", "busy_s")}
                for a in state.get("assignments", [])
            ],
            "open_questions": [q for q in state.get("questions", []) if q.get("status") == "open"],
            "branch": row["branch"],
            "diff_stat": _diff_stat(folder),
            "cost_usd": row["cost_usd"],
            "tokens": row["tokens"],
            "dashboard_url": remembered_dashboard(self.workspace, session_id) if row["live"] else None,
            "files": sorted(p.name for p in folder.glob("*.jsonl")),
        }

    def events(self, session_id: str, cursor: str | None, limit: int) -> dict[str, Any]:
        """One page of the session's events after ``cursor`` (from the previous page), and
        whether the session still runs (more may come)."""
        folder, state = self.folder(session_id), self.state(session_id)
        try:
            page = read_events_page(folder, cursor, limit=limit)
        except ValueError as exc:
            raise ToolRefused(str(exc)) from None
        return {**page, "status": state.get("status"), "live": is_live(state)}

    # -- acting -----------------------------------------------------------------------------

    def start(self, options: dict[str, Any]) -> dict[str, Any]:
        """A new session in its own process; its id, dashboard address and token."""
        task = str(options.get("task") or "").strip()
        if not task:
            raise ToolRefused("task is empty: say what the agents should do")
        target = options.get("target")
        if target is not None:
            target = Path(str(target)).expanduser()
            if not target.is_absolute():
                raise ToolRefused(f"target must be an absolute path (the server's folder is nobody's): {target}")
        elif not options.get("demo"):
            raise ToolRefused("target is required (only a demo session makes its own)")
        roles = options.get("roles")
        config = self._config_with_roles(dict(roles)) if roles else self.config
        argv = launcher_argv({**options, "task": task, "target": target}, self.workspace, config)
        try:
            launched = start_session_process(argv, self.workspace, self.env)
        except LaunchError as exc:
            raise ToolRefused(str(exc)) from None
        return {
            "session_id": launched.session_id,
            "dashboard_url": launched.dashboard_url,
            "token": launched.token,
            "pid": launched.pid,
        }

    def answer(self, session_id: str, question_id: str, text: str) -> dict[str, Any]:
        state = self.state(session_id)
        try:
            check_question_id(question_id)
        except InvalidId as exc:
            raise ToolRefused(str(exc)) from None
        if is_live(state):
            approve = {"yes": True, "no": False}.get(text.strip().lower())
            body = {"question_id": question_id, "answer": text, "approve": approve}
            self._dashboard_post(session_id, "/api/answer", body)
            return {"session_id": session_id, "question_id": question_id, "answered": "live"}
        try:
            recorded = record_answer(self.workspace / session_id, question_id, text)
        except AnswerError as exc:
            raise ToolRefused(str(exc)) from None
        result = {"session_id": session_id, "question_id": question_id, "answered": "recorded", **recorded}
        if not recorded["still_open"] and state.get("status") == "waiting":
            result["resumed"] = self._resume(session_id)
        return result

    def control(self, session_id: str, action: str, agent: str | None) -> dict[str, Any]:
        if action not in CONTROL_ACTIONS:
            raise ToolRefused(f"unknown action {action[:40]!r}; expected one of {', '.join(CONTROL_ACTIONS)}")
        state = self.state(session_id)
        if not is_live(state):
            raise ToolRefused(f"session {session_id} is not running (status {state.get('status')})")
        self._dashboard_post(session_id, f"/api/control/{action}", {"agent": agent})
        return {"session_id": session_id, "action": action, "agent": agent, "accepted": True}

    def apply(self, session_id: str, squash: bool) -> dict[str, Any]:
        folder = self.folder(session_id)
        return _captured(lambda: apply_command(folder, session_id, squash))

    def discard(self, session_id: str) -> dict[str, Any]:
        folder = self.folder(session_id)
        return _captured(lambda: discard_command(folder, session_id))

    # -- helpers ----------------------------------------------------------------------------

    def _resume(self, session_id: str) -> dict[str, Any]:
        """``orchestrate resume`` in its own process, as a new session is started."""
        argv = launcher_argv({"task": "resume"}, self.workspace, self.config)
        argv[3:4] = ["resume", session_id]
        try:
            launched = start_session_process(argv, self.workspace, self.env, session_id=session_id)
        except LaunchError as exc:
            raise ToolRefused(f"the answer is recorded, but the session did not resume: {exc}") from None
        return {"dashboard_url": launched.dashboard_url, "token": launched.token, "pid": launched.pid}

    def _config_with_roles(self, roles: dict[str, str]) -> Path:
        """A config file for one session: the server's, with ``[session] roles`` replaced."""
        data: dict[str, Any] = {}
        if self.config is not None:
            try:
                data = tomllib.loads(self.config.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ToolRefused(f"config file {self.config} cannot be read: {exc}") from None
        data.setdefault("session", {})["roles"] = dict(roles)
        try:
            with_overrides(data, {}, "roles")
        except ConfigError as exc:
            raise ToolRefused(str(exc)) from None
        path = private_dir(self.workspace / LAUNCH_DIR) / f"config-{secrets.token_hex(6)}.toml"
        try:
            text = toml_text(data)
        except ValueError as exc:
            raise ToolRefused(f"config file {self.config} cannot be rewritten with these roles: {exc}") from None
        with open_private(path, exclusive=True) as f:
            f.write(text)
        return path

    def _dashboard_post(self, session_id: str, path: str, body: dict[str, Any]) -> None:
        url = remembered_dashboard(self.workspace, session_id)
        if url is None or "?token=" not in url:
            raise ToolRefused(
                f"session {session_id} runs, but was not started over MCP: its dashboard's token is not "
                "known here; use its dashboard or console"
            )
        base, token = url.split("/?token=", 1)
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", TOKEN_HEADER: token},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:
            raise ToolRefused(f"the session refused: {_reason(exc)}") from None
        except OSError as exc:
            raise ToolRefused(f"the session's dashboard cannot be reached at {base}: {exc}") from None


def _reason(exc: urllib.error.HTTPError) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads(exc.read()).get("error") or exc.reason)
    return str(exc.reason)


def _captured(command: Any) -> dict[str, Any]:
    """Run a subcommand's function; what it printed is the result, or the refusal."""
    out, err = io.StringIO(), io.StringIO()
    with _CAPTURE, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = command()
    said = (out.getvalue() + err.getvalue()).strip().replace("orchestrate: ", "")
    if code != 0:
        raise ToolRefused(said or f"refused (exit {code})")
    return {"ok": True, "output": said}


def _diff_stat(folder: Path) -> str | None:
    """``git diff --shortstat`` of the session's branch against its base, read from its store."""
    summary = workspace_summary(folder)
    if not summary or summary.get("discarded") or not summary.get("base"):
        return None
    git_dir = summary.get("store") or summary.get("common_dir")
    if not git_dir:
        return None
    try:
        result = Git(["--git-dir", str(git_dir)]).run(
            "diff", "--shortstat", *NO_DRIVERS, str(summary["base"]), str(summary["branch"])
        )
    except (WorkspaceError, OSError) as exc:
        return f"(no diff: {exc})"
    return result.text.strip() or "no change"
