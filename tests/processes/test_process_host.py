"""The pipe reader: lines come out whole and in order however the writes were cut."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

from meta_orchestrator.actors.processes.process_host import iter_line_batches


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
