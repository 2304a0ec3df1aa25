"""How the workspace starts: its actor, supervised, and what the coordinator is told of it."""

from __future__ import annotations

from typing import Any

import pykka
from meta_orchestrator.actors.supervision.starting import start_supervised
from meta_orchestrator.actors.supervision.supervision import tell_all
from meta_orchestrator.actors.workspaces.workspace import Workspace
from meta_orchestrator.actors.workspaces.workspace_wiring import plan_checkout
from meta_orchestrator.actors.workspaces.workspaces import SessionRepo
from meta_orchestrator.messages.workspace import WorkspaceNotOpened


def start_workspace(
    started: list[Any],
    supervisor: pykka.ActorRef[Any],
    repo: SessionRepo | None,
    listeners: tuple[Any, ...],
    no_branch: str | None,
    resumed: dict[str, Any],
) -> dict[str, Any]:
    """The coordinator's workspace, branch and plan checkout; the Workspace actor started.
    Without a workspace: nothing, and the Changes panel is told why (``no_branch``)."""
    if repo is None:
        if no_branch:
            tell_all(listeners, WorkspaceNotOpened(reason=no_branch))
        return {}
    workspace = start_supervised(started, supervisor, "workspace", Workspace, repo=repo, listeners=listeners)
    # A resumed session with a plan does not plan again: no checkout for it.
    plan = None if resumed.get("assignments") else plan_checkout(repo)
    store = str(repo.store) if repo.store is not None else None
    folder = repo.record.repository if repo.record.kind == "folder" else None
    return {
        "workspace": workspace,
        "branch": repo.branch,
        "branch_store": store,
        "branch_folder": folder,
        "plan_checkout": plan,
    }
