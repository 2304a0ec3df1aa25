"""What the three demo agents share: prompt headers, scenarios, the work they do, pacing.

Each CLI module subclasses ``DemoAgent`` and renders the same actions (say, write a file,
run a command, finish, fail) in its CLI's exact stream format and permission rules; ``run``
drives the assignment and the scenario. Only the standard library is imported here so the
demo starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

# Same value as ``actors.adapters.protocol.MARKER`` (a test checks it); imported from there
# it would pull in pydantic at startup.
MARKER = "ORCHESTRATE_EVENT"

SCENARIOS: dict[str, str] = {
    "success": "do the assignment and end normally (default)",
    "permission_error": "first try a write outside the workspace and get the CLI's real denial; the run still succeeds",
    "not_git_repo": "codex: as if outside a git repo (refused without --skip-git-repo-check)",
    "force_not_git_repo": "codex: the not-a-git-repo refusal even with --skip-git-repo-check",
    "untrusted": "gemini: the real trust check (exit 55 unless --skip-trust or GEMINI_CLI_TRUST_WORKSPACE=true)",
    "force_untrusted": "gemini: exit 55 with the trust error even with --skip-trust",
    "auth_error": "the CLI's exact missing/invalid credentials shape and exit code",
    "rate_limit": "the CLI's exact HTTP 429 shape and exit code",
    "license_refused": "gemini: every run refused with the 403 licence error of Code Assist for individuals "
    "(since 2026-06-18), exit 147",
    "client_retired": "gemini: refused at sign-in ('This client is no longer supported ...'), exit 41",
    "server_error": "the CLI's exact HTTP 5xx shape and exit code",
    "crash": "start, a line or two, a stack trace on stderr, exit 1 without a terminal event",
    "killed": "start, a line, then SIGKILL itself",
    "hang": "start, then wait forever on a read that never returns (a dead connection), printing nothing",
    "result_then_hang": "the whole successful run including the terminal line, then never exit",
    "heartbeat_silent": "start, then forever wake every ORCHESTRATE_DEMO_PACE s and use a millisecond of CPU "
    "(a CLI retrying without end), printing nothing",
    "busy_silent": "start, then a child burns CPU for ORCHESTRATE_DEMO_SILENT_S (5) s printing nothing "
    "(a silent test suite); then a normal run",
    "writing_silent": "start, then write a file in its folder every ORCHESTRATE_DEMO_PACE s for "
    "ORCHESTRATE_DEMO_SILENT_S (5) s printing nothing (a silent build), remove it; then a normal run",
    "garbage": "a non-JSON line, a cut JSON line, invalid UTF-8, a 10 MB line; then a normal run",
    "garbage_only": "the garbage lines, then exit 0 with no terminal event (a stream that is not the CLI's)",
    "hang_once": "the hang on the first run (marked by the file ORCHESTRATE_DEMO_ONCE_FILE), a normal run afterwards",
    "flood": "ORCHESTRATE_DEMO_FLOOD_LINES (100000) progress lines at full speed, then a run",
    "invalid_plan": "Kind plan: a plan that fails validation; valid on a retry quoting the error",
    "invalid_plan_always": "Kind plan: a plan that fails validation, also on retries",
    "concern": "Kind peer_review: verdict concern with a finding",
    "blocker": "Kind peer_review: verdict blocker with a finding",
    "memory_hog": "allocate ORCHESTRATE_DEMO_HOG_MB (512) MB in steps while printing, then a run",
    "fork_bomb_lite": "spawn ORCHESTRATE_DEMO_CHILDREN (50) `sleep 300` children in its group; then a normal run",
    "slow": "a normal run at ten times the pace",
    "risky_call": "first a high-risk shell call (git push --dry-run): claude's hook asks the person",
    "suspicious_call": "first a shell call the sandbox flags as suspicious (chmod 777 on a target file)",
    "rate_limit_once": "the rate_limit failure on the first run (marked by the file "
    "ORCHESTRATE_DEMO_ONCE_FILE), a normal run afterwards",
    "shell_script": "first run the shell command ORCHESTRATE_DEMO_SHELL in its folder (its shell tool, "
    "bash -c), and a milestone naming each file of ORCHESTRATE_DEMO_MILESTONE_FILES (os.pathsep-separated); "
    "then a normal run",
}

_HEADER = re.compile(r"^[ \t]*(Session|Assignment|Role|Kind|Task):[ \t]*(.*?)[ \t]*$", re.MULTILINE)
# The orchestrator's note when merging a run's work into the session branch conflicted.
_CONFLICT_NOTE = re.compile(r"conflicts in: (.+?)\. Your checkout now has")
_CONFLICT_RETRY = "finish resolving the merge conflict"
# Set to a path (e.g. docs/NOTES.md): the plan runs implement and review side by side, and
# each of them also writes this file, so that their merges into the session branch conflict.
SHARED_FILE_ENV = "ORCHESTRATE_DEMO_SHARED_FILE"
# Set to N: the plan is N independent implementer assignments (part1 .. partN), each writing a
# module of its own (app/<task>_part<k>.py): work for one agent's parallel runs.
PLAN_PARTS_ENV = "ORCHESTRATE_DEMO_PLAN_PARTS"
_RETRY_HINTS = ("depends on unknown", "validation error", "did not validate", "invalid plan")


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def scenario_for(agent: str, kind: str | None = None) -> str:
    """``ORCHESTRATE_DEMO_SCENARIO_<AGENT>_<KIND>`` (KIND: PLAN, WORK, PEER_REVIEW) wins over
    ``ORCHESTRATE_DEMO_SCENARIO_<AGENT>``, which wins over ``ORCHESTRATE_DEMO_SCENARIO``."""
    value = (
        (os.environ.get(f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}_{kind.upper()}") if kind else None)
        or os.environ.get(f"ORCHESTRATE_DEMO_SCENARIO_{agent.upper()}")
        or os.environ.get("ORCHESTRATE_DEMO_SCENARIO")
        or "success"
    )
    return value.strip().lower()


def parse_headers(prompt: str) -> dict[str, str]:
    """The first ``Session:``, ``Assignment:``, ``Role:``, ``Kind:``, ``Task:`` values by key."""
    found: dict[str, str] = {}
    for match in _HEADER.finditer(prompt):
        found.setdefault(match.group(1).lower(), match.group(2))
    return found


def slugify(task: str) -> str:
    words = re.findall(r"[a-z0-9]+", task.lower())
    stop = {
        "a",
        "an",
        "the",
        "and",
        "or",
        "of",
        "to",
        "for",
        "with",
        "in",
        "on",
        "that",
        "add",
        "write",
        "make",
        "build",
        "create",
        "implement",
        "please",
        "small",
        "simple",
        "python",
    }
    words = [w for w in words if w not in stop][:3] or ["feature"]
    slug = "_".join(words)
    return f"m_{slug}" if slug[0].isdigit() else slug


def marker(type_: str, text: str, **fields: Any) -> str:
    return f"{MARKER} " + json.dumps({"type": type_, "text": text, **fields}, ensure_ascii=False)


def within(path: Path, roots: list[Path]) -> bool:
    resolved = Path(os.path.abspath(path))
    return any(resolved == r or resolved.is_relative_to(r) for r in roots)


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def new_id() -> str:
    return str(uuid.uuid4())


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- what the agent produces -------------------------------------------------------------


def _parts_plan(task: str, short: str, parts: int) -> dict[str, Any]:
    """N independent implementer assignments, each with a module of its own."""
    return {
        "summary": f"[demo] {parts} independent parts: {short}",
        "assignments": [
            {
                "id": f"part{k}",
                "role": "implementer",
                "title": f"Part {k}: {short}",
                "instructions": f"Write part {k} of the task as a module of its own under app/ with its test: {task}",
                "depends_on": [],
                "weight": 10,
            }
            for k in range(1, parts + 1)
        ],
    }


def plan_object(task: str, invalid: bool) -> dict[str, Any]:
    short = task if len(task) <= 80 else task[:77] + "..."
    parts = env_int(PLAN_PARTS_ENV, 0)
    if parts > 0 and not invalid:
        return _parts_plan(task, short, parts)
    side_by_side = bool(os.environ.get(SHARED_FILE_ENV))  # two writers at once
    review_deps = ["qa"] if invalid else ["design"] if side_by_side else ["implement"]
    return {
        "summary": f"[demo] Design, implement and review: {short}",
        "assignments": [
            {
                "id": "design",
                "role": "architect",
                "title": f"Design: {short}",
                "instructions": f"Write docs/DESIGN.md: a short design note for the task: {task}",
                "depends_on": [],
                "weight": 45,
            },
            {
                "id": "implement",
                "role": "implementer",
                "title": f"Implement: {short}",
                "instructions": (
                    "Following docs/DESIGN.md, write the module under app/ and its test under "
                    f"tests/ for the task: {task}"
                ),
                "depends_on": ["design"],
                "weight": 45,
            },
            {
                "id": "review",
                "role": "reviewer",
                "title": f"Review: {short}",
                "instructions": ("Read the design, the module and its test; write docs/REVIEW.md with findings."),
                "depends_on": review_deps,
                "weight": 10,
            },
        ],
    }


def plan_reply(task: str, invalid: bool) -> str:
    body = json.dumps(plan_object(task, invalid), indent=2, ensure_ascii=False)
    return f"[demo] Here is the plan for the task.\n\n```json\n{body}\n```\n" + marker(
        "milestone", "[demo] plan ready", progress=100
    )


def verdict_reply(verdict: str, task: str) -> str:
    findings: list[dict[str, Any]] = []
    summary = f"[demo] The work for '{task[:80]}' looks complete and consistent."
    if verdict in ("concern", "blocker"):
        severity = "high" if verdict == "blocker" else "medium"
        summary = f"[demo] Found a {severity}-severity issue that should be addressed."
        findings.append(
            {
                "severity": severity,
                "file": "app/module.py",
                "line": 1,
                "text": "[demo] the input is not validated before use",
            }
        )
    body = json.dumps({"verdict": verdict, "summary": summary, "findings": findings}, indent=2)
    return f"[demo] My review verdict:\n\n```json\n{body}\n```"


def design_md(task: str, slug: str) -> str:
    return (
        f"# Design (demo)\n\nTask: {task}\n\n## Approach\n\n- A single module `app/{slug}.py` with "
        f"a pure function `{slug}(text)`.\n- A pytest test `tests/test_{slug}.py`.\n- No external "
        "dependencies.\n\n## Risks\n\n- The demo agent writes deterministic placeholder code.\n"
    )


def module_py(task: str, slug: str) -> str:
    return (
        f'"""{slug}: written by the demo implementer for the task: {task[:200]!s}."""\n\n\n'
        f"def {slug}(text: str) -> str:\n"
        '    """Return the text stripped and in title case."""\n'
        "    return text.strip().title()\n"
    )


def unit_test_py(slug: str) -> str:
    return (
        f"from app.{slug} import {slug}\n\n\ndef test_{slug}() -> None:\n"
        f'    assert {slug}("  hello world ") == "Hello World"\n'
    )


def resolve_conflict_markers(text: str) -> str:
    """The text with each conflict kept from both sides: ours, then theirs (the base, in the
    diff3 style, dropped), without the marker lines."""
    out: list[str] = []
    side: str | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<<"):
            side = "ours"
        elif side is not None and line.startswith("|||||||"):
            side = "base"
        elif side is not None and line.startswith("======="):
            side = "theirs"
        elif side is not None and line.startswith(">>>>>>>"):
            side = None
        elif side != "base":
            out.append(line)
    return "".join(out)


def has_conflict_markers(text: str) -> bool:
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines())


def review_md(task: str, listing: list[str]) -> str:
    files = "\n".join(f"- `{f}`" for f in listing) or "- (no files found)"
    return (
        f"# Review (demo)\n\nTask: {task}\n\n## Files read\n\n{files}\n\n## Findings\n\n- The "
        "module has a docstring and a test.\n- No blocking issue found.\n"
    )


# --- the agent ---------------------------------------------------------------------------


@dataclass
class Command:
    display: str  # as the agent would type it
    argv: list[str]  # what actually runs
    writes: bool = False


class DemoAgent:
    """One run of a demo CLI. Subclasses render the actions in their CLI's stream format."""

    name = "agent"

    def __init__(
        self,
        prompt: str,
        cwd: Path,
        extra_dirs: list[Path],
        session_id: str | None,
        stream: bool = True,
    ) -> None:
        self.prompt = prompt
        self.cwd = Path(os.path.abspath(cwd))
        self.extra_dirs = [Path(os.path.abspath(d)) for d in extra_dirs]
        self.session_id = session_id or new_id()
        self.stream = stream
        self.headers = parse_headers(prompt)
        self.task = self.headers.get("task") or prompt.strip().splitlines()[0][:200] if prompt.strip() else ""
        self.scenario = scenario_for(self.name, self.headers.get("kind"))
        self.pace = env_float("ORCHESTRATE_DEMO_PACE", 0.25) * (10 if self.scenario == "slow" else 1)
        self.started = time.monotonic()
        self.tokens_in = 0
        self.tokens_out = 0
        self.tool_calls = 0
        self.written: list[str] = []
        self.last_text = ""

    # -- output ----------------------------------------------------------------------
    def emit(self, obj: dict[str, Any], pace: bool = True) -> None:
        if self.stream:
            self.raw((json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
        if pace and self.pace > 0:
            time.sleep(self.pace)

    @staticmethod
    def raw(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    @staticmethod
    def err(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def count(self, text_in: str, text_out: str) -> None:
        self.tokens_in += 40 + len(text_in) // 4
        self.tokens_out += 1 + len(text_out) // 4

    def roots(self) -> list[Path]:
        return [self.cwd, *self.extra_dirs]

    # -- actions each CLI renders (overridden) ---------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def say(self, text: str) -> None:
        raise NotImplementedError

    def write(self, path: Path, content: str) -> bool:
        raise NotImplementedError

    def shell(self, command: Command) -> str | None:
        raise NotImplementedError

    def noise(self, i: int) -> None:
        raise NotImplementedError

    def finish(self, final_text: str) -> int:
        raise NotImplementedError

    def fail(self, cause: str) -> int:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------------------
    def do_write(self, path: Path, content: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self.written.append(str(path))

    def run_command(self, command: Command) -> tuple[str, int]:
        try:
            done = subprocess.run(
                command.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{exc}\n", 1
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        return out, done.returncode


def _sleep_forever() -> None:
    """Block on a read nothing will ever answer, as a CLI on a dead connection does."""
    read_end, _write_end = os.pipe()  # the write end stays open here: no EOF either
    while True:
        os.read(read_end, 1)


def _heartbeat_forever(pace: float) -> None:
    """Wake now and then and use a millisecond of CPU: a retry loop's trickle, not work."""
    while True:
        time.sleep(max(pace, 0.05))
        started = time.process_time()
        while time.process_time() - started < 0.001:
            pass


_BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def _silent_work(agent: DemoAgent, scenario: str) -> None:
    """Work that prints nothing for ORCHESTRATE_DEMO_SILENT_S: a child burning CPU (a test
    suite), or files written in the folder now and then (a build)."""
    seconds = env_float("ORCHESTRATE_DEMO_SILENT_S", 5.0)
    if scenario == "busy_silent":
        subprocess.run([sys.executable, "-c", _BURN.format(seconds=seconds)], check=False)
        return
    log = agent.cwd / "silent-build.log"
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        step += 1
        log.write_text(f"step {step}\n", encoding="utf-8")
        time.sleep(max(agent.pace, 0.05))
    log.unlink(missing_ok=True)


def _garbage(agent: DemoAgent) -> None:
    agent.raw(b"[demo] this line is not JSON at all\n")
    agent.raw(b'{"type":"assistant","message":{"id":"msg_cut","content":[{"type":"te\n')
    agent.raw(b'{"type":"demo","text":"\xff\xfe invalid \xc3\x28 utf-8"}\n')
    chunk = b"x" * (1 << 20)
    agent.raw(b'{"type":"demo_noise","data":"')
    for _ in range(10):
        agent.raw(chunk)
    agent.raw(b"\n")  # never closed: JSON-looking, 10 MB, invalid


def _memory_hog(agent: DemoAgent) -> list[bytearray]:
    total = env_int("ORCHESTRATE_DEMO_HOG_MB", 512)
    step = 32
    hoard: list[bytearray] = []
    done = 0
    while done < total:
        size = min(step, total - done)
        hoard.append(bytearray(b"\x01") * (size << 20))  # touched, so resident
        done += size
        agent.say(
            f"[demo] holding {done} MB of memory\n"
            + marker(
                "progress",
                f"[demo] allocated {done} of {total} MB",
                progress=min(50, int(50 * done / max(total, 1))),
            )
        )
    return hoard


def _fork_children(agent: DemoAgent) -> list[subprocess.Popen[bytes]]:
    children = []
    for _ in range(env_int("ORCHESTRATE_DEMO_CHILDREN", 50)):
        children.append(
            subprocess.Popen(
                ["sleep", "300"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    agent.say(
        f"[demo] started {len(children)} helper processes\n"
        + marker("progress", f"[demo] {len(children)} children running", progress=20)
    )
    return children


def _work(agent: DemoAgent) -> str:
    """The assignment itself, from the prompt headers. Returns the final text."""
    kind = agent.headers.get("kind", "").lower()
    role = agent.headers.get("role", "").lower()
    task = agent.task or "the task"
    if kind == "plan":
        invalid = agent.scenario == "invalid_plan_always" or (
            agent.scenario == "invalid_plan" and not any(h in agent.prompt.lower() for h in _RETRY_HINTS)
        )
        text = plan_reply(task, invalid)
    elif kind == "peer_review":
        text = verdict_reply(agent.scenario if agent.scenario in ("concern", "blocker") else "approve", task)
    elif _CONFLICT_NOTE.search(agent.prompt) or _CONFLICT_RETRY in agent.prompt:
        text = _resolve_conflicts(agent)
    elif role in _ROLE_WORK:
        part = agent.headers.get("assignment", "")
        parted = os.environ.get(PLAN_PARTS_ENV) and part.startswith("part")
        text = _ROLE_WORK[role](agent, task, slugify(task) + (f"_{part}" if parted else ""))
        if role in ("implementer", "reviewer") and os.environ.get(SHARED_FILE_ENV):
            _write_shared(agent, role, os.environ[SHARED_FILE_ENV])
    else:
        text = (
            f"[demo] I am the demo {agent.name} agent; no Kind/Role header was given, so I only answer.\n"
            f"You asked: {task}"
        )
    agent.say(text)
    return text


def _resolve_conflicts(agent: DemoAgent) -> str:
    """The orchestrator merged the session branch into this checkout and it conflicted: keep
    both sides' lines in every file it names (or, not named, every file with markers)."""
    named = _CONFLICT_NOTE.search(agent.prompt)
    if named:
        files = [agent.cwd / f.strip() for f in named.group(1).split(",") if " more" not in f]
    else:
        files = [p for p in sorted(agent.cwd.rglob("*")) if p.is_file() and ".git" not in p.parts]
    agent.say("[demo] The merge conflicted; resolving it.\n" + marker("progress", "[demo] resolving", progress=30))
    resolved = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if has_conflict_markers(text) and agent.write(path, resolve_conflict_markers(text)):
            resolved.append(str(path.relative_to(agent.cwd)))
    listed = ", ".join(resolved) or "nothing left to resolve"
    return f"[demo] Kept both sides of the merge in: {listed}.\n" + marker(
        "milestone", f"[demo] merge resolved ({listed})", progress=100
    )


def _write_shared(agent: DemoAgent, role: str, relative: str) -> None:
    """The line this role adds to the shared file (an existing file keeps its lines)."""
    path = agent.cwd / relative
    try:
        before = path.read_text(encoding="utf-8")
    except OSError:
        before = ""
    which = agent.headers.get("assignment", "")  # two runs of one agent: two different lines
    agent.write(path, f"{before}- {role} ({agent.name}) in {which}: [demo] notes on the task\n")


def _design(agent: DemoAgent, task: str, slug: str) -> str:
    agent.say(
        "[demo] I will write a short design note for the task.\n"
        + marker("progress", "[demo] writing docs/DESIGN.md", progress=30)
    )
    if agent.write(agent.cwd / "docs" / "DESIGN.md", design_md(task, slug)):
        return "[demo] Design note written to docs/DESIGN.md.\n" + marker(
            "milestone", "[demo] design written", file="docs/DESIGN.md", progress=100
        )
    return "[demo] I could not write docs/DESIGN.md: the write was refused.\n" + marker(
        "blocker", "[demo] writing docs/DESIGN.md was refused"
    )


def _implement(agent: DemoAgent, task: str, slug: str) -> str:
    agent.say(
        f"[demo] I will implement app/{slug}.py and its test.\n"
        + marker("progress", f"[demo] writing app/{slug}.py", progress=20)
    )
    module = agent.cwd / "app" / f"{slug}.py"
    test = agent.cwd / "tests" / f"test_{slug}.py"
    ok = agent.write(module, module_py(task, slug))
    ok = agent.write(test, unit_test_py(slug)) and ok
    if not ok:
        return f"[demo] I could not write app/{slug}.py: the write was refused.\n" + marker(
            "blocker", f"[demo] writing app/{slug}.py was refused"
        )
    agent.say("[demo] Checking that both files compile.\n" + marker("progress", "[demo] compiling", progress=70))
    agent.shell(
        Command(
            f"python -m py_compile app/{slug}.py tests/test_{slug}.py",
            [sys.executable, "-m", "py_compile", str(module), str(test)],
            writes=True,
        )
    )
    return f"[demo] Implemented app/{slug}.py with a test in tests/test_{slug}.py.\n" + marker(
        "milestone", f"[demo] implemented {slug}", file=f"app/{slug}.py", progress=100
    )


def _review(agent: DemoAgent, task: str, slug: str) -> str:
    agent.say(
        "[demo] Reading the workspace before writing the review.\n"
        + marker("progress", "[demo] reading files", progress=20)
    )
    agent.shell(Command("ls -R", ["ls", "-R"]))
    found = sorted(
        str(p.relative_to(agent.cwd))
        for pattern in ("docs/DESIGN.md", "app/*.py", "tests/test_*.py")
        for p in agent.cwd.glob(pattern)
    )
    if found:
        agent.shell(Command("cat " + " ".join(found), ["cat", *found]))
    ok = agent.write(agent.cwd / "docs" / "REVIEW.md", review_md(task, found))
    finding = marker(
        "finding",
        f"[demo] reviewed {len(found)} file(s); no blocking issue",
        file=found[0] if found else "docs/REVIEW.md",
        line=1,
    )
    if ok:
        return f"[demo] Review written to docs/REVIEW.md.\n{finding}\n" + marker(
            "milestone", "[demo] review written", file="docs/REVIEW.md", progress=100
        )
    return f"[demo] I could not write docs/REVIEW.md: Read-only file system.\n{finding}\n" + marker(
        "blocker", "[demo] writing docs/REVIEW.md was refused"
    )


# role -> the work, given the agent, the task and the task's slug; returns the final text
_ROLE_WORK: dict[str, Callable[[DemoAgent, str, str], str]] = {
    "architect": _design,
    "implementer": _implement,
    "reviewer": _review,
}
_FAILURES = ("auth_error", "rate_limit", "server_error")
_GEMINI_FAILURES = ("license_refused", "client_retired")


def run(agent: DemoAgent) -> int:
    """Play the scenario around the assignment. Returns the exit code."""
    sc = agent.scenario
    once = os.environ.get("ORCHESTRATE_DEMO_ONCE_FILE")
    if sc == "rate_limit_once" and once and not os.path.exists(once):
        Path(once).touch()
        return agent.fail("rate_limit")
    if sc in _FAILURES or (sc in _GEMINI_FAILURES and agent.name == "gemini"):
        return agent.fail(sc)
    agent.start()
    if sc == "hang" or (sc == "hang_once" and once and not os.path.exists(once)):
        if once:
            Path(once).touch()
        _sleep_forever()
    if sc == "heartbeat_silent":
        _heartbeat_forever(agent.pace)
    if sc in ("busy_silent", "writing_silent"):
        _silent_work(agent, sc)
    if sc == "garbage_only":
        _garbage(agent)
        return 0
    if sc in ("crash", "killed"):
        return _crash(agent, killed=sc == "killed")
    keep = _before_work(agent, sc)
    final = _work(agent)
    code = agent.finish(final)
    if sc == "result_then_hang":
        _sleep_forever()
    del keep  # held (memory, children) until the run is over
    return code


def _crash(agent: DemoAgent, killed: bool) -> int:
    agent.say("[demo] Starting on the assignment.\n" + marker("progress", "[demo] starting", progress=5))
    if killed:
        os.kill(os.getpid(), signal.SIGKILL)
    agent.err(
        "TypeError: Cannot read properties of undefined (reading 'content')\n    at demoTurn "
        f"(file:///usr/lib/node_modules/demo/{agent.name}.js:1:4242)\n    at "
        "process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
    )
    return 1


def _before_work(agent: DemoAgent, sc: str) -> list[Any]:
    """What the scenario does before the assignment; returns what must be held until the end."""
    keep: list[Any] = []
    if sc == "garbage":
        _garbage(agent)
    if sc == "flood":
        for i in range(env_int("ORCHESTRATE_DEMO_FLOOD_LINES", 100_000)):
            agent.noise(i)
    if sc == "memory_hog":
        keep.append(_memory_hog(agent))
    if sc == "fork_bomb_lite":
        keep.append(_fork_children(agent))
    if sc == "risky_call":
        # A high-risk call (claude's hook asks the person first); harmless: a dry run, no remote.
        agent.say("[demo] Let me publish the branch first.\n")
        agent.shell(Command("git push --dry-run demo-remote HEAD", ["git", "push", "--dry-run", "demo-remote", "HEAD"]))
    if sc == "suspicious_call":
        # A call the sandbox's watch flags (chmod 777); harmless: on a file of the target.
        agent.say("[demo] Making the entry point writable for everyone.\n")
        agent.shell(Command("chmod 777 app/main.py", ["chmod", "777", "app/main.py"], writes=True))
    if sc == "shell_script":
        _shell_script(agent)
    if sc == "permission_error":
        outside = agent.cwd.parent / f"{agent.cwd.name}-outside" / "NOTES.md"
        agent.say(
            f"[demo] First I will leave a note next to the workspace, in {outside}.\n"
            + marker("progress", "[demo] writing a note outside the workspace", progress=10)
        )
        agent.write(outside, "[demo] a note written outside the workspace\n")
    return keep


def piped_input(first_bytes_wait_s: float | None) -> str | None:
    """What is piped into stdin, as the real CLIs read their prompt there: None when stdin is a
    terminal or missing, or (``first_bytes_wait_s`` given) when nothing came in that time;
    else everything up to its end."""
    stream = sys.stdin
    if stream is None or stream.isatty():
        return None
    if first_bytes_wait_s is not None:
        import select  # only here: the demo starts fast

        ready, _, _ = select.select([stream], [], [], first_bytes_wait_s)
        if not ready:
            return None
    return stream.buffer.read().decode("utf-8", "replace")


def _shell_script(agent: DemoAgent) -> None:
    """What a prompt-injected model might make its CLI do: a shell command, then milestones
    naming files (each a review reads)."""
    command = os.environ.get("ORCHESTRATE_DEMO_SHELL", "")
    if command:
        agent.say("[demo] Setting up my tools first.\n")
        agent.shell(Command(command, ["bash", "-c", command], writes=True))
    for name in filter(None, os.environ.get("ORCHESTRATE_DEMO_MILESTONE_FILES", "").split(os.pathsep)):
        agent.say(f"[demo] Done with {name}.\n" + marker("milestone", f"[demo] wrote {name}", file=name))


class UsageExit(Exception):
    def __init__(self, text: str, code: int = 1) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse that reports errors the CLI's way (``UsageExit``) instead of exiting 2."""

    def __init__(self, prog: str, error_format: str, error_code: int) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)
        self._format = error_format
        self._code = error_code

    def error(self, message: str) -> NoReturn:
        raise UsageExit(self._format.format(message=message), self._code)

    def parse_cli(self, argv: list[str], rest: str) -> tuple[argparse.Namespace, list[str]]:
        """Options and positionals in any order; after ``--`` all go to the ``rest`` list."""
        tail: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, tail = argv[:cut], argv[cut + 1 :]
        args, unknown = self.parse_known_intermixed_args(argv)
        setattr(args, rest, [*(getattr(args, rest) or []), *tail])
        return args, unknown


def guarded(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a CLI main; a ``UsageExit`` prints its text on stderr and becomes the exit code."""
    try:
        return main(argv)
    except UsageExit as exc:
        DemoAgent.err(exc.text)
        return exc.code
    except BrokenPipeError:
        return 1
