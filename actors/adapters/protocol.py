"""The reporting protocol: how an agent reports milestones, blockers and the like in its text.

Real CLIs print no milestone or blocker of their own. Every assignment prompt ends with
``REPORTING_PROTOCOL``; the agent writes marker lines such as

    ORCHESTRATE_EVENT {"type": "milestone", "text": "schema designed", "progress": 40}

and the adapters turn them into typed events. Only assistant text is scanned: a tool
result that echoes a file containing a marker must not count.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from meta_orchestrator.actors.adapters.base import Draft, draft
from meta_orchestrator.messages.events import EventPayload, text_payload

MARKER = "ORCHESTRATE_EVENT"
MARKER_TYPES: dict[str, str] = {
    "milestone": "milestone",
    "blocker": "blocker",
    "finding": "finding",
    "progress": "progress",
    "review": "review",  # an explicit request for a peer review
    "task": "task",
}

PENDING_LIMIT = 65_536  # characters of an unfinished line kept while waiting for its end
_LINE = re.compile(r"^[\s>*`-]*" + MARKER + r"\s*(?P<body>\{.*\})\s*`*\s*$")

REPORTING_PROTOCOL = f"""\
## Reporting protocol (required)
Report your progress to the orchestrator with marker lines in your reply text, each on a
line of its own, exactly in this form (one JSON object, one line):
{MARKER} {{"type": "progress", "text": "what you are doing", "progress": 30}}
{MARKER} {{"type": "milestone", "text": "a finished unit of work", "file": "path/if/any"}}
{MARKER} {{"type": "finding", "text": "a fact or defect worth knowing", "file": "path", "line": 12}}
{MARKER} {{"type": "blocker", "text": "what stops you and what you need"}}
{MARKER} {{"type": "review", "text": "what you want a peer to review"}}
Use "progress" from 0 to 100 for how far along the assignment you are. Report at least one
milestone when you finish. Do not put marker lines inside files or command output.
"""


def parse_marker_line(line: str) -> Draft | None:
    """A marker line as a draft, an ``error`` draft for a malformed marker, or None."""
    if MARKER not in line:
        return None
    match = _LINE.match(line)
    if not match:
        return None
    try:
        body: Any = json.loads(match.group("body"))
    except json.JSONDecodeError as exc:
        return draft(
            "error",
            kind="marker_error",
            terminal=False,
            text=f"malformed {MARKER} line ({exc.msg}): {line.strip()[:300]}",
        )
    if not isinstance(body, dict) or body.get("type") not in MARKER_TYPES:
        return draft(
            "error",
            kind="marker_error",
            terminal=False,
            text=f"{MARKER} needs a type among {', '.join(MARKER_TYPES)}: {line.strip()[:300]}",
        )
    event_type = MARKER_TYPES[body["type"]]
    fields: dict[str, Any] = {"kind": "marker", "text": str(body.get("text", ""))[:10_000]}
    if isinstance(body.get("progress"), (int, float)):
        fields["progress"] = max(0, min(100, int(body["progress"])))
    if isinstance(body.get("file"), str):
        fields["file"] = body["file"]
    if isinstance(body.get("line"), int):
        fields["line"] = body["line"]
    if isinstance(body.get("severity"), str):
        fields["severity"] = body["severity"]
    try:
        return Draft(event_type, EventPayload(**fields))  # type: ignore[arg-type]
    except ValidationError as exc:
        return draft("error", kind="marker_error", terminal=False, text=f"bad marker: {exc}")


def extract_markers(text: str) -> list[Draft]:
    """Every marker in a whole block of assistant text, in order."""
    if MARKER not in text:
        return []  # the common case, checked once per block rather than per line
    found = []
    for line in text.splitlines():
        parsed = parse_marker_line(line)
        if parsed is not None:
            found.append(parsed)
    return found


def strip_markers(text: str) -> str:
    """The text as a person should read it: marker lines removed (they are events of their own)."""
    if MARKER not in text:
        return text
    kept = [line for line in text.splitlines() if parse_marker_line(line) is None]
    return "\n".join(kept).strip()


def text_drafts(text: str, limit: int = 4000, **payload: Any) -> list[Draft]:
    """A whole block of assistant text: its readable part as progress (cut to ``limit``
    characters; the raw line keeps it all), then every marker in it."""
    if MARKER not in text and len(text) <= limit and not payload:  # most lines of a flood
        return [Draft("progress", text_payload("text", text))]
    markers = extract_markers(text)
    readable = strip_markers(text) if markers else text
    if len(readable) > limit:
        readable = readable[:limit] + f"… [{len(readable) - limit} more characters]"
    if not readable and markers:
        return markers
    # Most lines of a flood: text alone, whose payload needs no validation (see ``draft``).
    said = (
        Draft("progress", text_payload("text", readable))
        if not payload
        else draft("progress", kind="text", text=readable, **payload)
    )
    return [said, *markers] if markers else [said]


class MarkerBuffer:
    """Collects streamed text chunks (gemini deltas) and yields markers at whole lines.

    A marker may be split across chunks; ``flush`` handles the last line at a tool call
    or the end of the run.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> list[Draft]:
        """Add a chunk; return the markers on the lines it completed."""
        self._pending += chunk
        if "\n" not in self._pending:
            if len(self._pending) > PENDING_LIMIT:
                # No marker is this long: keep only the tail, where a marker could be starting.
                self._pending = self._pending[-PENDING_LIMIT // 2 :]
            return []
        *complete, self._pending = self._pending.split("\n")
        return extract_markers("\n".join(complete))

    def flush(self) -> list[Draft]:
        """Treat what is pending as a complete line."""
        rest, self._pending = self._pending, ""
        return extract_markers(rest)
