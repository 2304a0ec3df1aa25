"""Where a remote CLI run stands, as its driver-side handle tells whoever asked to know.

A run on the cluster is first placed (Ray finds a node with a free agent slot and starts the
run's host there), then runs, then ends; a run that cannot be placed now waits, and says so,
rather than hang unseen. A lost node is an end of its own kind, for recovery to act on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from meta_orchestrator.messages.base import AgentName, Frozen, Message

RemoteRunPhase = Literal["placing", "waiting_for_slot", "running", "ended"]
RemoteEndKind = Literal["exited", "node_lost", "spawn_failed", "cancelled"]


class RemoteRunEnd(Frozen):
    """How a remote run ended.

    ``exited``: the CLI's group is gone and every line was received; ``node_lost``: the host
    or its node died (Ray reported the actor dead) and the run's end is unknown;
    ``spawn_failed``: the node could not start the CLI; ``cancelled``: stopped before it was
    placed.
    """

    kind: RemoteEndKind
    returncode: int | None = Field(default=None, description="the CLI's exit status; negative: the signal")
    detail: str = ""
    stragglers: int = Field(default=0, description="processes it left in its group, ended by the host")


class RemoteRunChanged(Message):
    """RemoteProcess -> its ``on_change`` callback: the run entered ``phase``."""

    phase: RemoteRunPhase
    pid: int | None = Field(default=None, description="the CLI's pid on its node, once running")
    node_id: str | None = None
    node_ip: str | None = None
    hostname: str | None = None
    detail: str = Field(default="", description="why it waits, what it runs as, how it ended")
    end: RemoteRunEnd | None = None


class RunNode(Frozen):
    """The cluster node a run was placed on: Ray's node id, its address, the machine's name."""

    node_id: str
    node_ip: str | None = None
    hostname: str | None = None

    @property
    def label(self) -> str:
        """How a person reads it: ``host (address)``."""
        return f"{self.hostname or self.node_id[:12]} ({self.node_ip or '?'})"


class RunPlaced(Message):
    """Worker -> the ``reply_to`` of a writing ``StartAssignment`` (the coordinator): its run
    was placed on ``node`` and its CLI runs there now (a retry may land on another node)."""

    agent: AgentName
    assignment_id: str
    node: RunNode
    pid: int | None = Field(default=None, description="the CLI's pid on that node")
