"""The API's read model of the review queue: ``paystream.reviews-state.v1`` in memory.

The queue is small (what people review), so the whole changelog is kept as a dict of items,
built at start and followed on a thread (``Follower``: read_committed); a POST waits on it for
its decision. Past ``ITEMS_KEPT`` items, decided ones leave memory oldest first (the
warehouse's ``review_events`` keeps every one).
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Message, TopicPartition

from base.config import Settings
from base.kafka import partition_count, watermarks
from base.topics import TopicNames
from streams.reviews import model as rv
from streams.reviews_agent import decode_state

from .follower import Follower

log = logging.getLogger(__name__)

ITEMS_KEPT = 100_000


class ReviewsView(Follower):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, TopicNames(settings.topic_prefix).reviews_state, "reviews")
        self.items: dict[str, rv.Item] = {}

    def start(self) -> None:
        """Read the changelog to its end, then follow it on a thread."""
        consumer = self._new_consumer()
        n = partition_count(consumer, self.topic)
        ends = {}
        for p in range(n):
            low, high = watermarks(consumer, self.topic, p)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(self.topic, p, 0) for p in range(n)])
        read: dict[int, int] = {}
        deadline = time.monotonic() + self.settings.limits.process_start_timeout_s
        while ends and time.monotonic() < deadline:
            msgs = self._usable(consumer.consume(1000, timeout=0.2))
            for msg in msgs:
                part = msg.partition()
                if part is not None:
                    read[part] = (msg.offset() or 0) + 1
            self._apply(msgs)
            if not msgs:  # transaction markers at the end are never delivered: ask where
                for tp in consumer.position([TopicPartition(self.topic, p) for p in ends]):
                    read[tp.partition] = max(read.get(tp.partition, 0), tp.offset)
            ends = {p: h for p, h in ends.items() if read.get(p, 0) < h}
        log.info("view of %s: %d review items", self.topic, len(self.items))
        self._follow()

    # --- reads (event loop) ---

    def all(self) -> list[rv.Item]:
        with self._lock:
            return list(self.items.values())

    def get(self, item_id: str) -> rv.Item | None:
        with self._lock:
            return self.items.get(item_id)

    # --- writes (the tail) ---

    def _apply(self, msgs: list[Message]) -> list[str]:
        changed = []
        with self._lock:
            for msg in msgs:
                key, value = msg.key(), msg.value()
                if not isinstance(key, bytes) or value is None:
                    continue
                try:
                    item = decode_state(value)
                except (ValueError, TypeError, IndexError) as exc:
                    log.warning("view: undecodable review item skipped: %s", exc)
                    continue
                self.items.pop(item.item_id, None)
                self.items[item.item_id] = item  # the latest change last
                changed.append(item.item_id)
            if len(self.items) > ITEMS_KEPT:
                self._forget_decided(len(self.items) - ITEMS_KEPT)
        return changed

    def _forget_decided(self, n: int) -> None:
        old = [k for k, i in self.items.items() if i.status != rv.OPEN][:n]
        for k in old:
            del self.items[k]
