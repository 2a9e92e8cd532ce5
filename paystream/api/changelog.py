"""The API's read model of an agent's state changelog (the payments', the users').

One ``PartitionStore`` (rocksdict, plus its bounded LRU of decoded states) per partition under
the view's state directory, brought up to date at start with ``streams.store.restore`` and
then kept current by a read_committed consumer on its own thread, which wakes the requests
waiting for a key when that key's record arrives. Lookups read the stores only, so memory
stays bounded whatever the number of keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count, watermarks
from streams.partitioner import partition_for
from streams.store import PartitionStore, restore

from .errors import ViewFailed

log = logging.getLogger(__name__)

S = TypeVar("S")

# How long one poll of the tail waits when nothing arrives (also how fast close() is served).
_POLL_S = 0.1
# A progress line at most this often, when something was applied.
_PROGRESS_EVERY_S = 60.0
# Consume errors logged one by one before they are only counted.
_ERRORS_LOGGED = 10


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class ChangelogView(Generic[S]):
    """Key -> state, as an agent's changelog ``topic`` has it (``encode``/``decode``: the
    agent's state codec)."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        topic: str,
        encode: Callable[[S], bytes],
        decode: Callable[[bytes], S],
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.topic = topic
        self._encode = encode
        self._decode = decode
        self.partitions = 0
        self.records_applied = 0
        self.failure: BaseException | None = None
        self._on_failure = on_failure
        self._stores: dict[int, PartitionStore[S]] = {}
        # One lock for the stores (their LRU is not thread-safe, and a read must not cache a
        # state the tail is replacing) and the waiters (registered before a read, woken after
        # a write: no arrival is missed).
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    # --- lifecycle ---

    def start(self) -> None:
        """Restore every partition, then follow the changelog on a thread. Blocks until the
        view is as current as the changelog was when it started."""
        started = time.monotonic()
        limits = self.settings.limits
        consumer = Consumer(
            {
                **kafka_client_config(self.settings),
                "group.id": f"{self.settings.topic_prefix}paystream-api-view-{uuid.uuid4().hex[:8]}",
                "client.id": f"paystream-api-{self.settings.api_port}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,  # restore() finds the end by it
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "queued.max.messages.kbytes": 16384,
                # librdkafka's own lines through logging, not straight to stderr.
                "logger": logging.getLogger("paystream.api.rdkafka"),
            }
        )
        self._consumer = consumer
        self.partitions = partition_count(consumer, self.topic)
        for p in range(self.partitions):
            self._stores[p] = self._open_store(consumer, p)
        applied = restore(
            consumer,
            self._stores,
            self.topic,
            batch_records_max=limits.restore_batch_records_max,
            timeout_s=limits.transaction_timeout_ms / 1000 + 60,
        )
        consumer.assign(
            [
                TopicPartition(self.topic, p, s.checkpoint or OFFSET_BEGINNING)
                for p, s in self._stores.items()
            ]
        )
        log.info(
            "view of %s: %d partitions restored (%d records) in %.1f s; following it",
            self.topic,
            self.partitions,
            applied,
            time.monotonic() - started,
        )
        self._thread = threading.Thread(target=self._tail, name=f"view-{self.topic}", daemon=True)
        self._thread.start()

    def _open_store(self, consumer: Consumer, p: int) -> PartitionStore[S]:
        path = self.state_dir / f"p{p}"
        store: PartitionStore[S] = PartitionStore(
            path, self.settings.limits.state_cache_entries_max, self._encode, self._decode
        )
        low, high = watermarks(consumer, self.topic, p)
        if store.checkpoint and not low <= store.checkpoint <= high:
            # A cache of another incarnation of the topic, or of records deleted since: the
            # changelog is the truth, so start this partition over.
            log.warning(
                "view partition %d: checkpoint %d outside [%d, %d]; rebuilding it",
                p,
                store.checkpoint,
                low,
                high,
            )
            store.wipe()
            store = PartitionStore(
                path, self.settings.limits.state_cache_entries_max, self._encode, self._decode
            )
        return store

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif self._consumer is not None:
            self._consumer.close()
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()

    # --- reads (event loop) ---

    def get(self, key: str) -> S | None:
        if self.failure is not None:
            raise ViewFailed(f"the view stopped: {self.failure}")
        p = partition_for(key, self.partitions)
        with self._lock:
            return self._stores[p].get(key)

    def watch(self, keys: Iterable[str]) -> asyncio.Future[None]:
        """A future resolved when a record for any of ``keys`` is applied. Register it before
        reading the state it waits for; ``unwatch`` it when done."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            for k in keys:
                self._waiters.setdefault(k, set()).add(fut)
        return fut

    def unwatch(self, keys: Iterable[str], fut: asyncio.Future[None]) -> None:
        with self._lock:
            for k in keys:
                waiting = self._waiters.get(k)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[k]

    # --- the tail (its own thread) ---

    def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batch_max = self.settings.limits.restore_batch_records_max
        errors = 0
        last_log, logged_applied = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                # consume() waits out its whole timeout unless the batch fills: wait for one
                # record, then take what else is there at once (admissions wait on it).
                first = consumer.poll(_POLL_S)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(batch_max - 1, timeout=0)]
                items: dict[int, list[tuple[bytes, bytes | None]]] = {}
                nexts: dict[int, int] = {}
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal():
                            raise KafkaException(err)
                        errors += 1
                        if errors <= _ERRORS_LOGGED:
                            log.warning("view: consume error (%d so far): %s", errors, err)
                        continue
                    p, offset, key = msg.partition(), msg.offset(), msg.key()
                    if p is None or offset is None:
                        continue
                    if isinstance(key, bytes) and _utf8(key):  # the workers write str keys
                        items.setdefault(p, []).append((key, msg.value()))
                    nexts[p] = offset + 1
                if nexts:
                    self._apply(items, nexts)
                now = time.monotonic()
                if now - last_log > _PROGRESS_EVERY_S and self.records_applied != logged_applied:
                    log.info(
                        "view: %d records applied since start (%d in the last %.0f s)",
                        self.records_applied,
                        self.records_applied - logged_applied,
                        now - last_log,
                    )
                    last_log, logged_applied = now, self.records_applied
        except BaseException as exc:
            self.failure = exc
            log.exception("view: following %s failed", self.topic)
            if self._on_failure is not None:
                self._on_failure(exc)
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _apply(
        self, items: dict[int, list[tuple[bytes, bytes | None]]], nexts: dict[int, int]
    ) -> None:
        woken: list[asyncio.Future[None]] = []
        with self._lock:
            for p, next_offset in nexts.items():
                store = self._stores.get(p)
                if store is None:  # closing
                    return
                store.apply_raw(items.get(p, []), next_offset)
            for batch in items.values():
                for raw_key, _ in batch:
                    waiting = self._waiters.pop(raw_key.decode(), None)
                    if waiting:
                        woken.extend(waiting)
        self.records_applied += sum(len(b) for b in items.values())
        for fut in woken:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                fut.get_loop().call_soon_threadsafe(_wake, fut)
