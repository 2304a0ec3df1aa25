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
from typing import Literal

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.runtime.session_files import SessionFileError, check_owned_dir
from meta_orchestrator.actors.sandbox import landlock
from meta_orchestrator.actors.sandbox.bwrap import PACKAGE, probe_argv
from meta_orchestrator.config.settings import SandboxSettings, Settings
from meta_orchestrator.messages.base import AgentName
from meta_orchestrator.messages.recovery import PreflightRecord
import contextlib

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
        with contextlib.suppress(FileExistsError):
            os.mkdir(workspace, 0o700)
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
    from meta_orchestrator.actors.adapters.registry import get_adapter  # local: preflight stays light to import

    if len(bad) == len(checks):
        raise PreflightError(
            "none of the agent CLIs can run: "
            + "; ".join(c.problem or "" for c in bad)
            + ".\nInstall them ("
            + "; ".join(get_adapter(c.agent).install_hint() for c in bad)
            + '), or try the built-in demo agents: orchestrate --demo "<task>"'
        )
    lines = [f"  {c.agent}: {c.problem} ({get_adapter(c.agent).install_hint()})" for c in bad]
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
            "modes and the tool hook stand between them and your files"
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


def check_host_isolation(settings: SandboxSettings, version: int | None = None) -> list[str]:
    """What the runs are not isolated from on this kernel, each said as a warning at start.

    The OS sandbox hides the host's named sockets everywhere; abstract sockets and the host's
    TCP services are cut off by Landlock (``actors/sandbox/landlock.py``), which needs Linux
    6.12+ (Landlock ABI 6) with Landlock among the enabled LSMs. A Ray node checks its own
    kernel and logs the same warning at its first run.
    """
    if not settings.isolate_host_services:
        gaps = ["abstract Unix sockets of the host (D-Bus, X11)", "TCP services on the host's loopback"]
        why = "sandbox.isolate_host_services = false"
    else:
        version = landlock.abi() if version is None else version
        gaps = landlock.missing(version)
        why = f"Landlock ABI {version} on kernel {os.uname().release} (ABI 6, Linux 6.12+, isolates both)"
    for gap in gaps:
        log.warning("the agents' runs are NOT isolated from %s: %s", gap, why)
    return gaps


# -- proactive recovery: known-bad setups fixed (or verified) before anything fails -----------


def _is_git_repo(target: Path) -> bool:
    return any((d / ".git").exists() for d in (target, *target.parents))


def proactive_fixes(
    settings: Settings, target: Path, env: dict[str, str], euid: int | None = None
) -> tuple[Settings, list[PreflightRecord]]:
    """Fix the setups the reference shows failing, before launch, and say what was done.

    Returns the settings to run with and one record per fix or check (for state.json
    ``recoveries``, outcome ``fixed_before_launch`` or ``checked``).
    """
    from meta_orchestrator.actors.adapters.base import LaunchSpec  # local: preflight stays light to import
    from meta_orchestrator.actors.adapters.registry import get_adapter

    euid = os.geteuid() if euid is None else euid
    records: list[PreflightRecord] = []
    agents = dict(settings.agents)

    def note(
        agent: str, cause: str, evidence: str, action: str, outcome: Literal["fixed_before_launch", "checked"]
    ) -> None:
        records.append(
            PreflightRecord(
                recovery_id=f"pre-{len(records) + 1:02d}",
                agent=agent,
                cause=cause,
                action=action,
                evidence=evidence,
                advice=action,
                outcome=outcome,
            )
        )

    in_repo = _is_git_repo(target)
    for name, agent_settings in settings.agents.items():
        if not agent_settings.enabled:
            continue
        adapter = get_adapter(name)
        fixed = adapter.fix_before_launch(
            agent_settings.extra_args,
            allow_bypass=agent_settings.allow_bypass,
            env={**env, **agent_settings.env},
            euid=euid,
        )
        if fixed is not None:
            agents[name] = agent_settings = agent_settings.model_copy(update={"extra_args": fixed.extra_args})
            note(name, fixed.cause, fixed.evidence, fixed.action, "fixed_before_launch")
        flag = adapter.trust_flag
        if flag is None:
            continue
        launch = adapter.build_launch(
            LaunchSpec(executable=(name,), prompt="preflight", workdir=target, extra_args=agent_settings.extra_args)
        )
        note(
            name,
            "repo_trust",
            f"{target}: {adapter.folder_check(in_repo)}",
            f"verified: every {name} command line carries {flag}"
            if flag in launch.argv
            else f"{name} command line lacks {flag}: Recovery adds it on the first refusal",
            "checked",
        )
    return settings.model_copy(update={"agents": agents}), records
