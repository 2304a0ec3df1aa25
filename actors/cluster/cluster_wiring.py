"""``--cluster``: the session joins a Ray cluster as its driver and the workers of the agents
that go remote get a cluster host; without it nothing here imports Ray.

The coordinator, reviewer, recovery, gateway and the session's files stay in this process;
only each chosen agent's CLI runs on a node that offers an agent slot (``[cluster]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.workspaces.git_command import HOSTILE_TREE_CONFIG, Git, WorkspaceError
from meta_orchestrator.actors.recovery.preflight import PreflightError
from meta_orchestrator.actors.processes.process_host import ProcessHost, SpawnCaps
from meta_orchestrator.config.settings import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'meta-orchestrator[cluster]'"
_connected_here = False  # this process joined the cluster for its session (and leaves it)


class HostSet:
    """Every process host of the session: this machine's, and one per remote agent."""

    def __init__(self, local: ProcessHost, remote: dict[str, Any] | None = None) -> None:
        self.local = local
        self.remote = dict(remote or {})

    def for_agent(self, agent: str) -> Any:
        """The host ``agent``'s CLIs are started by."""
        return self.remote.get(agent, self.local)

    def kill_all(self) -> int:
        """A forced stop: every CLI of every host ended at once (no grace)."""
        return sum(host.kill_all() for host in self._all())

    def terminate_all(self, grace_s: float) -> int:
        """Every CLI of this machine ended at once, with one grace for all (remote runs are
        ended by their workers, each through its node)."""
        return self.local.terminate_all(grace_s)

    def _all(self) -> Iterable[Any]:
        return [self.local, *self.remote.values()]


def join(settings: Settings, target: Path) -> None:
    """With ``[cluster] address``: join the cluster as its driver (no-op without it).

    Raises:
        PreflightError: Ray is not installed, the target is no git work tree (the work travels
            to the nodes by git), the cluster's token is missing or kept unsafely, or the
            cluster cannot be reached (or refused the token).
    """
    global _connected_here
    address = settings.cluster.address
    if address is None:
        return
    try:
        from meta_orchestrator.actors.cluster.cluster_host import connect, offered
    except ImportError as exc:
        raise PreflightError(
            f"--cluster needs Ray, which is not installed here ({exc}); install it with: {INSTALL_HINT}"
        ) from None
    if not _is_work_tree(target):
        raise PreflightError(
            f"--cluster needs the target to be a git repository: the agents' work travels to the cluster's "
            f"nodes and back by git, and {target} is none (git init && git add -A && git commit)"
        )
    token_file = _token_file(settings)
    try:
        _connected_here = connect(address, token_file) or _connected_here
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        raise PreflightError(
            f"cannot join the Ray cluster at {address}: {_first_line(exc)} (is it up, and is the token the "
            f"cluster's? every node starts with RAY_AUTH_MODE=token and the same token)"
        ) from None
    slot = settings.cluster.slot_resource
    slots = offered(slot)
    if not slots:
        log.warning("no node of the cluster at %s offers %s yet: the remote runs wait until one does", address, slot)
    else:
        log.info("joined the Ray cluster at %s: %g %s in all", address, slots, slot)


def hosts(settings: Settings, caps: SpawnCaps) -> HostSet:
    """This machine's host, and a cluster host for each agent that runs remote."""
    local = ProcessHost(caps)
    if settings.cluster.address is None:
        return HostSet(local)
    from meta_orchestrator.actors.cluster.cluster_host import ClusterProcessHost
    from meta_orchestrator.actors.cluster.remote_host import HostOptions

    cluster = settings.cluster
    options = HostOptions(max_line_bytes=settings.session.max_line_bytes)
    remote = {
        name: ClusterProcessHost(
            caps=caps,
            resources={cluster.slot_resource: 1, **cluster.resources.get(name, {})},
            options=options,
            notice_s=cluster.wait_notice_s,
            hold_until_recorded=True,  # a line leaves its node only once it is in the event file
            spread=settings.agents[name].max_parallel > 1,  # its runs at once go to different nodes
        )
        for name in settings.agents
        if cluster.runs_remote(name)
    }
    return HostSet(local, remote)


def leave() -> None:
    """Leave the cluster if this process joined it for its session."""
    global _connected_here
    if _connected_here:
        from meta_orchestrator.actors.cluster.cluster_host import disconnect

        disconnect()
        _connected_here = False


def _token_file(settings: Settings) -> Path | None:
    """The file Ray reads the driver's token from, checked first (None: ``RAY_AUTH_TOKEN``)."""
    from meta_orchestrator.actors.cluster.cluster_auth import ClusterTokenError, token_source

    token_file = settings.cluster.token_file
    try:
        return token_source(token_file.expanduser().absolute() if token_file else None, os.environ, Path.home())
    except ClusterTokenError as exc:
        raise PreflightError(f"--cluster: {exc}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_work_tree(target: Path) -> bool:
    try:
        # Hardened: on a resume the target may hold what agents wrote in place.
        done = Git(["-C", str(target)], config=HOSTILE_TREE_CONFIG, timeout_s=30).run(
            "rev-parse", "--is-inside-work-tree", ok=(0, 128)
        )
    except WorkspaceError:
        return False
    return done.returncode == 0 and done.text == "true"


__all__ = ["HostSet", "INSTALL_HINT", "hosts", "join", "leave"]
