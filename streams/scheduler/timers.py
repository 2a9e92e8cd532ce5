"""Due times of the schedules a scheduler owns: a heap with lazy deletion.

An entry is (due time, schedule id). Entries are never removed: a popped entry whose
schedule no longer wants it (paused, rescheduled, revoked) is dropped by ``valid``, the
caller's check against the schedule's current state.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def arm(self, due_us: int, schedule_id: str) -> None:
        heapq.heappush(self._heap, (due_us, schedule_id))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_us: int, valid: Callable[[str, int], bool]) -> Iterator[str]:
        """Schedules due by ``now_us``, in due order, each once; entries ``valid`` refuses
        (schedule id, due time) are dropped."""
        seen: set[str] = set()
        heap = self._heap
        while heap and heap[0][0] <= now_us:
            due, schedule_id = heapq.heappop(heap)
            if schedule_id not in seen and valid(schedule_id, due):
                seen.add(schedule_id)
                yield schedule_id

    def compact(self, keep: Callable[[str, int], bool]) -> None:
        """Drop every entry ``keep`` refuses (after a revocation, when many went stale)."""
        self._heap = [e for e in self._heap if keep(e[1], e[0])]
        heapq.heapify(self._heap)
