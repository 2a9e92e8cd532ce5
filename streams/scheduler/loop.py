"""The scheduler's main loop (docs/schedules.md, "The scheduler").

Schedulers share a consumer group over ``paystream.schedule-commands.v1`` and
``paystream.payment-events.v1`` (range-assigned: partition p of both to one member). The
member that owns partition p owns every schedule keyed there: on assignment it rebuilds them
from partition p of the compacted store ``paystream.schedules.v1``, from its beginning.

Each cycle, repeated in comments below:

  1. Consume what came (commands, payment events), and the payment API's answers.
  2. Decide: commands, scheduled payments that settled, answers; then every schedule whose
     due time has come (in due order) and every backfill with nothing in flight.
  3. One Kafka transaction: the changed states (the store), their events (snapshots and
     occurrences), settlements for schedules another scheduler owns, and the offsets of
     every partition read or changed (KIP-447 fencing, as in streams/processor.py).
  4. Only then: keep the new states, launch the due submissions, arm the next due times.

An occurrence is submitted before the transaction that records it (the answer comes back
in a later cycle): a crash in between submits it again after the restart, with the same
payment id and Idempotency-Key, and the payment API answers with the original payment.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from base.config import Settings
from base.kafka import position, watermarks
from base.topics import TopicNames
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.agent import TS_MAX, BadInput
from streams.partitioner import partition_for
from streams.processor import Clients, group_of, kafka_clients
from streams.schedules import decide, evolve_all
from streams.schedules import model as sm
from streams.schedules.errors import RuleError
from streams.store import restore
from streams.watchdog import Watchdog

from . import wire
from .clock import Clock, SystemClock
from .errors import FatalProcessorError
from .memstore import LatestRecords
from .submit import Job, Pool
from .timers import Timers

log = logging.getLogger(__name__)

AGENT = "scheduler"
GROUP = group_of(AGENT)  # paystream-scheduler
# A due schedule whose cursor moves (a skipped run, a pause passed over) is decided again at
# once, up to this many times a cycle, so its next occurrence need not wait a cycle.
_DUE_STEPS_MAX = 8
_STATS_EVERY_S = 60.0
# Offsets of records that changed nothing are committed at most this often.
_OFFSETS_EVERY_S = 1.0


def policy_of(settings: Settings) -> sm.Policy:
    return sm.Policy(
        catchup_window_us=round(settings.schedule_catchup_window_s * sm.US),
        failures_to_pause=settings.schedule_failures_to_pause,
        jitter_max_us=round(settings.schedule_jitter_s * sm.US),
        backfill_occurrences_max=settings.limits.schedule_backfill_occurrences_max,
    )


def payment_body(s: sm.ScheduleState, at: int) -> dict[str, str]:
    d = s.definition
    return {
        "payment_id": sm.payment_id(s.schedule_id, at),
        "user_id": d.user_id,
        "type": d.type.value,
        "from_acct": d.from_acct,
        "to_acct": d.to_acct,
        "amount": d.amount,
        "currency": d.currency,
        "payment_option": d.payment_option.value,
    }


@dataclass
class Counters:
    cycles: int = 0
    commits: int = 0
    aborts: int = 0
    records: int = 0
    submitted: int = 0
    answers: int = 0
    forwarded: int = 0
    dead_letters: int = 0
    restored: int = 0
    started_at: float = field(default_factory=time.monotonic)


@dataclass
class _Work:
    """One cycle: the states it changed and their events, what it produces, what it reads."""

    states: dict[str, sm.ScheduleState] = field(default_factory=dict)
    events: dict[str, list[sm.Event]] = field(default_factory=dict)
    outs: list[tuple[str, str, int, bytes]] = field(default_factory=list)  # topic, key, p, v
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    launches: list[Job] = field(default_factory=list)
    answered: list[sm.Submitted] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        pool: Pool,
        instance: int = 1,
        clock: Clock | None = None,
        clients: Clients | None = None,
        on_stall: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.policy = policy_of(settings)
        self.pool = pool
        self.instance = instance
        self.clock = clock or SystemClock()
        self.group = settings.topic_prefix + GROUP
        topics = TopicNames(settings.topic_prefix)
        self.t_commands = topics.schedule_commands
        self.t_store = topics.schedules
        self.t_events = topics.schedule_events
        self.t_payment_events = topics.payment_events
        self.t_deadletter = topics.deadletter
        self.codec = Codec.default()
        clients = clients or kafka_clients(settings, AGENT, self.group, instance)
        self.consumer, self.producer, self.restorer = (
            clients.consumer,
            clients.producer,
            clients.restorer,
        )
        self.states: dict[str, sm.ScheduleState] = {}
        self.owned: set[int] = set()
        self.partitions = 0
        self.timers = Timers()
        self.inflight: dict[tuple[str, bool], int] = {}  # (schedule, backfill) -> occurrence
        self.backfills: set[str] = set()  # schedules with a backfill to go on with
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.counters = Counters()
        self.watchdog = Watchdog(self.limits.transaction_stall_s, on_stall or _raise_stall)
        self._running = True
        self._failures = 0
        self._stats_at = time.monotonic()
        # Answers of a cycle whose transaction failed: decided again in the next one.
        self._requeued: list[sm.Submitted] = []
        self._pending_offsets: dict[tuple[str, int], int] = {}
        self._committed_at = time.monotonic()

    # --- lifecycle ---

    def stop(self, *_: object) -> None:
        self._running = False

    def run(self, max_cycles: int | None = None, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self.start()
        try:
            while self._running and (max_cycles is None or self.counters.cycles < max_cycles):
                self.cycle()
        finally:
            self.close()

    def start(self) -> None:
        md = self.consumer.list_topics(timeout=30)
        counts = {}
        for name in (self.t_commands, self.t_store, self.t_payment_events):
            if name not in md.topics or md.topics[name].error is not None:
                raise FatalProcessorError(f"topic {name} is missing; run `paystream up`")
            counts[name] = len(md.topics[name].partitions)
        if counts[self.t_commands] != counts[self.t_store]:
            raise FatalProcessorError(f"co-partitioned topics differ in partitions: {counts}")
        self.partitions = counts[self.t_commands]
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self.t_commands, self.t_payment_events],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self.pool.start()
        self.watchdog.start()
        log.info("scheduler %d started (group %s)", self.instance, self.group)

    def close(self) -> None:
        self.pool.close()
        with self.watchdog.guard("closing the consumer"), contextlib.suppress(KafkaException):
            self.consumer.close()
        self.watchdog.stop()
        self.restorer.close()
        log.info("scheduler %d stopped: %s", self.instance, self.counters)

    # --- assignment: the schedules of a partition are rebuilt from the store ---

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        committed = consumer.committed(
            partitions, timeout=self.limits.transaction_timeout_ms / 1000 + 30
        )
        for tp in committed:
            offset = (
                tp.offset if tp.offset >= 0 else watermarks(consumer, tp.topic, tp.partition)[0]
            )
            self.next_offsets[(tp.topic, tp.partition)] = offset
        new = {tp.partition for tp in partitions if tp.topic == self.t_commands} - self.owned
        if not new:
            return
        before = len(self.states)
        stores = {p: LatestRecords() for p in new}
        self.counters.restored += restore(
            self.restorer,
            stores,
            self.t_store,
            batch_records_max=self.limits.restore_batch_records_max,
            timeout_s=self.limits.transaction_timeout_ms / 1000 + 60,
        )
        for store in stores.values():
            for key, value in store.latest.items():
                if value is None:
                    self.states.pop(key.decode(), None)
                else:
                    s = wire.decode_state(value, self.codec)
                    self.states[s.schedule_id] = s
        self.owned |= new
        for s in list(self.states.values()):
            if partition_for(s.schedule_id, self.partitions) in new:
                self._rearm(s)
        log.info(
            "assigned partitions %s: %d schedules rebuilt from %s in %.2f s",
            sorted(new),
            len(self.states) - before,
            self.t_store,
            time.monotonic() - started,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.next_offsets.pop((tp.topic, tp.partition), None)
            self._pending_offsets.pop((tp.topic, tp.partition), None)
        gone = {tp.partition for tp in partitions if tp.topic == self.t_commands}
        if not gone:
            return
        self.owned -= gone
        for sid in [s for s in self.states if partition_for(s, self.partitions) in gone]:
            del self.states[sid]
            self.backfills.discard(sid)
        self.timers.compact(self._valid)
        log.info("revoked partitions %s", sorted(gone))

    # --- one cycle ---

    def wait_s(self) -> float:
        """How long the next consume may wait: until the next due time, at most a tick."""
        tick = self.limits.scheduler_tick_ms / 1000
        due = self.timers.next_due()
        if self._requeued:
            return 0.0
        if due is None or self.backfills:
            return tick
        return max(0.0, min(tick, (due - self.clock.now_us()) / sm.US))

    def cycle(self) -> None:
        # 1. Consume what came, and the payment API's answers.
        msgs = self.consumer.consume(self.limits.batch_records_max, timeout=self.wait_s())
        answers = [*self._requeued, *self.pool.drain()]
        self._requeued = []
        self.counters.cycles += 1
        w = _Work(answered=answers)
        # 2. Decide.
        for msg in msgs:
            self._read(msg, w)
        for a in answers:
            if self._owns(a.schedule_id):
                self._step(w, a.schedule_id, a)
        now = self.clock.now_us()
        for sid in self.timers.pop_due(now, self._valid):
            self._due(w, sid, now)
        for sid in sorted(self.backfills):
            if (sid, True) not in self.inflight and not any(
                j.schedule_id == sid and j.backfill for j in w.launches
            ):
                self._step(w, sid, sm.BackfillDue(sid, now))
        # 3. One transaction, when there is anything to commit. Offsets alone (payment events
        # of other payments) wait, up to a second: read again after a crash, they change
        # nothing.
        before = dict(self._pending_offsets)
        self._pending_offsets.update(w.offsets)
        offsets_due = time.monotonic() - self._committed_at >= _OFFSETS_EVERY_S
        if w.states or w.outs or (self._pending_offsets and offsets_due):
            w.offsets = dict(self._pending_offsets)
            try:
                self._commit(w)
                self._failures = 0
            except KafkaException as exc:
                self._pending_offsets = before  # this cycle's records are read again
                self._failed(exc, msgs, w)
                return
            self._pending_offsets = {}
            self._committed_at = time.monotonic()
        # 4. Only now: keep, launch, arm.
        self._apply(w)
        self._stats()

    def _owns(self, schedule_id: str) -> bool:
        return partition_for(schedule_id, self.partitions) in self.owned

    def _state(self, w: _Work, sid: str) -> sm.ScheduleState | None:
        s = w.states.get(sid)
        return s if s is not None else self.states.get(sid)

    def _step(self, w: _Work, sid: str, m: sm.Message) -> list[sm.Event]:
        state = self._state(w, sid)
        try:
            events = decide(state, m, self.policy)
        except RuleError as exc:  # a stored rule that no longer compiles: leave it be
            log.error("schedule %s: %s; %s not decided", sid, exc, type(m).__name__)
            return []
        if not events:
            return []
        new = evolve_all(state, events)
        if new is not None and new is not state:
            w.states[sid] = new
            w.events.setdefault(sid, []).extend(events)
        for e in events:
            if isinstance(e, sm.SubmitRequested) and new is not None:
                w.launches.append(Job(sid, e.at, e.due_at, e.backfill, payment_body(new, e.at)))
        return events

    def _due(self, w: _Work, sid: str, now: int) -> None:
        for _ in range(_DUE_STEPS_MAX):
            events = self._step(w, sid, sm.Due(sid, now))
            if not events or any(isinstance(e, sm.SubmitRequested) for e in events):
                return

    def _read(self, msg: Message, w: _Work) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise FatalProcessorError(f"fatal consumer error: {err}")
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error: %s", err)
            return
        topic, p, offset = position(msg)
        w.offsets[(topic, p)] = offset + 1
        self.counters.records += 1
        log_us = min(max(msg.timestamp()[1], 0), TS_MAX // 1000) * 1000
        if topic == self.t_payment_events:
            self._payment_event(msg, w, log_us)
            return
        try:
            schema, record = self.codec.decode(msg.value() or b"")
            m = wire.to_message(schema, record, log_us)
        except (DecodeError, BadInput, KeyError, ValueError, TypeError) as exc:
            self._dead_letter(w, msg, f"undecodable schedule command: {exc}", exc)
            return
        owner = partition_for(m.key, self.partitions)
        if owner != p:  # produced with another partitioner: to the partition that owns it
            w.outs.append((self.t_commands, m.key, owner, msg.value() or b""))
            self.counters.forwarded += 1
            return
        self._step(w, m.key, m)

    def _payment_event(self, msg: Message, w: _Work, log_us: int) -> None:
        """A scheduled payment that reached a terminal status goes to its schedule."""
        key = msg.key()
        if not isinstance(key, bytes) or not key.startswith(sm.PAYMENT_ID_PREFIX.encode()):
            return
        try:
            schema, record = self.codec.decode(msg.value() or b"")
        except DecodeError:
            return  # the warehouse sink dead-letters what it cannot read
        settled = (
            wire.settled_of_payment(record, log_us) if schema == "PaymentStatusChanged" else None
        )
        if settled is None:
            return
        if self._owns(settled.schedule_id):
            self._step(w, settled.schedule_id, settled)
            return
        value = self.codec.encode(wire.SETTLED_SCHEMA, wire.settled_record(settled))
        owner = partition_for(settled.schedule_id, self.partitions)
        w.outs.append((self.t_commands, settled.schedule_id, owner, value))
        self.counters.forwarded += 1

    def _dead_letter(self, w: _Work, msg: Message, reason: str, exc: Exception) -> None:
        source = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
        log.warning("dead letter %s: %s", source, reason)
        value = self.codec.encode(
            "DeadLetter",
            {
                "source": source,
                "reason": reason[: self.limits.reason_chars_max],
                "error_code": str(getattr(exc, "code", type(exc).__name__)),
                "payload": (msg.value() or b"")[: self.limits.command_bytes_max],
                "ts": self.clock.now_us(),
            },
        )
        w.outs.append((self.t_deadletter, source, partition_for(source, self.partitions), value))
        self.counters.dead_letters += 1

    # --- the transaction ---

    def _commit(self, w: _Work) -> None:
        self.producer.begin_transaction()
        for sid, s in w.states.items():
            p = partition_for(sid, self.partitions)
            self._produce(self.t_store, sid, p, wire.encode_state(s, self.codec))
            self._produce(
                self.t_events,
                sid,
                p,
                self.codec.encode(wire.CHANGED_SCHEMA, wire.changed_record(s)),
            )
            for r in wire.occurrence_records(sid, w.events.get(sid, [])):
                self._produce(self.t_events, sid, p, self.codec.encode(wire.OCCURRENCE_SCHEMA, r))
            # A change without an input record read still commits its partition's offset:
            # the next owner's "stable" read of the offsets waits for this transaction.
            k = (self.t_commands, p)
            if k not in w.offsets and k in self.next_offsets:
                w.offsets[k] = self.next_offsets[k]
        for topic, key, p, value in w.outs:
            self._produce(topic, key, p, value)
        tps = [TopicPartition(t, p, o) for (t, p), o in w.offsets.items()]
        with self.watchdog.guard("committing a transaction"):
            self.producer.send_offsets_to_transaction(
                tps, self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(60)
        self.counters.commits += 1

    def _produce(self, topic: str, key: str, p: int, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key.encode(), p)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _failed(self, exc: KafkaException, msgs: list[Message], w: _Work) -> None:
        """Abort, rewind to the batch's start; the answers and the due schedules wait for the
        next cycle (nothing of this one was kept)."""
        err: KafkaError = exc.args[0]
        if err.fatal():
            raise FatalProcessorError(f"fatal transaction error: {err}") from exc
        self._failures += 1
        self.counters.aborts += 1
        if self._failures > self.limits.commit_retries_max:
            raise FatalProcessorError(f"{self._failures} cycles failed in a row") from exc
        log.warning("transaction failed (%s); aborting and redoing the cycle", err)
        with self.watchdog.guard("aborting a transaction"):
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(30)
            firsts: dict[tuple[str, int], int] = {}
            for msg in msgs:
                if msg.error() is None:
                    t, p, o = position(msg)
                    firsts.setdefault((t, p), o)
            assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            for (t, p), o in firsts.items():
                if (t, p) in assigned:
                    self.consumer.seek(TopicPartition(t, p, o))
        self._requeued = w.answered
        for sid in {*w.states, *(j.schedule_id for j in w.launches)}:
            s = self.states.get(sid)
            if s is not None:
                self._rearm(s)
        time.sleep(min(1.0, 0.05 * 2**self._failures))

    # --- after the commit ---

    def _apply(self, w: _Work) -> None:
        self.states.update(w.states)
        self.next_offsets.update(w.offsets)
        for a in w.answered:
            if self.inflight.get((a.schedule_id, a.backfill)) == a.at:
                del self.inflight[(a.schedule_id, a.backfill)]
        self.counters.answers += len(w.answered)
        for job in w.launches:
            self.inflight[(job.schedule_id, job.backfill)] = job.at
            self.pool.submit(job)
        self.counters.submitted += len(w.launches)
        for sid in {*w.states, *(a.schedule_id for a in w.answered)}:
            s = self.states.get(sid)
            if s is not None and self._owns(sid):
                self._rearm(s)
                if s.backfill is not None:
                    self.backfills.add(sid)
                else:
                    self.backfills.discard(sid)
        for sid, events in w.events.items():
            _log_events(sid, events)

    def _expected_due(self, s: sm.ScheduleState) -> int | None:
        """When the schedule's next look is due: its next occurrence's due time, or at once
        for a cursor a search left short (before ``not_before``, or already handled)."""
        n = s.next
        if s.status is not sm.ScheduleStatus.active or n is None:
            return None
        if n.at < s.not_before or (s.last_at is not None and n.at <= s.last_at):
            return 0
        return n.due_at

    def _rearm(self, s: sm.ScheduleState) -> None:
        if (s.schedule_id, False) in self.inflight:
            return
        due = self._expected_due(s)
        if due is not None:
            self.timers.arm(due, s.schedule_id)

    def _valid(self, sid: str, due: int) -> bool:
        s = self.states.get(sid)
        return (
            s is not None
            and (sid, False) not in self.inflight
            and self._expected_due(s) == due
            and self._owns(sid)
        )

    def _stats(self) -> None:
        now = time.monotonic()
        if now - self._stats_at < _STATS_EVERY_S:
            return
        self._stats_at = now
        c = self.counters
        log.info(
            "%d schedules in partitions %s, %d due times armed, %d submissions in flight; "
            "%d submitted, %d answered, %d commits since start",
            len(self.states),
            sorted(self.owned),
            len(self.timers),
            self.pool.in_flight,
            c.submitted,
            c.answers,
            c.commits,
        )


def _log_events(sid: str, events: list[sm.Event]) -> None:
    for e in events:
        if isinstance(e, sm.OccurrenceSubmitted):
            pid = sm.payment_id(sid, e.at)
            late_ms = (e.submitted_at - e.due_at) / 1000
            what = "admitted" if e.ok else f"refused ({e.code})"
            kind = "backfill " if e.backfill else ""
            log.info(
                "schedule %s: %soccurrence %s %s, %.0f ms after due", sid, kind, pid, what, late_ms
            )
        elif isinstance(e, sm.OccurrencesSkipped):
            log.info(
                "schedule %s: %d occurrences skipped (%s) from %s through %s",
                sid, e.count, e.reason, sm.payment_id(sid, e.first_at), sm.payment_id(sid, e.last_at),
            )  # fmt: skip
        elif isinstance(e, sm.OccurrenceSettled):
            log.info("schedule %s: %s %s", sid, sm.payment_id(sid, e.at), e.status.value)
        elif isinstance(e, sm.StatusChanged):
            log.info("schedule %s: %s (%s)", sid, e.status.value, e.reason or "")
        elif isinstance(e, sm.Created):
            log.info("schedule %s: created", sid)


def _raise_stall(reason: str) -> None:
    raise FatalProcessorError(reason)
