"""The lifeline guardian ends a run's process group once the process that started it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from meta_orchestrator.actors.processes.lifeline import Lifeline
from tests.conftest import wait_for


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cutting_the_lifeline_ends_the_watched_group_and_removes_the_scratch_folder(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "line-1.txt").write_text("kept for the driver")
    lifeline = Lifeline(scratch, grace_s=5.0)
    group = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert group.stdout is not None and group.stdout.readline() == b"up\n"
    child = psutil.Process(group.pid).children()[0]
    group.send_signal(signal.SIGSTOP)  # even a paused group ends
    lifeline.watch(group.pid)
    assert not _gone(lifeline.guardian_pid) and not _gone(child.pid)
    assert psutil.Process(lifeline.guardian_pid).ppid() != os.getpid()  # no child of its starter
    lifeline.cut()  # as the actor's death closes it
    assert group.wait(15) == -signal.SIGTERM
    wait_for(lambda: _gone(lifeline.guardian_pid), message="the guardian to finish")
    wait_for(lambda: _gone(child.pid), message="the group's other member to be gone")
    assert not scratch.exists()


def test_a_guardian_whose_group_ended_on_its_own_just_leaves(tmp_path):
    lifeline = Lifeline(tmp_path / "scratch", grace_s=5.0)
    ended = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    lifeline.watch(ended.pid)
    assert ended.wait(15) == 0
    lifeline.cut()
    wait_for(lambda: _gone(lifeline.guardian_pid), message="the guardian to leave")
