"""Hard caps at spawn, from the settings as a user leaves them: a real child gets them.

The largest file an agent may write is capped by default (``limits.spawn_max_file_mb``,
1024 MB): a runaway write fails with "File too large" instead of filling the disk.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meta_orchestrator.actors.adapters.base import Launch
from meta_orchestrator.actors.app.start_order import spawn_caps
from meta_orchestrator.actors.processes.process_host import ProcessHost
from meta_orchestrator.config.limits_settings import DEFAULT_MAX_FILE_MB
from meta_orchestrator.config.settings import load_settings

MiB = 1024 * 1024
# Writes one byte past the cap and says how the write ended.
WRITER = """
import os, resource, signal, sys, time
# The host applies its caps just after the start (prlimit): wait for them, with a deadline.
deadline = time.monotonic() + 10
while resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY and time.monotonic() < deadline:
    time.sleep(0.005)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of a core dump
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)
data = memoryview(b"x" * (int(sys.argv[2]) + 1))
try:
    while data:
        data = data[os.write(fd, data):]  # a write stops at the cap; the next one fails
    print("wrote", flush=True)
except OSError as exc:
    print("refused", exc.errno, flush=True)
"""


def _limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max file size"):
            return line.split()[3]
    raise AssertionError("no Max file size line")


def test_the_default_settings_cap_an_agents_files_at_1024_mb(tmp_path: Path) -> None:
    settings = load_settings(None)
    assert settings.limits.spawn_max_file_mb == DEFAULT_MAX_FILE_MB == 1024
    host = ProcessHost(spawn_caps(settings))
    child = host.spawn(Launch(argv=(sys.executable, "-c", "import signal; signal.pause()"), env={}, cwd=tmp_path))
    try:
        assert _limit(child.pid) == str(1024 * MiB)
    finally:
        host.kill_all()
        child.wait_exit_unreaped()
        child.reap()


def test_zero_turns_the_cap_off(tmp_path: Path) -> None:
    assert spawn_caps(load_settings(None, {"limits.spawn_max_file_mb": 0})).max_file_bytes is None


def test_a_write_past_the_cap_fails_and_the_file_stops_at_it(tmp_path: Path) -> None:
    cap_mb = 1
    host = ProcessHost(spawn_caps(load_settings(None, {"limits.spawn_max_file_mb": cap_mb})))
    big = tmp_path / "big"
    child = host.spawn(Launch(argv=(sys.executable, "-c", WRITER, str(big), str(cap_mb * MiB)), env={}, cwd=tmp_path))
    out = child.stdout.read().decode()
    child.wait_exit_unreaped()
    assert child.reap() == 0
    assert out.startswith("refused 27"), out  # EFBIG
    assert big.stat().st_size == cap_mb * MiB
