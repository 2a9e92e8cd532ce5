"""Reading ``paystream.psp-breakers.v1`` (compacted, keyed by PSP): every partition from the
beginning, without a consumer group, so a starting executor knows every breaker's state
before it takes a request and a running one follows the others' transitions; and the
payments workers' view of it for routing (``HealthView``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count, watermarks
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.payments.routing import PspHealth

log = logging.getLogger(__name__)

BREAKER_SCHEMA = "PspBreakerChanged"


class BreakerLog:
    def __init__(self, settings: Settings, bootstrap: str, topic: str, client_id: str) -> None:
        self.topic = topic
        self.codec = Codec.default()
        self.consumer = Consumer(
            {
                **kafka_client_config(settings, bootstrap),
                # No group is joined (assign, never subscribe) and nothing is committed; the
                # id only names the client to the broker.
                "group.id": f"{client_id}-breakers",
                "client.id": f"{client_id}-breakers",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 10,
            }
        )
        n = partition_count(self.consumer, topic)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(n)])
        self._partitions = n

    def catch_up(self, timeout_s: float) -> list[dict[str, Any]]:
        """Every record up to the end of each partition as it is now (bounded in time)."""
        ends = {p: watermarks(self.consumer, self.topic, p)[1] for p in range(self._partitions)}
        left = {p for p, end in ends.items() if end > 0}
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for msg in self.consumer.consume(500, timeout=0.2):
                record = self._decode(msg)
                if record is not None:
                    out.append(record)
                p, offset = msg.partition(), msg.offset()
                if p is not None and offset is not None and offset + 1 >= ends.get(p, 0):
                    left.discard(p)
        if left:
            log.warning("breaker log not read to its end in %.0f s: %s", timeout_s, sorted(left))
        return out

    def poll(self) -> list[dict[str, Any]]:
        """What arrived since the last call (never waits)."""
        out = []
        for msg in self.consumer.consume(100, timeout=0):
            record = self._decode(msg)
            if record is not None:
                out.append(record)
        return out

    def close(self) -> None:
        self.consumer.close()

    def _decode(self, msg: Any) -> dict[str, Any] | None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("breaker log: %s", err)
            return None
        value = msg.value()
        if value is None:
            return None
        try:
            schema, record = self.codec.decode(value)
        except DecodeError as exc:
            log.warning("breaker log: undecodable record ignored: %s", exc)
            return None
        return record if schema == BREAKER_SCHEMA else None


class HealthView:
    """The payments worker's view of the breakers, for routing: a thread follows the log and
    keeps each PSP's latest state by the executors' own rule (the latest record whose seq is
    at least the one held). ``health()`` is what ``PaymentsAgent`` asks before deciding."""

    def __init__(self, log_: BreakerLog, poll_s: float = 0.05) -> None:
        self.log = log_
        self.poll_s = poll_s
        self._health: dict[str, PspHealth] = {}
        self._seq: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, catch_up_s: float = 30.0) -> None:
        for record in self.log.catch_up(catch_up_s):
            self._apply(record)
        self._thread = threading.Thread(target=self._follow, daemon=True, name="psp-health")
        self._thread.start()

    def health(self) -> dict[str, PspHealth]:
        return self._health  # replaced whole on each change: a consistent snapshot

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.log.close()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                records = self.log.poll()
            except Exception:  # the view is advisory: routing goes on with what it had
                log.exception("psp health: reading the breaker log failed")
                records = []
            for record in records:
                self._apply(record)
            if not records:
                self._stop.wait(self.poll_s)

    def _apply(self, record: dict[str, Any]) -> None:
        psp, seq = record["psp"], record["seq"]
        if seq < self._seq.get(psp, 0):
            return
        self._seq[psp] = seq
        health = dict(self._health)
        health[psp] = PspHealth(record["state"], record["since"])
        if health.get(psp) != self._health.get(psp):
            log.info("psp %s breaker %s (seq %d)", psp, record["state"], seq)
        self._health = health
