"""Finding a group's or a session's processes: the live ones, never a zombie or a stranger."""

from __future__ import annotations

import os
import subprocess
import sys

from meta_orchestrator.actors.processes.process_groups import pids_in_group, pids_in_session, running
from tests.conftest import wait_for

# The leader starts a child that exits at once and is never waited for (a zombie in the group)
# and one that sleeps, prints both pids, then sleeps itself.
LEADER = (
    "import subprocess, sys, time\n"
    "dead = subprocess.Popen([sys.executable, '-c', 'pass'])\n"
    "live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(dead.pid, live.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_group_and_a_session_hold_their_live_processes_only():
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        dead, live = map(int, leader.stdout.readline().split())
        # Never waited for, it stays a zombie while the leader lives: exited, not gone.
        wait_for(lambda: not running(dead), 30, message="the unwaited child to exit")
        assert os.path.exists(f"/proc/{dead}") and running(live) and running(leader.pid)
        assert sorted(pids_in_group(leader.pid)) == sorted([leader.pid, live])
        assert sorted(pids_in_session(leader.pid)) == sorted([leader.pid, live])
        assert os.getpid() not in pids_in_group(leader.pid)
        assert pids_in_group(os.getpgid(0)).count(os.getpid()) == 1  # ours, found once
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()
    wait_for(lambda: not pids_in_group(leader.pid), 30, message="the group is gone")
