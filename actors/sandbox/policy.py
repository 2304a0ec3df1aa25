"""What an agent may run: blocked, high-risk and suspicious patterns, and how a call is judged.

The rules are data (name, regex) so the config can extend them; ``check_tool_call`` is what
claude's PreToolUse hook asks before a tool runs, ``find_suspicious`` what the guard asks of
every agent's recorded tool calls. Standard library only (the hook imports this).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

POLICY_VERSION = 1

# Blocked outright, before the command runs (regexes searched in the whole shell command).
# rm -r outside the allowed roots is checked by ``_rm_outside`` (it needs the paths).
BUILTIN_BLOCKED: tuple[tuple[str, str], ...] = (
    ("dd", r"(?:^|[\s;&|(`])(?:sudo\s+)?dd(?:\s|$)"),
    ("mkfs", r"(?:^|[\s;&|(`])(?:sudo\s+)?(?:mkfs(?:\.\w+)?|mke2fs|mkswap|wipefs)(?:\s|$)"),
    (
        "shutdown",
        r"(?:^|[\s;&|(`])(?:sudo\s+)?(?:shutdown|reboot|halt|poweroff)(?:\s|$)"
        r"|(?:^|[\s;&|(`])(?:sudo\s+)?(?:init|telinit)\s+[06](?:\s|$)"
        r"|systemctl\s+(?:poweroff|reboot|halt|kexec)",
    ),
    (
        "fork_bomb",
        r":\s*\(\s*\)\s*\{[^}]*:\s*\|\s*:\s*&"
        r"|\b(\w+)\s*\(\s*\)\s*\{[^}]*\b\1\s*\|\s*\1\s*&",
    ),
    ("device_write", r">\s*/dev/(?:sd|nvme|hd|vd|xvd|mmcblk)\w*"),
)

# Allowed only after the user says yes over the local channel (timeout: denied).
BUILTIN_HIGH_RISK: tuple[tuple[str, str], ...] = (
    ("git_push", r"\bgit\s+(?:-\S+\s+|-C\s+\S+\s+)*push\b"),
    (
        "package_install",
        r"\b(?:pip3?|uv\s+pip|python3?\s+-m\s+pip)\s+install\b"
        r"|\b(?:npm|pnpm)\s+(?:install|i|add|ci)\b|\byarn\s+(?:add|install)\b|\byarn\s*$"
        r"|\b(?:apt|apt-get|dnf|yum|zypper|apk|brew|port|snap)\s+(?:-\S+\s+)*(?:install|add)\b"
        r"|\b(?:gem|cargo|go|pipx|poetry)\s+(?:install|add)\b",
    ),
)

# Searched in every agent's tool calls (command text and paths): a match is a finding.
BUILTIN_SUSPICIOUS: tuple[tuple[str, str], ...] = (
    ("sudo", r"(?:^|[\s;&|(`])(?:sudo|doas)\s|(?:^|[\s;&|(`])su\s+-"),
    (
        "pipe_to_shell",
        r"\b(?:curl|wget|fetch)\b[^\n;&]*\|\s*(?:sudo\s+)?(?:ba|z|da|k|fi)?sh\b"
        r"|\b(?:curl|wget)\b[^\n;&]*\|\s*(?:sudo\s+)?python3?\b"
        r"|(?:ba|z)?sh\s+<\(\s*(?:curl|wget)\b",
    ),
    ("chmod_777", r"\bchmod\s+(?:-\S+\s+)*(?:0?777|a\+rwx|ugo\+rwx|o\+w)\b"),
    (
        "credential_read",
        r"\.ssh/(?:id_|authorized_keys|known_hosts|config)|\.aws/credentials"
        r"|\.netrc\b|\.git-credentials|\.pypirc|\.npmrc|\.docker/config\.json"
        r"|\.kube/config|/etc/shadow|\.gnupg/|gcloud/(?:credentials|"
        r"application_default)|\.config/gh/hosts",
    ),
)

SHELL_TOOLS = frozenset({"Bash", "run_shell_command", "shell", "exec_command", "local_shell"})
WRITE_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit", "write_file", "replace", "apply_patch"})
PATH_KEYS = ("file_path", "notebook_path", "path", "absolute_path", "dir_path")
_GLOB = re.compile(r"[*?\[]")
_SEGMENT_SPLIT = re.compile(r"\|\||&&|[;&|\n]|\$\(|`|\(|\)")
_WRAPPERS = frozenset(
    {
        "sudo",
        "doas",
        "env",
        "nice",
        "nohup",
        "time",
        "command",
        "exec",
        "builtin",
        "xargs",
        "ionice",
        "stdbuf",
        "busybox",
    }
)
_REDIRECT = re.compile(r"(?:^|[^<>&\d])(?:\d?>>?|&>>?)\s*([^\s;&|<>]+)")
_TEE = re.compile(r"\btee\s+(?:-\S+\s+)*([^\s;&|<>]+)")

Decision = Literal["allow", "block", "ask"]


@dataclass(frozen=True)
class Rule:
    """A named regex."""

    name: str
    pattern: str

    def search(self, text: str) -> re.Match[str] | None:
        """The first match in ``text``, if any."""
        return re.search(self.pattern, text)


@dataclass(frozen=True)
class Verdict:
    """What the hook answers: allow (claude's own checks still apply), block, or ask the user."""

    decision: Decision
    rule: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Finding:
    """A suspicious match in a tool call: which rule, and the text that matched."""

    rule: str
    evidence: str


@dataclass(frozen=True)
class Policy:
    """One session's policy for one agent, as written to ``sandbox/policy.json``."""

    agent: str
    roots: tuple[str, ...]  # where recursive removes are fine (target, scratch, workspace)
    write_roots: tuple[str, ...]  # where writes need no confirmation (target, scratch)
    home: str
    blocked: tuple[Rule, ...] = field(default_factory=tuple)
    high_risk: tuple[Rule, ...] = field(default_factory=tuple)
    confirm_writes_outside: bool = True
    channel: str | None = None
    confirm_timeout_s: float = 120.0

    def to_json(self) -> dict[str, Any]:
        """The JSON form the hook reads."""
        return {
            "version": POLICY_VERSION,
            "agent": self.agent,
            "roots": list(self.roots),
            "write_roots": list(self.write_roots),
            "home": self.home,
            "blocked": [[r.name, r.pattern] for r in self.blocked],
            "high_risk": [[r.name, r.pattern] for r in self.high_risk],
            "confirm_writes_outside": self.confirm_writes_outside,
            "channel": self.channel,
            "confirm_timeout_s": self.confirm_timeout_s,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Policy":
        """Read what ``to_json`` wrote. Raises ``KeyError``/``ValueError`` on a bad file."""
        if data.get("version") != POLICY_VERSION:
            raise ValueError(f"policy version {data.get('version')!r} is not {POLICY_VERSION}")
        return cls(
            agent=str(data["agent"]),
            roots=tuple(data["roots"]),
            write_roots=tuple(data["write_roots"]),
            home=str(data["home"]),
            blocked=tuple(Rule(n, p) for n, p in data["blocked"]),
            high_risk=tuple(Rule(n, p) for n, p in data["high_risk"]),
            confirm_writes_outside=bool(data.get("confirm_writes_outside", True)),
            channel=data.get("channel"),
            confirm_timeout_s=float(data.get("confirm_timeout_s", 120.0)),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read ``sandbox/policy.json``."""
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def rules(builtin: Iterable[tuple[str, str]], extra: Iterable[str] = (), prefix: str = "config") -> tuple[Rule, ...]:
    """Built-in rules plus the config's extra regexes (validated here: a bad one raises)."""
    out = [Rule(name, pattern) for name, pattern in builtin]
    for i, pattern in enumerate(extra, 1):
        re.compile(pattern)  # re.error names the problem
        out.append(Rule(f"{prefix}_{i}", pattern))
    return tuple(out)


# -- judging one call (the hook) ------------------------------------------------------------------


def check_tool_call(policy: Policy, tool: str, tool_input: dict[str, Any], cwd: str | None) -> Verdict:
    """Block, ask or allow one tool call before it runs."""
    cwd = cwd or os.getcwd()
    if tool in SHELL_TOOLS:
        command = str(tool_input.get("command") or "")
        return check_command(policy, command, cwd)
    # File tools (Write, Edit...) outside the target are left to claude itself: it refuses
    # any path outside its cwd and --add-dir list, and a directory granted later (Recovery's
    # relaunch with --add-dir) is a decision already made. Shell commands are what its own
    # checks do not see through, so shell writes outside ask (check_command).
    return Verdict("allow")


def check_command(policy: Policy, command: str, cwd: str) -> Verdict:
    """A shell command: blocked rules first, then rm outside the roots, then high-risk rules."""
    for rule in policy.blocked:
        if (match := rule.search(command)) is not None:
            return Verdict("block", rule.name, f"`{match.group(0).strip()}` is not allowed")
    for words in _segments(command):
        outside = _rm_outside(words, cwd, policy)
        if outside:
            return Verdict("block", "rm_outside", f"recursive rm of {outside}, outside the workspace and target")
    for rule in policy.high_risk:
        if (match := rule.search(command)) is not None:
            return Verdict("ask", rule.name, f"`{match.group(0).strip()}` needs your approval")
    if policy.confirm_writes_outside:
        for regex in (_REDIRECT, _TEE):
            for match in regex.finditer(command):
                target = match.group(1)
                if target.startswith("/dev/") and target in ("/dev/null", "/dev/stdout", "/dev/stderr"):
                    continue
                path = _absolute(target, cwd, policy.home)
                if path is not None and not _within(path, policy.write_roots):
                    return Verdict("ask", "write_outside_target", f"the command writes {path}, outside the target")
    return Verdict("allow")


def _segments(command: str) -> list[list[str]]:
    """Simple commands of a shell line, as words, with env assignments and wrappers dropped."""
    out = []
    for part in _SEGMENT_SPLIT.split(command):
        try:
            words = shlex.split(part, comments=False)
        except ValueError:
            words = part.split()
        while words and (re.fullmatch(r"\w+=.*", words[0]) or os.path.basename(words[0]) in _WRAPPERS):
            words = words[1:]
            while words and words[0].startswith("-"):  # the wrapper's own options
                words = words[1:]
        if words:
            out.append(words)
    return out


def _rm_outside(words: list[str], cwd: str, policy: Policy) -> str | None:
    """For ``rm -r ...``: the first path outside the roots (or not checkable), else None."""
    if os.path.basename(words[0]) != "rm":
        return None
    recursive = False
    paths = []
    options_done = False
    for word in words[1:]:
        if not options_done and word == "--":
            options_done = True
        elif not options_done and word.startswith("--"):
            recursive = recursive or word in ("--recursive", "--dir")
        elif not options_done and word.startswith("-") and len(word) > 1:
            recursive = recursive or "r" in word or "R" in word
        else:
            paths.append(word)
    if not recursive:
        return None
    for raw in paths:
        path = _absolute(raw, cwd, policy.home)
        if path is None:
            return raw  # $VARS, command substitution: cannot be checked, so not allowed
        whole_root = path in {os.path.realpath(r) for r in policy.roots} and not _GLOB.search(raw)
        if not _within(path, policy.roots) or whole_root:
            return path
    return None


def _absolute(raw: str, cwd: str, home: str) -> str | None:
    """The real absolute path a shell word names; None when it cannot be known statically."""
    if "$" in raw or "`" in raw:
        return None
    if raw == "~" or raw.startswith("~/"):
        raw = home + raw[1:]
    elif raw.startswith("~"):
        return None  # ~user
    glob = _GLOB.search(raw)
    if glob:
        raw = raw[: glob.start()] or "."
        raw = raw if raw.endswith("/") else os.path.dirname(raw) or "."
    path = os.path.join(cwd, raw)
    return os.path.realpath(path)  # symlinks resolved: a link out of the target is outside


def _within(path: str, roots: Iterable[str]) -> bool:
    for root in roots:
        real = os.path.realpath(root)
        if path == real or path.startswith(real.rstrip("/") + "/"):
            return True
    return False


# -- watching calls (the guard) -----------------------------------------------------------------


def find_suspicious(
    tool: str | None, tool_input: dict[str, Any] | None, text: str | None, home: str, extra: Iterable[Rule] = ()
) -> list[Finding]:
    """Suspicious patterns in one recorded tool call (any agent): sudo, curl | sh, ..."""
    tool_input = tool_input or {}
    texts = []
    command = tool_input.get("command")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    if isinstance(command, str):
        texts.append(command)
    paths = [v for k in PATH_KEYS if isinstance(v := tool_input.get(k), str)]
    texts.extend(paths)
    if not texts and text:
        texts.append(text)
    findings: list[Finding] = []
    for rule in (*rules(BUILTIN_SUSPICIOUS), *extra):
        for item in texts:
            if (match := rule.search(item)) is not None:
                findings.append(Finding(rule.name, _evidence(item, match)))
                break
    home_real = os.path.realpath(home)
    if tool in WRITE_TOOLS:
        for path in paths:
            real = os.path.realpath(os.path.expanduser(path))
            rel = os.path.relpath(real, home_real)
            if not rel.startswith("..") and rel.split("/", 1)[0].startswith("."):
                findings.append(Finding("home_dotfile_write", f"{tool} {path}"))
    if isinstance(command, str):
        for match in _REDIRECT.finditer(command):
            target = match.group(1)
            expanded = re.sub(r"^(~|\$HOME|\$\{HOME\})(?=/)", home, target)
            rel = os.path.relpath(os.path.realpath(expanded), home_real) if expanded.startswith("/") else ".."
            if not rel.startswith("..") and rel.split("/", 1)[0].startswith("."):
                findings.append(Finding("home_dotfile_write", _evidence(command, match)))
    return findings


def _evidence(text: str, match: re.Match[str]) -> str:
    start, end = max(0, match.start() - 60), min(len(text), match.end() + 60)
    return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")
