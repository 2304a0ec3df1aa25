"""An agent's private copy of its CLI's state, and the tokens that may flow back to the user.

Inside the OS sandbox a CLI never sees the user's own state folders writable. Each agent of
a session gets ``<session>/cli-state/<agent>/`` (0700, hidden inside like the whole
workspace), made from the user's at its first run: the settings, the credentials and this
run's project data the adapter names (``StatePlace.copied``). It is bound over the user's
paths, so ``HOME`` stays the user's and the CLI finds its files where it always does; the
copy is shared by that agent's runs, so ``--resume`` and recovery keep working. The files
that configure hooks, MCP servers or ``notify`` (``StatePlace.settings``) are bound
read-only on top: an agent cannot plant them for the next run either.

After each run, a credential file the CLI refreshed reaches the user's file only as token
data: parsed, cut down to the adapter's token fields with their types, size-capped, merged
into the user's file and written atomically with its mode (``return_tokens``). Settings,
hooks, MCP servers and ``notify`` never flow back. The copy goes with the session's folder
(``orchestrate discard``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meta_orchestrator.actors.adapters.base import AgentAdapter, CliState, StatePlace, TokenShape
from meta_orchestrator.actors.files.session_files import SessionFileError, private_dir, write_bytes_atomic
from meta_orchestrator.actors.sandbox.bwrap import PrivateBind
from meta_orchestrator.actors.sandbox.state_rules import changed, merged, pinned, token_data

log = logging.getLogger(__name__)

CLI_STATE_FOLDER = "cli-state"  # in the session folder
_SEEN = ".tokens-seen"  # the token data last taken from or given to the user, per file (never bound)
MAX_COPIED_FILE_BYTES = 64 * 1024 * 1024  # a settings or project file larger than this is not copied
MAX_TOKEN_FILE_BYTES = 64 * 1024  # a credential file larger than this is not read
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_EMPTY = {".json": b"{}\n"}  # an absent settings file is made, so the CLI cannot make one


class PrivateCliState:
    """The private copies of one agent's CLI state in a session, and their token return."""

    def __init__(self, agent: str, adapter: AgentAdapter, session_dir: Path) -> None:
        self.agent = agent
        self.adapter = adapter
        self.root = session_dir / CLI_STATE_FOLDER / agent

    def prepare(self, env: Mapping[str, str], folder: Path) -> tuple[PrivateBind, ...]:
        """Make (or complete) the copies for a run with environment ``env`` working in
        ``folder``; the binds that put them in place.

        Raises:
            OSError: a copy or the user's mount point could not be made (a spawn error).
        """
        try:
            return self._prepare(self.adapter.cli_state(env, (folder,)))
        except SessionFileError as exc:
            raise OSError(f"the private state of {self.agent}'s CLI cannot be made: {exc}") from exc

    def _prepare(self, state: CliState) -> tuple[PrivateBind, ...]:
        private_dir(self.root.parent)
        private_dir(self.root)
        private_dir(self.root / _SEEN)
        binds: list[PrivateBind] = []
        for place in state.places:
            copy = self.root / place.name
            if place.folder:
                self._prepare_folder(place, copy)
            else:
                self._prepare_file(place, copy)
            binds.append(PrivateBind(source=str(copy), dest=str(place.real)))
            binds += [
                PrivateBind(source=str(copy / s.rstrip("/")), dest=str(place.real / s.rstrip("/")), writable=False)
                for s in place.settings
            ]
        return tuple(binds)

    def _prepare_folder(self, place: StatePlace, copy: Path) -> None:
        place.real.mkdir(mode=0o700, parents=True, exist_ok=True)  # the mount point inside
        copy.mkdir(mode=0o700, exist_ok=True)
        for relative in place.copied:
            if not os.path.lexists(copy / relative):
                _copy_entry(place.real / relative, copy / relative)
        for relative in place.settings:  # made when absent: the CLI must not make them itself
            made = copy / relative.rstrip("/")
            if relative.endswith("/"):
                made.mkdir(mode=0o700, parents=True, exist_ok=True)
            elif not os.path.lexists(made):
                made.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                write_bytes_atomic(made, _EMPTY.get(made.suffix, b""), 0o600)
        for relative in place.credentials:
            self._take_tokens(place, relative, copy / relative)

    def _take_tokens(self, place: StatePlace, relative: str, mine_path: Path) -> None:
        """Before a run: the user's tokens into the copy when theirs changed since this session
        last saw them and the copy's did not (the user's own CLI refreshed meanwhile, and the
        refresh token the copy holds may be spent). A run's own refresh wins: it flows back."""
        seen_path = self._seen_path(place, relative)
        user = self._user_tokens(place, relative)
        if not seen_path.exists():
            write_bytes_atomic(seen_path, json.dumps(user).encode(), 0o600)
            return
        seen = json.loads(seen_path.read_text(encoding="utf-8"))
        if not user or user == seen:
            return
        try:
            mine = _read_json_capped(mine_path)
        except ValueError:
            return
        if not isinstance(mine, dict) or token_data(mine, place.credentials[relative])[0] != seen:
            return
        write_bytes_atomic(mine_path, (json.dumps(merged(mine, changed(user, seen)), indent=2) + "\n").encode(), 0o600)
        write_bytes_atomic(seen_path, json.dumps(user).encode(), 0o600)

    def _prepare_file(self, place: StatePlace, copy: Path) -> None:
        if not os.path.lexists(place.real):
            # The mount point inside. Only a CLI never run here lacks it; an empty object is
            # what it would start from.
            log.info("%s: %s does not exist; made it as an empty JSON object", self.agent, place.real)
            write_bytes_atomic(place.real, _EMPTY[".json"], 0o600)
        if not os.path.lexists(copy):
            copied = _copy_entry(place.real, copy)
            if not copied:
                write_bytes_atomic(copy, _EMPTY[".json"], 0o600)
        elif place.pinned:
            self._pin(place, copy)

    def _pin(self, place: StatePlace, copy: Path) -> None:
        """Reset the pinned keys of the copy to the user's: what a run planted there goes."""
        try:
            user = _read_json_capped(place.real, follow=True, limit=MAX_COPIED_FILE_BYTES)
        except ValueError:
            user = None
        try:
            mine = _read_json_capped(copy, limit=MAX_COPIED_FILE_BYTES)
        except ValueError:
            mine = None
        if not isinstance(mine, dict):  # corrupted or replaced by a run: start again from the user's
            log.warning("%s: the private %s is no JSON object; made again from yours", self.agent, place.real.name)
            copy.unlink(missing_ok=True)
            if not _copy_entry(place.real, copy):
                write_bytes_atomic(copy, _EMPTY[".json"], 0o600)
            return
        reset = pinned(mine, user if isinstance(user, dict) else {}, place.pinned)
        if reset != mine:
            log.info("%s: reset %s in the private %s", self.agent, ", ".join(place.pinned), place.real.name)
            write_bytes_atomic(copy, json.dumps(reset, indent=2).encode(), 0o600)

    def _seen_path(self, place: StatePlace, relative: str) -> Path:
        return self.root / _SEEN / f"{place.name}.{relative.replace('/', '_')}.json"

    def _user_tokens(self, place: StatePlace, relative: str) -> dict[str, Any]:
        try:
            obj = _read_json_capped(place.real / relative, follow=True)
        except ValueError:
            return {}
        return token_data(obj, place.credentials[relative])[0] if obj is not None else {}

    def return_tokens(self, env: Mapping[str, str]) -> list[str]:
        """After a run with environment ``env``: the token data the CLI refreshed, written to
        the user's credential files. What happened, one line per file that changed or was
        refused (also logged)."""
        said: list[str] = []
        for place in self.adapter.cli_state(env).places:
            for relative, shape in place.credentials.items():
                try:
                    line = self._return_one(place, relative, shape)
                except (OSError, ValueError) as exc:
                    line = f"{self.agent}: {place.real / relative} not updated: {exc}"
                if line:
                    log.info("%s", line)
                    said.append(line)
        return said

    def _return_one(self, place: StatePlace, relative: str, shape: TokenShape) -> str | None:
        copy, user = self.root / place.name / relative, place.real / relative
        seen_path = self._seen_path(place, relative)
        if not seen_path.exists():
            return None  # never prepared: nothing ran
        obj = _read_json_capped(copy)
        if obj is None:
            return None  # the CLI removed it, or it is no regular file: nothing to give back
        tokens, dropped = token_data(obj, shape)
        seen = json.loads(seen_path.read_text(encoding="utf-8"))
        if tokens == seen:
            return None  # not refreshed in this session since last time
        lost = f"; dropped {', '.join(dropped)}" if dropped else ""
        current = _read_json_capped(user, follow=True)
        if not isinstance(current, dict) or not tokens:
            return (
                f"{self.agent}: {relative} changed in the private copy but is not given back "
                f"(no file of yours to refresh, or no token in it){lost}"
            )
        # Only what this session changed: a token another session refreshed since stays theirs.
        updated = merged(current, changed(tokens, seen))
        if updated != current:
            _replace_keeping_mode(user, (json.dumps(updated, indent=2) + "\n").encode())
        _replace_keeping_mode(seen_path, json.dumps(tokens).encode())
        return f"{self.agent}: refreshed tokens written to {user}{lost}"


def _copy_entry(source: Path, dest: Path) -> bool:
    """Copy the user's file (through a link the user made) or folder (links kept as links)."""
    try:
        info = os.stat(source)
    except OSError:
        return False
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_ISDIR(info.st_mode):
        shutil.copytree(source, dest, symlinks=True, ignore=_too_large, dirs_exist_ok=True)  # a concurrent run's copy
        return True
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_COPIED_FILE_BYTES:
        log.warning("not copied into the private CLI state: %s (not a regular file, or too large)", source)
        return False
    with open(source, "rb") as src:
        write_bytes_atomic(dest, src.read(MAX_COPIED_FILE_BYTES), 0o600)
    return True


def _too_large(folder: str, names: list[str]) -> set[str]:
    """What a folder copy leaves out: files too large, and FIFOs, sockets, devices."""
    left = set()
    for name in names:
        info = os.lstat(os.path.join(folder, name))
        if stat.S_ISLNK(info.st_mode) or stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_COPIED_FILE_BYTES:
            left.add(name)
    return left


def _replace_keeping_mode(path: Path, data: bytes) -> None:
    """Atomically replace an existing file (its symlink's target, where it is a link) with its mode."""
    real = Path(os.path.realpath(path))
    mode = stat.S_IMODE(os.stat(real).st_mode)
    write_bytes_atomic(real, data, mode)


def _read_json_capped(path: Path, follow: bool = False, limit: int = MAX_TOKEN_FILE_BYTES) -> object | None:
    """A JSON file's content: None when it is missing, no regular file (a link, unless
    ``follow``: the user's own may be one) or too large.

    Raises:
        ValueError: it is not JSON.
    """
    try:  # non-blocking: a FIFO put in its place must not hang the orchestrator
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow else _NOFOLLOW))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = f.read(limit + 1)
    if len(data) > limit:
        return None
    return json.loads(data.decode("utf-8"))


__all__ = ["CLI_STATE_FOLDER", "PrivateCliState"]
