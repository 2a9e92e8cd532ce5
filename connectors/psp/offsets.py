"""Commit points when requests complete out of order.

Each partition's records are taken in offset order but finish in any order; the offset that
may be committed is the lowest one not finished yet (or one past the last taken when all
are), so a crash replays every request whose result the broker has not acknowledged, and
nothing else. Pure bookkeeping: no Kafka here.
"""

from __future__ import annotations

from collections import deque

TopicPartitionKey = tuple[str, int]


class _Partition:
    __slots__ = ("committed", "next_offset", "taken", "unfinished")

    def __init__(self) -> None:
        # Offsets taken, in order, from the lowest unfinished one on (finished ones behind a
        # slow one stay until it finishes), and the unfinished ones among them.
        self.taken: deque[int] = deque()
        self.unfinished: set[int] = set()
        self.next_offset: int | None = None  # one past the last offset taken
        self.committed: int | None = None  # what was last handed out for commit

    def commit_point(self) -> int | None:
        while self.taken and self.taken[0] not in self.unfinished:
            self.taken.popleft()
        return self.taken[0] if self.taken else self.next_offset


class OffsetTracker:
    """Offsets taken and finished, per (topic, partition)."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _Partition] = {}
        self._open = 0

    @property
    def open(self) -> int:
        """Records taken and not finished, over every partition."""
        return self._open

    def take(self, tp: TopicPartitionKey, offset: int) -> bool:
        """A record was consumed. Offsets of a partition come in increasing order; one that
        does not (the consumer was rewound) starts the partition over from it, since every
        record from there on comes again. False then."""
        part = self._partitions.setdefault(tp, _Partition())
        in_order = part.next_offset is None or offset >= part.next_offset
        if not in_order:
            self._open -= len(part.unfinished)
            part = self._partitions[tp] = _Partition()
        part.taken.append(offset)
        part.unfinished.add(offset)
        part.next_offset = offset + 1
        self._open += 1
        return in_order

    def finish(self, tp: TopicPartitionKey, offset: int) -> bool:
        """The record's work is done (its results acknowledged). False if it was not taken
        here (its partition was revoked meanwhile, or it finished already)."""
        part = self._partitions.get(tp)
        if part is None or offset not in part.unfinished:
            return False
        part.unfinished.discard(offset)
        self._open -= 1
        return True

    def to_commit(self) -> dict[TopicPartitionKey, int]:
        """Commit points that moved since the last call (marked as handed out)."""
        moved: dict[TopicPartitionKey, int] = {}
        for tp, part in self._partitions.items():
            point = part.commit_point()
            if point is not None and point != part.committed:
                moved[tp] = point
                part.committed = point
        return moved

    def commit_point(self, tp: TopicPartitionKey) -> int | None:
        part = self._partitions.get(tp)
        return None if part is None else part.commit_point()

    def forget(self, tps: list[TopicPartitionKey]) -> None:
        """Partitions revoked: their unfinished records belong to the next owner now."""
        for tp in tps:
            part = self._partitions.pop(tp, None)
            if part is not None:
                self._open -= len(part.unfinished)
