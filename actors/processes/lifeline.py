"""The lifeline: a tiny guardian process that ends a remote run's process group when the
process that started it (the Ray actor hosting the run) is gone, however it went.

The CLI leads its own session, so nothing takes it down with the actor: not Ray killing the
actor when its owner (the orchestrator) went away, not the node's processes being killed.
The guardian reads a pipe whose only writer is the actor; the kernel closes it when the actor
dies, even of SIGKILL, and the guardian then ends every group it was told of (SIGCONT,
SIGTERM, SIGKILL after a grace period) and removes the run's scratch folder. It leads its own
session too, so that killing the node's process group spares it, and it is no child of the
actor (its launcher forks it and exits at once): an exiting Ray worker SIGKILLs its own
children (``RAY_kill_child_processes_on_worker_exit``), which would take the guardian down
before it has done its work. (Ray's deprecated raylet subreaper, off by default, would adopt
and kill it too: leave ``RAY_kill_child_processes_on_worker_exit_with_raylet_subreaper`` off.)

    python -m meta_orchestrator.actors.processes.lifeline SCRATCH_DIR GRACE_S   (stdin: the pipe)

Each line on the pipe is a process group id to watch. Standard library only: it starts fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from meta_orchestrator.actors.processes.process_groups import pids_in_group


class Lifeline:
    """The actor's end of the pipe, and the guardian's pid (an orphan: not ours to wait for)."""

    def __init__(self, scratch: Path, grace_s: float) -> None:
        read_end, self._write_end = os.pipe()  # both close-on-exec: no other child holds them
        try:
            launcher = subprocess.Popen(
                [sys.executable, "-m", __name__, str(scratch), str(grace_s)],
                stdin=read_end,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(read_end)
        out, _ = launcher.communicate()  # it prints the guardian's pid and exits
        self.guardian_pid = int(out)

    def watch(self, pgid: int) -> None:
        """Tell the guardian to end this group if the actor goes away."""
        os.write(self._write_end, f"{pgid}\n".encode())

    def cut(self) -> None:
        """Close the actor's end now, as its death would: the guardian ends the groups."""
        os.close(self._write_end)


def end_groups(pgids: list[int], grace_s: float) -> None:
    """SIGCONT (a stopped group cannot act on SIGTERM), SIGTERM, then SIGKILL after grace."""
    alive = [g for g in pgids if pids_in_group(g)]
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pgid in alive:
            _killpg(pgid, sig)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [g for g in alive if pids_in_group(g)]
    for pgid in alive:
        _killpg(pgid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def main(argv: list[str]) -> int:
    scratch, grace_s = Path(argv[0]), float(argv[1])
    guardian = os.fork()
    if guardian:  # the launcher: say who guards, and leave the guardian an orphan
        sys.stdout.write(f"{guardian}\n")
        sys.stdout.flush()
        os._exit(0)
    os.close(1)  # the actor reads the launcher's stdout to its end: let it end
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C on the node's terminal is not our end
    pgids = [int(line) for line in sys.stdin.buffer if line.strip()]  # until the actor is gone
    end_groups(pgids, grace_s)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
