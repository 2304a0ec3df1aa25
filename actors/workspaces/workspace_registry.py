"""Every workspace this user has run sessions in, kept in the user's state so each run hides them all.

A run's sandbox hides its own workspace (every session's transcripts, the hook's secret);
another project's workspace is just as private. ``$XDG_STATE_HOME/meta-orchestrator/
workspaces.json`` (``~/.local/state`` by default; 0600 in a 0700 folder, replaced atomically
under a lock) lists them; a session's start adds its own and drops the folders that are gone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from meta_orchestrator.actors.files.session_files import SessionFileError, locked, private_dir, write_json_atomic

log = logging.getLogger(__name__)

REGISTRY_NAME = "workspaces.json"


def registry_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the list lives for this user."""
    env = os.environ if env is None else env
    state = env.get("XDG_STATE_HOME") or ""
    base = Path(state) if os.path.isabs(state) else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "meta-orchestrator" / REGISTRY_NAME


def register_workspace(workspace: Path, env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Add ``workspace`` to the list, drop vanished folders, and return every listed workspace.

    A registry that cannot be read or written is logged and the current workspace alone is
    returned: the session still starts, hiding what it knows of.
    """
    workspace = workspace.expanduser().resolve()
    path = registry_path(env)
    try:
        path.parent.parent.mkdir(parents=True, exist_ok=True)  # the user's state folder, as it is
        private_dir(path.parent)
        with locked(path.parent / ".lock"):  # two sessions starting at once both get listed
            listed = [Path(p) for p in _read(path)]
            kept = [p for p in dict.fromkeys([*listed, workspace]) if p.is_dir()]
            if kept != listed:
                write_json_atomic(path, {"workspaces": [str(p) for p in kept]})
            return tuple(kept)
    except (OSError, SessionFileError) as exc:
        log.warning("workspace registry %s not updated (%s): only this workspace is hidden from the agents", path, exc)
        return (workspace,)


def _read(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("workspace registry %s unreadable (%s); starting it anew", path, exc)
        return []
    entries = data.get("workspaces") if isinstance(data, dict) else None
    return [e for e in entries or [] if isinstance(e, str) and os.path.isabs(e)]


__all__ = ["register_workspace", "registry_path"]
