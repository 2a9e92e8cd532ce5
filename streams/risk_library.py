"""Published rule files and models, by content: ``paystream.risk-versions.v1`` (compacted,
keyed ``<kind>/<sha256>``). The risk agents read it; the activations in their input name
what they need by SHA-256, which the publisher wrote here first (docs/risk.md).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from confluent_kafka import Consumer, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count, position, watermarks
from base.topics import TopicNames
from schemas.codec import Codec
from schemas.errors import DecodeError

log = logging.getLogger(__name__)


def content_key(kind: str, sha256: str) -> str:
    return f"{kind}/{sha256}"


class Library(Protocol):
    def get(self, kind: str, sha256: str) -> bytes:
        """The content published under ``kind`` with this SHA-256; LookupError if absent."""
        ...


class DictLibrary:
    """A library in memory (tests, benchmarks)."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    def put(self, kind: str, sha256: str, content: bytes) -> None:
        self.items[content_key(kind, sha256)] = content

    def get(self, kind: str, sha256: str) -> bytes:
        try:
            return self.items[content_key(kind, sha256)]
        except KeyError:
            raise LookupError(f"no {kind} {sha256[:12]} published") from None


class KafkaLibrary:
    """The topic, read from the start on first use and again to its end on a miss (content
    is written before its activation, so a miss waits at most ``wait_s`` for it)."""

    def __init__(self, settings: Settings, wait_s: float) -> None:
        self.settings = settings
        self.wait_s = wait_s
        self.topic = TopicNames(settings.topic_prefix).risk_versions
        self.codec = Codec.default()
        self.items: dict[str, bytes] = {}
        self._consumer: Consumer | None = None

    def get(self, kind: str, sha256: str) -> bytes:
        key = content_key(kind, sha256)
        deadline = time.monotonic() + self.wait_s
        while key not in self.items:
            self._read_to_end()
            if key in self.items:
                break
            if time.monotonic() > deadline:
                raise LookupError(f"no {kind} {sha256[:12]} on {self.topic}")
            time.sleep(0.2)
        return self.items[key]

    def _read_to_end(self) -> None:
        consumer = self._consumer
        if consumer is None:
            consumer = self._consumer = Consumer(
                {
                    **kafka_client_config(self.settings),
                    "group.id": f"{self.settings.topic_prefix}paystream-risk-library",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.message.max.bytes": 8 << 20,
                }
            )
            n = partition_count(consumer, self.topic)
            consumer.assign([TopicPartition(self.topic, p, 0) for p in range(n)])
            self._next = dict.fromkeys(range(n), 0)
        highs = {p: watermarks(consumer, self.topic, p)[1] for p in self._next}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            behind = [p for p, h in highs.items() if self._next[p] < h]
            if not behind:
                return
            msgs = consumer.consume(500, timeout=0.2)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                _, p, offset = position(msg)
                self._next[p] = offset + 1
                self._take(msg.value())
            if not msgs:  # past control records (transactions' markers) nothing comes
                for tp in consumer.position([TopicPartition(self.topic, p) for p in behind]):
                    if tp.offset >= 0:
                        self._next[tp.partition] = max(self._next[tp.partition], tp.offset)

    def _take(self, value: bytes | None) -> None:
        try:
            schema, r = self.codec.decode(value or b"")
        except DecodeError as exc:
            log.warning("risk library: undecodable record skipped: %s", exc)
            return
        if schema != "RiskVersion" or not isinstance(r.get("content"), bytes):
            return
        self.items[content_key(str(r["kind"]), str(r["sha256"]))] = r["content"]

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
