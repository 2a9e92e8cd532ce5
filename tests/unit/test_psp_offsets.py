"""Commit points of out-of-order completion: never past an unfinished request."""

from __future__ import annotations

import random

from connectors.psp.offsets import OffsetTracker

A, B = ("requests", 0), ("requests", 1)


def test_commit_point_is_the_lowest_unfinished_offset() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12, 13):
        t.take(A, offset)
    t.take(B, 0)
    assert t.open == 5
    assert t.to_commit() == {A: 10, B: 0}
    assert t.to_commit() == {}  # nothing moved
    assert t.finish(A, 12) and t.finish(A, 13)
    assert t.to_commit() == {}  # 10 and 11 still out
    assert t.finish(A, 10)
    assert t.to_commit() == {A: 11}
    assert not t.finish(A, 10)  # twice
    assert not t.finish(A, 99)  # never taken
    assert t.finish(A, 11) and t.finish(B, 0)
    assert t.to_commit() == {A: 14, B: 1}
    assert t.open == 0


def test_forget_drops_a_revoked_partition() -> None:
    t = OffsetTracker()
    t.take(A, 5)
    t.take(B, 7)
    t.forget([A])
    assert t.open == 1
    assert not t.finish(A, 5)  # the task finished after the revoke: nothing to commit
    assert t.commit_point(A) is None and t.commit_point(B) == 7
    t.take(A, 3)  # assigned again, from the committed offset
    assert t.to_commit() == {A: 3, B: 7}


def test_a_rewind_starts_the_partition_over() -> None:
    t = OffsetTracker()
    assert t.take(A, 5) and t.take(A, 6) and t.take(A, 7)
    assert t.finish(A, 6)
    assert not t.take(A, 5)  # the consumer was rewound: 5, 6, 7... come again
    assert t.open == 1 and t.commit_point(A) == 5
    assert t.finish(A, 5)  # whichever task finishes it, its results are acknowledged
    assert t.commit_point(A) == 6


def test_random_completion_orders() -> None:
    rng = random.Random(7)
    for _ in range(200):
        t = OffsetTracker()
        offsets = list(range(rng.randrange(1, 40)))
        for o in offsets:
            t.take(A, o)
        done: set[int] = set()
        for o in rng.sample(offsets, len(offsets)):
            t.finish(A, o)
            done.add(o)
            point = t.commit_point(A)
            expected = min(set(offsets) - done, default=len(offsets))
            assert point == expected
