"""The PSP executor process: ``PspRequest`` records in, PSP calls, ``PspResult`` records out.

Consumes ``paystream.psp-requests.v1`` and the delay topics ``paystream.psp-retry-{5s,30s,
5m,1h}.v1`` (group ``paystream-psp-executor``, read_committed: a request of an aborted worker
transaction was never decided) and produces results to ``paystream.payments.v1`` keyed by
payment id. At least once, with no Kafka transaction (side effects never run inside one):
many requests are in flight at once (asyncio), each partition's offset is committed only up
to its lowest request whose records the broker has not acknowledged yet, so a crash at any
point replays exactly the unfinished requests. That is safe by construction: tokens are
idempotent at the PSP, and an execute is done again only with the same token, which the PSP
answers with its original result.

**Delays without sleeping** (docs/psp-resilience.md): a request whose ``not_before`` is
later goes to the delay topic that fits; a delay topic's partition is paused at its first
record that is not ready yet (``connectors.psp.retry.ready_at_us``) and resumed when it is,
so nothing runs early and a waiting request holds no memory and no task.

**Circuit breakers**: one per PSP (``connectors.psp.board``), its transitions written to
``paystream.psp-breakers.v1`` and every executor's read back from it; calls per PSP are
published every second to ``paystream.psp-stats.v1`` (``paystream psp status``).

A request that cannot be used goes to ``paystream.deadletter.v1`` with the reason; nothing
stops the process but SIGTERM (requests in flight get ``shutdown_drain_s`` to finish) or a
fatal Kafka error. ``paystream executor`` runs it (paystream.bootstrap.run_executor_process).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Mapping
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from base.config import Settings
from base.topics import TopicNames
from connectors.psp.base import PspConnector
from connectors.psp.board import BreakerBoard
from connectors.psp.clients import bootstrap_of, clients
from connectors.psp.config import PspConfig, load_psps, psps_path
from connectors.psp.delays import DelayGate
from connectors.psp.errors import (
    BadRequest,
    FatalExecutorError,
    PspConfigError,
    UnknownConnector,
)
from connectors.psp.handler import RequestHandler
from connectors.psp.limits import ExecutorLimits
from connectors.psp.offsets import OffsetTracker, TopicPartitionKey
from connectors.psp.outbox import KafkaOutbox
from connectors.psp.probe import probe
from connectors.psp.records import PspRequest, parse_request
from connectors.psp.registry import build_connectors
from connectors.psp.retry import DELAY_TOPICS, ready_at_us, topic_for
from schemas import now_micros
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.psp_health import BreakerLog

log = logging.getLogger(__name__)

EXECUTOR_GROUP: Final = "paystream-psp-executor"
EX_CONFIG: Final = 78  # sysexits.h: a configuration error; restarting will not help
US_PER_S: Final = 1_000_000


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
        self.name = f"psp-executor-{instance}"
        self.codec = Codec.default()
        self.topics = TopicNames(settings.topic_prefix)
        self.requests_topic: str = self.topics.psp_requests
        # Delay topic name -> its key (base.topics).
        self.delay_topics = {getattr(self.topics, key): key for key, _ in DELAY_TOPICS}
        self.group = settings.topic_prefix + EXECUTOR_GROUP
        self.consumer, self.producer = clients(
            settings,
            limits,
            group=self.group,
            name=self.name,
            instance=instance,
            on_commit=self._on_commit,
            on_error=self._on_kafka_error,
        )
        self.outbox = KafkaOutbox(self.producer, self.topics, limits, self.name, self.codec)
        self.board = BreakerBoard(connectors, limits, self.name, self.outbox.transition)
        self.breaker_log = BreakerLog(
            settings, bootstrap_of(settings), self.topics.psp_breakers, self.name
        )
        self.offsets = OffsetTracker()
        self.handler = RequestHandler(
            connectors, self.outbox, self.board, limits, executor=self.name
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.probes: set[asyncio.Task[None]] = set()
        self.counters = {"requests": 0, "probes": 0}
        # Delay topic partitions paused at a record not ready yet, until it is.
        self.gate = DelayGate(self.consumer, now_micros)
        self._paused = False  # every partition paused: too many requests in flight
        self._reassigned = False  # partitions came since: pause them too, if still full
        self._fatal: BaseException | None = None
        self._stopping = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, stop: threading.Event | None = None) -> int:
        loop = asyncio.get_running_loop()
        own_signals = stop is None and threading.current_thread() is threading.main_thread()
        if own_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        # The breakers as the other executors left them, before the first request.
        for record in self.breaker_log.catch_up(self.limits.breaker_log_catch_up_s):
            self.board.adopt(record)
        self.consumer.subscribe(
            [self.requests_topic, *self.delay_topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "psp executor %s started: group %s, PSPs %s, at most %d requests in flight; "
            "breakers %s",
            self.name,
            self.group,
            ", ".join(self.connectors),
            self.limits.requests_in_flight_max,
            ", ".join(f"{p} {self.board.state(p)[0].value}" for p in self.connectors),
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
        next_stats = time.monotonic()
        while not self._stopping.is_set() and self._fatal is None:
            if stop is not None and stop.is_set():
                break
            self.producer.poll(0)  # delivery reports: records acknowledged
            for record in self.breaker_log.poll():
                self.board.adopt(record)
            for psp in self.board.tick():
                self._probe(psp)
            self.gate.release(resume=not self._paused)
            taken = self._consume()
            now = time.monotonic()
            if now >= next_commit:
                self._commit(asynchronous=True)
                next_commit = now + commit_every_s
            if now >= next_stats:
                self.outbox.stats(self.board.stats_records())
                next_stats = now + lim.stats_interval_s
            if taken:
                await asyncio.sleep(0)  # let the new tasks start their calls
            elif self.tasks or self.probes:
                await asyncio.sleep(lim.idle_sleep_ms / 1000)
            else:
                await asyncio.sleep(lim.idle_sleep_empty_ms / 1000)

    def _consume(self) -> int:
        room = self.limits.requests_in_flight_max - len(self.tasks)
        if room <= 0:
            # Full: stop fetching (the consumer must still be polled to stay in the group).
            if not self._paused or self._reassigned:
                self.consumer.pause(self.consumer.assignment())
                self._paused, self._reassigned = True, False
            msgs = self.consumer.consume(1, timeout=0)
        else:
            if self._paused:
                self.consumer.resume(self.gate.unheld(self.consumer.assignment()))
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
        for task in (*self.tasks, *self.probes):
            task.cancel()
        await asyncio.gather(*self.tasks, *self.probes, return_exceptions=True)
        self.producer.flush(10)
        self._commit(asynchronous=False)
        self.consumer.close()
        self.breaker_log.close()
        for connector in self.connectors.values():
            await connector.aclose()
        log.info(
            "psp executor stopped: %s, %d holds %s %s",
            self.counters,
            self.gate.holds,
            self.outbox.counters,
            self.handler.counters,
        )

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
        if tp in self.gate:
            return  # fetched before its partition was paused: it comes again on resume
        value = msg.value() or b""
        request: PspRequest | None = None
        problem: tuple[str, str] | None = None
        try:
            schema, record = self.codec.decode(value)
            request = parse_request(schema, record, self.connectors)
        except (DecodeError, BadRequest) as exc:
            problem = (f"unusable {topic} record: {exc}", exc.code)
        except (KeyError, TypeError, ValueError) as exc:
            problem = (f"unusable {topic} record: {exc!r}", "malformed")
        delay_key = self.delay_topics.get(topic)
        if request is not None and delay_key is not None:
            written_us = max(msg.timestamp()[1], 0) * 1000
            ready = ready_at_us(delay_key, written_us, request.not_before)
            if ready > now_micros():
                self.gate.hold(tp, offset, ready)
                return
        if not self.offsets.take(tp, offset):
            log.warning("%s/%d rewound to %d: its requests come again", topic, partition, offset)
        self.counters["requests"] += 1
        task = asyncio.get_running_loop().create_task(
            self._work(tp, offset, value, request, problem)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _work(
        self,
        tp: TopicPartitionKey,
        offset: int,
        value: bytes,
        request: PspRequest | None,
        problem: tuple[str, str] | None,
    ) -> None:
        source = f"{tp[0]}/{tp[1]}@{offset}"
        try:
            if request is None:
                assert problem is not None
                await self.outbox.unusable(source, problem[0], problem[1], value)
            else:
                await self._work_on(source, value, request)
        except FatalExecutorError as exc:
            self._fatal = exc  # the loop stops; the request stays uncommitted
            return
        self.offsets.finish(tp, offset)

    async def _work_on(self, source: str, value: bytes, request: PspRequest) -> None:
        if request.not_before is not None:
            left_s = (request.not_before - now_micros()) / US_PER_S
            if left_s > 0:
                # Not due: to the delay topic for the time it has left, as it is.
                await self.outbox.forward(topic_for(left_s), request.payment_order_id, value)
                return
        try:
            await self.handler.handle(request)
        except FatalExecutorError:
            raise
        except Exception as exc:
            # A bug of ours: keep it (and the request) visible, and keep going.
            log.exception("%s: request %s failed", source, request.request_id)
            await self.outbox.unusable(source, f"executor error: {exc!r}", "executor_error", value)

    # --- breaker probes ------------------------------------------------------------------------

    def _probe(self, psp: str) -> None:
        self.counters["probes"] += 1
        task = asyncio.get_running_loop().create_task(probe(self.connectors[psp], self.board))
        self.probes.add(task)
        task.add_done_callback(self.probes.discard)

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
        self._reassigned = True  # new partitions come unpaused: if full, the loop pauses them
        log.info("assigned %s", _names(partitions))

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
        self.gate.forget(keys)
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.offsets.forget(keys)
        self.gate.forget(keys)
        log.warning("lost %s", _names(partitions))

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            log.warning("offset commit failed: %s", err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.critical("fatal Kafka error: %s", err)
            self._fatal = FatalExecutorError(f"fatal Kafka error: {err}")
        else:
            log.warning("Kafka error: %s", err)


def _names(partitions: list[TopicPartition]) -> str:
    by: dict[str, list[int]] = {}
    for tp in partitions:
        by.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{t} {sorted(ps)}" for t, ps in sorted(by.items())) or "nothing"
