"""Local state of an agent (ledger, payments): one rocksdict per input partition, rebuilt from a changelog.

The compacted changelog topic is the truth; rocksdict is a cache of it that survives restarts.
Each store keeps, atomically with its values, the changelog offset it has applied up to (its
checkpoint). On every assignment the store reads the changelog from that checkpoint to the end,
which also repairs the one gap a crash can leave: a transaction committed to Kafka whose state
was not yet written locally.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Generic, Protocol, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition
from rocksdict import Options, Rdict, WriteBatch

from base.kafka import position as record_position
from base.kafka import watermarks
from streams.errors import FatalProcessorError

log = logging.getLogger(__name__)

S = TypeVar("S")

_CHECKPOINT = b"\x00changelog-next-offset"


# RocksDB's defaults (64 MB memtables, two per DB) cost ~128 MB per partition: 1.5 GB for a
# worker with 12. Small memtables keep a worker with a million accounts well under 500 MB.
MEMTABLE_BYTES = 4 << 20
MEMTABLES_MAX = 2


def _options() -> Options:
    opt = Options(raw_mode=True)
    opt.set_write_buffer_size(MEMTABLE_BYTES)
    opt.set_max_write_buffer_number(MEMTABLES_MAX)
    return opt


class PartitionStore(Generic[S]):
    """State of one partition: key -> state, plus the next changelog offset to apply.

    States are the agent's own type; ``encode``/``decode`` turn them into changelog bytes.
    """

    def __init__(
        self,
        path: Path,
        cache_entries_max: int,
        encode: Callable[[S], bytes],
        decode: Callable[[bytes], S],
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), options=_options())
        self._cache: dict[str, S | None] = {}
        self._cache_max = cache_entries_max
        self._encode = encode
        self._decode = decode

    def get(self, key: str) -> S | None:
        try:
            return self._cache[key]
        except KeyError:
            pass
        raw = self._db.get(key.encode())
        state = None if raw is None else self._decode(raw)
        self._remember(key, state)
        return state

    def _remember(self, key: str, state: S | None) -> None:
        if len(self._cache) >= self._cache_max:
            # Drop the oldest entry (dicts keep insertion order): bounded, and cheap.
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = state

    @property
    def checkpoint(self) -> int:
        raw = self._db.get(_CHECKPOINT)
        return 0 if raw is None else int(raw)

    def apply(
        self,
        states: dict[str, S],
        next_offset: int | None,
        encoded: dict[str, bytes] | None = None,
    ) -> None:
        """Write committed states and the checkpoint in one atomic batch. ``encoded`` holds
        states already encoded (for the changelog): each state is encoded once per batch."""
        wb = WriteBatch(raw_mode=True)
        encode = self._encode
        for key, state in states.items():
            raw = encoded.get(key) if encoded is not None else None
            wb.put(key.encode(), encode(state) if raw is None else raw)
            self._cache[key] = state
        if next_offset is not None:
            wb.put(_CHECKPOINT, str(next_offset).encode())
        self._db.write(wb)

    def apply_raw(self, items: list[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Apply changelog records as they are (restore)."""
        wb = WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
            self._cache.pop(key.decode(), None)
        wb.put(_CHECKPOINT, str(next_offset).encode())
        self._db.write(wb)

    def items(self) -> Iterator[tuple[str, S]]:
        for k, v in self._db.items():
            if k != _CHECKPOINT:
                yield cast(bytes, k).decode(), self._decode(cast(bytes, v))

    def close(self) -> None:
        self._db.close()

    def wipe(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


class Restorable(Protocol):
    """What ``restore`` needs of a partition's store (a ``PartitionStore``, or the scheduler's
    in-memory one)."""

    @property
    def checkpoint(self) -> int: ...

    def apply_raw(self, items: list[tuple[bytes, bytes | None]], next_offset: int) -> None: ...


def restore(
    consumer: Consumer,
    stores: Mapping[int, Restorable],
    topic: str,
    *,
    batch_records_max: int,
    timeout_s: float,
) -> int:
    """Bring every store up to the end of its changelog partition. Returns records applied.

    All partitions are read at once. Reads are read_committed up to the high watermark; an
    open transaction (a fenced zombie's, until the coordinator aborts it) holds the end back,
    so we wait for it, up to ``timeout_s``.
    """
    position: dict[int, int] = {}
    high: dict[int, int] = {}
    for p, store in stores.items():
        low, hi = watermarks(consumer, topic, p)
        if store.checkpoint and store.checkpoint < low:
            raise FatalProcessorError(f"changelog {topic}/{p} lost records below {low}")
        if max(store.checkpoint, low) < hi:
            position[p], high[p] = max(store.checkpoint, low), hi
    if not position:
        return 0
    consumer.assign([TopicPartition(topic, p, o) for p, o in position.items()])
    applied = 0
    deadline = time.monotonic() + timeout_s
    pending = set(position)
    try:
        while pending:
            if time.monotonic() > deadline:
                stuck = {p: (position[p], high[p]) for p in pending}
                raise FatalProcessorError(f"restore of {topic} stuck at {stuck}")
            batches: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for msg in consumer.consume(batch_records_max, timeout=0.2):
                _, p, offset = record_position(msg)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # read_committed EOF is the last stable offset: past every marker.
                        position[p] = max(position[p], offset)
                        continue
                    raise FatalProcessorError(f"restore of {topic}/{p}: {err}")
                key = msg.key()
                if key is not None:
                    batches.setdefault(p, []).append((key, msg.value()))
                position[p] = offset + 1
            for p, batch in batches.items():
                stores[p].apply_raw(batch, position[p])
                applied += len(batch)
            for p in list(pending):
                if position[p] >= high[p]:
                    # New committed records may have landed meanwhile (a zombie's last commit).
                    _, high[p] = watermarks(consumer, topic, p)
                    if position[p] >= high[p]:
                        stores[p].apply_raw([], position[p])
                        pending.discard(p)
    finally:
        consumer.unassign()
    log.info("restored %s partitions %s: %d records", topic, sorted(position), applied)
    return applied
