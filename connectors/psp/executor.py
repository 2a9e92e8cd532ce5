"""The PSP executor process: ``PspRequest`` records in, PSP calls, ``PspResult`` records out.

Consumes ``paystream.psp-requests.v1`` (group ``paystream-psp-executor``, read_committed: a
request of an aborted worker transaction was never decided) and produces to
``paystream.payments.v1`` keyed by payment id. At least once, with no Kafka transaction
(side effects never run inside one): many requests are in flight at once (asyncio), each
partition's offset is committed only up to its lowest request whose results the broker has
not acknowledged yet, so a crash at any point replays exactly the unfinished requests. That
is safe by construction: tokens are idempotent at the PSP, and an execute is done again only
with the same token, which the PSP answers with its original result.

A request that cannot be used (undecodable, wrong fields, unknown PSP or kind) goes to
``paystream.deadletter.v1`` with the reason; nothing stops the process but SIGTERM (a clean
stop: requests in flight get ``shutdown_drain_s`` to finish) or a fatal Kafka error.

``paystream executor`` runs it (paystream.bootstrap.run_executor_process).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from base.config import Settings, kafka_client_config
from base.topics import TopicNames
from connectors.psp.base import PspConnector
from connectors.psp.config import PspConfig, load_psps, psps_path
from connectors.psp.errors import (
    BadRequest,
    FatalExecutorError,
    PspConfigError,
    UnknownConnector,
)
from connectors.psp.handler import RequestHandler
from connectors.psp.limits import ExecutorLimits
from connectors.psp.offsets import OffsetTracker, TopicPartitionKey
from connectors.psp.records import RESULT_SCHEMA, parse_request
from connectors.psp.registry import build_connectors
from schemas import now_micros
from schemas.codec import Codec
from schemas.errors import DecodeError

log = logging.getLogger(__name__)

EXECUTOR_GROUP: Final = "paystream-psp-executor"
DEAD_LETTER_SCHEMA: Final = "DeadLetter"
EX_CONFIG: Final = 78  # sysexits.h: a configuration error; restarting will not help


def run_executor(
    settings: Settings,
    *,
    instance: int = 1,
    psps: tuple[PspConfig, ...] | None = None,
    limits: ExecutorLimits | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the executor until SIGTERM/SIGINT (from the main thread) or ``stop`` is set.

    ``settings.bootstrap`` should be resolved (``paystream.bootstrap.resolved``); ``psps``
    defaults to ``$PAYSTREAM_HOME/psps.toml``. Returns 0 after a clean stop and
    ``EX_CONFIG`` (78) when the PSP configuration is unusable; raises ``FatalExecutorError``
    on a fatal Kafka error (the caller restarts the process; nothing is lost).
    """
    limits = limits or ExecutorLimits()
    # httpx logs every request at INFO; the handler's own line per call says more.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        configured = psps if psps is not None else load_psps(psps_path(settings.home), limits)
        connectors = build_connectors(configured, limits)
    except (PspConfigError, UnknownConnector) as exc:
        log.error("psp executor cannot start: %s", exc)
        return EX_CONFIG
    executor = Executor(settings, connectors, limits, instance=instance)
    return asyncio.run(executor.run(stop))


class Executor:
    def __init__(
        self,
        settings: Settings,
        connectors: Mapping[str, PspConnector],
        limits: ExecutorLimits,
        *,
        instance: int = 1,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.connectors = connectors
        self.codec = Codec.default()
        topics = TopicNames(settings.topic_prefix)
        self.requests_topic: str = topics.psp_requests
        self.results_topic: str = topics.payments
        self.deadletter_topic: str = topics.deadletter
        self.group = settings.topic_prefix + EXECUTOR_GROUP
        bootstrap = _bootstrap(settings)
        self.consumer = Consumer(
            {
                **kafka_client_config(settings, bootstrap),
                "group.id": self.group,
                "client.id": f"psp-executor-{instance}",
                # Static membership: a restarted executor takes its partitions back at once.
                "group.instance.id": f"{self.group}-{instance}",
                "partition.assignment.strategy": "cooperative-sticky",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "fetch.wait.max.ms": 10,
                "on_commit": self._on_commit,
                "error_cb": self._on_kafka_error,
                "logger": logging.getLogger("connectors.psp.rdkafka"),
            }
        )
        self.producer = Producer(
            {
                **kafka_client_config(settings, bootstrap),
                "client.id": f"psp-executor-{instance}",
                "enable.idempotence": True,
                "acks": "all",
                # Java's default partitioner, so every client agrees which partition owns a key.
                "partitioner": "murmur2_random",
                "linger.ms": limits.producer_linger_ms,
                "compression.type": "lz4",
                "delivery.timeout.ms": limits.delivery_timeout_ms,
                "error_cb": self._on_kafka_error,
                "logger": logging.getLogger("connectors.psp.rdkafka"),
            }
        )
        self.offsets = OffsetTracker()
        self.handler = RequestHandler(connectors, self._emit_result, limits)
        self.tasks: set[asyncio.Task[None]] = set()
        self.counters = {"requests": 0, "results": 0, "dead_letters": 0}
        self._paused = False
        self._fatal: BaseException | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: threading.Event | None = None) -> int:
        loop = asyncio.get_running_loop()
        own_signals = stop is None and threading.current_thread() is threading.main_thread()
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        self.consumer.subscribe(
            [self.requests_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "psp executor started: group %s, PSPs %s, at most %d requests in flight",
            self.group,
            ", ".join(self.connectors),
            self.limits.requests_in_flight_max,
        )
        try:
            await self._loop(stop)
        finally:
            await self._shut_down()
            if own_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        if self._fatal is not None:
            raise FatalExecutorError(str(self._fatal)) from self._fatal
        return 0

    async def _loop(self, stop: threading.Event | None) -> None:
        lim = self.limits
        commit_every_s = lim.commit_interval_ms / 1000
        next_commit = time.monotonic() + commit_every_s
        while not self._stopping.is_set() and self._fatal is None:
            if stop is not None and stop.is_set():
                break
            self.producer.poll(0)  # delivery reports: results acknowledged
            taken = self._consume()
            if time.monotonic() >= next_commit:
                self._commit(asynchronous=True)
                next_commit = time.monotonic() + commit_every_s
            if taken:
                await asyncio.sleep(0)  # let the new tasks start their calls
            elif self.tasks:
                await asyncio.sleep(lim.idle_sleep_ms / 1000)
            else:
                await asyncio.sleep(lim.idle_sleep_empty_ms / 1000)

    def _consume(self) -> int:
        room = self.limits.requests_in_flight_max - len(self.tasks)
        if room <= 0:
            # Full: stop fetching (the consumer must still be polled to stay in the group).
            if not self._paused:
                self.consumer.pause(self.consumer.assignment())
                self._paused = True
            msgs = self.consumer.consume(1, timeout=0)
        else:
            if self._paused:
                self.consumer.resume(self.consumer.assignment())
                self._paused = False
            msgs = self.consumer.consume(
                min(room, self.limits.consume_batch_records_max), timeout=0
            )
        for msg in msgs:
            self._take(msg)
        return len(msgs)

    async def _shut_down(self) -> None:
        lim = self.limits
        if self.tasks:
            log.info("stopping: %d requests in flight, waiting up to %.0f s", len(self.tasks),
                     lim.shutdown_drain_s)  # fmt: skip
        deadline = time.monotonic() + lim.shutdown_drain_s
        while self.tasks and time.monotonic() < deadline and self._fatal is None:
            self.producer.poll(0)
            await asyncio.sleep(lim.idle_sleep_ms / 1000)
        if self.tasks:
            log.warning("%d requests still in flight: left to the next start", len(self.tasks))
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.producer.flush(10)
        self._commit(asynchronous=False)
        self.consumer.close()
        for connector in self.connectors.values():
            await connector.aclose()
        log.info("psp executor stopped: %s", self.counters)

    # --- one record -------------------------------------------------------------------------

    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                self._fatal = FatalExecutorError(f"fatal consumer error: {err}")
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        tp = (topic, partition)
        if not self.offsets.take(tp, offset):
            log.warning("%s/%d rewound to %d: its requests come again", topic, partition, offset)
        self.counters["requests"] += 1
        task = asyncio.get_running_loop().create_task(self._work(tp, offset, msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _work(self, tp: TopicPartitionKey, offset: int, msg: Message) -> None:
        try:
            await self._work_on(tp, offset, msg.value() or b"")
        except FatalExecutorError as exc:
            self._fatal = exc  # the loop stops; the request stays uncommitted
            return
        self.offsets.finish(tp, offset)

    async def _work_on(self, tp: TopicPartitionKey, offset: int, value: bytes) -> None:
        source = f"{tp[0]}/{tp[1]}@{offset}"
        try:
            schema, record = self.codec.decode(value)
            request = parse_request(schema, record, self.connectors)
        except (DecodeError, BadRequest) as exc:
            await self._dead_letter(source, f"unusable {tp[0]} record: {exc}", exc.code, value)
            return
        except (KeyError, TypeError, ValueError) as exc:
            await self._dead_letter(source, f"unusable {tp[0]} record: {exc!r}", "malformed", value)
            return
        try:
            await self.handler.handle(request)
        except FatalExecutorError:
            raise
        except Exception as exc:
            # A bug of ours: keep it (and the request) visible, and keep going.
            log.exception("%s: request %s failed", source, request.request_id)
            await self._dead_letter(source, f"executor error: {exc!r}", "executor_error", value)

    async def _emit_result(self, record: dict[str, Any]) -> None:
        value = self.codec.encode(RESULT_SCHEMA, record)
        await self._produce(self.results_topic, record["payment_id"], value)
        self.counters["results"] += 1

    async def _dead_letter(self, source: str, reason: str, code: str, payload: bytes) -> None:
        log.warning("dead letter %s: %s", source, reason)
        record = {
            "source": source,
            "reason": reason[: self.limits.detail_chars_max],
            "error_code": code,
            "payload": payload[: self.limits.dead_letter_payload_bytes_max],
            "ts": now_micros(),
        }
        value = self.codec.encode(DEAD_LETTER_SCHEMA, record)
        await self._produce(self.deadletter_topic, source, value)
        self.counters["dead_letters"] += 1

    async def _produce(self, topic: str, key: str, value: bytes) -> None:
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

    # --- offsets and the group --------------------------------------------------------------

    def _commit(self, *, asynchronous: bool) -> None:
        moved = self.offsets.to_commit()
        if not moved:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in moved.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=tps, asynchronous=True)
            else:
                self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:  # a failed commit only means more replays after a crash
            log.warning("commit of %s failed: %s", moved, exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._paused = False  # new partitions come unpaused; the loop pauses them if full
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Commit what is finished; the rest is the next owner's (our tasks may still finish
        # and answer: a duplicate result, which the payments worker expects).
        keys = [(tp.topic, tp.partition) for tp in partitions]
        points = {k: p for k in keys if (p := self.offsets.commit_point(k)) is not None}
        if points:
            tps = [TopicPartition(t, p, o) for (t, p), o in points.items()]
            try:
                consumer.commit(offsets=tps, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revoke failed: %s", exc)
        self.offsets.forget(keys)
        log.info("revoked %s", sorted(tp.partition for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.offsets.forget([(tp.topic, tp.partition) for tp in partitions])
        log.warning("lost %s", sorted(tp.partition for tp in partitions))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("offset commit failed: %s", err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.critical("fatal Kafka error: %s", err)
            self._fatal = FatalExecutorError(f"fatal Kafka error: {err}")
        else:
            log.warning("Kafka error: %s", err)


def _bootstrap(settings: Settings) -> str:
    # The caller resolves the embedded cluster's address (paystream.bootstrap.resolved, as
    # for every process); without one, the embedded broker's first node.
    return settings.bootstrap or f"127.0.0.1:{settings.broker_port_base}"
