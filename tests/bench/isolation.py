"""Benchmark: what the host isolation adds to a run's start. Run by hand:

    python -m tests.bench.isolation              # 15 rounds
    python -m tests.bench.isolation --rounds 5

Each round starts ``true`` inside the OS sandbox, alternately in each setup, and times the
whole start to exit (wall time, medians; the machine's load varies, so the setups are
interleaved and shown beside the plain one):

* plain: the sandbox as it was (read-only root, private /tmp, PID and IPC namespaces);
* hidden: plus a sized /dev/shm and /tmp, tmpfs over the socket folders and over
  ``--workspaces`` registered workspaces;
* landlock: plus Landlock (bwrap started from a restricted thread, as the process host
  does) - what a run gets;
* pasta (``--pasta``): the alternative not taken: a network namespace of its own
  (``--unshare-net``) joined by pasta, which the start must wait for (``passt`` package). The
  2023.03 pasta leaves its daemon running after the namespace is gone: the bench ends the
  ones it started (found by the namespace path each was given) before it prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from meta_orchestrator.actors.processes.process_host import _start_restricted
from meta_orchestrator.actors.sandbox.bwrap import Confinement, bwrap_argv, socket_dirs


def _plain(bwrap: str, folder: Path) -> list[str]:
    return bwrap_argv(Confinement(bwrap=bwrap, writable=(str(folder),), chdir=str(folder)), ["true"])


def _hidden(bwrap: str, folder: Path, workspaces: list[str]) -> list[str]:
    confinement = Confinement(
        bwrap=bwrap,
        writable=(str(folder),),
        hidden=(*workspaces, *socket_dirs()),
        chdir=str(folder),
        tmpfs_bytes=2048 * 1024 * 1024,
    )
    return bwrap_argv(confinement, ["true"])


def _landlocked(argv: list[str]) -> None:
    proc = _start_restricted(lambda: subprocess.Popen(argv, start_new_session=True), (443, 80, 53))
    if proc.wait(timeout=30) != 0:
        raise RuntimeError(f"exit {proc.returncode}")


def _with_pasta(argv: list[str], pasta: str, joined: list[str]) -> bool:
    """bwrap in a network namespace of its own, held before the command until pasta joined it;
    False when pasta could not join it (then the command runs without a network)."""
    info_r, info_w = os.pipe()
    block_r, block_w = os.pipe()
    sandboxed = [argv[0], "--unshare-net", "--info-fd", str(info_w), "--block-fd", str(block_r), *argv[1:]]
    proc = subprocess.Popen(sandboxed, pass_fds=(info_w, block_r), start_new_session=True)
    os.close(info_w)
    os.close(block_r)
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(info_r)
    child = json.loads(data)["child-pid"]
    joined.append(f"/proc/{child}/ns/net")
    net = ["-t", "none", "-u", "none", "-T", "none", "-U", "none", "--no-map-gw"]
    # Without -f pasta returns once the namespace is configured, leaving its daemon behind.
    done = subprocess.run(
        [pasta, "-q", "--runas", str(os.geteuid()), "--config-net", *net, "--netns", f"/proc/{child}/ns/net"],
        timeout=30,
        capture_output=True,
    )
    os.write(block_w, b"x")
    os.close(block_w)
    proc.wait(timeout=30)
    if done.returncode != 0:
        print("  pasta:", done.stderr.decode(errors="replace").strip().splitlines()[-1], file=sys.stderr)
    return done.returncode == 0


def _end_pastas(joined: list[str]) -> None:
    """End the pasta daemons this bench left: each is the one given one of these paths."""
    paths = set(joined)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and os.path.basename(cmdline[0]) == "pasta" and paths & set(cmdline):
            with contextlib.suppress(psutil.Error):
                proc.terminate()


def _time(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workspaces", type=int, default=20, help="registered workspaces hidden in each run")
    parser.add_argument("--pasta", action="store_true", help="also time a network namespace joined by pasta")
    args = parser.parse_args()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        sys.exit("bubblewrap is not installed")
    pasta = shutil.which("pasta") if args.pasta else None
    joined: list[str] = []
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        folder = Path(tmp) / "target"
        folder.mkdir()
        workspaces = []
        for i in range(args.workspaces):
            (Path(tmp) / f"ws{i}").mkdir()
            workspaces.append(str(Path(tmp) / f"ws{i}"))
        setups: dict[str, Callable[[], object]] = {
            "plain": lambda: subprocess.run(_plain(bwrap, folder), check=True),
            "hidden": lambda: subprocess.run(_hidden(bwrap, folder, workspaces), check=True),
            "landlock": lambda: _landlocked(_hidden(bwrap, folder, workspaces)),
        }
        if pasta is not None:
            setups["pasta"] = lambda: _with_pasta(_hidden(bwrap, folder, workspaces), pasta, joined)
        times: dict[str, list[float]] = {name: [] for name in setups}
        for run in setups.values():
            run()  # warm the caches once
        try:
            for _ in range(args.rounds):
                for name, run in setups.items():
                    times[name].append(_time(run))
        finally:
            _end_pastas(joined)
    base = statistics.median(times["plain"])
    print(f"start of `true` inside the sandbox, median of {args.rounds} ({args.workspaces} workspaces hidden):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:9} {median:7.1f} ms  (+{median - base:5.1f} ms over plain)")


if __name__ == "__main__":
    main()
