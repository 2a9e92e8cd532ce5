"""A partition of the schedule store read into memory by ``streams.store.restore``: the
latest record of each key (a tail not compacted yet still holds older ones), so each
schedule is decoded once, however many of its records the partition holds."""

from __future__ import annotations


class LatestRecords:
    def __init__(self) -> None:
        self.latest: dict[bytes, bytes | None] = {}
        self._next = 0

    @property
    def checkpoint(self) -> int:
        return self._next

    def apply_raw(self, items: list[tuple[bytes, bytes | None]], next_offset: int) -> None:
        for key, value in items:
            self.latest[key] = value
        self._next = next_offset
