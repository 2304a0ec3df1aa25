"""The pipe reader: lines come out whole and in order however the writes were cut."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from pathlib import Path

from meta_orchestrator.actors.processes.line_splitter import iter_line_batches

from tests.conftest import wait_for


def test_lines_survive_any_chunking_and_long_lines_are_kept_whole(tmp_path: Path):
    rng = random.Random(7)
    for trial in range(150):
        lines = [
            bytes(rng.choice(b"ab\r{}") for _ in range(rng.choice([0, 1, 50, 999, 1000, 1001, 5000])))
            for _ in range(rng.randint(0, 25))
        ]
        data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        read_end, write_end = os.pipe()

        def write(data: bytes = data, write_end: int = write_end) -> None:
            i = 0
            while i < len(data):
                n = rng.randint(1, 700)
                os.write(write_end, data[i : i + n])
                i += n
            os.close(write_end)

        writer = threading.Thread(target=write)
        writer.start()
        names = iter(range(10_000))
        got, totals = [], []
        side_file = lambda trial=trial, names=names: tmp_path / f"{trial}-{next(names)}"  # noqa: E731
        for batch in iter_line_batches(read_end, 1000, side_file):
            for data_, total, path in batch:
                got.append(Path(path).read_bytes().removesuffix(b"\n") if path else data_)
                totals.append(total)
                if path:
                    assert data_ == got[-1][: len(data_)]  # the head kept inline
        writer.join()
        os.close(read_end)
        expected = data.split(b"\n")
        if expected and expected[-1] == b"":
            expected.pop()
        expected = [e[:-1] if e.endswith(b"\r") and len(e) <= 1000 else e for e in expected]
        assert got == expected, trial
        assert totals == [len(e) for e in expected], trial


def test_a_carriage_return_before_a_read_boundary_is_still_taken_off(tmp_path: Path):
    """A CRLF line whose CR ends one read and whose LF starts the next: the next read has no
    CR in it, yet the line it completes does (the fast path must look at the line, not the read)."""
    writer, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one read per send
    for part in (b"one\r", b"\ntwo\n", b"three\r\nfour\n", b"five"):
        writer.send(part)
    writer.close()
    lines = [line for batch in iter_line_batches(reader.fileno(), 1000, lambda: tmp_path / "x") for line in batch]
    reader.close()
    assert lines == [(b"one", 3, None), (b"two", 3, None), (b"three", 5, None), (b"four", 4, None), (b"five", 4, None)]


def test_terminate_all_ends_every_group_at_once_and_their_lines_are_all_read(tmp_path: Path):
    """One CLI ends on SIGTERM, one ignores it (and its child with it): both groups are gone
    after one grace, and every line they printed before is still read from their pipes."""
    import signal
    import sys

    from meta_orchestrator.actors.adapters.base import Launch
    from meta_orchestrator.actors.processes.process_groups import pids_in_group
    from meta_orchestrator.actors.processes.process_host import ProcessHost

    polite = "import sys, time\nfor i in range(3): print('polite', i, flush=True)\ntime.sleep(600)\n"
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "for i in range(3): print('stubborn', i, flush=True)\n"
        "time.sleep(600)\n"
    )
    host = ProcessHost()
    procs = [
        host.spawn(Launch(argv=(sys.executable, "-c", code), env=dict(os.environ), cwd=tmp_path))
        for code in (polite, stubborn)
    ]
    lines: dict[int, list[bytes]] = {p.pid: [] for p in procs}
    readers = []
    for proc in procs:

        def read(proc=proc) -> None:
            for batch in proc.line_batches("stdout", 1_048_576, lambda: tmp_path / "overflow.txt"):
                lines[proc.pid].extend(line for line, _, _ in batch)

        readers.append(threading.Thread(target=read))
        readers[-1].start()
    reapers = [threading.Thread(target=p.wait_exit_unreaped) for p in procs]
    for reaper in reapers:
        reaper.start()
    for proc in procs:  # each has printed its lines
        deadline = time.monotonic() + 30
        while len(lines[proc.pid]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert host.terminate_all(grace_s=0.5) == 2
    for thread in (*readers, *reapers):
        thread.join(30)
        assert not thread.is_alive()
    assert [p.reap() for p in procs] == [-signal.SIGTERM, -signal.SIGKILL]
    # The stubborn one's child too: killed with its group, it still runs its exit in the kernel
    # for a moment after its parent is reaped (seen under load), so wait for it with a deadline.
    wait_for(lambda: all(not pids_in_group(p.pgid) for p in procs), 10, message="both groups gone")
    assert lines[procs[0].pid] == [b"polite 0", b"polite 1", b"polite 2"]
    assert lines[procs[1].pid] == [b"stubborn 0", b"stubborn 1", b"stubborn 2"]
    assert host.terminate_all(grace_s=0.5) == 0  # nothing left to end
