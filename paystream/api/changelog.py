"""The API's read model of an agent's state changelog (the payments', the users').

One ``PartitionStore`` (rocksdict, plus its bounded LRU of decoded states) per partition under
the view's state directory, brought up to date at start with ``streams.store.restore`` and
then kept current by a read_committed consumer on its own thread, which wakes the requests
waiting for a key when that key's record arrives. Lookups read the stores only, so memory
stays bounded whatever the number of keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from base.config import Settings
from base.kafka import partition_count, watermarks
from streams.partitioner import partition_for
from streams.store import PartitionStore, restore

from .errors import ViewFailed
from .follower import Follower

log = logging.getLogger(__name__)

S = TypeVar("S")


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True


class ChangelogView(Follower, Generic[S]):
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
        super().__init__(settings, topic, "view", on_failure)
        self.state_dir = state_dir
        self._encode = encode
        self._decode = decode
        self.partitions = 0
        # Under the lock: their LRU is not thread-safe, and a read must not cache a state the
        # tail is replacing.
        self._stores: dict[int, PartitionStore[S]] = {}

    # --- lifecycle ---

    def start(self) -> None:
        """Restore every partition, then follow the changelog on a thread. Blocks until the
        view is as current as the changelog was when it started."""
        started = time.monotonic()
        limits = self.settings.limits
        consumer = self._new_consumer(
            **{"enable.partition.eof": True, "queued.max.messages.kbytes": 16384}
        )  # restore() finds the end by the partition EOF
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
        self._follow()

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
        super().close()
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

    # --- the tail (its own thread) ---

    def _apply(self, msgs: list[Message]) -> list[str]:
        items: dict[int, list[tuple[bytes, bytes | None]]] = {}
        nexts: dict[int, int] = {}
        for msg in msgs:
            p, offset, key = msg.partition(), msg.offset(), msg.key()
            if p is None or offset is None:
                continue
            if isinstance(key, bytes) and _utf8(key):  # the workers write str keys
                items.setdefault(p, []).append((key, msg.value()))
            nexts[p] = offset + 1
        with self._lock:
            for p, next_offset in nexts.items():
                store = self._stores.get(p)
                if store is None:  # closing
                    return []
                store.apply_raw(items.get(p, []), next_offset)
        return [raw_key.decode() for batch in items.values() for raw_key, _ in batch]
