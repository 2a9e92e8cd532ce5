"""An in-memory Kafka for the deterministic simulation of the exactly-once processor.

The one place a fake broker belongs: it models exactly what the processor relies on, and a
scheduler that crashes the process at any of its calls.

* A transaction's records reach the log only when it commits, together with its consumer
  offsets; an aborted or abandoned one leaves nothing. That is read_committed as the
  processor sees it (real Kafka writes records at once and hides them behind the LSO; the
  visible outcome is the same).
* ``init_transactions`` with a transactional id aborts whatever that id left open: a
  restarted process never sees its dead self's transaction.
* Delivery reports are served by ``poll``, after the commit, with the records' offsets.
* The scheduler counts every call by kind; a call whose count is scheduled raises ``Crash``
  (a BaseException: nothing in the processor catches it, as nothing survives a kill -9).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, TopicPartition


class Crash(BaseException):
    """The process dies here (kill -9)."""


class Idle(BaseException):
    """Nothing left to read: the simulation ends this process's life at a quiet point."""


@dataclass
class Scheduler:
    crash_at: dict[str, set[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    crashes: list[str] = field(default_factory=list)

    def step(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] in self.crash_at.get(kind, ()):
            self.crashes.append(f"{kind}#{self.counts[kind]}")
            raise Crash(kind)


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    ts_ms: int


class FakeMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        record: Record | None,
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._record, self._error = record, error

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._record.key if self._record else None

    def value(self) -> bytes | None:
        return self._record.value if self._record else None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._record.ts_ms if self._record else -1)


class _Topic:
    def __init__(self, partitions: int) -> None:
        self.partitions = {p: object() for p in range(partitions)}
        self.error = None


class _Metadata:
    def __init__(self, broker: FakeBroker) -> None:
        self.topics = {name: _Topic(len(parts)) for name, parts in broker.logs.items()}


class FakeBroker:
    def __init__(self, topics: list[str], partitions: int, scheduler: Scheduler) -> None:
        self.logs: dict[str, list[list[Record]]] = {
            t: [[] for _ in range(partitions)] for t in topics
        }
        self.committed: dict[tuple[str, str, int], int] = {}  # (group, topic, p) -> offset
        self.open_txns: dict[str, Any] = {}  # transactional id -> its open transaction
        self.scheduler = scheduler
        self.clock_ms = 1_700_000_000_000

    def append(self, topic: str, partition: int, record: Record) -> int:
        log = self.logs[topic][partition]
        log.append(record)
        return len(log) - 1

    def produce_input(self, topic: str, partition: int, key: str, value: bytes) -> None:
        """An upstream producer (outside any transaction of the processor)."""
        self.clock_ms += 1
        self.append(topic, partition, Record(key.encode(), value, self.clock_ms))

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        return 0, len(self.logs[tp.topic][tp.partition])

    def records(self, topic: str) -> list[tuple[int, int, Record]]:
        return [(p, o, r) for p, log in enumerate(self.logs[topic]) for o, r in enumerate(log)]


class FakeConsumer:
    """A group member that owns every partition of its topics (one worker), or a restorer."""

    def __init__(self, broker: FakeBroker, group: str, eof: bool = False) -> None:
        self.b, self.group, self.eof = broker, group, eof
        self.positions: dict[tuple[str, int], int] = {}
        self.eof_sent: set[tuple[str, int]] = set()
        self.on_assign: Callable[..., None] | None = None
        self.topics: list[str] = []
        self.assigned = False
        self.idle_polls = 0
        self.idle_polls_max = 3

    # -- group member --

    def subscribe(self, topics: list[str], on_assign: Callable[..., None], **_: Any) -> None:
        self.topics, self.on_assign = topics, on_assign

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        if self.eof:
            return self._read(num_messages)
        if not self.assigned:
            self.assigned = True
            tps = [TopicPartition(t, p) for t in self.topics for p in range(len(self.b.logs[t]))]
            assert self.on_assign is not None
            self.on_assign(self, tps)
            for tp in tps:
                c = self.b.committed.get((self.group, tp.topic, tp.partition), 0)
                self.positions.setdefault((tp.topic, tp.partition), c)
        self.b.scheduler.step("consume")
        out = self._read(num_messages)
        if out:
            self.idle_polls = 0
            return out
        self.idle_polls += 1
        if self.idle_polls >= self.idle_polls_max:
            raise Idle()
        return []

    def _read(self, n: int) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for (topic, p), pos in sorted(self.positions.items()):
            log = self.b.logs[topic][p]
            while pos < len(log) and len(out) < n:
                out.append(FakeMessage(topic, p, pos, log[pos]))
                pos += 1
            self.positions[(topic, p)] = pos
            if self.eof and pos >= len(log) and (topic, p) not in self.eof_sent and len(out) < n:
                self.eof_sent.add((topic, p))
                out.append(FakeMessage(topic, p, pos, None, KafkaError(KafkaError._PARTITION_EOF)))
        return out

    def committed(
        self, partitions: list[TopicPartition], timeout: float = 0
    ) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.b.committed.get((self.group, tp.topic, tp.partition), -1001),
            )
            for tp in partitions
        ]

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for (t, p) in self.positions]

    def seek(self, tp: TopicPartition) -> None:
        self.positions[(tp.topic, tp.partition)] = tp.offset

    def consumer_group_metadata(self) -> str:
        return self.group

    def list_topics(self, topic: str | None = None, timeout: float = 0) -> _Metadata:
        return _Metadata(self.b)

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = 0, cached: bool = False
    ) -> tuple[int, int]:
        return self.b.watermarks(tp)

    # -- restorer --

    def assign(self, tps: list[TopicPartition]) -> None:
        self.b.scheduler.step("restore")
        self.positions = {(tp.topic, tp.partition): tp.offset for tp in tps}
        self.eof_sent = set()

    def unassign(self) -> None:
        self.positions = {}

    def close(self) -> None:
        pass


@dataclass
class _Txn:
    records: list[tuple[str, int, Record, Callable[..., None] | None]] = field(default_factory=list)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)


class FakeProducer:
    def __init__(self, broker: FakeBroker, transactional_id: str) -> None:
        self.b, self.tid = broker, transactional_id
        self.txn: _Txn | None = None
        self.reports: list[tuple[Callable[..., None], FakeMessage]] = []

    def init_transactions(self, timeout: float = 0) -> None:
        self.b.open_txns.pop(self.tid, None)  # fences and aborts what a dead self left open

    def begin_transaction(self) -> None:
        self.b.scheduler.step("begin")
        self.txn = _Txn()
        self.b.open_txns[self.tid] = self.txn

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = 0,
        timestamp: int = 0,
        on_delivery: Callable[..., None] | None = None,
    ) -> None:
        self.b.scheduler.step("changelog" if on_delivery is not None else "produce")
        if self.txn is None:
            raise RuntimeError("produce outside a transaction")
        self.b.clock_ms += 1
        self.txn.records.append(
            (topic, partition, Record(key, value, timestamp or self.b.clock_ms), on_delivery)
        )

    def send_offsets_to_transaction(
        self, tps: list[TopicPartition], meta: str, timeout: float = 0
    ) -> None:
        self.b.scheduler.step("send_offsets")
        assert self.txn is not None
        for tp in tps:
            self.txn.offsets[(meta, tp.topic, tp.partition)] = tp.offset

    def commit_transaction(self, timeout: float = 0) -> None:
        self.b.scheduler.step("commit")  # before the commit
        txn, self.txn = self.txn, None
        if txn is None or self.b.open_txns.pop(self.tid, None) is not txn:
            raise RuntimeError("no open transaction to commit")
        for topic, p, record, cb in txn.records:
            offset = self.b.append(topic, p, record)
            if cb is not None:
                self.reports.append((cb, FakeMessage(topic, p, offset, record)))
        self.b.committed.update(txn.offsets)
        self.b.scheduler.step("committed")  # after the commit, before the local state (6-7)

    def abort_transaction(self, timeout: float = 0) -> None:
        self.b.open_txns.pop(self.tid, None)
        self.txn = None

    def poll(self, timeout: float = 0) -> int:
        reports, self.reports = self.reports, []
        for cb, msg in reports:
            cb(None, msg)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0
