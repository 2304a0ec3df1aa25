"""Seeking in an agent's event file: every answer is checked against a plain scan."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meta_orchestrator.actors.history.event_log import EventLog, parse_time

START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    # As pydantic writes them: no fraction when the microseconds are 0.
    return moment.isoformat().replace("+00:00", "Z")


def _write(path: Path, count: int, rng: random.Random, torn: bool = False, bad_every: int = 0) -> list[dict]:
    records = []
    moment = START
    with path.open("w", encoding="utf-8") as out:
        for seq in range(1, count + 1):
            moment += timedelta(microseconds=rng.choice((0, 0, 1, 250_000, 1_000_000 - moment.microsecond)))
            record = {
                "type": "status",
                "agent": "claude",
                "timestamp": _stamp(moment),
                "payload": {"text": "x" * rng.randrange(0, 3000), "seq": -seq},  # a decoy "seq"
                "seq": seq,
            }
            records.append(record)
            out.write(json.dumps(record) + "\n")
            if bad_every and seq % bad_every == 0:
                out.write("not json {\n")
        if torn:
            out.write('{"type": "status", "seq": ')
    return records


@pytest.mark.parametrize("torn", [False, True])
def test_seek_by_seq_and_time_agree_with_a_scan(tmp_path: Path, torn: bool) -> None:
    rng = random.Random(7)
    path = tmp_path / "claude.jsonl"
    records = _write(path, 400, rng, torn=torn, bad_every=37)
    with EventLog(path) as log:
        for seq in [0, 1, 2, 37, 38, 199, 399, 400, 401, 10_000]:
            window = log.read_from(log.offset_of_seq(seq), 1)
            expected = [r for r in records if r["seq"] >= seq][:1]
            assert window.records == expected, seq
        for record in rng.sample(records, 60):
            moment = parse_time(record["timestamp"])
            window = log.read_from(log.offset_of_time(moment), 1)
            first = next(r for r in records if parse_time(r["timestamp"]) >= moment)
            assert window.records == [first]
        after_all = log.read_from(log.offset_of_time(START + timedelta(days=1)), 5)
        assert after_all.records == []


def test_tail_returns_the_last_whole_records(tmp_path: Path) -> None:
    rng = random.Random(3)
    path = tmp_path / "codex.jsonl"
    records = _write(path, 300, rng, torn=True)
    with EventLog(path) as log:
        for limit in (0, 1, 5, 50, 299, 300, 1000):
            window = log.tail(limit)
            assert window.records == (records[-limit:] if limit else [])
            # The window's start is a line start: reading forward from it gives the same records.
            assert log.read_from(window.start, max(limit, 1)).records[: len(window.records)] == window.records
        # Paging on from a window reaches the end and no further; the torn line waits.
        window = log.tail(10)
        assert log.read_from(window.end, 10).records == []


def test_the_file_may_grow_while_it_is_open(tmp_path: Path) -> None:
    path = tmp_path / "gemini.jsonl"
    records = _write(path, 20, random.Random(1), torn=True)
    with EventLog(path) as log:
        assert log.tail(1).records == records[-1:]
        with path.open("a", encoding="utf-8") as out:
            out.write('"x"}\n')  # the torn line ends (as garbage), then a real record follows
            out.write(json.dumps({**records[-1], "seq": 21}) + "\n")
        window = log.read_from(log.offset_of_seq(21), 5)
        assert [r["seq"] for r in window.records] == [21]


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with EventLog(empty) as log:
        assert log.tail(10).records == []
        assert log.offset_of_seq(5) == 0
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe\n[1, 2]\nnot json\n")
    with EventLog(garbage) as log:
        window = log.tail(10)
        assert window.records == [] and window.bad_lines == 3
        assert log.offset_of_seq(1) == garbage.stat().st_size


def test_read_before_an_offset_and_after_a_moment(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "claude.jsonl"
    records = _write(path, 200, rng, bad_every=11)
    with EventLog(path) as log:
        for seq in (1, 2, 50, 199, 200):
            offset = log.offset_of_seq(seq)
            window = log.read_before(offset, 7)
            assert window.records == [r for r in records if r["seq"] < seq][-7:]
            # each end is where the next record's line begins (or a skipped bad line)
            for record, end in zip(window.records, window.ends, strict=True):
                following = log.read_from(end, 1).records
                assert not following or following[0]["seq"] > record["seq"]
        for record in rng.sample(records, 30):
            moment = parse_time(record["timestamp"])
            after = log.read_from(log.offset_of_time_after(moment), 1).records
            expected = [r for r in records if parse_time(r["timestamp"]) > moment][:1]
            assert after == expected
        whole = log.read_from(0, 10_000, stop_at=log.offset_of_seq(100))
        assert [r["seq"] for r in whole.records] == list(range(1, 100))
