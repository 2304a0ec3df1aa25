"""``orchestrate serve``: every session of a workspace in one page, live or past, and replay.

It reads the session folders only (``state.json``, ``history.jsonl``, ``<agent>.jsonl``), so
it needs no session to be running and can never disturb one: a finished session opens
read-only from its files, a running one follows its files as they grow, and a session
started while it runs appears in the list. The session page is the dashboard's own page,
fed from ``/api/sessions/<id>/snapshot`` and ``/frames`` instead of a WebSocket: the same
frames, rebuilt from the files through the same table (``actors.history.replay``).

The same guard as a session's dashboard: a per-run token in a header, the Host allowlist,
Origin and Content-Type rules (``webui.security``); loopback only.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from meta_orchestrator.actors.history.event_log import EventLog, parse_time
from meta_orchestrator.actors.history.replay import Timeline, frame_data, parse_cursor, snapshot_at
from meta_orchestrator.actors.history.session_index import is_live, list_sessions, summarize
from meta_orchestrator.actors.files.session_files import event_files, read_json
from meta_orchestrator.config.settings import WebSettings
from meta_orchestrator.messages.base import utc_now
from meta_orchestrator.messages.frames import encode_frame, format_utc
from meta_orchestrator.messages.ids import is_session_id
from meta_orchestrator.webui.app import STATIC_DIR, InOrderJSON
from meta_orchestrator.webui.dashboard_server import DashboardServer, GatewayError
from meta_orchestrator.webui.security import PAGE_CSP, SECURITY_HEADERS, Guard, allowed_hosts, is_loopback

logger = logging.getLogger(__name__)

MAX_PAGE = 2000
MAX_MARKS = 2000
ERROR_PREFIX = b'{"type":"error",'


class ServeError(Exception):
    """The sessions page cannot be served (bad host, port in use)."""


def _agents(state: dict[str, Any] | None, folder: Path) -> tuple[str, ...]:
    """The agents whose event files the session has: its assignments' and any ``*.jsonl``
    beside them that is an agent's (not the history or the resource samples)."""
    names = {str(a.get("agent")) for a in (state or {}).get("assignments", []) if isinstance(a, dict)}
    names |= {p.stem for p in folder.glob("*.jsonl") if p.stem not in ("history", "resources")}
    return tuple(sorted(n for n in names if is_session_id(n)))


def _moment(text: str | None, bounds: tuple[datetime, datetime]) -> datetime:
    """``start``, ``end`` (default) or an ISO time, held within the session's span.

    Raises:
        ValueError: not one of those.
    """
    if text in (None, "", "end"):
        return bounds[1]
    if text == "start":
        return bounds[0]
    if len(text) > 40:
        raise ValueError("at is start, end or an ISO 8601 time")
    moment = parse_time(text)
    if moment.tzinfo is None:
        raise ValueError("at needs its time zone (…Z)")
    return min(max(moment, bounds[0]), bounds[1])


def _decision_label(record: dict[str, Any]) -> str:
    """``CONTINUE: all 2 reviewers approve`` from a decision record, whatever its kind."""
    inner = record.get("decision")
    if isinstance(inner, dict):
        verdict, why = inner.get("decision"), inner.get("reasoning")
    else:
        verdict, why = inner, record.get("reason") or record.get("reasoning")
    verdict = verdict or record.get("kind") or "decision"
    return (f"{verdict}: {why}" if why else str(verdict))[:160]


def _decisions_in(record: dict[str, Any]) -> list[Any]:
    """The decisions a history line holds: all of them in a whole snapshot, the new ones in a
    delta (``SessionStateDelta``); the caller skips those it has seen."""
    data = record.get("data")
    if not isinstance(data, dict):
        return []
    if record.get("fact") == "SessionStateChanged":
        found = (data.get("snapshot") or {}).get("decisions")
    elif record.get("fact") == "SessionStateDelta":
        delta = data.get("delta") or {}
        found = (delta.get("appended") or {}).get("decisions") or (delta.get("fields") or {}).get("decisions")
    else:
        found = None
    return found if isinstance(found, list) else []


def marks_of(folder: Path, agents: tuple[str, ...]) -> list[dict[str, Any]]:
    """Where a replay can jump: each decision (from the history) and each error event."""
    found: list[dict[str, Any]] = []
    seen_decisions: set[str] = set()
    history = folder / "history.jsonl"
    if history.exists():
        with EventLog(history) as log:
            offset = 0
            while True:
                window = log.read_from(offset, 2000)
                if not window.records:
                    break
                offset = window.end
                for record in window.records:
                    for decision in _decisions_in(record):
                        key = json.dumps(decision, sort_keys=True)
                        if key in seen_decisions:
                            continue
                        seen_decisions.add(key)
                        found.append(
                            {"at": record["timestamp"], "kind": "decision", "label": _decision_label(decision)}
                        )
    for path in (p for agent in agents for p in event_files(folder, agent)):  # parallel runs' too
        if not path.exists():
            continue
        with path.open("rb") as f:  # a byte test per line: no JSON parse for the others
            for line in f:
                if line.startswith(ERROR_PREFIX) and line.endswith(b"\n") and len(found) < MAX_MARKS:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    text = (record.get("payload") or {}).get("text") or "error"
                    found.append(
                        {"at": record.get("timestamp"), "kind": "error", "agent": path.stem, "label": str(text)[:120]}
                    )
    found.sort(key=lambda m: str(m["at"]))
    return found[:MAX_MARKS]


def create_serve_app(workspace: Path, guard: Callable[[], Guard]) -> Flask:
    """The sessions page and its API over ``workspace``."""
    app = Flask("orchestrator_sessions", static_folder=str(STATIC_DIR), static_url_path="/static")
    app.json = InOrderJSON(app)

    _add_guard(app, guard)
    _add_list_routes(app, workspace)
    _add_replay_routes(app, workspace)

    @app.route("/api/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(rest: str) -> Response:
        return _refuse(404, f"no such API endpoint: {request.method} /api/{rest[:100]}")

    return app


def _refuse(status: int, reason: str) -> Response:
    response = jsonify(error=reason)
    response.status_code = status
    return response


def _folder_of(workspace: Path, session_id: str) -> Path:
    """A session's folder in the workspace: a plain name, a real folder with a state.json."""
    if not is_session_id(session_id):
        raise LookupError(f"no session {session_id[:60]!r}")
    folder = workspace / session_id
    if folder.is_symlink() or not (folder / "state.json").is_file():
        raise LookupError(f"no session {session_id!r} in this workspace")
    return folder


def _opened(workspace: Path, session_id: str) -> tuple[Path, dict[str, Any], tuple[str, ...]]:
    """The session's folder, its state and its agents.

    Raises:
        LookupError: no such session, or its state.json cannot be read.
    """
    folder = _folder_of(workspace, session_id)
    try:
        state = read_json(folder / "state.json")
    except (OSError, ValueError) as exc:
        raise LookupError(f"session {session_id}: state.json cannot be read ({exc})") from None
    return folder, state, _agents(state, folder)


def _add_guard(app: Flask, guard: Callable[[], Guard]) -> None:
    """The dashboard's rules before every request; safe headers after."""

    @app.before_request
    def check() -> Response | None:
        refusal = guard().check(request.method, request.path, request.headers)
        return None if refusal is None else _refuse(refusal.status, refusal.reason)

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        if request.path in ("/", "/session") or request.path.endswith(".html"):
            response.headers["Content-Security-Policy"] = PAGE_CSP
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _refuse(exc.code or 500, exc.name)


def _add_list_routes(app: Flask, workspace: Path) -> None:
    """The pages, the session list and one session's summary."""

    @app.get("/")
    def index() -> Response:
        return send_from_directory(STATIC_DIR, "sessions.html")

    @app.get("/session")
    def session_page() -> Response:
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/api/health")
    def health() -> Response:
        return jsonify(ok=True)

    @app.get("/api/sessions")
    def sessions() -> Response:
        rows = list_sessions(
            workspace, request.args.get("q", "")[:200], request.args.get("status", "")[:40], now=utc_now()
        )
        return jsonify(workspace=str(workspace), sessions=rows)

    @app.get("/api/sessions/<session_id>")
    def one(session_id: str) -> Response:
        try:
            folder, state, _ = _opened(workspace, session_id)
        except LookupError as exc:
            return _refuse(404, str(exc))
        return jsonify(summary=summarize(folder, state, utc_now()), state=state)


def _add_replay_routes(app: Flask, workspace: Path) -> None:
    """A session's frames: the snapshot at a moment, the frames after a cursor, the marks."""

    @app.get("/api/sessions/<session_id>/snapshot")
    def snapshot(session_id: str) -> Response:
        try:
            return _snapshot_at(*_opened(workspace, session_id), request.args.get("at"))
        except LookupError as exc:
            return _refuse(404, str(exc))

    @app.get("/api/sessions/<session_id>/frames")
    def frames(session_id: str) -> Response:
        try:
            opened = _opened(workspace, session_id)
        except LookupError as exc:
            return _refuse(404, str(exc))
        raw_seq = request.args.get("seq", "0")
        raw_limit = request.args.get("limit", "500")
        if not (raw_seq.isdigit() and len(raw_seq) <= 15 and raw_limit.isdigit() and len(raw_limit) <= 5):
            return _refuse(400, "seq and limit are whole numbers")
        limit = min(max(int(raw_limit), 1), MAX_PAGE)
        return _frames_after(*opened, request.args.get("cursor", ""), int(raw_seq), limit)

    @app.get("/api/sessions/<session_id>/marks")
    def marks(session_id: str) -> Response:
        try:
            folder, _state, agents = _opened(workspace, session_id)
        except LookupError as exc:
            return _refuse(404, str(exc))
        return jsonify(marks=marks_of(folder, agents))


def _snapshot_at(folder: Path, state: dict[str, Any], agents: tuple[str, ...], at: str | None) -> Response:
    """The session as it stood at ``at``, as one snapshot frame, and where to read on from."""
    with Timeline(folder, agents) as timeline:
        bounds = timeline.bounds()
        if bounds is None:
            raise LookupError(f"session {folder.name} has recorded nothing yet")
        try:
            moment = _moment(at, bounds)
        except ValueError as exc:
            return _refuse(400, str(exc))
        frame, page, seq = snapshot_at(timeline, moment, bounds[0])
    return _spliced(
        frame=frame,
        cursor=json.dumps(page.cursor),
        seq=str(seq),
        at=json.dumps(format_utc(moment)),
        start=json.dumps(format_utc(bounds[0])),
        end=json.dumps(format_utc(bounds[1])),
        live=json.dumps(is_live(state)),
    )


def _frames_after(
    folder: Path, state: dict[str, Any], agents: tuple[str, ...], cursor: str, seq: int, limit: int
) -> Response:
    """Up to ``limit`` frames after ``cursor``, numbered on from ``seq``, each with its time."""
    with Timeline(folder, agents) as timeline:
        try:
            parse_cursor(cursor, timeline.sources)
        except ValueError as exc:
            return _refuse(400, str(exc))
        page = timeline.read(cursor, limit)
    out = []
    for item in page.items:
        built = frame_data(item)
        if built is None:
            continue
        seq += 1
        out.append(_splice(at=json.dumps(format_utc(item.timestamp)), frame=encode_frame(built[0], seq, built[1])))
    return _spliced(
        frames="[" + ",".join(out) + "]",
        cursor=json.dumps(page.cursor),
        seq=str(seq),
        more=json.dumps(page.more),
        live=json.dumps(is_live(state)),
    )


def _splice(**fields: str) -> str:
    """A JSON object from JSON texts: frames go in as they were built, never parsed again."""
    return "{" + ",".join(f'"{name}":{value}' for name, value in fields.items()) + "}"


def _spliced(**fields: str) -> Response:
    return Response(_splice(**fields), mimetype="application/json")


class SessionsServer:
    """The ``orchestrate serve`` web server, on a thread of its own: the dashboard's server
    (``webui.dashboard_server``), with the connection limits of ``web``."""

    def __init__(
        self,
        workspace: Path,
        host: str = "127.0.0.1",
        port: int = 8100,
        token: str | None = None,
        web: WebSettings | None = None,
    ) -> None:
        if not is_loopback(host):
            raise ServeError(f"orchestrate serve listens on loopback only, not {host!r}; use an SSH tunnel")
        self.token = token or secrets.token_urlsafe(24)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._guard: Guard | None = None
        app = create_serve_app(workspace, lambda: self._guard)  # type: ignore[arg-type,return-value]
        settings = (web or WebSettings()).model_copy(update={"host": host, "port": port, "allow_remote": False})
        try:
            self._server = DashboardServer(settings, name="serve-http")
        except GatewayError as exc:
            raise ServeError(str(exc)) from None
        self._server.mount(app)
        self.host, self.port = host, self._server.port
        self._guard = Guard(token=self.token, port=self.port, hosts=allowed_hosts(host))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def start(self) -> SessionsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
