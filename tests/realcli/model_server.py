"""A scripted model server that the real agent CLIs (claude, codex, gemini, qwen, copilot, opencode) can talk to.

It speaks just enough of three vendor APIs over SSE, on 127.0.0.1, to run whole headless
sessions with no network and no credentials:

* Anthropic Messages:  ``HEAD /`` (404 is fine) and ``POST /v1/messages?beta=true``
* OpenAI Responses:    ``POST /v1/responses`` (codex through a custom provider)
* Gemini:              ``POST /v1beta/models/<m>:streamGenerateContent?alt=sse`` and the
                       ``:generateContent`` side calls (model router, next-speaker check)

Every answer is decided from the request alone (no state, so runs can go in parallel).
A keyword in the latest user prompt selects the script:

``SCRIPT:text``            a plain text answer (:data:`TEXT_ANSWER`)
``SCRIPT:marker``          a text answer that contains a reporting-protocol marker line
``SCRIPT:marker <a,b>``    the same with one milestone marker naming each file (``"file": "a"``, ...)
``SCRIPT:write <name>``    a tool call that writes ``<name>`` (relative to the workspace, or absolute; ``{cli}`` in
                           it becomes the CLI asking: claude, codex or gemini) with
                           :data:`WRITE_CONTENT`; once the conversation carries the tool
                           result, a final text (:func:`write_done_text`)
``SCRIPT:error <status>``  HTTP ``<status>`` with the vendor's error JSON body
``SCRIPT:bash <command>``  a shell tool call running the rest of the line (claude's Bash, gemini's
                           and qwen's run_shell_command, copilot's and opencode's bash, codex's
                           ``exec_command``); once
                           the conversation carries the tool result, :data:`BASH_DONE_TEXT`
``SCRIPT:mcp <tool> <json>``  (Anthropic only) a call of the MCP tool ``<tool>`` as the CLI names it
                           (claude: ``mcp__<server>__<tool>``) with the JSON object as its input, if the
                           request offers that tool (claude's ``WaitForMcpServers`` first while its
                           server connects); once it has been called, :data:`MCP_DONE_TEXT` and the
                           text of the last tool result
``SCRIPT:hold``            the text answer, sent only once the test calls ``release()``: the
                           CLI waits on the request meanwhile (recorded as ``answered="held"``)

A request without a keyword (a CLI's own side request) gets a short text answer.
Copilot CLI (BYOK, Anthropic type) is told apart by its tools (`create`, `bash`).
qwen-code (``--auth-type anthropic``) is told apart by its tools (``read_file``, ``write_file``,
``run_shell_command``); its memory-extraction request after a run is a side request.
All requests are recorded in :attr:`ScriptedModelServer.requests` for assertions.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

TEXT_ANSWER = "Hello from the scripted model."
WRITE_CONTENT = "written by the scripted model\n"
MARKER_TEXT = "scripted marker milestone"
MARKER_LINE = f'ORCHESTRATE_EVENT {{"type":"milestone","text":"{MARKER_TEXT}"}}'
MARKER_ANSWER = f"Starting the scripted work.\n{MARKER_LINE}\nAll scripted work is done."
SIDE_ANSWER = "ok"
BASH_DONE_TEXT = "Ran the scripted command."
MCP_DONE_TEXT = "Called the scripted MCP tool."
WAIT_FOR_MCP = "WaitForMcpServers"  # claude's tool for MCP servers still connecting
HOLD_LIMIT_S = 60  # a held request is answered after this even if the test never releases it

_SCRIPT_RE = re.compile(r"SCRIPT:(text|marker|write|error|hold)(?:[ \t]+([^\s`'\"]+))?")
# ``SCRIPT:bash <command>``: the rest of the line is the command (it has spaces).
_BASH_RE = re.compile(r"SCRIPT:bash[ \t]+([^\n`]+)")
# ``SCRIPT:mcp <tool> {...}``: the tool's name, then its input as one JSON object on the line.
_MCP_RE = re.compile(r"SCRIPT:mcp[ \t]+(\S+[ \t]+\{[^\n]*\})")

ERROR_MESSAGES = {
    400: "mock bad request",
    401: "mock invalid api key",
    403: "mock forbidden",
    404: "mock not found",
    429: "mock rate limited",
    500: "mock internal error",
    503: "mock unavailable",
    529: "mock overloaded",
}

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERROR = {  # status -> (type, code)
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def write_done_text(name: str) -> str:
    """The final answer after a ``SCRIPT:write <name>`` tool call came back."""
    return f"Wrote {name} as scripted."


# The 403 a personal Google account gets from Gemini Code Assist since 2026-06-18 (issue 10's
# wording; the server's full text is not in the pinned CLI).
GEMINI_LICENCE_REFUSAL = "You do not have a valid license of this product [mock] (#3501)"


def error_message(status: int) -> str:
    return ERROR_MESSAGES.get(status, f"mock status {status}")


@dataclass(frozen=True)
class Script:
    kind: str  # "text" | "marker" | "write" | "error" | "hold" | "side"
    arg: str | None = None


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    api: str  # "anthropic" | "openai" | "gemini" | "gemini-side" | "other"
    headers: dict[str, str]
    body: Any
    script: Script | None = None
    answered: str = ""  # what the server did: "text", "tool_call", "final", "error 429", ...
    status: int = 200


def find_script(texts: Iterable[str], cli: str = "") -> Script | None:
    """The last ``SCRIPT:`` directive in ``texts`` (searched newest first). ``{cli}`` in its
    argument becomes the CLI asking (claude, codex, gemini): one prompt, a file per agent."""
    for text in reversed(list(texts)):
        found = [(m.start(), Script(m.group(1), m.group(2))) for m in _SCRIPT_RE.finditer(text or "")]
        found += [(m.start(), Script("bash", m.group(1).strip())) for m in _BASH_RE.finditer(text or "")]
        found += [(m.start(), Script("mcp", m.group(1).strip())) for m in _MCP_RE.finditer(text or "")]
        if found:
            script = max(found, key=lambda item: item[0])[1]
            if script.arg and "{cli}" in script.arg:
                script = Script(script.kind, script.arg.replace("{cli}", cli))
            return script
    return None


def _sse(events: Iterable[tuple[str | None, Any]], sep: str = "\n\n") -> bytes:
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}{sep}")
    return "".join(out).encode()


def _new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:20]}"


# --------------------------------------------------------------------------- Anthropic


def _anthropic_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            texts.append(block.get("text", ""))
    return texts


def _is_copilot(body: dict) -> bool:
    """Copilot CLI speaks Anthropic too (BYOK); its tools are ``create`` {path, file_text} and ``bash``."""
    return any(isinstance(t, dict) and t.get("name") == "create" for t in body.get("tools") or [])


_QWEN_CWD_RE = re.compile(r"I'm currently working in the (?:directory: |following directories:\n\s*- )(\S+)")


def _is_qwen(body: dict) -> bool:
    """qwen-code speaks Anthropic too; its tools are Gemini CLI's (``read_file``, ``write_file``)."""
    return any(isinstance(t, dict) and t.get("name") == "read_file" for t in body.get("tools") or [])


# Each CLI that speaks Anthropic, by its tool shapes: (write tool, its path key, its content key, shell tool).
ANTHROPIC_TOOLS = {
    "claude": ("Write", "file_path", "content", "Bash"),
    "qwen": ("write_file", "file_path", "content", "run_shell_command"),
    "copilot": ("create", "path", "file_text", "bash"),
    "opencode": ("write", "filePath", "content", "bash"),
}


def anthropic_cli(body: dict, user_agent: str) -> str:
    """Which CLI sent an Anthropic request: opencode by its User-Agent, qwen and copilot by their tools."""
    if user_agent.startswith("opencode/"):
        return "opencode"
    return "qwen" if _is_qwen(body) else "copilot" if _is_copilot(body) else "claude"


def _anthropic_plan(body: dict, cli: str = "claude") -> tuple[Script | None, bool, str | None]:
    """(script, tool result present in the latest user turn, primary working directory)."""
    messages = body.get("messages") or []
    user_msgs = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    texts: list[str] = []
    for m in user_msgs:
        texts.extend(_anthropic_texts(m.get("content")))
    script = find_script(texts, cli)
    has_result = False
    if user_msgs:  # the list may end with a role:"system" entry: look back for the last user
        content = user_msgs[-1].get("content")
        if isinstance(content, list):
            has_result = any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        # qwen's memory extraction after the run: a new user turn with neither script nor result
        if cli == "qwen" and not has_result and not find_script(_anthropic_texts(content)):
            script = None
    system = body.get("system")
    system_text = (
        system if isinstance(system, str) else " ".join(b.get("text", "") for b in system or [] if isinstance(b, dict))
    )
    # claude 2.1.332 moved its environment section (the working directory) into a role:"system" message
    for msg in messages:
        if isinstance(msg, dict) and msg.get("role") == "system":
            system_text += " " + " ".join(_anthropic_texts(msg.get("content")))
    # claude names its "Primary working directory", copilot its "Current working directory", opencode
    # its "  Working directory"; qwen names it in its first user turn ("I'm currently working in the
    # directory: <dir>", or with more folders "... in the following directories:\n  - <dir>").
    m = re.search(r"(?:Primary working|  Working|Current working) directory: (\S+)", system_text)
    m = m or next(filter(None, (_QWEN_CWD_RE.search(t) for t in texts)), None)
    return script, has_result, (m.group(1) if m else None)


def _called(body: dict) -> set[str]:
    """The tools the conversation has called so far (its assistant turns' tool_use blocks)."""
    return {
        str(block.get("name"))
        for message in body.get("messages") or []
        if isinstance(message, dict) and message.get("role") == "assistant" and isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_use"
    }


def _mcp_call(body: dict, arg: str) -> dict | None:
    """``SCRIPT:mcp``'s next tool call (name and input), None once the tool was called (or
    cannot be). claude -p does not wait for its MCP servers before the first request: while
    one connects, its tools are missing and ``WaitForMcpServers`` is offered instead."""
    tool, arguments = arg.split(None, 1)
    offered = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
    called = _called(body)
    if tool in called:
        return None
    if tool in offered:
        return {"name": tool, "input": json.loads(arguments)}
    if WAIT_FOR_MCP in offered and WAIT_FOR_MCP not in called:
        server = tool.split("__")[1] if tool.count("__") >= 2 else None
        return {"name": WAIT_FOR_MCP, "input": {"servers": [server]} if server else {}}
    return None


def _tool_result_text(body: dict) -> str:
    """The text of the last tool result the conversation carries (what the tool answered)."""
    for message in reversed(body.get("messages") or []):
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                return content if isinstance(content, str) else " ".join(_anthropic_texts(content))
    return ""


def _anthropic_stream(model: str, blocks: list[dict], stop_reason: str) -> bytes:
    events: list[tuple[str | None, Any]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": _new_id("msg_mock"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 120,
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        )
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}},
                )
            )
        else:
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    },
                )
            )
            events.append(
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 25},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return _sse(events)


# --------------------------------------------------------------------------- OpenAI Responses


def _openai_plan(body: dict) -> tuple[Script | None, bool, str]:
    """(script, latest input item is a tool output, apply_patch tool flavour)."""
    items = body.get("input") or []
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    texts = []
    for item in items:
        if not isinstance(item, dict) or item.get("role") != "user":
            continue
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(c.get("text", "") for c in content or [] if isinstance(c, dict))
    script = find_script(texts, "codex")
    last = items[-1] if items else {}
    has_result = isinstance(last, dict) and last.get("type") in ("custom_tool_call_output", "function_call_output")
    flavour = "custom"
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("name") == "apply_patch":
            flavour = "custom" if tool.get("type") == "custom" else "function"
    return script, has_result, flavour


def _openai_stream(body: dict, items: list[dict]) -> bytes:
    resp_id = _new_id("resp_mock")
    model = body.get("model", "mock")
    events: list[tuple[str | None, Any]] = [
        (
            "response.created",
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {
                    "id": resp_id,
                    "object": "response",
                    "status": "in_progress",
                    "model": model,
                    "output": [],
                },
            },
        )
    ]
    for i, item in enumerate(items):
        events.append(
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": i, "item": item})
        )
        events.append(
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": i, "item": item})
        )
    events.append(
        (
            "response.completed",
            {
                "type": "response.completed",
                "response": {
                    "id": resp_id,
                    "object": "response",
                    "status": "completed",
                    "model": model,
                    "output": items,
                    "usage": {
                        "input_tokens": 1200,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": 40,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": 1240,
                    },
                },
            },
        )
    )
    return _sse(events)


def _openai_message(text: str) -> dict:
    return {
        "type": "message",
        "role": "assistant",
        "id": _new_id("msg_mock"),
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


# --------------------------------------------------------------------------- Gemini


_GEMINI_CWD_RES = (
    re.compile(r"\*\*Workspace Directories:\*\*\s*\n\s*- (\S+)"),
    re.compile(r"I'm currently working in the directory: (\S+)"),
    re.compile(r"[Cc]urrent working directory[^:]*: (\S+)"),
    re.compile(r"working directory is[: ]+(\S+)"),
)


def _gemini_plan(body: dict) -> tuple[Script | None, bool, str | None]:
    contents = body.get("contents") or []
    texts = []
    all_text = []
    for c in contents:
        if not isinstance(c, dict):
            continue
        for part in c.get("parts") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                all_text.append(part["text"])
                if c.get("role") == "user":
                    texts.append(part["text"])
    script = find_script(texts, "gemini")
    has_result = False
    if contents and isinstance(contents[-1], dict):
        has_result = any(isinstance(p, dict) and "functionResponse" in p for p in contents[-1].get("parts") or [])
    sys_parts = (body.get("systemInstruction") or {}).get("parts") or []
    all_text.extend(p.get("text", "") for p in sys_parts if isinstance(p, dict))
    cwd = None
    for rx in _GEMINI_CWD_RES:
        for text in all_text:
            m = rx.search(text)
            if m:
                cwd = m.group(1).rstrip(".,;:")
                break
        if cwd:
            break
    return script, has_result, cwd


def _gemini_chunk(parts: list[dict], finish: bool, model: str = "gemini-mock") -> dict:
    chunk: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}]}
    if finish:
        chunk["candidates"][0]["finishReason"] = "STOP"
        chunk["usageMetadata"] = {"promptTokenCount": 1200, "candidatesTokenCount": 40, "totalTokenCount": 1240}
    chunk["modelVersion"] = model
    return chunk


def _gemini_side_answer(body: dict) -> dict:
    """``:generateContent`` side calls: router classification, next-speaker check, other."""
    config = body.get("generationConfig") or body.get("config") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or {}
    props = schema.get("properties") or {} if isinstance(schema, dict) else {}
    blob = json.dumps(body)
    if "complexity_score" in props or "complexity_score" in blob:
        text = json.dumps({"complexity_reasoning": "scripted: simple", "complexity_score": 1})
    elif "next_speaker" in props:
        text = json.dumps({"reasoning": "scripted: the model is done", "next_speaker": "user"})
    elif props:
        text = json.dumps({k: "" for k in props})
    else:
        text = SIDE_ANSWER
    return _gemini_chunk([{"text": text}], finish=True)


# --------------------------------------------------------------------------- server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep quiet
        pass

    # ---- plumbing
    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        enc = (self.headers.get("Content-Encoding") or "").lower()
        if enc == "gzip":
            raw = gzip.decompress(raw)
        elif enc == "deflate":
            raw = zlib.decompress(raw)
        elif enc == "zstd":
            try:  # pragma: no cover - only when a client compresses with zstd
                import zstandard  # type: ignore[import-not-found]

                raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
            except ImportError:
                pass
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send(
        self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None, head_only: bool = False
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
            self.wfile.flush()
        self.close_connection = True

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _record(self, api: str, body: Any) -> RecordedRequest:
        rec = RecordedRequest(
            method=self.command,
            path=self.path,
            api=api,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.owner._record(rec)
        return rec

    # ---- verbs
    def do_HEAD(self) -> None:  # noqa: N802
        self._record("other", None)
        self._send(404, b"", "application/json", head_only=True)

    def do_GET(self) -> None:  # noqa: N802
        self._record("other", None)
        self._json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_body()
        path = urlsplit(self.path).path
        if not isinstance(body, dict):
            body = {"_raw": body}
        try:
            if path.endswith("/v1/messages"):
                self._anthropic(self._record("anthropic", body), body)
            elif path.endswith("/responses"):
                self._openai(self._record("openai", body), body)
            elif ":streamGenerateContent" in path:
                self._gemini(self._record("gemini", body), body, path)
            elif ":generateContent" in path:
                rec = self._record("gemini-side", body)
                rec.answered = "side"
                self._json(200, _gemini_side_answer(body))
            elif ":countTokens" in path:
                self._record("gemini-side", body).answered = "count"
                self._json(200, {"totalTokens": 100})
            else:
                self._record("other", body)
                self._json(404, {"error": {"message": f"no route for POST {path}"}})
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ---- per vendor
    def _error(self, rec: RecordedRequest, status: int, api: str) -> None:
        rec.answered, rec.status = f"error {status}", status
        msg = self.server.owner.error_messages.get(status) or error_message(status)
        if api == "anthropic":
            etype = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
            body = {"type": "error", "error": {"type": etype, "message": msg}, "request_id": _new_id("req_mock")}
        elif api == "openai":
            etype, code = _OPENAI_ERROR.get(status, ("server_error", None))
            body = {"error": {"message": msg, "type": etype, "param": None, "code": code}}
        else:
            if status == 403:
                msg = GEMINI_LICENCE_REFUSAL  # what Code Assist for individuals answers since 2026-06-18
            body = {"error": {"code": status, "message": msg, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}
        headers = {"retry-after": "0"} if status == 429 else {}
        if status in (429, 503) and self.server.owner.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.server.owner.retry_after_ms)
        self._json(status, body, headers)

    def _anthropic(self, rec: RecordedRequest, body: dict) -> None:
        cli = anthropic_cli(body, self.headers.get("User-Agent", ""))
        write_tool, path_key, content_key, shell_tool = ANTHROPIC_TOOLS[cli]
        script, has_result, cwd = _anthropic_plan(body, cli)
        rec.script = script
        if script and script.kind == "error":
            return self._error(rec, int(script.arg or 500), "anthropic")
        blocks: list[dict]
        stop = "end_turn"
        if not body.get("tools") and script and script.kind != "error":
            script = None  # a side request (session title etc.): answer it plainly
        self._hold(rec, script)
        if script and script.kind == "write" and not has_result:
            name = script.arg or "scripted.txt"
            path = name if name.startswith("/") or not cwd else f"{cwd.rstrip('/')}/{name}"
            blocks = [
                {
                    "type": "tool_use",
                    "id": _new_id("toolu_mock"),
                    "name": write_tool,
                    "input": {path_key: path, content_key: WRITE_CONTENT},
                }
            ]
            stop, rec.answered = "tool_use", "tool_call"
        elif script and script.kind == "bash" and not has_result:
            blocks = [
                {
                    "type": "tool_use",
                    "id": _new_id("toolu_mock"),
                    "name": shell_tool,
                    "input": {"command": script.arg or "true", "description": "Run the scripted command"},
                }
            ]
            stop, rec.answered = "tool_use", "tool_call"
        elif script and script.kind == "mcp" and (call := _mcp_call(body, script.arg or "")) is not None:
            blocks = [{"type": "tool_use", "id": _new_id("toolu_mock"), **call}]
            stop, rec.answered = "tool_use", "tool_call" if call["name"] != WAIT_FOR_MCP else "wait_for_mcp"
        else:
            text, rec.answered = self._final_text(script, has_result)
            if script and script.kind == "mcp":
                text += "\n" + _tool_result_text(body)
            blocks = [{"type": "text", "text": text}]
        model = body.get("model", "claude-mock")
        if body.get("stream"):
            self._send(200, _anthropic_stream(model, blocks, stop), "text/event-stream", {"Cache-Control": "no-cache"})
        else:
            content = [b if b["type"] == "text" else {k: b[k] for k in ("type", "id", "name", "input")} for b in blocks]
            self._json(
                200,
                {
                    "id": _new_id("msg_mock"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 120, "output_tokens": 25},
                },
            )

    def _openai(self, rec: RecordedRequest, body: dict) -> None:
        script, has_result, flavour = _openai_plan(body)
        rec.script = script
        self._hold(rec, script)
        if script and script.kind == "error":
            return self._error(rec, int(script.arg or 500), "openai")
        if script and script.kind == "write" and not has_result:
            name = script.arg or "scripted.txt"
            patch = "*** Begin Patch\n*** Add File: {}\n{}*** End Patch\n".format(
                name,
                "".join("+" + line + "\n" for line in WRITE_CONTENT.splitlines()),
            )
            call_id = _new_id("call_mock")
            if flavour == "custom":
                item = {
                    "type": "custom_tool_call",
                    "id": _new_id("ctc_mock"),
                    "status": "completed",
                    "call_id": call_id,
                    "name": "apply_patch",
                    "input": patch,
                }
            else:
                item = {
                    "type": "function_call",
                    "id": _new_id("fc_mock"),
                    "status": "completed",
                    "call_id": call_id,
                    "name": "apply_patch",
                    "arguments": json.dumps({"input": patch}),
                }
            rec.answered = "tool_call"
            items = [item]
        elif script and script.kind == "bash" and not has_result:
            arguments = json.dumps({"cmd": script.arg or "true"})
            items = [
                {
                    "type": "function_call",
                    "id": _new_id("fc_mock"),
                    "status": "completed",
                    "call_id": _new_id("call_mock"),
                    "name": "exec_command",
                    "arguments": arguments,
                }
            ]
            rec.answered = "tool_call"
        else:
            text, rec.answered = self._final_text(script, has_result)
            items = [_openai_message(text)]
        self._send(200, _openai_stream(body, items), "text/event-stream", {"Cache-Control": "no-cache"})

    def _gemini(self, rec: RecordedRequest, body: dict, path: str) -> None:
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        script, has_result, cwd = _gemini_plan(body)
        rec.script = script
        self._hold(rec, script)
        if script and script.kind == "error":
            return self._error(rec, int(script.arg or 500), "gemini")
        if script and script.kind == "write" and not has_result:
            name = script.arg or "scripted.txt"
            file_path = f"{cwd.rstrip('/')}/{name}" if cwd else name
            parts = [
                {"functionCall": {"name": "write_file", "args": {"file_path": file_path, "content": WRITE_CONTENT}}}
            ]
            rec.answered = "tool_call"
            chunks = [_gemini_chunk(parts, finish=True, model=model)]
        elif script and script.kind == "bash" and not has_result:  # gemini's shell tool
            parts = [{"functionCall": {"name": "run_shell_command", "args": {"command": script.arg}}}]
            rec.answered = "tool_call"
            chunks = [_gemini_chunk(parts, finish=True, model=model)]
        else:
            text, rec.answered = self._final_text(script, has_result)
            # two chunks, split mid-line, as the real API does
            cut = max(1, len(text) // 2)
            chunks = [
                _gemini_chunk([{"text": text[:cut]}], finish=False, model=model),
                _gemini_chunk([{"text": text[cut:]}], finish=True, model=model),
            ]
        self._send(
            200, _sse(((None, c) for c in chunks), sep="\r\n\r\n"), "text/event-stream", {"Cache-Control": "no-cache"}
        )

    def _hold(self, rec: RecordedRequest, script: Script | None) -> None:
        """``SCRIPT:hold``: answer only once the test releases the server (or it stops)."""
        if script is not None and script.kind == "hold":
            rec.answered = "held"
            self.server.owner.released.wait(HOLD_LIMIT_S)

    @staticmethod
    def _final_text(script: Script | None, has_result: bool) -> tuple[str, str]:
        if script is None:
            return SIDE_ANSWER, "side"
        if script.kind == "write":
            return write_done_text(script.arg or "scripted.txt"), "final"
        if script.kind == "bash":
            return BASH_DONE_TEXT, "final"
        if script.kind == "mcp":
            return (MCP_DONE_TEXT, "final") if has_result else (f"no tool {script.arg} offered", "no_tool")
        if script.kind == "marker" and script.arg:
            named = [json.dumps({"type": "milestone", "text": MARKER_TEXT, "file": f}) for f in script.arg.split(",")]
            return "\n".join(["Starting the scripted work.", *(f"ORCHESTRATE_EVENT {n}" for n in named)]), "marker"
        if script.kind == "marker":
            return MARKER_ANSWER, "marker"
        return TEXT_ANSWER, "text"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ScriptedModelServer


@dataclass
class ScriptedModelServer:
    """Start with :meth:`start` (or as a context manager); the URL is :attr:`url`."""

    host: str = "127.0.0.1"
    requests: list[RecordedRequest] = field(default_factory=list)
    # status -> the error message in place of ERROR_MESSAGES' (a vendor's own words, e.g. the
    # real Anthropic API's "invalid x-api-key", which claude turns into "Invalid API key").
    error_messages: dict[int, str] = field(default_factory=dict)
    # Also on a 429 or a 503: ``retry-after-ms``, the wait it asks for. ``retry-after: 0`` alone leaves
    # each client to its own schedule (qwen: 7 attempts backing off 1.5 s to 30 s, about 76 s);
    # qwen waits exactly this long between them instead (as the Anthropic and OpenAI SDKs do).
    retry_after_ms: int | None = None

    def __post_init__(self) -> None:
        self.released = threading.Event()  # held requests (SCRIPT:hold) are answered once set
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ScriptedModelServer:
        server = _Server((self.host, 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="scripted-model-server", daemon=True
        )
        self._thread.start()
        return self

    def release(self) -> None:
        """Answer every held request, and those still to come, at once."""
        self.released.set()

    def stop(self) -> None:
        self.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def recorded(self, api: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if api is None or r.api == api]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
