"""The API's one Kafka producer: idempotent, acks=all, deliveries awaited off the event loop.

``produce`` only queues a record (librdkafka is thread-safe); a thread serves the delivery
reports and resolves each request's future on its own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from base.config import Settings, kafka_client_config
from base.kafka import retrying

from .errors import NotDelivered

log = logging.getLogger(__name__)

_POLL_S = 0.1
_CLOSE_FLUSH_S = 5.0


def _settle(fut: asyncio.Future[None], err: str | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(NotDelivered(err))


class RecordProducer:
    def __init__(self, settings: Settings) -> None:
        limits = settings.limits
        self.timeout_s = limits.http_produce_timeout_s
        self._producer = Producer(
            {
                **kafka_client_config(settings),
                "client.id": f"paystream-api-{settings.api_port}",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": limits.api_producer_linger_ms,
                "compression.type": "lz4",
                "queue.buffering.max.messages": limits.producer_queue_records_max,
                # librdkafka gives up on a record by then, so a future never waits forever.
                "message.timeout.ms": int(limits.http_produce_timeout_s * 1000),
                "logger": logging.getLogger("paystream.api.rdkafka"),
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="api-producer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def partition_count(self, topic: str) -> int:
        md = retrying(lambda: self._producer.list_topics(topic, timeout=10))
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            raise RuntimeError(f"topic {topic} is missing; run `paystream up`")
        return len(t.partitions)

    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None:
        """Produce one record and wait until the broker has it; NotDelivered otherwise."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = fut.get_loop()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(_settle, fut, None if err is None else str(err))

        try:
            self._producer.produce(topic, value, key.encode(), partition, on_delivery=delivered)
        except BufferError:
            raise NotDelivered("the producer's queue is full") from None
        try:
            # librdkafka's own timeout answers first; this one covers a stuck client.
            await asyncio.wait_for(fut, self.timeout_s + 5)
        except TimeoutError:
            raise NotDelivered("no answer from the broker in time") from None

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(_POLL_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        left: Any = self._producer.flush(_CLOSE_FLUSH_S)
        if left:
            log.warning("%d records not acknowledged at close", left)
