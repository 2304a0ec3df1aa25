"""The gateway's memory of recent events and frames: batches kept whole, bounded by count and
by bytes, read back by key."""

from __future__ import annotations

import pytest

from meta_orchestrator.webui.gateway import _Ring


def _texts(first: int, count: int, width: int = 1) -> tuple[str, ...]:
    return tuple(str(key).rjust(width, "0") for key in range(first, first + count))


def test_batches_past_the_count_bound_drop_their_oldest_texts_first() -> None:
    ring = _Ring(max_items=10, max_bytes=10_000)
    for first in range(1, 31, 6):  # 1-6, 7-12, ..., 25-30
        ring.extend(first, _texts(first, 6))
    assert len(ring) == 10 and ring.first_key == 21
    assert list(ring.texts()) == [str(k) for k in range(21, 31)]
    assert ring.size == sum(len(str(k)) for k in range(21, 31))


@pytest.mark.parametrize(
    ("key", "expected"),
    [(0, range(21, 31)), (20, range(21, 31)), (23, range(24, 31)), (24, range(25, 31)), (29, [30]), (30, []), (99, [])],
)
def test_after_a_key_gives_every_later_text_kept(key: int, expected: range | list[int]) -> None:
    ring = _Ring(max_items=10, max_bytes=10_000)
    for first in range(1, 31, 6):
        ring.extend(first, _texts(first, 6))
    assert ring.after(key) == [str(k) for k in expected]


def test_the_byte_bound_drops_as_few_texts_as_it_needs() -> None:
    ring = _Ring(max_items=1_000, max_bytes=100)
    ring.extend(1, _texts(1, 8, width=10))  # 80 bytes
    ring.append(9, "x" * 35)  # 115: the two oldest texts go (100 left), not the whole batch
    assert ring.first_key == 3 and len(ring) == 7 and ring.size == 95
    ring.append(10, "y" * 100)  # alone it fills the bound: everything before it goes
    assert ring.first_key == 10 and list(ring.texts()) == ["y" * 100] and ring.size == 100


def test_a_text_larger_than_the_byte_bound_is_not_kept() -> None:
    ring = _Ring(max_items=10, max_bytes=10)
    ring.extend(1, ("a", "b"))
    ring.append(3, "z" * 11)
    assert len(ring) == 0 and ring.first_key is None and ring.size == 0 and ring.after(0) == []
