"""Checks made before anything starts: each failure is one clear sentence naming the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from actors.adapters.base import AgentAdapter
from config.settings import Settings
from messages.base import AgentName


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
        raise PreflightError(f"target {target} does not exist; create it or pass an existing "
                             "directory with --target (the orchestrator never creates the target)")
    if not target.is_dir():
        raise PreflightError(f"target {target} is not a directory")
    if not os.access(target, os.R_OK | os.W_OK | os.X_OK):
        raise PreflightError(f"target {target} is not readable and writable by this user; "
                             f"fix its permissions (e.g. chmod u+rwx {target})")
    return target


def check_workspace(workspace: Path) -> Path:
    """Create the workspace if needed and prove it is writable with a real write."""
    workspace = workspace.expanduser().resolve()
    try:
        workspace.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workspace, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise PreflightError(f"workspace {workspace} is not writable ({exc.strerror or exc}); "
                             "pass a writable folder with --workspace") from None
    return workspace


def check_cli(agent: AgentName, adapter: AgentAdapter, argv: tuple[str, ...],
              env: dict[str, str], timeout_s: float = 20.0) -> CliCheck:
    """Is the CLI on PATH, and does it report a version?"""
    exe = argv[0]
    if os.sep not in exe and shutil.which(exe, path=env.get("PATH")) is None:
        return CliCheck(agent, argv, None, f"{exe} is not installed (not found on PATH)")
    try:
        done = subprocess.run(list(adapter.version_argv(argv)), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout_s, env=env,
                              start_new_session=True)
    except FileNotFoundError:
        return CliCheck(agent, argv, None, f"{exe} was not found")
    except PermissionError:
        return CliCheck(agent, argv, None, f"{exe} is not executable")
    except subprocess.TimeoutExpired:
        return CliCheck(agent, argv, None, f"{exe} --version did not answer in {timeout_s:g}s")
    text = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    if done.returncode != 0:
        return CliCheck(agent, argv, None, f"{exe} --version failed with exit {done.returncode}: "
                        f"{text[-1] if text else 'no output'}")
    return CliCheck(agent, argv, text[0] if text else "unknown version", None)


def require_clis(checks: list[CliCheck], settings: Settings) -> None:
    """Stop the launch when an enabled CLI is unusable, saying how to fix it."""
    bad = [c for c in checks if c.problem and settings.agents[c.agent].enabled]
    if not bad:
        return
    if len(bad) == len(checks):
        raise PreflightError(
            "none of the agent CLIs can run: " + "; ".join(c.problem or "" for c in bad)
            + ".\nInstall them (npm install -g @google/gemini-cli @openai/codex "
            "@anthropic-ai/claude-code), or try the built-in demo agents: "
            "orchestrate --demo \"<task>\"")
    lines = [f"  {c.agent}: {c.problem}" for c in bad]
    raise PreflightError(
        "some agent CLIs cannot run:\n" + "\n".join(lines)
        + "\nInstall them, point [agents.<name>] command at them in the config file, "
        "disable them with [agents.<name>] enabled = false (their roles go to the others), "
        "or use --demo.")
