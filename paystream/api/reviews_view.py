"""The API's read model of the review queue: ``paystream.reviews-state.v1`` in memory.

The queue is small (what people review), so the whole changelog is kept as a dict of items,
built at start and followed on a thread (read_committed); a POST waits on it for its
decision. Past ``ITEMS_KEPT`` items, decided ones leave memory oldest first (the warehouse's
``review_events`` keeps every one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count, watermarks
from base.topics import TopicNames
from streams.reviews import model as rv
from streams.reviews_agent import decode_state

log = logging.getLogger(__name__)

ITEMS_KEPT = 100_000
_POLL_S = 0.1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class ReviewsView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = TopicNames(settings.topic_prefix).reviews_state
        self.items: dict[str, rv.Item] = {}
        self.failure: BaseException | None = None
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    def start(self) -> None:
        """Read the changelog to its end, then follow it on a thread."""
        consumer = Consumer(
            {
                **kafka_client_config(self.settings),
                "group.id": f"{self.settings.topic_prefix}paystream-api-reviews-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "logger": logging.getLogger("paystream.api.rdkafka"),
            }
        )
        self._consumer = consumer
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
            msgs = consumer.consume(1000, timeout=0.2)
            for msg in msgs:
                part = msg.partition()
                if msg.error() is None and part is not None:
                    read[part] = (msg.offset() or 0) + 1
            self._apply(msgs)
            if not msgs:  # transaction markers at the end are never delivered: ask where
                for tp in consumer.position([TopicPartition(self.topic, p) for p in ends]):
                    read[tp.partition] = max(read.get(tp.partition, 0), tp.offset)
            ends = {p: h for p, h in ends.items() if read.get(p, 0) < h}
        log.info("view of %s: %d review items", self.topic, len(self.items))
        self._thread = threading.Thread(target=self._tail, name="api-reviews", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif self._consumer is not None:
            self._consumer.close()

    # --- reads (event loop) ---

    def all(self) -> list[rv.Item]:
        with self._lock:
            return list(self.items.values())

    def get(self, item_id: str) -> rv.Item | None:
        with self._lock:
            return self.items.get(item_id)

    def watch(self, item_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.setdefault(item_id, set()).add(fut)
        return fut

    def unwatch(self, item_id: str, fut: asyncio.Future[None]) -> None:
        with self._lock:
            waiting = self._waiters.get(item_id)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del self._waiters[item_id]

    # --- the tail ---

    def _tail(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            while not self._stop.is_set():
                first = consumer.poll(_POLL_S)
                if first is None:
                    continue
                self._apply([first, *consumer.consume(999, timeout=0)])
        except BaseException as exc:
            self.failure = exc
            log.exception("view: following %s failed", self.topic)
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _apply(self, msgs: list[Any]) -> None:
        woken: list[asyncio.Future[None]] = []
        with self._lock:
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                        raise KafkaException(err)
                    continue
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
                woken.extend(self._waiters.pop(item.item_id, ()))
            if len(self.items) > ITEMS_KEPT:
                self._forget_decided(len(self.items) - ITEMS_KEPT)
        for fut in woken:
            with contextlib.suppress(RuntimeError):
                fut.get_loop().call_soon_threadsafe(_wake, fut)

    def _forget_decided(self, n: int) -> None:
        old = [k for k, i in self.items.items() if i.status != rv.OPEN][:n]
        for k in old:
            del self.items[k]
