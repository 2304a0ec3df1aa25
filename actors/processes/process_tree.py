"""One process tree's figures (CPU, memory, processes, open files) read with psutil.

The ``psutil.Process`` objects live from one reading to the next: the first ``cpu_percent``
of a process is a meaningless 0.0, so a reader made anew each time would always say 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import psutil

T = TypeVar("T")


@dataclass(frozen=True)
class TreeFigures:
    """A tree at one instant. ``None``: a member's figure could not be read (AccessDenied)."""

    processes: int
    pids: tuple[int, ...]  # the root first
    cpu_percent: float  # summed over the tree; 100 = one core
    rss_bytes: int | None
    open_files: int | None
    tmpfs_bytes: int = 0  # held in the run's private tmpfs mounts (/tmp, /dev/shm): memory too
    # CPU seconds the tree used since its reader's first reading (a running total): each
    # member's user + system time since the last reading, and the time of descendants a member
    # reaped meanwhile, so a child born and ended between two readings counts too.
    cpu_time_s: float = 0.0


def private_tmpfs_bytes(pids: Iterable[int]) -> int:
    """What the tree holds in tmpfs mounts of its own: memory no RSS shows.

    A sandboxed run lives in a mount namespace of its own; each tmpfs mounted there and not
    in ours (its private ``/tmp``, ``/dev/shm``, ``/dev``, the empty folders over what it must
    not see) is read once through ``/proc/<pid>/root``. An unsandboxed tree counts 0.
    """
    ours = _tmpfs_devices("self")
    seen_ns = {_mount_ns("self")}
    total = 0
    for pid in pids:
        ns = _mount_ns(str(pid))
        if ns is None or ns in seen_ns:
            continue
        seen_ns.add(ns)
        for device, point in _tmpfs_mounts(str(pid)):
            if device in ours:
                continue  # the host's own tmpfs bound in (a target under /tmp): not the run's
            total += tmpfs_used(f"/proc/{pid}/root{point}", device)
    return total


def tmpfs_used(path: str, device: str) -> int:
    """Bytes used in the tmpfs ``device`` (``major:minor``) mounted at ``path``; 0 when what is
    there now is another file system. The sandbox's mounts move while bwrap sets them up
    (pivot_root): a path read from mountinfo a moment ago may then name the host's disk, whose
    usage is no memory of the run. One open folder is checked and measured, so both reads
    are of the same file system."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return 0
    try:
        found = os.fstat(fd).st_dev
        if f"{os.major(found)}:{os.minor(found)}" != device:
            return 0
        info = os.fstatvfs(fd)
        return (info.f_blocks - info.f_bfree) * info.f_frsize
    except OSError:
        return 0
    finally:
        os.close(fd)


def _mount_ns(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _tmpfs_mounts(pid: str) -> list[tuple[str, str]]:
    """(major:minor, mount point) of each tmpfs mounted whole (root "/") in pid's namespace."""
    found = []
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.split()
                dash = fields.index("-")
                if fields[dash + 1] == "tmpfs" and fields[3] == "/":
                    found.append((fields[2], fields[4].replace("\\040", " ")))
    except (OSError, ValueError, IndexError):
        return []
    return found


def _tmpfs_devices(pid: str) -> set[str]:
    return {device for device, _point in _tmpfs_mounts(pid)}


class TreeReader:
    """Reads the tree under one root process, again and again: the one reader of a tree, for
    the resource monitor on this machine and for a cluster node's run host alike, so a tree
    counts the same wherever it runs.

    Each figure stands alone: a process whose memory or file descriptors this process may not
    read (``AccessDenied``: another user's, or a setuid program's) still counts as a process
    and makes only that figure unknown (``None``); its CPU adds what can be read.
    """

    def __init__(self, root_pid: int) -> None:
        self.pid = root_pid
        self._procs: dict[int, psutil.Process] = {}
        self._times: dict[int, float] = {}  # each member's CPU seconds (its reaped children's included)
        self._cpu_time = 0.0

    def read(self) -> TreeFigures | None:
        """The tree now; ``None`` once the root is gone."""
        members = self._members()
        if members is None:
            return None
        alive: dict[int, psutil.Process] = {}
        times: dict[int, float] = {}
        cpu = 0.0
        rss: int | None = 0
        fds: int | None = 0
        for member in members:
            proc, primed = self._known(member)
            try:
                with proc.oneshot():
                    if _readable(proc.status) == psutil.STATUS_ZOMBIE:
                        continue
                    cpu += (_readable(proc.cpu_percent, None) or 0.0) if primed else 0.0
                    memory = _readable(proc.memory_info)
                    rss = None if rss is None or memory is None else rss + memory.rss
                    open_fds = _readable(proc.num_fds)
                    fds = None if fds is None or open_fds is None else fds + open_fds
                    used = _cpu_seconds(_readable(proc.cpu_times))
            except psutil.NoSuchProcess:
                continue  # ended between the listing and its reading
            alive[proc.pid] = proc
            if used is not None:
                times[proc.pid] = used
                before = self._times.get(proc.pid) if primed else None
                # A new member counts its whole life: it began after the last reading. A child
                # seen alive is counted again when its parent reaps it: that errs towards busy.
                self._cpu_time += used if before is None else max(0.0, used - before)
        self._procs = alive
        self._times = times
        return TreeFigures(
            processes=len(alive),
            pids=tuple(alive),
            cpu_percent=round(cpu, 1),
            rss_bytes=rss,
            open_files=fds,
            tmpfs_bytes=private_tmpfs_bytes(alive),
            cpu_time_s=round(self._cpu_time, 3),
        )

    def _members(self) -> list[psutil.Process] | None:
        """The root and every descendant; the root alone when its children cannot be listed."""
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return None
        try:
            pids = descendants(self.pid)
            if pids is None:  # no /proc children lists: psutil reads every process's parent
                return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None  # exited between the worker's report and this reading
        except psutil.AccessDenied:
            return [root]
        members = [root]
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):  # ended since: not a member now
                members.append(self._procs.get(pid) or psutil.Process(pid))
        return members

    def _known(self, member: psutil.Process) -> tuple[psutil.Process, bool]:
        """The object kept from the last reading (its CPU counts), or the new one, primed now:
        the first ``cpu_percent`` of a process is a meaningless 0.0."""
        known = self._procs.get(member.pid)
        if known is not None and known.is_running():
            return known, True
        with contextlib.suppress(psutil.Error):
            member.cpu_percent(None)
        return member, False


def _cpu_seconds(times: object | None) -> float | None:
    """User and system time of a process and of the children it reaped."""
    if times is None:
        return None
    return sum(getattr(times, name, 0.0) for name in ("user", "system", "children_user", "children_system"))


_CHILDREN_LISTS = os.path.exists(f"/proc/self/task/{os.getpid()}/children")  # CONFIG_PROC_CHILDREN


def descendants(pid: int) -> list[int] | None:
    """Every descendant of ``pid``, read from the tree itself (``/proc/<pid>/task/<tid>/children``
    of each of its threads, and so on down): a few small reads, where psutil's ``children``
    reads the parent of every process of the machine, several times a second for a session's
    runs. None where the kernel offers no such list.

    Raises:
        psutil.NoSuchProcess: ``pid`` is gone. psutil.AccessDenied: its lists may not be read.
    """
    if not _CHILDREN_LISTS:
        return None
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            if parent == pid:
                raise psutil.NoSuchProcess(pid) from None
            continue  # ended meanwhile: its children, if any, are re-parented out of the tree
        except PermissionError:
            raise psutil.AccessDenied(parent) from None
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", "rb") as listing:
                    children = listing.read().split()
            except FileNotFoundError:
                continue  # that thread ended meanwhile
            except PermissionError:
                raise psutil.AccessDenied(parent) from None
            for child in children:
                found.append(int(child))
                pending.append(int(child))
    return found


def _readable(read: Callable[..., T], *args: object) -> T | None:
    """One figure of a process, or ``None`` when this process may not read it."""
    try:
        return read(*args)
    except psutil.AccessDenied:
        return None
