"""Everything the executor writes to Kafka: results, retries (to the delay topics), dead
letters, breaker transitions and call statistics, through one idempotent producer.

``result``, ``retry``, ``dead`` and ``forward`` return once the broker acknowledged the
record (a failed delivery is produced again): the request that caused them is committed only
then. Breaker transitions and statistics are fire-and-forget: the next one supersedes them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from base.topics import TopicNames
from connectors.psp.board import transition_record
from connectors.psp.breaker import Transition
from connectors.psp.errors import FatalExecutorError
from connectors.psp.limits import ExecutorLimits
from connectors.psp.records import DEAD_LETTER_SCHEMA, REQUEST_SCHEMA, RESULT_SCHEMA
from schemas import now_micros
from schemas.codec import Codec

log = logging.getLogger(__name__)

DEAD_LETTER_V1_SCHEMA = "DeadLetter"  # unusable input (paystream.deadletter.v1)
BREAKER_SCHEMA = "PspBreakerChanged"
STATS_SCHEMA = "PspStats"


class KafkaOutbox:
    def __init__(
        self,
        producer: Producer,
        topics: TopicNames,
        limits: ExecutorLimits,
        executor: str,
        codec: Codec | None = None,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.limits = limits
        self.executor = executor
        self.codec = codec or Codec.default()
        self.counters = {"results": 0, "retries": 0, "dead_letters": 0, "forwarded": 0}

    # --- the handler's Outbox -----------------------------------------------------------------

    async def result(self, record: dict[str, Any]) -> None:
        value = self.codec.encode(RESULT_SCHEMA, record)
        await self.produce(self.topics.payments, record["payment_id"], value)
        self.counters["results"] += 1

    async def retry(self, record: dict[str, Any], key: str, topic: str) -> None:
        await self.produce(getattr(self.topics, topic), key, self.encode_request(record))
        self.counters["retries"] += 1

    async def dead(self, record: dict[str, Any]) -> None:
        value = self.codec.encode(DEAD_LETTER_SCHEMA, record)
        await self.produce(self.topics.psp_deadletter, record["dead_letter_id"], value)
        self.counters["dead_letters"] += 1

    def encode_request(self, record: dict[str, Any]) -> bytes:
        return self.codec.encode(REQUEST_SCHEMA, record)

    # --- the executor's own --------------------------------------------------------------------

    async def forward(self, topic: str, key: str, value: bytes) -> None:
        """A request not due yet, as it is, to the delay topic for the time it has left."""
        await self.produce(getattr(self.topics, topic), key, value)
        self.counters["forwarded"] += 1

    async def unusable(self, source: str, reason: str, code: str, payload: bytes) -> None:
        """Input that cannot be used, to paystream.deadletter.v1 (as every process does)."""
        log.warning("dead letter %s: %s", source, reason)
        record = {
            "source": source,
            "reason": reason[: self.limits.detail_chars_max],
            "error_code": code,
            "payload": payload[: self.limits.dead_letter_payload_bytes_max],
            "ts": now_micros(),
        }
        value = self.codec.encode(DEAD_LETTER_V1_SCHEMA, record)
        await self.produce(self.topics.deadletter, source, value)

    def transition(self, t: Transition) -> None:
        value = self.codec.encode(BREAKER_SCHEMA, transition_record(t, self.executor))
        self._fire(self.topics.psp_breakers, t.psp, value)

    def stats(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            value = self.codec.encode(STATS_SCHEMA, r)
            self._fire(self.topics.psp_stats, f"{r['psp']}/{r['executor']}", value)

    # --- producing -----------------------------------------------------------------------------

    def _fire(self, topic: str, key: str, value: bytes) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                log.warning("delivery to %s failed: %s", topic, err)

        try:
            self.producer.produce(topic, value, key.encode(), on_delivery=on_delivery)
        except BufferError:
            log.warning("producer queue full: a %s record was dropped", topic)

    async def produce(self, topic: str, key: str, value: bytes) -> None:
        """Produce and wait for the broker's acknowledgement; a failed delivery is produced
        again (the request stays uncommitted meanwhile)."""
        loop = asyncio.get_running_loop()
        while True:
            acked: asyncio.Future[KafkaError | None] = loop.create_future()

            def on_delivery(
                err: KafkaError | None, _msg: Message, acked: asyncio.Future[Any] = acked
            ) -> None:
                if not acked.done():
                    acked.set_result(err)

            while True:
                try:
                    self.producer.produce(topic, value, key.encode(), on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    await asyncio.sleep(self.limits.idle_sleep_ms / 1000)
            err = await acked
            if err is None:
                return
            if err.fatal():
                raise FatalExecutorError(f"fatal producer error: {err}")
            log.warning("delivery to %s failed (%s); producing it again", topic, err)
            await asyncio.sleep(1.0)
