"""Checks made before anything starts: each failure is one clear sentence naming the fix."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from meta_orchestrator.actors.adapters.base import AgentAdapter
from meta_orchestrator.actors.files.session_files import SessionFileError, check_owned_dir
from meta_orchestrator.actors.sandbox import landlock
from meta_orchestrator.actors.sandbox.bwrap import PACKAGE, Confinement, bwrap_argv, probe_argv, under_private_tmp
from meta_orchestrator.actors.sandbox.hook_launch import HOOK_MODULE, hook_command, hook_read_paths
from meta_orchestrator.actors.sandbox.policy import BUILTIN_BLOCKED, RUN_WORKDIR_ENV, Policy, rules
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
        probe = subprocess.Popen(
            list(adapter.version_argv(argv)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, **adapter.version_env()},
            start_new_session=True,
        )
    except FileNotFoundError:
        return CliCheck(agent, argv, None, f"{exe} was not found")
    except PermissionError:
        return CliCheck(agent, argv, None, f"{exe} is not executable")
    with probe:
        try:
            stdout, stderr = probe.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # The whole group, before the leader is reaped (its pid, the group's, stays ours):
            # what it started would otherwise outlive the start, holding the pipes open.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(probe.pid, signal.SIGKILL)
            probe.wait()
            return CliCheck(agent, argv, None, f"{exe} --version did not answer in {timeout_s:g}s")
    text = (stdout or stderr).decode("utf-8", "replace").strip().splitlines()
    if probe.returncode != 0:
        return CliCheck(
            agent,
            argv,
            None,
            f"{exe} --version failed with exit {probe.returncode}: {text[-1] if text else 'no output'}",
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


# -- the CLI's tool hook: nothing switches it off, and it runs ----------------------------------

# A call every policy blocks (a disk tool), for the hook's self-test.
HOOK_TEST_COMMAND = "mkfs.ext4 /dev/orchestrate-self-test"
HOOK_TEST_TIMEOUT_S = 30.0


def check_tool_hook(settings: Settings, bwrap: str | None, env: dict[str, str]) -> None:
    """With the sandbox on and the CLI that takes the tool hook enabled: nothing in its
    arguments or environment switches the hook off, and the hook runs (``hook_self_test``).

    Raises:
        PreflightError: naming what to change.
    """
    from meta_orchestrator.actors.adapters.registry import hooked_agent  # local: preflight stays light

    hooked = hooked_agent()
    agent = settings.agents.get(hooked.name) if hooked is not None else None
    if hooked is None or agent is None or not agent.enabled or not settings.sandbox.enabled:
        return
    found = [*hooked.hook_off_switches(agent.extra_args, {**env, **agent.env}), *hooked.hook_off_by_policy()]
    if found:
        raise PreflightError(
            f"{', '.join(found)} would switch off or replace {hooked.name}'s sandbox tool hook; remove it from "
            f"[agents.{hooked.name}] extra_args / env, the environment or (ask your administrator) the managed "
            "settings; or, to run without the hook, set [sandbox] enabled = false"
        )
    hook_self_test(hooked.name, bwrap, env)


def hook_self_test(agent: str, bwrap: str | None, env: dict[str, str], python: str = sys.executable) -> None:
    """Run ``agent``'s tool hook once as the CLI runs it (``/bin/sh -c`` its command, inside the OS
    sandbox when there is one) on a call its policy blocks: it must answer ``deny``.

    Raises:
        PreflightError: the hook cannot start, import or answer here; every call would be blocked.
    """
    with tempfile.TemporaryDirectory(prefix="orch-hook-test-") as folder:
        policy_file = Path(folder) / "policy.json"
        policy = Policy(
            agent=agent, roots=(folder,), write_roots=(folder,), home=folder, blocked=rules(BUILTIN_BLOCKED)
        )
        policy_file.write_text(json.dumps(policy.to_json()))
        digest = hashlib.sha256(policy_file.read_bytes()).hexdigest()
        command = hook_command(policy_file, digest, python, deadline_s=HOOK_TEST_TIMEOUT_S - 5)
        argv = ["/bin/sh", "-c", command]
        if bwrap is not None:
            readable = (folder, *under_private_tmp(hook_read_paths()))
            argv = bwrap_argv(Confinement(bwrap=bwrap, writable=(), readable=readable, chdir=folder), argv)
        call: dict[str, Any] = {"hook_event_name": "PreToolUse", "tool_name": "Bash", "cwd": folder}
        call.update(tool_use_id="preflight", tool_input={"command": HOOK_TEST_COMMAND})
        try:
            done = subprocess.run(
                argv,
                input=json.dumps(call).encode(),
                capture_output=True,
                timeout=HOOK_TEST_TIMEOUT_S,
                env={**env, RUN_WORKDIR_ENV: folder},
                start_new_session=True,
            )
            problem = _hook_test_problem(done.returncode, done.stdout, done.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"it could not be run ({exc})"
    if problem is not None:
        raise PreflightError(
            f"{agent}'s sandbox tool hook does not work here: {problem}. Every {agent} tool call would be "
            f"blocked ({python} -I -m {HOOK_MODULE}).\nReinstall the orchestrator so that {python} can import it, "
            f"disable {agent} ([agents.{agent}] enabled = false), or run without the hook ([sandbox] enabled = false)"
        )


def _hook_test_problem(returncode: int, stdout: bytes, stderr: bytes) -> str | None:
    """Why the self-test's answer is not the policy's deny, or None when it is."""
    errors = stderr.decode("utf-8", "replace").strip().splitlines()
    if returncode != 0:
        return f"exit {returncode}: {' / '.join(errors[-2:]) if errors else 'no message'}"
    try:
        answer = json.loads(stdout.decode("utf-8", "replace") or "null")["hookSpecificOutput"]
    except (ValueError, TypeError, KeyError):
        return f"it answered {stdout[:200]!r}, not a decision"
    reason = str(answer.get("permissionDecisionReason") or "")
    if answer.get("permissionDecision") != "deny" or "sandbox policy" not in reason:
        return f"it answered {answer.get('permissionDecision')!r} ({reason[:300]}) to a call its policy blocks"
    return None


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
        try:
            adapter.protocol_for(agent_settings.protocol)
        except ValueError as exc:
            raise PreflightError(f"[agents.{name}] protocol: {exc}") from None
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
