"""Calls per PSP over a sliding window: counts and a latency histogram, pure.

Each executor publishes its window every second (``PspStats`` on ``paystream.psp-stats.v1``);
``paystream psp status`` adds the executors' histograms and reads p50/p99 from the sum, which
is exact to a bucket (buckets grow by 25%: a percentile is off by at most a quarter).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

US_PER_S: Final = 1_000_000
# Bucket i holds latencies up to BOUNDS_US[i]; the last bucket holds everything above.
BUCKET_FIRST_US: Final = 100
BUCKET_GROWTH: Final = 1.25
BUCKETS: Final = 64
BOUNDS_US: Final[tuple[int, ...]] = tuple(
    math.ceil(BUCKET_FIRST_US * BUCKET_GROWTH**i) for i in range(BUCKETS - 1)
)


def bucket_of(latency_us: int) -> int:
    """The first bucket whose bound holds ``latency_us`` (the last one past every bound)."""
    return bisect.bisect_left(BOUNDS_US, latency_us)


def percentile_us(buckets: Sequence[int], q: float) -> int | None:
    """The ``q`` quantile (0..1) of a histogram, as its bucket's upper bound; None if empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return BOUNDS_US[i] if i < len(BOUNDS_US) else BOUNDS_US[-1] * 2
    return BOUNDS_US[-1] * 2  # pragma: no cover


def add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


@dataclass(frozen=True, slots=True)
class Snapshot:
    successes: int
    failures: int
    rejected: int
    buckets: tuple[int, ...]


class CallStats:
    """One PSP's calls in this executor over the last ``window_s`` seconds."""

    def __init__(self, window_s: int) -> None:
        self.window_us = window_s * US_PER_S
        self._calls: deque[tuple[int, bool, int]] = deque()  # (end, ok, bucket)
        self._rejected: deque[int] = deque()
        self.in_flight = 0

    def record(self, now_us: int, ok: bool, latency_us: int) -> None:
        self._calls.append((now_us, ok, bucket_of(max(0, latency_us))))

    def reject(self, now_us: int) -> None:
        self._rejected.append(now_us)

    def snapshot(self, now_us: int) -> Snapshot:
        horizon = now_us - self.window_us
        while self._calls and self._calls[0][0] <= horizon:
            self._calls.popleft()
        while self._rejected and self._rejected[0] <= horizon:
            self._rejected.popleft()
        buckets = [0] * BUCKETS
        failures = 0
        for _, ok, b in self._calls:
            buckets[b] += 1
            failures += not ok
        return Snapshot(len(self._calls) - failures, failures, len(self._rejected), tuple(buckets))
