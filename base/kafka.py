"""Kafka helpers every package shares: retrying transient errors, watermarks, reading a topic.

Thin functions over confluent-kafka; no policy of paystream's own beyond the timeouts.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from base.config import Settings, kafka_client_config

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_PAUSE_S = 0.2


def position(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed record or partition event (librdkafka sets
    all three; the Python binding types them optional)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(f"a consumed record has no position: {topic} {partition} {offset}")
    return topic, partition, offset


def retrying(fn: Callable[[], T], timeout_s: float = 30) -> T:
    """Call ``fn``, retrying Kafka's transient errors (a fresh topic, a coordinator loading or
    moving) until ``timeout_s``; a fatal error, or any error past the deadline, is raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            fatal = isinstance(err, KafkaError) and err.fatal()
            if fatal or time.monotonic() > deadline:
                raise
            log.debug("retrying after a transient Kafka error: %s", exc)
            time.sleep(RETRY_PAUSE_S)


def watermarks(c: Consumer, topic: str, partition: int, timeout_s: float = 30) -> tuple[int, int]:
    """(low, high) offsets of one partition, read from the broker."""
    tp = TopicPartition(topic, partition)
    low, high = retrying(lambda: c.get_watermark_offsets(tp, timeout=10, cached=False), timeout_s)
    return int(low), int(high)


def reader(settings: Settings, **extra: Any) -> Consumer:
    """A read_committed consumer of a throw-away group that never commits: for scans."""
    conf: dict[str, Any] = {
        **kafka_client_config(settings),
        "group.id": f"paystream-cli-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,
        "queued.max.messages.kbytes": 131072,
    }
    conf.update(extra)
    return Consumer(conf)


def partition_count(c: Consumer, topic: str, timeout_s: float = 30) -> int:
    md = retrying(lambda: c.list_topics(topic, timeout=timeout_s), timeout_s)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic}"))
    return len(t.partitions)


def scan(
    settings: Settings,
    topic: str,
    partitions: list[int] | None = None,
    batch: int = 10_000,
    on_progress: Callable[[int], None] | None = None,
    timeout_s: float | None = None,
) -> Iterator[Message]:
    """Every committed record of ``topic`` (or some partitions), from the start to the end
    as it was when the scan began. ``timeout_s`` bounds the whole read (TimeoutError)."""
    c = reader(settings)
    try:
        parts = list(range(partition_count(c, topic))) if partitions is None else partitions
        ends: dict[int, int] = {}
        for p in parts:
            low, high = watermarks(c, topic, p)
            if high > low:
                ends[p] = high
        if not ends:
            return
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        open_parts = set(ends)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while open_parts:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(open_parts)} not read in time")
            msgs = c.consume(batch, timeout=1.0)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(msg.partition())
                        continue
                    raise KafkaException(err)
                yield msg
            if on_progress and msgs:
                on_progress(len(msgs))
    finally:
        c.close()
