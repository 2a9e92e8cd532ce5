"""The exactly-once processor: consume a batch, decide, commit it all in one transaction.

It runs one agent (``streams.agent.Agent``): the ledger's accounts or the payments. One worker
process runs one ``Processor``. Workers of an agent share a consumer group over its input
topics (co-partitioned, range-assigned, so partition ``p`` of every input belongs to one
worker) and each has its own transactional id (KIP-447 fences zombies by group generation).

The commit sequence, repeated in comments below:

  1. Consume up to ``batch_records_max`` records (read_committed).
  2. Begin a transaction.
  3. For each record: decode, load the key's state (batch overlay, then rocksdict), decide,
     evolve, produce the resulting events (to any partition). A step for a key of a partition
     this worker owns is taken at once, in this transaction; any other goes to the step topic.
  4. Produce one changelog record per key the batch changed.
  5. Send the offsets of every partition the batch read or changed to the transaction (with
     the consumer group metadata).
  6. Commit the transaction. On failure: abort, rewind to the batch start, redo. Never go on.
  7. Only then write the new states and changelog checkpoints to rocksdict.

A crash between 6 and 7 leaves rocksdict behind the changelog; ``restore`` on the next
assignment reads the changelog from the checkpoint and catches up.

Why step 5 covers partitions changed by local steps even when nothing was read from them:
the next owner of a partition reads its committed offsets with "stable" semantics before it
restores the partition's changelog, and that read waits for any pending transaction that holds
offsets of the partition. Without an offset, a zombie's open transaction could still commit a
change to a partition whose state the new owner has already restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import position, watermarks
from base.topics import TopicNames
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.agent import TS_MAX, Agent, BadInput
from streams.errors import FatalProcessorError
from streams.partitioner import partition_for
from streams.store import PartitionStore, restore
from streams.watchdog import Watchdog

log = logging.getLogger(__name__)


def group_of(agent_name: str) -> str:
    """The consumer group (and transactional id stem) of an agent's workers."""
    return f"paystream-{agent_name}"


LEDGER_GROUP = group_of("ledger")


@dataclass
class Counters:
    batches: int = 0
    records: int = 0
    events: int = 0
    aborts: int = 0
    dead_letters: int = 0
    forwarded: int = 0
    local_steps: int = 0
    restored: int = 0
    # Where a batch's wall time goes (seconds, summed): building it (decode, decide, evolve,
    # produce), sending the offsets, committing. The latency bench reads them from the log.
    build_s: float = 0.0
    send_offsets_s: float = 0.0
    commit_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Clients:
    """The processor's three Kafka clients (a deterministic simulation passes fakes)."""

    consumer: Any  # the group member reading the inputs
    producer: Any  # the transactional producer
    restorer: Any  # reads the changelog on assignment


def kafka_clients(settings: Settings, agent_name: str, group: str, instance: int) -> Clients:
    limits = settings.limits
    bootstrap = settings.bootstrap or "127.0.0.1:9092"
    consumer = Consumer(
        {
            **kafka_client_config(settings, bootstrap),
            "group.id": group,
            "client.id": f"{agent_name}-{instance}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            # Range keeps partition p of every input topic on one worker.
            "partition.assignment.strategy": "range",
            # Static membership: a restarted worker takes its old place without a
            # rebalance, so a crash stalls only its own partitions, and briefly.
            "group.instance.id": f"{settings.topic_prefix}{agent_name}-{instance}",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "max.poll.interval.ms": 120_000,
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 32768,
        }
    )
    producer_conf = {
        **kafka_client_config(settings, bootstrap),
        "client.id": f"{agent_name}-{instance}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": limits.transaction_linger_ms,
        "retry.backoff.ms": limits.transaction_retry_backoff_ms,
        "retry.backoff.max.ms": limits.transaction_retry_backoff_max_ms,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": limits.producer_queue_records_max,
        "compression.type": "lz4",
        "transaction.timeout.ms": limits.transaction_timeout_ms,
    }
    if settings.processing_guarantee != "at_least_once":
        producer_conf["transactional.id"] = f"{group}-{instance}"
    restorer = Consumer(
        {
            **kafka_client_config(settings, bootstrap),
            "group.id": f"{group}-restore-{instance}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "queued.max.messages.kbytes": 16384,
        }
    )
    return Clients(consumer, Producer(producer_conf), restorer)


class Processor:
    def __init__(
        self,
        agent: Agent,
        settings: Settings,
        instance: int,
        state_dir: Path | None = None,
        on_stall: Callable[[str], None] | None = None,
        clients: Clients | None = None,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.limits = settings.limits
        self.topics = TopicNames(settings.topic_prefix)
        self.instance = instance
        self.group = settings.topic_prefix + group_of(agent.name)
        self.state_dir = state_dir or settings.home / "state" / f"{agent.name}-{instance}"
        self.codec = Codec.default()
        self.stores: dict[int, PartitionStore[Any]] = {}
        self.counters = Counters()
        self._running = True
        # A stuck librdkafka call is not ours to interrupt: by default the process exits
        # (the worker entry point restarts it in place instead; see paystream.bootstrap).
        self.watchdog = Watchdog(settings.limits.transaction_stall_s, on_stall or _exit_now)
        self._partitions = 0
        self._failures = 0
        # (topic, partition) -> the next offset to process, for every assigned partition:
        # step 5 sends it for partitions a batch changed without reading from them.
        self._next_offsets: dict[tuple[str, int], int] = {}
        # At-least-once exists only so the benchmark can show what transactions cost.
        self.exactly_once = settings.processing_guarantee != "at_least_once"
        # Topic short name -> full name and back, for the hot loop.
        self._topic = self.topics.all()
        self._topic_key = {name: key for key, name in self._topic.items()}
        clients = clients or kafka_clients(settings, agent.name, self.group, instance)
        self.consumer = clients.consumer
        self.producer = clients.producer
        self.restorer = clients.restorer

    # --- lifecycle ---

    def stop(self, *_: object) -> None:
        self._running = False

    def run(self, max_batches: int | None = None) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self._partitions = self._partition_count()
        if self.exactly_once:
            self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self._topic[t] for t in self.agent.input_topics],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("%s worker %d started (group %s)", self.agent.name, self.instance, self.group)
        self.watchdog.start()
        stats_every_s = self.limits.worker_stats_interval_s
        next_stats, last = time.monotonic() + stats_every_s, dataclasses.replace(self.counters)
        try:
            while self._running and (max_batches is None or self.counters.batches < max_batches):
                # 1. Consume up to batch_records_max records (read_committed).
                msgs = self.consumer.consume(
                    self.limits.batch_records_max, timeout=self.limits.batch_wait_ms / 1000
                )
                if msgs:
                    self._process_or_redo(msgs)
                if (now := time.monotonic()) >= next_stats:
                    next_stats = now + stats_every_s
                    last = self._log_stats(last)
        finally:
            self.close()

    def _log_stats(self, last: Counters) -> Counters:
        """One line per interval with work in it: batches, records, and where a batch's time
        went (ms per batch: build, send_offsets, commit). The latency bench reads it."""
        now = dataclasses.replace(self.counters)
        batches = now.batches - last.batches
        if batches:
            log.info(
                "%s worker %d stats: %d batches, %d records; ms per batch: build %.1f, "
                "send_offsets %.1f, commit %.1f",
                self.agent.name,
                self.instance,
                batches,
                now.records - last.records,
                (now.build_s - last.build_s) * 1000 / batches,
                (now.send_offsets_s - last.send_offsets_s) * 1000 / batches,
                (now.commit_s - last.commit_s) * 1000 / batches,
            )
        return now

    def close(self) -> None:
        with (
            self.watchdog.guard("closing the consumer"),
            contextlib.suppress(KafkaException, RuntimeError),
        ):
            self.consumer.close()
        self.watchdog.stop()
        self.restorer.close()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        log.info("%s worker %d stopped: %s", self.agent.name, self.instance, self.counters)

    def _partition_count(self) -> int:
        md = self.consumer.list_topics(timeout=30)
        counts = {}
        for key in (*self.agent.input_topics, self.agent.changelog_topic):
            name = self._topic[key]
            if name not in md.topics or md.topics[name].error is not None:
                raise FatalProcessorError(f"topic {name} is missing; run `paystream up`")
            counts[name] = len(md.topics[name].partitions)
        if len(set(counts.values())) != 1:
            raise FatalProcessorError(f"co-partitioned topics differ in partitions: {counts}")
        return next(iter(counts.values()))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Committed offsets are fetched "stable" under read_committed, so a zombie's pending
        # transaction is resolved before we read the changelog it may have written to.
        committed = consumer.committed(
            partitions, timeout=self.limits.transaction_timeout_ms / 1000 + 30
        )
        for tp in committed:
            offset = tp.offset
            if offset < 0:  # nothing committed yet: "earliest", as the consumer itself starts
                offset = watermarks(consumer, tp.topic, tp.partition)[0]
            self._next_offsets[(tp.topic, tp.partition)] = offset
        for p in sorted({tp.partition for tp in partitions}):
            if p not in self.stores:
                self.stores[p] = PartitionStore(
                    self.state_dir / f"p{p}",
                    self.limits.state_cache_entries_max,
                    self.agent.encode_state,
                    self.agent.decode_state,
                )
        self.counters.restored += restore(
            self.restorer,
            {p: self.stores[p] for p in {tp.partition for tp in partitions}},
            self._topic[self.agent.changelog_topic],
            batch_records_max=self.limits.restore_batch_records_max,
            timeout_s=self.limits.transaction_timeout_ms / 1000 + 60,
        )
        log.info("assigned partitions %s", sorted({tp.partition for tp in partitions}))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._next_offsets.pop((tp.topic, tp.partition), None)
        for p in {tp.partition for tp in partitions}:
            store = self.stores.pop(p, None)
            if store is not None:
                store.close()
        log.info("revoked partitions %s", sorted({tp.partition for tp in partitions}))

    # --- the transaction ---

    def _process_or_redo(self, msgs: list[Message]) -> None:
        try:
            self._process_batch(msgs)
            self._failures = 0
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise FatalProcessorError(f"fatal transaction error: {err}") from exc
            self._failures += 1
            self.counters.aborts += 1
            if self._failures > self.limits.commit_retries_max:
                raise FatalProcessorError(f"{self._failures} batches failed in a row") from exc
            log.warning("batch failed (%s); aborting and redoing it", err)
            # 6. (failure) Abort, rewind to the batch start; the main loop consumes it again.
            with self.watchdog.guard("aborting a transaction"):
                self._abort_and_rewind(msgs)
            time.sleep(min(1.0, 0.05 * 2**self._failures))

    def _abort_and_rewind(self, msgs: list[Message]) -> None:
        try:
            if self.exactly_once:
                self.producer.abort_transaction(30)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise FatalProcessorError(f"abort failed: {exc}") from exc
        firsts: dict[tuple[str, int], int] = {}
        for msg in msgs:
            if msg.error() is None:
                topic, p, offset = position(msg)
                firsts.setdefault((topic, p), offset)
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, p), offset in firsts.items():
            if (topic, p) in assigned:
                self.consumer.seek(TopicPartition(topic, p, offset))

    def _process_batch(self, msgs: list[Message]) -> None:
        began = time.perf_counter()
        # 2. Begin a transaction.
        if self.exactly_once:
            self.producer.begin_transaction()
        overlay: dict[int, dict[str, Any]] = {}
        offsets: dict[tuple[str, int], int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.fatal():  # e.g. fenced by a newer member with our static id
                    raise FatalProcessorError(f"fatal consumer error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error: %s", err)
                continue
            topic, p, offset = position(msg)
            offsets[(topic, p)] = offset + 1
            # 3. Decode, load state, decide, evolve, produce events; local steps at once.
            self._handle(msg, overlay)
        # 4. One changelog record per changed key (encoded once: step 7 stores the same bytes).
        changelog_offsets: dict[int, int] = {}
        changelog = self._topic[self.agent.changelog_topic]
        encode_state = self.agent.encode_state
        encoded: dict[int, dict[str, bytes]] = {}
        for p, states in overlay.items():
            delivered = _changelog_delivered(changelog_offsets, p)
            values = encoded[p] = {}
            for key, state in states.items():
                value = values[key] = encode_state(state)
                self._send(changelog, value, key, p, on_delivery=delivered)
        # 5. The offsets of every partition read or changed (see the module docstring).
        steps = self._topic[self.agent.step_topic]
        for p in overlay:
            if (steps, p) not in offsets:
                offsets[(steps, p)] = self._next_offsets[(steps, p)]
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        counters = self.counters
        built = time.perf_counter()
        counters.build_s += built - began
        if self.exactly_once:
            with self.watchdog.guard("committing a transaction"):
                # Fenced by the group metadata (KIP-447).
                self.producer.send_offsets_to_transaction(
                    tps, self.consumer.consumer_group_metadata(), 30
                )
                sent = time.perf_counter()
                # 6. Commit. Failure raises into _process_or_redo: abort, rewind, redo.
                self.producer.commit_transaction(60)
                counters.send_offsets_s += sent - built
                counters.commit_s += time.perf_counter() - sent
        else:
            # At-least-once (benchmark only): the outputs first, then the offsets.
            if self.producer.flush(60):
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out"))
            self.consumer.commit(offsets=tps, asynchronous=False)
        self.producer.poll(0)  # serve the changelog delivery reports (their offsets)
        self._next_offsets.update(offsets)
        # 7. Only now make the new state durable locally.
        for p, states in overlay.items():
            store = self.stores.get(p)
            if store is not None:
                store.apply(states, changelog_offsets.get(p), encoded[p])
        self.counters.batches += 1
        self.counters.records += len(msgs)

    def _handle(self, msg: Message, overlay: dict[int, dict[str, Any]]) -> None:
        topic, p, _ = position(msg)
        ts = max(msg.timestamp()[1], 0) * 1000  # ms -> µs; the command's time in the log
        try:
            schema, record = self.codec.decode(msg.value() or b"")
            message = self.agent.decode(self._topic_key[topic], schema, record, ts)
        except (DecodeError, BadInput, KeyError, ValueError, TypeError) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            self._dead_letter(msg, f"undecodable {topic} record: {exc}", str(code))
            return
        key = message.key
        owner = partition_for(key, self._partitions)
        if owner != p:
            # Produced with another partitioner: send it to the partition that owns the key.
            self._send(topic, msg.value(), key, owner, timestamp=msg.timestamp()[1])
            self.counters.forwarded += 1
            return
        self._apply(message, p, overlay, ts // 1000)

    def _apply(self, first: Any, p: int, overlay: dict[int, dict[str, Any]], ts_ms: int) -> None:
        """Decide ``first`` and, in the same transaction, every step it leads to whose key
        lives in a partition this worker owns; other steps go to the step topic."""
        work: list[tuple[Any, int]] = [(first, p)]
        stores = self.stores
        produce = self._produce
        n = self._partitions
        agent = self.agent
        decide, evolve, direct_step, records = (
            agent.decide,
            agent.evolve,
            agent.direct_step,
            agent.records,
        )
        # An agent with a partition context (streams.agent.ContextAgent) decides in it.
        context_key = getattr(agent, "context_key", None)
        step_topic = agent.step_topic
        while work:
            message, p = work.pop()
            key = message.key
            states = overlay.get(p)
            if states is None:
                states = overlay[p] = {}
            state = states.get(key)
            if state is None:
                store = stores.get(p)
                state = store.get(key) if store is not None else None
            if context_key is None:
                events = decide(state, message)
            else:
                ck = context_key(p, n)
                if ck == key:
                    context = state
                else:
                    context = states.get(ck)
                    if context is None and (store := stores.get(p)) is not None:
                        context = store.get(ck)
                events = agent.decide_in(state, message, context)  # type: ignore[attr-defined]
            if not events:
                continue
            new_state = evolve(state, events)
            if new_state is not None and new_state is not state:
                states[key] = new_state
            for event in events:
                step = direct_step(event)
                if step is not None and (q := partition_for(step.key, n)) in stores:
                    # The hot path: the next step, on this worker, without its record.
                    work.append((step, q))
                    self.counters.local_steps += 1
                    outs = records(event, True)
                else:
                    outs = records(event, False)
                for out in outs:
                    if out.topic == step_topic:
                        q = partition_for(out.key, n)
                        if q in stores:
                            work.append((agent.decode_step(out.record), q))
                            self.counters.local_steps += 1
                            continue
                    produce(out.topic, out.schema, out.key, out.record, ts_ms)
            self.counters.events += len(events)

    def _produce(
        self, topic: str, schema: str, key: str, record: dict[str, Any], ts_ms: int
    ) -> None:
        value = self.codec.encode(schema, record)
        p = partition_for(key, self._partitions)
        try:  # _send's first try, inline: this runs for every record (7 per transfer)
            self.producer.produce(self._topic[topic], value, key.encode(), p, timestamp=ts_ms)
        except BufferError:
            self._send(self._topic[topic], value, key, p, timestamp=ts_ms)

    def _send(
        self,
        topic: str,
        value: bytes | None,
        key: str,
        partition: int,
        timestamp: int = 0,
        on_delivery: Callable[[Any, Message], None] | None = None,
    ) -> None:
        while True:
            try:
                if on_delivery is None:
                    self.producer.produce(
                        topic, value, key.encode(), partition, timestamp=timestamp
                    )
                else:
                    self.producer.produce(
                        topic, value, key.encode(), partition, on_delivery=on_delivery
                    )
                return
            except BufferError:
                self.producer.poll(0.05)  # the queue is bounded: let deliveries drain

    def _dead_letter(self, msg: Message, reason: str, code: str) -> None:
        payload = (msg.value() or b"")[: self.limits.command_bytes_max]
        source = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
        log.warning("dead letter %s: %s", source, reason)
        # Any producer may stamp a record with any time; µs must still fit an Avro long.
        log_ms = min(max(msg.timestamp()[1], 0), TS_MAX // 1000)
        self._produce(
            "deadletter",
            "DeadLetter",
            source,
            {
                "source": source,
                "reason": reason[: self.limits.reason_chars_max],
                "error_code": code,
                "payload": payload,
                "ts": log_ms * 1000,
            },
            log_ms,
        )
        self.counters.dead_letters += 1


def _exit_now(reason: str) -> None:
    logging.shutdown()
    os._exit(70)


def _changelog_delivered(offsets: dict[int, int], p: int) -> Callable[[Any, Message], None]:
    def cb(err: Any, msg: Message) -> None:
        if err is None:
            offsets[p] = max(offsets.get(p, 0), position(msg)[2] + 1)

    return cb


def ledger_processor(
    settings: Settings,
    instance: int,
    state_dir: Path | None = None,
    on_stall: Callable[[str], None] | None = None,
) -> Processor:
    """A ledger worker: the processor running the ledger's accounts."""
    from streams.ledger_agent import LedgerAgent

    return Processor(LedgerAgent(), settings, instance, state_dir, on_stall)
