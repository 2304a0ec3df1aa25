"""What an agent may run: blocked, high-risk and suspicious patterns, and how a call is judged.

The rules are data (name, regex) so the config can extend them; ``check_tool_call`` is what
claude's PreToolUse hook asks before a tool runs, ``find_suspicious`` what the guard asks of
every agent's recorded tool calls. Standard library only (the hook imports this).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from collections.abc import Iterable

from meta_orchestrator.actors.sandbox.shell import RESERVED, Redirect, ShellSyntaxError, Simple, Word, parse

POLICY_VERSION = 1
# Set by the worker in every run's environment: the folder the run works in (its checkout, or
# the target). The hook judges "outside the target" against it, if the policy allows it.
RUN_WORKDIR_ENV = "ORCHESTRATE_WORKDIR"

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
_REDIRECT = re.compile(r"(?:^|[^<>&\d])(?:\d?>>?|&>>?)\s*([^\s;&|<>]+)")

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
    protected: tuple[str, ...] = ()  # the sandbox's own files: never written, never removed
    secret: str = ""  # proves to the guard that a question comes from this session's hook
    # Where a run's own working folder may be (the target, or the session's checkouts): a
    # run working there may write it, as a root (``for_run``). Nothing else is taken from
    # the run's environment.
    run_roots: tuple[str, ...] = ()

    def for_run(self, workdir: str | None) -> Policy:
        """The policy for one run working in ``workdir``: that folder is a root too when it
        lies within ``run_roots`` (one checkout, not its siblings, not the user's tree)."""
        if not workdir:
            return self
        real = os.path.realpath(workdir)
        if not _within(real, self.run_roots) or _within(real, self.protected):
            return self
        return replace(self, roots=(*self.roots, real), write_roots=(*self.write_roots, real))

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
            "protected": list(self.protected),
            "secret": self.secret,
            "run_roots": list(self.run_roots),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
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
            protected=tuple(data.get("protected", ())),
            secret=str(data.get("secret", "")),
            run_roots=tuple(data.get("run_roots", ())),
        )


def rules(builtin: Iterable[tuple[str, str]], extra: Iterable[str] = (), prefix: str = "config") -> tuple[Rule, ...]:
    """Built-in rules plus the config's extra regexes (validated here: a bad one raises)."""
    out = [Rule(name, pattern) for name, pattern in builtin]
    for i, pattern in enumerate(extra, 1):
        re.compile(pattern)  # re.error names the problem
        out.append(Rule(f"{prefix}_{i}", pattern))
    return tuple(out)


# -- judging one call (the hook) ------------------------------------------------------------------
#
# The OS sandbox is the wall; this layer explains and asks. What it can analyse (rm -r of a
# literal path, a write to a literal path) it judges; what it cannot (nested shells, eval,
# substitutions in command position, one-liners, xargs, find -exec) asks the user.

_STRENGTH = {"allow": 0, "ask": 1, "block": 2}
_SAFE_TARGETS = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "yash", "rbash"})
# interpreter -> the options whose value is program text
INTERPRETERS: dict[str, frozenset[str]] = {
    "python": frozenset({"-c"}),
    "pypy": frozenset({"-c"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "nodejs": frozenset({"-e", "--eval", "-p", "--print"}),
    "deno": frozenset({"eval"}),
    "bun": frozenset({"-e", "--eval", "-p", "--print"}),
    "php": frozenset({"-r"}),
    "lua": frozenset({"-e"}),
    "luajit": frozenset({"-e"}),
    "rscript": frozenset({"-e"}),
    "tclsh": frozenset(),
    "osascript": frozenset({"-e"}),
    "pwsh": frozenset({"-c", "-command"}),
    "powershell": frozenset({"-c", "-command"}),
}
AWKS = frozenset({"awk", "gawk", "mawk", "nawk", "busybox-awk"})
BLOCKED_PROGRAMS = {
    "dd": "dd",
    "mkfs": "mkfs",
    "mke2fs": "mkfs",
    "mkswap": "mkfs",
    "wipefs": "mkfs",
    "shutdown": "shutdown",
    "reboot": "shutdown",
    "halt": "shutdown",
    "poweroff": "shutdown",
}
# Options that take a value, per wrapper; anything else starting with "-" is a flag. A
# wrapper option not listed (or a long one we cannot read) makes the call ask.
_WRAPPER_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # (with a value, flags)
    "sudo": (
        frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "-R", "--user", "--group", "--host"})
        | frozenset({"--prompt", "--close-from", "--chdir", "--role", "--type", "--other-user", "--command-timeout"}),
        frozenset({"-E", "-H", "-n", "-S", "-b", "-k", "-K", "-A", "-P", "-B", "-N", "--preserve-env"})
        | frozenset({"--non-interactive", "--stdin", "--background", "--askpass", "--set-home", "--reset-timestamp"}),
    ),
    "doas": (frozenset({"-u", "-C"}), frozenset({"-n", "-s"})),
    "env": (
        frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
        frozenset({"-i", "-0", "-v", "--ignore-environment", "--null", "--debug", "-"}),
    ),
    "nice": (frozenset({"-n", "--adjustment"}), frozenset()),
    "ionice": (frozenset({"-c", "-n", "--class", "--classdata"}), frozenset({"-t", "--ignore"})),
    "timeout": (
        frozenset({"-s", "-k", "--signal", "--kill-after"}),
        frozenset({"--foreground", "--preserve-status", "-v", "--verbose", "-f", "-p"}),
    ),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), frozenset()),
    "nohup": (frozenset(), frozenset()),
    "time": (frozenset({"-f", "--format", "-o", "--output"}), frozenset({"-p", "-a", "-v", "--portability"})),
    "command": (frozenset(), frozenset({"-p"})),
    "builtin": (frozenset(), frozenset()),
    "exec": (frozenset({"-a"}), frozenset({"-c", "-l"})),
    "setsid": (frozenset(), frozenset({"-c", "-f", "-w", "--ctty", "--fork", "--wait"})),
    "chroot": (frozenset({"--userspec", "--groups"}), frozenset({"--skip-chdir"})),
    "unbuffer": (frozenset(), frozenset({"-p"})),
    "caffeinate": (frozenset({"-t", "-w"}), frozenset({"-d", "-i", "-m", "-s", "-u"})),
    "flock": (frozenset({"-w", "-E", "--timeout", "--conflict-exit-code"}), frozenset({"-s", "-x", "-n", "-o"})),
    "chronic": (frozenset(), frozenset()),
    "strace": (frozenset({"-o", "-e", "-p", "-s", "-u"}), frozenset({"-f", "-ff", "-q", "-c", "-t", "-tt"})),
}
_WRAPPER_POSITIONALS = {"timeout": 1, "chroot": 1, "flock": 1}  # operands before the command
_CHDIR_OPTIONS = frozenset({"-C", "--chdir", "-D"})
# What xargs may feed arguments to without asking: reads only.
READ_ONLY = frozenset(
    {"echo", "printf", "cat", "head", "tail", "wc", "grep", "egrep", "fgrep", "rg", "ls", "file", "stat", "du"}
    | {"sort", "uniq", "basename", "dirname", "realpath", "readlink", "md5sum", "sha1sum", "sha256sum", "test"}
    | {"true", "false", "diff", "cmp", "less", "more", "jq", "nl", "od", "hexdump", "strings", "tr", "cut"}
)
# program -> options that take a value (so that operands are found correctly)
_VALUE_OPTIONS: dict[str, frozenset[str]] = {
    "cp": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "mv": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "ln": frozenset({"-t", "--target-directory", "-S", "--suffix"}),
    "install": frozenset({"-t", "--target-directory", "-m", "--mode", "-o", "--owner", "-g", "--group", "-S"}),
    "truncate": frozenset({"-s", "--size", "-r", "--reference"}),
    "shred": frozenset({"-n", "--iterations", "-s", "--size", "--random-source"}),
    "touch": frozenset({"-d", "--date", "-r", "--reference", "-t"}),
    "mkdir": frozenset({"-m", "--mode"}),
    "chmod": frozenset({"--reference"}),
    "chown": frozenset({"--reference", "--from"}),
    "chgrp": frozenset({"--reference"}),
    "tee": frozenset(),
    "rsync": frozenset({"-e", "--rsh", "--exclude", "--include", "--filter", "-f", "--files-from"}),
    "sed": frozenset({"-e", "--expression", "-f", "--file", "-l", "--line-length"}),
}
# program -> which operands it writes: "all", "last" (the destination), or "after_first"
_WRITES: dict[str, str] = {
    "rmdir": "all",
    "unlink": "all",
    "shred": "all",
    "truncate": "all",
    "touch": "all",
    "mkdir": "all",
    "tee": "all",
    "chmod": "after_first",
    "chown": "after_first",
    "chgrp": "after_first",
    "cp": "last",
    "ln": "last",
    "install": "last",
    "rsync": "last",
    "mv": "all",  # the sources disappear from where they were
}


def check_tool_call(policy: Policy, tool: str, tool_input: dict[str, Any], cwd: str | None) -> Verdict:
    """Block, ask or allow one tool call before it runs."""
    cwd = cwd or os.getcwd()
    if tool in SHELL_TOOLS:
        command = str(tool_input.get("command") or "")
        return check_command(policy, command, cwd)
    if tool in WRITE_TOOLS:
        for key in ("file_path", "notebook_path", "path"):
            raw = tool_input.get(key)
            if isinstance(raw, str) and raw:
                return _check_write_path(policy, os.path.realpath(os.path.join(cwd, os.path.expanduser(raw))), tool)
    return Verdict("allow")


def _check_write_path(policy: Policy, path: str, what: str) -> Verdict:
    if _within(path, policy.protected):
        return Verdict("block", "sandbox_files", f"{what} would change {path}, one of the sandbox's own files")
    if policy.confirm_writes_outside and not _within(path, policy.write_roots):
        return Verdict("ask", "write_outside_target", f"{what} writes {path}, outside the target")
    return Verdict("allow")


def check_command(policy: Policy, command: str, cwd: str) -> Verdict:
    """A shell command: the strongest verdict of its parts (block, then ask, then allow)."""
    return _judge_text(policy, command, cwd, depth=0)


def _judge_text(policy: Policy, command: str, cwd: str, depth: int) -> Verdict:
    verdicts = []
    for rule in policy.blocked:
        if (match := rule.search(command)) is not None:
            verdicts.append(Verdict("block", rule.name, f"`{match.group(0).strip()}` is not allowed"))
    try:
        parsed = parse(command)
    except ShellSyntaxError as exc:
        return _strongest([*verdicts, Verdict("ask", "unparsable", f"the command cannot be analysed ({exc})")])
    after_cd = False
    for simple in parsed.commands:
        verdict, changes_dir = _judge_simple(policy, simple, cwd, after_cd)
        after_cd = after_cd or changes_dir
        verdicts.append(verdict)
    if depth < 4:
        verdicts.extend(_judge_text(policy, nested, cwd, depth + 1) for nested in parsed.nested)
    else:
        verdicts.append(Verdict("ask", "nested_shell", "substitutions nested too deep to analyse"))
    for rule in policy.high_risk:
        texts = [command, *(_normalised(s) for s in parsed.commands)]
        for text in texts:
            if (match := rule.search(text)) is not None:
                verdicts.append(Verdict("ask", rule.name, f"`{match.group(0).strip()}` needs your approval"))
                break
    return _strongest(verdicts)


def _strongest(verdicts: Iterable[Verdict]) -> Verdict:
    best = Verdict("allow")
    for verdict in verdicts:
        if _STRENGTH[verdict.decision] > _STRENGTH[best.decision]:
            best = verdict
    return best


def _normalised(simple: Simple) -> str:
    """The command as the program sees it, wrappers dropped, for the configured regexes."""
    words, _problem, _chdir = _unwrap([w for w in simple.words if not _is_assignment(w)])
    return " ".join(w.text for w in words)


def _is_assignment(word: Word) -> bool:
    return re.match(r"[A-Za-z_]\w*\+?=", word.text) is not None


def _program(word: Word) -> str:
    name = os.path.basename(word.text).lower()
    if re.fullmatch(r"(?:python|pypy)[\d.]*", name):
        return "python" if name.startswith("python") else "pypy"
    if name.startswith("mkfs"):
        return "mkfs"
    return name


def _unwrap(words: list[Word]) -> tuple[list[Word], str | None, bool]:
    """Drop wrappers (sudo -u x, nice -n 5, timeout 5, env -u X ...) in front of a command.

    Returns the words from the real program on, a problem when a wrapper's options cannot be
    read, and whether a wrapper changed the directory (``env -C``, ``sudo -D``).
    """
    chdir = False
    while words:
        while words and words[0].text in RESERVED and not words[0].quoted:
            words = words[1:]
        if not words:
            break
        name = _program(words[0])
        if name == "busybox" and len(words) > 1:
            words = words[1:]
            continue
        if name not in _WRAPPER_OPTIONS:
            break
        rest, problem, changes_dir = _after_wrapper_options(name, words)
        chdir = chdir or changes_dir
        if problem:
            return words, problem, chdir
        if name == "sudo" and any(w.text in ("-s", "-i", "--shell", "--login") for w in words[1:2]):
            return words, "sudo -s/-i runs a shell", chdir
        positionals = _WRAPPER_POSITIONALS.get(name, 0)
        if len(rest) < positionals:
            return [], None, chdir
        words = rest[positionals:]
    return words, None, chdir


def _after_wrapper_options(name: str, words: list[Word]) -> tuple[list[Word], str | None, bool]:
    """The words after the options of the wrapper ``words[0]``; a problem when one of them
    cannot be read; whether one changes the directory."""
    with_value, flags = _WRAPPER_OPTIONS[name]
    rest = words[1:]
    chdir = False
    while rest:
        text = rest[0].text
        if name == "env" and re.match(r"[A-Za-z_]\w*=", text):
            rest = rest[1:]
            continue
        if text == "--":
            return rest[1:], None, chdir
        if not text.startswith("-") or text == "-" and name != "env":
            break
        option, eq, _value = text.partition("=")
        if name == "nice" and re.fullmatch(r"-\d+", text):
            rest = rest[1:]
            continue
        chdir = chdir or (option in _CHDIR_OPTIONS and name in ("env", "sudo"))
        if name == "env" and option in ("-S", "--split-string"):
            return rest, "env -S splits a string into a command", chdir
        if option in with_value:
            rest = rest[1:] if eq else rest[2:]
        elif _bundled(option, with_value, flags):
            rest = rest[1:]
        else:
            return rest, f"`{name} {text}` is an option the hook cannot read", chdir
    return rest, None, chdir


def _bundled(option: str, with_value: frozenset[str], flags: frozenset[str]) -> bool:
    """A short option with its value attached ("-n5", "-uroot"), a known flag, or short flags
    run together ("-iu")."""
    short = not option.startswith("--")
    if len(option) > 2 and short and option[:2] in with_value:
        return True
    return option in flags or (short and all(f"-{c}" in flags for c in option[1:]))


def _operands(words: list[Word], with_value: frozenset[str]) -> tuple[list[str], list[Word], dict[str, Word]]:
    """(options, operands, option values) of a command's arguments (``--`` ends options)."""
    options: list[str] = []
    operands: list[Word] = []
    values: dict[str, Word] = {}
    i, done = 0, False
    while i < len(words):
        word = words[i]
        if not done and word.text == "--":
            done = True
        elif not done and word.text.startswith("-") and word.text != "-" and not word.dynamic:
            option, eq, value = word.text.partition("=")
            options.append(option)
            if option in with_value and not eq and i + 1 < len(words):
                values[option] = words[i + 1]
                i += 1
            elif option in with_value and eq:
                values[option] = Word(text=value)
        else:
            operands.append(word)
        i += 1
    return options, operands, values


def _long_prefix(option: str, full: str) -> bool:
    """GNU getopt accepts any unambiguous prefix of a long option (``--rec`` = ``--recursive``)."""
    return option.startswith("--") and len(option) >= 3 and full.startswith(option)


def _judge_simple(policy: Policy, simple: Simple, cwd: str, after_cd: bool) -> tuple[Verdict, bool]:
    """One simple command; also whether it changes the directory for what follows."""
    verdicts = [_judge_redirect(policy, r, cwd, after_cd) for r in simple.redirects]
    words = [w for w in simple.words if not _is_assignment(w)]
    words, problem, chdir = _unwrap(words)
    if problem:
        verdicts.append(Verdict("ask", "wrapper_options", problem))
    if not words or problem:
        return _strongest(verdicts), chdir
    first = words[0]
    if first.dynamic:
        verdicts.append(
            Verdict("ask", "dynamic_command", f"the program to run (`{first.text}`) is only known when it runs")
        )
        return _strongest(verdicts), chdir
    name = _program(first)
    if name in ("cd", "pushd", "popd"):
        return _strongest(verdicts), True
    verdicts.extend(_judge_program(policy, name, words[1:], simple, cwd, after_cd or chdir))
    return _strongest(verdicts), chdir


def _judge_program(
    policy: Policy, name: str, args: list[Word], simple: Simple, cwd: str, after_cd: bool
) -> list[Verdict]:
    """What running ``name`` with ``args`` deserves, by the program: the first rule that names it."""
    if name in BLOCKED_PROGRAMS:
        return [Verdict("block", BLOCKED_PROGRAMS[name], f"`{name}` is not allowed")]
    if name in ("init", "telinit") and any(a.text in ("0", "6") for a in args):
        return [Verdict("block", "shutdown", f"`{name} {args[0].text}` is not allowed")]
    if name == "eval":
        return [Verdict("ask", "eval", "eval runs text the hook cannot analyse")]
    if name in SHELLS:
        return [_judge_shell(name, args, simple)]
    if name in INTERPRETERS:
        return [_judge_interpreter(name, args, simple)]
    if name in AWKS:
        program = next((a.text for a in args if not a.text.startswith("-")), "")
        if re.search(r"system\s*\(|\||>|getline", program):
            return [Verdict("ask", "interpreter_one_liner", f"the {name} program runs commands or writes")]
        return []
    if name == "xargs":
        return [_judge_xargs(args)]
    if name == "find":
        return [_judge_find(policy, args, cwd, after_cd)]
    if name == "rm":
        return [_judge_rm(policy, args, cwd, after_cd)]
    if name == "sed":
        return _judge_sed(policy, args, cwd, after_cd)
    if name in _WRITES:
        return [_judge_writes(policy, name, args, cwd, after_cd)]
    return []


def _judge_sed(policy: Policy, args: list[Word], cwd: str, after_cd: bool) -> list[Verdict]:
    """``sed -i`` writes its files in place: each is judged as a write target."""
    options, operands, values = _operands(args, _VALUE_OPTIONS["sed"])
    if not any(o in ("-i", "--in-place") or (o.startswith("-i") and not o.startswith("--")) for o in options):
        return []
    files = operands if ("-e" in values or "--expression" in values or "-f" in values) else operands[1:]
    return [_judge_target(policy, w, cwd, after_cd, "sed -i") for w in files]


def _judge_shell(name: str, args: list[Word], simple: Simple) -> Verdict:
    for word in args:
        text = word.text
        if text == "--" or not text.startswith("-"):
            return Verdict("allow")  # a script file: it runs what it says, like any program
        if (text.startswith("-") and not text.startswith("--") and "c" in text[1:]) or text == "--command":
            return Verdict("ask", "nested_shell", f"`{name} -c` runs a command line of its own")
    if simple.piped_in or simple.heredoc:
        return Verdict("ask", "nested_shell", f"`{name}` reads commands from its input")
    return Verdict("allow")


def _judge_interpreter(name: str, args: list[Word], simple: Simple) -> Verdict:
    eval_flags = INTERPRETERS[name]
    for word in args:
        text = word.text
        if text in eval_flags or any(text.startswith(f) and len(f) == 2 and len(text) > 2 for f in eval_flags):
            return Verdict("ask", "interpreter_one_liner", f"`{name} {text}` runs code the hook cannot analyse")
        if (
            name in ("perl", "ruby", "python")
            and text.startswith("-")
            and not text.startswith("--")
            and any(f[1:] in text[1:] for f in eval_flags)
        ):
            return Verdict("ask", "interpreter_one_liner", f"`{name} {text}` runs code the hook cannot analyse")
        if text in ("-m",) or (not text.startswith("-")):
            if text == "-" and (simple.piped_in or simple.heredoc):
                break
            return Verdict("allow")  # a script file or a module
    if simple.piped_in or simple.heredoc:
        return Verdict("ask", "interpreter_one_liner", f"`{name}` runs code from its input")
    return Verdict("allow")


def _judge_xargs(args: list[Word]) -> Verdict:
    with_value = frozenset({"-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s", "--arg-file", "--delimiter"})
    with_value |= frozenset({"--max-args", "--max-procs", "--max-chars", "--max-lines", "--replace", "--eof"})
    i = 0
    while i < len(args) and args[i].text.startswith("-") and args[i].text != "--":
        option, eq, _ = args[i].text.partition("=")
        i += 2 if option in with_value and not eq else 1
    if i < len(args) and args[i].text == "--":
        i += 1
    rest, problem, _chdir = _unwrap(args[i:])
    program = _program(rest[0]) if rest else "echo"
    if problem or (rest and rest[0].dynamic) or program not in READ_ONLY:
        return Verdict("ask", "xargs", f"xargs feeds arguments the hook cannot see to `{program}`")
    return Verdict("allow")


def _judge_find(policy: Policy, args: list[Word], cwd: str, after_cd: bool) -> Verdict:
    starts: list[Word] = []
    i = 0
    while i < len(args) and args[i].text in ("-H", "-L", "-P", "-O0", "-O1", "-O2", "-O3", "-D"):
        i += 2 if args[i].text == "-D" else 1
    while i < len(args) and not args[i].text.startswith(("-", "(", "!", ")")):
        starts.append(args[i])
        i += 1
    expression = {a.text for a in args[i:]}
    runs = expression & {"-exec", "-execdir", "-ok", "-okdir"}
    if runs:
        return Verdict("ask", "find_exec", f"find {sorted(runs)[0]} runs a command on each file found")
    writes = expression & {"-fprint", "-fprint0", "-fprintf", "-fls"}
    if writes:
        return Verdict("ask", "find_exec", f"find {sorted(writes)[0]} writes a file")
    if "-delete" not in expression:
        return Verdict("allow")
    if {"-L", "-follow"} & {a.text for a in args}:
        return Verdict("ask", "find_exec", "find -delete following symlinks")
    for word in starts or [Word(text=".")]:
        verdict = _judge_recursive_delete(policy, word, cwd, after_cd, "find -delete", whole_root_ok=True)
        if verdict.decision != "allow":
            return verdict
    return Verdict("allow")


def _judge_rm(policy: Policy, args: list[Word], cwd: str, after_cd: bool) -> Verdict:
    options, operands, _values = _operands(args, frozenset())
    recursive = False
    for option in options:
        if option.startswith("--"):
            recursive = recursive or _long_prefix(option, "--recursive")
        else:
            recursive = recursive or "r" in option or "R" in option
    verdicts = []
    for word in operands:
        if recursive:
            verdicts.append(_judge_recursive_delete(policy, word, cwd, after_cd, "recursive rm"))
        else:
            verdicts.append(_judge_target(policy, word, cwd, after_cd, "rm"))
    return _strongest(verdicts)


def _judge_recursive_delete(
    policy: Policy, word: Word, cwd: str, after_cd: bool, what: str, whole_root_ok: bool = False
) -> Verdict:
    path = _word_path(word, cwd, policy.home)
    if path is None:
        return Verdict("block", "rm_outside", f"{what} of {word.text}, a path known only when it runs")
    if after_cd and not _fixed(word):
        return Verdict("ask", "cd_before_destructive", f"{what} of {word.text} after a cd: where is not known here")
    if _within(path, policy.protected):
        return Verdict("block", "sandbox_files", f"{what} of {path}, the sandbox's own files")
    # rm -r of the target itself would remove it; find -delete from it removes what is inside
    whole_root = not whole_root_ok and not word.glob and path in {os.path.realpath(r) for r in policy.roots}
    if not _within(path, policy.roots) or whole_root:
        return Verdict("block", "rm_outside", f"{what} of {path}, outside the workspace and target")
    return Verdict("allow")


def _judge_target(policy: Policy, word: Word, cwd: str, after_cd: bool, what: str) -> Verdict:
    """A file a command writes or removes (not recursively)."""
    if word.text in _SAFE_TARGETS or word.text.startswith("/dev/fd/"):
        return Verdict("allow")
    path = _word_path(word, cwd, policy.home)
    if path is None:
        return Verdict("ask", "unknown_target", f"{what} of {word.text}, a path known only when it runs")
    if after_cd and not _fixed(word):
        return Verdict("ask", "cd_before_destructive", f"{what} of {word.text} after a cd: where is not known here")
    return _check_write_path(policy, path, what)


def _judge_writes(policy: Policy, name: str, args: list[Word], cwd: str, after_cd: bool) -> Verdict:
    options, operands, values = _operands(args, _VALUE_OPTIONS.get(name, frozenset()))
    target_dir = values.get("-t") or values.get("--target-directory")
    which = _WRITES[name]
    if target_dir is not None:
        written = [target_dir, *(operands if name == "mv" else [])]
    elif which == "last":
        written = operands[-1:]
    elif which == "after_first":
        written = operands if "--reference" in values else operands[1:]
    else:
        written = operands
    return _strongest(_judge_target(policy, w, cwd, after_cd, name) for w in written)


def _judge_redirect(policy: Policy, redirect: Redirect, cwd: str, after_cd: bool) -> Verdict:
    if redirect.target is None or redirect.op in ("<", "<<", "<<-", "<<<", "<&"):
        return Verdict("allow")
    target = redirect.target
    if re.match(r"/dev/(?:sd|nvme|hd|vd|xvd|mmcblk)", target.text):
        return Verdict("block", "device_write", f"`{redirect.op} {target.text}` writes a block device")
    return _judge_target(policy, target, cwd, after_cd, f"`{redirect.op}`")


def _fixed(word: Word) -> bool:
    """An absolute path (or one from $HOME): the same wherever the shell is."""
    return word.text.startswith(("/", "~")) or re.match(r"\$(?:HOME\b|\{HOME\})", word.text) is not None


def _word_path(word: Word, cwd: str, home: str) -> str | None:
    """The real path a word names; None when it holds anything but $HOME/${HOME}/~ expansions."""
    text = word.text
    if word.substitution:
        return None
    if word.dynamic:
        text = re.sub(r"^(?:\$HOME\b|\$\{HOME\})", lambda _m: home, text)
        if "$" in text:
            return None
    return _absolute(text, cwd, home)


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
