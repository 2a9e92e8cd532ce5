"""The Python producer API for upstream systems: validated commands in, Avro on Kafka out.

::

    with CommandProducer(settings) as producer:
        producer.send(parse_line('{"type":"deposit","command_id":"c2",...}'))

Idempotent (``enable.idempotence``, ``acks=all``): a retried batch is written once and in
order per partition, so commands of one account keep their order. Delivery is asynchronous;
``flush`` waits for it and ``delivered``/``failed`` count the broker's answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Self

from confluent_kafka import KafkaError, Message, Producer

from base.config import Settings, kafka_client_config
from base.topics import TopicNames
from producers.commands import Command
from producers.errors import ProducerQueueFull
from schemas import now_micros
from schemas.codec import Codec

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]

DEAD_LETTER_SCHEMA: Final = "paystream.ops.DeadLetter"
# How long send() waits for room when librdkafka's queue is full before giving up.
QUEUE_FULL_TIMEOUT_S: Final = 60.0
# Serve delivery reports every this many sends (poll per send costs more than it saves).
_POLL_EVERY: Final = 1000
# Failed deliveries logged one by one before switching to one log line per this many.
_FAILURES_LOGGED: Final = 10
_FAILURE_LOG_EVERY: Final = 1000


def bootstrap_servers(settings: Settings) -> str:
    """``settings.bootstrap``, or the embedded cluster's address when it is None."""
    if settings.bootstrap:
        return settings.bootstrap
    from ops.kafka import KafkaCluster  # only needed for the embedded broker

    return KafkaCluster(settings.home, settings.brokers, settings.broker_port_base).bootstrap


class CommandProducer:
    """Sends commands (and dead letters) to the topics of ``settings.topic_prefix``.

    Not thread-safe: use one per thread (librdkafka batches internally, one is plenty).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str = "paystream-producer",
        codec: Codec | None = None,
        config: Mapping[str, Any] | None = None,
        queue_full_timeout_s: float = QUEUE_FULL_TIMEOUT_S,
    ) -> None:
        """``config`` overrides librdkafka properties (tests shorten timeouts with it)."""
        limits = settings.limits
        conf: dict[str, Any] = {
            **kafka_client_config(settings, bootstrap_servers(settings)),
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            # Java's default partitioner, so every client agrees which partition owns a key.
            "partitioner": "murmur2_random",
            "compression.type": "lz4",
            "linger.ms": limits.producer_linger_ms,
            "batch.num.messages": limits.producer_batch_records_max,
            "queue.buffering.max.messages": limits.producer_queue_records_max,
            "on_delivery": self._on_delivery,
            "error_cb": self._on_error,
            # librdkafka's own log lines go through logging, not straight to stderr.
            "logger": logging.getLogger("producers.rdkafka"),
        }
        conf.update(config or {})
        self._producer = Producer(conf)
        self._codec = codec or Codec.default()
        self._topics = TopicNames(settings.topic_prefix)
        self._commands_topic: str = self._topics.commands
        self._deadletter_topic: str = self._topics.deadletter
        self._queue_full_timeout_s = queue_full_timeout_s
        self._sent = 0
        self._delivered = 0
        self._failed = 0
        self._until_poll = _POLL_EVERY

    # -- counters ----------------------------------------------------------------------------

    @property
    def sent(self) -> int:
        """Records handed to librdkafka."""
        return self._sent

    @property
    def delivered(self) -> int:
        """Records the broker acknowledged (as of the last poll or flush)."""
        return self._delivered

    @property
    def failed(self) -> int:
        """Records that will never be delivered (as of the last poll or flush)."""
        return self._failed

    @property
    def in_flight(self) -> int:
        """Records (and requests) still queued in librdkafka."""
        return len(self._producer)

    @property
    def topics(self) -> TopicNames:
        return self._topics

    # -- sending -----------------------------------------------------------------------------

    def send(self, cmd: Command, on_delivery: DeliveryCallback | None = None) -> None:
        """Encode ``cmd`` and queue it on the commands topic, keyed by its account."""
        value = self._codec.encode(cmd.schema, cmd.record)
        self._produce(self._commands_topic, cmd.key.encode(), value, on_delivery)

    def send_record(
        self,
        name: str,
        key: str | bytes,
        record: Mapping[str, Any],
        *,
        topic: str | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue an already-built Avro record (default topic: commands). No JSON checks."""
        value = self._codec.encode(name, record)
        raw_key = key.encode() if isinstance(key, str) else key
        self._produce(topic or self._commands_topic, raw_key, value, on_delivery)

    def send_dead_letter(self, source: str, reason: str, code: str, payload: bytes) -> None:
        """Queue a DeadLetter record on the dead-letter topic, keyed by ``source``.

        The caller bounds ``payload`` (``paystream send`` cuts it at command_bytes_max).
        """
        record = {
            "source": source,
            "reason": reason,
            "error_code": code,
            "payload": payload,
            "ts": now_micros(),
        }
        value = self._codec.encode(DEAD_LETTER_SCHEMA, record)
        self._produce(self._deadletter_topic, source.encode(), value, None)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        served: int = self._producer.poll(timeout_s)
        return served

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until everything queued is delivered or failed; returns what is still queued."""
        remaining: int = self._producer.flush(timeout_s)
        if remaining:
            log.warning("%d records still queued after flushing for %.1fs", remaining, timeout_s)
        return remaining

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush; returns what could not be flushed. librdkafka frees the rest on GC."""
        return self.flush(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------------

    def _produce(
        self, topic: str, key: bytes, value: bytes, on_delivery: DeliveryCallback | None
    ) -> None:
        callback = None if on_delivery is None else self._counting(on_delivery)
        try:
            self._produce_once(topic, key, value, callback)
        except BufferError:
            self._wait_for_room(topic, key, value, callback)
        self._sent += 1
        self._until_poll -= 1
        if self._until_poll <= 0:
            self._until_poll = _POLL_EVERY
            self._producer.poll(0)

    def _produce_once(
        self, topic: str, key: bytes, value: bytes, callback: DeliveryCallback | None
    ) -> None:
        if callback is None:  # the global callback counts
            self._producer.produce(topic, value, key)
        else:
            self._producer.produce(topic, value, key, on_delivery=callback)

    def _counting(self, on_delivery: DeliveryCallback) -> DeliveryCallback:
        # A per-message callback replaces the global one, so it must count as well.
        def both(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg)
            on_delivery(err, msg)

        return both

    def _wait_for_room(
        self, topic: str, key: bytes, value: bytes, callback: DeliveryCallback | None
    ) -> None:
        # The local queue is full: serve delivery reports (which frees room) and retry,
        # but not forever: a broker that is down must surface as an error, not a hang.
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            self._producer.poll(0.05)
            try:
                self._produce_once(topic, key, value, callback)
                return
            except BufferError:
                if time.monotonic() >= deadline:
                    raise ProducerQueueFull(
                        f"producer queue still full after {self._queue_full_timeout_s:.0f}s "
                        f"({len(self._producer)} records queued)"
                    ) from None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self._delivered += 1
            return
        self._failed += 1
        if self._failed <= _FAILURES_LOGGED or self._failed % _FAILURE_LOG_EVERY == 0:
            log.error(
                "delivery to %s failed (%d failures so far): %s", msg.topic(), self._failed, err
            )

    def _on_error(self, err: KafkaError) -> None:
        # Most client errors are transient (broker restart) and librdkafka retries them.
        if err.fatal():
            log.critical("fatal producer error: %s", err)
        else:
            log.warning("producer error: %s", err)


__all__ = ["DEAD_LETTER_SCHEMA", "CommandProducer", "DeliveryCallback", "bootstrap_servers"]
