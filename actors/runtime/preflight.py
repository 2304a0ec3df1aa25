"""Checks made before anything starts: each failure is one clear sentence naming the fix."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.runtime.session_files import SessionFileError, check_owned_dir
from meta_orchestrator.actors.sandbox.bwrap import PACKAGE, probe_argv
from meta_orchestrator.config.settings import SandboxSettings, Settings
from meta_orchestrator.messages.base import AgentName

log = logging.getLogger(__name__)


class PreflightError(Exception):
    """The launch cannot go ahead; the message tells the user what to do."""


@dataclass(frozen=True)
class CliCheck:
    """What preflight found out about one agent CLI."""

    agent: AgentName
    argv: tuple[str, ...]
    version: str | None
    problem: str | None


def check_target(target: Path) -> Path:
    """The target must exist, be a directory, readable and writable. It is never created."""
    target = target.expanduser().resolve()
    if not target.exists():
        raise PreflightError(
            f"target {target} does not exist; create it or pass an existing "
            "directory with --target (the orchestrator never creates the target)"
        )
    if not target.is_dir():
        raise PreflightError(f"target {target} is not a directory")
    if not os.access(target, os.R_OK | os.W_OK | os.X_OK):
        raise PreflightError(
            f"target {target} is not readable and writable by this user; "
            f"fix its permissions (e.g. chmod u+rwx {target})"
        )
    return target


def check_workspace(workspace: Path) -> Path:
    """Create the workspace (0700) if needed, refuse one that is not the user's own or that
    others may write, and prove it is writable with a real write."""
    workspace = workspace.expanduser().resolve()
    try:
        workspace.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(workspace, 0o700)
        except FileExistsError:
            pass
        check_owned_dir(workspace, "workspace")
        with tempfile.NamedTemporaryFile(dir=workspace, prefix=".write-test-"):
            pass
    except SessionFileError as exc:
        raise PreflightError(f"{exc}; pass another folder with --workspace") from None
    except OSError as exc:
        raise PreflightError(
            f"workspace {workspace} is not writable ({exc.strerror or exc}); pass a writable folder with --workspace"
        ) from None
    return workspace


def check_cli(
    agent: AgentName, adapter: AgentAdapter, argv: tuple[str, ...], env: dict[str, str], timeout_s: float = 20.0
) -> CliCheck:
    """Is the CLI on PATH, and does it report a version?"""
    exe = argv[0]
    if os.sep not in exe and shutil.which(exe, path=env.get("PATH")) is None:
        return CliCheck(agent, argv, None, f"{exe} is not installed (not found on PATH)")
    try:
        done = subprocess.run(
            list(adapter.version_argv(argv)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError:
        return CliCheck(agent, argv, None, f"{exe} was not found")
    except PermissionError:
        return CliCheck(agent, argv, None, f"{exe} is not executable")
    except subprocess.TimeoutExpired:
        return CliCheck(agent, argv, None, f"{exe} --version did not answer in {timeout_s:g}s")
    text = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0:
        return CliCheck(
            agent,
            argv,
            None,
            f"{exe} --version failed with exit {done.returncode}: {text[-1] if text else 'no output'}",
        )
    return CliCheck(agent, argv, text[0] if text else "unknown version", None)


def require_clis(checks: list[CliCheck], settings: Settings) -> None:
    """Stop the launch when an enabled CLI is unusable, saying how to fix it."""
    bad = [c for c in checks if c.problem and settings.agents[c.agent].enabled]
    if not bad:
        return
    if len(bad) == len(checks):
        raise PreflightError(
            "none of the agent CLIs can run: "
            + "; ".join(c.problem or "" for c in bad)
            + ".\nInstall them (npm install -g @google/gemini-cli @openai/codex "
            "@anthropic-ai/claude-code), or try the built-in demo agents: "
            'orchestrate --demo "<task>"'
        )
    lines = [f"  {c.agent}: {c.problem}" for c in bad]
    raise PreflightError(
        "some agent CLIs cannot run:\n"
        + "\n".join(lines)
        + "\nInstall them, point [agents.<name>] command at them in the config file, "
        "disable them with [agents.<name>] enabled = false (their roles go to the others), "
        "or use --demo."
    )


def check_os_sandbox(
    settings: SandboxSettings, demo: bool, env: dict[str, str] | None = None, platform: str = sys.platform
) -> str | None:
    """The bwrap executable every agent CLI will run under, or None (no OS sandbox: warned).

    Raises:
        PreflightError: ``sandbox.os = "bwrap"`` on Linux, real CLIs, and bubblewrap is missing
            or cannot create its namespaces here.
    """
    if settings.os == "off":
        log.warning(
            'sandbox.os = "off": the agent CLIs run without the OS sandbox; only their own permission '
            "modes and claude's hook stand between them and your files"
        )
        return None
    if not platform.startswith("linux"):
        log.warning("no OS sandbox on %s (bubblewrap is Linux only): the agent CLIs run unconfined", platform)
        return None
    path = (env or os.environ).get("PATH")
    bwrap = shutil.which("bwrap", path=path)
    problem = None
    if bwrap is None:
        problem = f"bubblewrap (bwrap) is not installed; install the {PACKAGE} package (apt-get install {PACKAGE})"
    else:
        try:
            done = subprocess.run(
                probe_argv(bwrap),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=20,
                start_new_session=True,
                env={"PATH": path or os.defpath},
            )
            if done.returncode != 0:
                why = done.stderr.decode("utf-8", "replace").strip().splitlines()
                problem = (
                    f"bwrap cannot create its namespaces here ({why[-1] if why else f'exit {done.returncode}'}); "
                    "unprivileged user namespaces may be off (sysctl kernel.unprivileged_userns_clone=1, or on "
                    "Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"bwrap could not be run ({exc})"
    if problem is None:
        return bwrap
    if demo:
        log.warning("%s; the demo agents run without the OS sandbox", problem)
        return None
    raise PreflightError(
        f"{problem}.\nThe agent CLIs only run inside the OS sandbox; to run them without it, "
        'set sandbox.os = "off" in the config (not recommended)'
    )


# -- proactive recovery: known-bad setups fixed (or verified) before anything fails -----------

# Flags the pinned CLIs refuse, and why (reference §1.2, §2.2, §3.2).
_CLAUDE_BYPASS = ("--dangerously-skip-permissions",)
_CODEX_GONE = ("--full-auto",)  # "error: unexpected argument '--full-auto' found" (exit 2)
_CODEX_GONE_WITH_VALUE = ("-a", "--ask-for-approval")
_GEMINI_YOLO = ("-y", "--yolo")  # "Cannot use both --yolo (-y) and --approval-mode together"
# The flag each adapter passes so the CLI does not refuse a folder (reference §2.1, §3.1).
_FOLDER_FLAGS = {"codex": "--skip-git-repo-check", "gemini": "--skip-trust"}


def _drop(
    args: tuple[str, ...],
    flags: tuple[str, ...],
    with_value: tuple[str, ...] = (),
    pairs: tuple[tuple[str, str], ...] = (),
) -> tuple[tuple[str, ...], list[str]]:
    """``args`` without ``flags`` (and the value after ``with_value`` flags, and ``pairs``)."""
    kept: list[str] = []
    dropped: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if name in flags:
            dropped.append(arg)
        elif name in with_value:
            dropped.append(arg if "=" in arg or nxt is None else f"{arg} {nxt}")
            i += 0 if "=" in arg else 1
        elif any(arg == a and nxt == b for a, b in pairs):
            dropped.append(f"{arg} {nxt}")
            i += 1
        elif any(arg == f"{a}={b}" for a, b in pairs):
            dropped.append(arg)
        else:
            kept.append(arg)
        i += 1
    return tuple(kept), dropped


def _is_git_repo(target: Path) -> bool:
    return any((d / ".git").exists() for d in (target, *target.parents))


def proactive_fixes(
    settings: Settings, target: Path, env: dict[str, str], euid: int | None = None
) -> tuple[Settings, list[dict[str, object]]]:
    """Fix the setups the reference shows failing, before launch, and say what was done.

    Returns the settings to run with and one record per fix or check (for state.json
    ``recoveries``, outcome ``fixed_before_launch`` or ``checked``).
    """
    from meta_orchestrator.actors.adapters.base import LaunchSpec  # local: preflight stays light to import
    from meta_orchestrator.actors.adapters.registry import get_adapter

    euid = os.geteuid() if euid is None else euid
    records: list[dict[str, object]] = []
    agents = dict(settings.agents)

    def note(agent: str, cause: str, evidence: str, action: str, outcome: str) -> None:
        records.append(
            {
                "recovery_id": f"pre-{len(records) + 1:02d}",
                "agent": agent,
                "assignment_id": None,
                "cause": cause,
                "action": action,
                "evidence": evidence,
                "advice": action,
                "outcome": outcome,
            }
        )

    claude = agents.get("claude")
    # Only where the user allowed bypass: otherwise the sandbox preflight refuses the flag.
    if (
        claude is not None
        and claude.enabled
        and claude.allow_bypass
        and euid == 0
        and {**env, **claude.env}.get("IS_SANDBOX") != "1"
    ):
        kept, dropped = _drop(claude.extra_args, _CLAUDE_BYPASS, pairs=(("--permission-mode", "bypassPermissions"),))
        if dropped:
            agents["claude"] = claude.model_copy(update={"extra_args": kept})
            note(
                "claude",
                "root_bypass",
                "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
                f"running as root without IS_SANDBOX=1: dropped {', '.join(dropped)} from "
                "[agents.claude] extra_args; claude runs with --permission-mode acceptEdits",
                "fixed_before_launch",
            )
    codex = agents.get("codex")
    if codex is not None and codex.enabled:
        kept, dropped = _drop(codex.extra_args, _CODEX_GONE, _CODEX_GONE_WITH_VALUE)
        if dropped:
            agents["codex"] = codex.model_copy(update={"extra_args": kept})
            note(
                "codex",
                "bad_flag",
                f"error: unexpected argument '{dropped[0].split()[0]}' found",
                f"codex 0.169 exec no longer takes {', '.join(dropped)}: dropped them (the sandbox is set with -s)",
                "fixed_before_launch",
            )
    gemini = agents.get("gemini")
    if gemini is not None and gemini.enabled:
        kept, dropped = _drop(gemini.extra_args, _GEMINI_YOLO)
        if dropped:
            agents["gemini"] = gemini.model_copy(update={"extra_args": kept})
            note(
                "gemini",
                "bad_flag",
                "Cannot use both --yolo (-y) and --approval-mode together.",
                f"dropped {', '.join(dropped)}: the adapter always sets --approval-mode",
                "fixed_before_launch",
            )
    in_repo = _is_git_repo(target)
    for agent, flag in _FOLDER_FLAGS.items():
        agent_settings = agents.get(agent)
        if agent_settings is None or not agent_settings.enabled:
            continue
        launch = get_adapter(agent).build_launch(
            LaunchSpec(executable=(agent,), prompt="preflight", workdir=target, extra_args=agent_settings.extra_args)
        )
        present = flag in launch.argv
        what = (
            "not a git repository"
            if agent == "codex" and not in_repo
            else "a git repository"
            if agent == "codex"
            else "trust is checked headless"
        )
        note(
            agent,
            "repo_trust",
            f"{target}: {what}",
            f"verified: every {agent} command line carries {flag}"
            if present
            else f"{agent} command line lacks {flag}: Recovery adds it on the first refusal",
            "checked",
        )
    return settings.model_copy(update={"agents": agents}), records
