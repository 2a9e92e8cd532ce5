"""The streaming detector: transfers and accounts in, Avro ``Alert`` records out.

One process reads every partition of ``paystream.transfers.v1`` and ``paystream.accounts.v1``
(read_committed: the ledger writes them in transactions) and feeds one
``RelatedTransferDetector``; alerts go to ``paystream.alerts.v1`` keyed by ``alert_id``.

* At least once: input offsets are committed only after the alerts of everything before them
  were acknowledged by the broker (``producer.flush``). A crash replays the uncommitted tail,
  and alert ids are deterministic, so a replayed alert is the same record again.
* Order: the rules are defined over events in ts order, relation events before transfers of
  equal ts, but partitions and topics arrive interleaved in any order. Events wait in a
  reorder buffer and leave it in (ts, relation first) order once every partition has shown
  a later ts, or is idle (at its end) and the event has waited ``hold_ms``, or after at most
  ``max_hold_ms`` (a stalled partition cannot stop the detector). The committed offset of a
  partition is its oldest event still in the buffer.
* Restart: the detector's state is rebuilt without emitting alerts from the committed part of
  the log: every relation event (relations never expire, so the accounts topic is read from
  its start) and the transfers from the offsets at ``watermark - window`` (``offsets_for_times``;
  the watermark is stored in the commit metadata) up to the committed offsets. Then it goes on.
* One instance: the partitions are assigned, not subscribed (no consumer group rebalances,
  a restart resumes at once), and a lock file in ``PAYSTREAM_HOME`` refuses a second instance.

Why not faust-streaming (which the design suggested): with at-least-once processing faust
creates its aiokafka consumer with ``isolation_level="read_uncommitted"`` (hard-coded;
read_committed only comes with exactly-once mode and its transactional producers), and a probe
against the real broker delivered a record from an aborted transaction to the agent: aborted
ledger transfers would raise false alerts. The detector also needs to choose its start
offsets (the rebuild) and its commit offsets (the reorder buffer) itself, which a plain
consumer loop does directly.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from base.config import Settings, kafka_client_config
from base.kafka import retrying, scan
from base.topics import TopicNames
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.detector.graph import (
    DEFAULT_MAX_HOPS,
    DEFAULT_WINDOW_US,
    Alert,
    RelatedTransferDetector,
    TransferEdge,
)

log = logging.getLogger(__name__)

DETECTOR_GROUP = "paystream-detector"
DEFAULT_WINDOW_S = DEFAULT_WINDOW_US / 1_000_000
_RELATION, _TRANSFER = 0, 1  # order of events of equal ts: relations first
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DetectorLimits:
    """The runner's bounds (the detector's own, hops and window, are its arguments)."""

    # Reorder buffer: the least an event waits for idle partitions, the most for slow ones.
    hold_ms: int = 250
    max_hold_ms: int = 2000
    # Flush the alerts and commit the input at least this often.
    commit_interval_ms: int = 1000
    # Records per consume() call, and how long one call may block.
    batch_records_max: int = 2000
    poll_timeout_ms: int = 100
    # Alerts waiting for delivery before the loop stops reading to flush.
    producer_queue_records_max: int = 100_000
    # Rebuild: start this much before ``watermark - window`` (Kafka timestamps are not the
    # events' ts exactly: the ledger stamps both from the command's log time).
    replay_margin_ms: int = 60_000
    flush_timeout_s: float = 30.0
    kafka_timeout_s: float = 30.0


@dataclass(slots=True)
class _Partition:
    """Reading progress of one input partition."""

    next_offset: int = -1  # after the last record read; -1 before any
    high_ts: int = -(1 << 62)  # largest event ts read
    idle: bool = False  # at its end (EOF) since the last record
    waiting: deque[int] = field(default_factory=deque)  # offsets in the buffer, in order
    released: set[int] = field(default_factory=set)  # offsets out of the buffer, out of order

    def commit_offset(self) -> int:
        """The oldest offset still in the buffer, else the next one to read."""
        waiting, released = self.waiting, self.released
        while waiting and waiting[0] in released:
            released.discard(waiting.popleft())
        return waiting[0] if waiting else self.next_offset


# An input event: ("relate", a, b, kind) / ("unrelate", a, b) / ("transfer", TransferEdge).
_Action = tuple[Any, ...]


def _where(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record or partition event."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise RuntimeError(f"record without a position: {msg}")
    return topic, partition, offset


def _decode(codec: Codec, msg: Message) -> tuple[int, int, _Action | None] | None:
    """(ts, rank, action or None for events the detector ignores), None if undecodable."""
    value = msg.value()
    if value is None:
        return None
    try:
        name, rec = codec.decode(value)
    except DecodeError as exc:
        log.warning("skipping %s/%d@%d: %s", *_where(msg), exc)
        return None
    ts = int(rec.get("ts", 0))
    if name == "TransferEvent":
        if rec["status"] != "posted":
            return ts, _TRANSFER, None
        edge = TransferEdge(
            transfer_id=rec["transfer_id"],
            command_id=rec["command_id"],
            from_account=rec["from_account"],
            to_account=rec["to_account"],
            amount=rec["amount"],
            currency=rec["currency"],
            ts=ts,
        )
        return ts, _TRANSFER, ("transfer", edge)
    if name == "AccountEvent":
        kind = rec["kind"]
        if kind == "related" and rec.get("related"):
            return ts, _RELATION, ("relate", rec["account"], rec["related"], rec["relation_kind"])
        if kind == "unrelated" and rec.get("related"):
            return ts, _RELATION, ("unrelate", rec["account"], rec["related"])
        return ts, _RELATION, None
    log.warning("skipping %s record on %s", name, msg.topic())
    return None


def _apply(det: RelatedTransferDetector, action: _Action, ts: int, emit: bool) -> list[Alert]:
    if action[0] == "transfer":
        if emit:
            return det.add_transfer(action[1])
        det.load_transfer(action[1])
    elif action[0] == "relate":
        det.relate(action[1], action[2], action[3] or "", ts)
    else:
        det.unrelate(action[1], action[2], ts)
    return []


def _consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    conf: dict[str, Any] = {
        **kafka_client_config(settings),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 50,
    }
    conf.update(extra)
    return Consumer(conf)


def _partitions(c: Consumer, topic: str, timeout_s: float) -> list[TopicPartition]:
    md = retrying(lambda: c.list_topics(topic, timeout=timeout_s), timeout_s)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} is missing: create the topics first")
    return [TopicPartition(topic, p) for p in sorted(t.partitions)]


class _Lock:
    """An exclusive lock file: one detector per PAYSTREAM_HOME and topic namespace."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = path.open("a+")
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise RuntimeError(f"another detector holds {path}") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"{os.getpid()}\n")
        self._f.flush()

    def release(self) -> None:
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


class DetectorRunner:
    """The consume -> reorder -> detect -> produce -> commit loop. ``run_detector`` wraps it."""

    def __init__(
        self,
        settings: Settings,
        max_hops: int = DEFAULT_MAX_HOPS,
        window_s: float = DEFAULT_WINDOW_S,
        limits: DetectorLimits | None = None,
    ) -> None:
        if settings.bootstrap is None:
            raise ValueError("the detector needs a bootstrap address")
        self.settings = settings
        self.limits = limits or DetectorLimits()
        self.window_us = round(window_s * 1_000_000)
        self.detector = RelatedTransferDetector(max_hops, self.window_us)  # validates limits
        self.topics = TopicNames(settings.topic_prefix)
        self.group = settings.topic_prefix + DETECTOR_GROUP
        self.codec = Codec.default()
        self.inputs = (self.topics.transfers, self.topics.accounts)
        self.alerts_emitted = 0
        self.events_processed = 0
        self.replayed = 0
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._buffer: list[tuple[int, int, int, int, int, float, _Action]] = []
        self._delivery_error: KafkaError | None = None
        self._committed: dict[tuple[str, int], int] = {}

    # -- rebuild ----------------------------------------------------------------------------

    def _start_offsets(self, c: Consumer, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """Committed offsets (OFFSET_BEGINNING where none) and the state rebuilt up to them."""
        lim = self.limits
        committed = retrying(
            lambda: c.committed(tps, timeout=lim.kafka_timeout_s), lim.kafka_timeout_s
        )
        starts: dict[tuple[str, int], int] = {}
        wm: int | None = None
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
            starts[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            if tp.offset >= 0 and tp.metadata:
                try:
                    got = int(json.loads(tp.metadata)["wm"])
                except (ValueError, KeyError, TypeError):
                    continue
                wm = got if wm is None else max(wm, got)
        if any(o >= 0 for o in starts.values()):
            self._rebuild(starts, wm)
        return starts

    def _rebuild(self, ends: dict[tuple[str, int], int], wm: int | None) -> None:
        lim = self.limits
        t0 = time.monotonic()
        c = _consumer(self.settings, f"{self.group}-rebuild-{uuid.uuid4().hex[:8]}")
        try:
            todo: dict[tuple[str, int], int] = {k: v for k, v in ends.items() if v > 0}
            begin: list[TopicPartition] = []
            transfers = self.topics.transfers
            if wm is not None:
                since_ms = max(0, (wm - self.window_us) // 1000 - lim.replay_margin_ms)
                ask = [TopicPartition(t, p, since_ms) for (t, p) in todo if t == transfers]
                found = (
                    retrying(
                        lambda: c.offsets_for_times(ask, timeout=lim.kafka_timeout_s),
                        lim.kafka_timeout_s,
                    )
                    if ask
                    else []
                )
                for tp in found:
                    key = (tp.topic, tp.partition)
                    if tp.offset < 0 or tp.offset >= todo[key]:
                        del todo[key]  # nothing of it is in the window
                    else:
                        begin.append(TopicPartition(tp.topic, tp.partition, tp.offset))
            for t, p in todo:
                if t != transfers or wm is None:
                    begin.append(TopicPartition(t, p, OFFSET_BEGINNING))
            events: list[tuple[int, int, int, int, int, _Action]] = []
            if begin:
                c.assign(begin)
                events = self._read_until(c, todo)
            events.sort(key=lambda e: e[:5])
            det = self.detector
            for ts, _rank, _ti, _p, _o, action in events:
                _apply(det, action, ts, emit=False)
            self.replayed = len(events)
            log.info(
                "rebuilt from %d events in %.1fs: %d edges in the window, watermark %s",
                len(events),
                time.monotonic() - t0,
                det.edges,
                det.watermark,
            )
        finally:
            c.close()

    def _read_until(
        self, c: Consumer, ends: dict[tuple[str, int], int]
    ) -> list[tuple[int, int, int, int, int, _Action]]:
        out: list[tuple[int, int, int, int, int, _Action]] = []
        left = dict(ends)
        topic_index = {t: i for i, t in enumerate(self.inputs)}
        deadline = time.monotonic() + 10 * self.limits.kafka_timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rebuild did not reach the committed offsets: {left}")
            for msg in c.consume(10_000, timeout=0.5):
                topic, pn, offset = _where(msg)
                key = (topic, pn)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.pop(key, None)
                        continue
                    raise KafkaException(err)
                end = left.get(key)
                if end is None:
                    continue
                if offset >= end:
                    left.pop(key, None)
                    continue
                got = _decode(self.codec, msg)
                if got is not None:
                    ts, rank, action = got
                    if action is not None:
                        out.append((ts, rank, topic_index[topic], pn, offset, action))
            if left:  # transaction markers: a position past the end is the end too
                for tp in c.position([TopicPartition(t, p) for (t, p) in left]):
                    if tp.offset >= 0 and tp.offset >= left[(tp.topic, tp.partition)]:
                        left.pop((tp.topic, tp.partition), None)
        return out

    # -- live loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        lim = self.limits
        s = self.settings
        lock = _Lock(s.home / f"detector-{s.topic_prefix or 'default'}.lock")
        c = _consumer(s, self.group)
        p = Producer(
            {
                **kafka_client_config(s),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "queue.buffering.max.messages": lim.producer_queue_records_max,
            }
        )
        try:
            tps = [tp for t in self.inputs for tp in _partitions(c, t, lim.kafka_timeout_s)]
            starts = self._start_offsets(c, tps)
            for (t, part), off in starts.items():
                self._parts[(t, part)] = _Partition(next_offset=off if off >= 0 else -1)
            c.assign([TopicPartition(t, part, off) for (t, part), off in starts.items()])
            log.info("detector running on %d partitions (group %s)", len(tps), self.group)
            self._loop(c, p, stop)
        finally:
            try:
                c.close()
            finally:
                lock.release()

    def _loop(self, c: Consumer, p: Producer, stop: threading.Event) -> None:
        lim = self.limits
        topic_index = {t: i for i, t in enumerate(self.inputs)}
        next_commit = time.monotonic() + lim.commit_interval_ms / 1000
        while not stop.is_set():
            msgs = c.consume(lim.batch_records_max, timeout=lim.poll_timeout_ms / 1000)
            now = time.monotonic()
            for msg in msgs:
                self._take(msg, now, topic_index)
            self._release(p, now)
            p.poll(0)
            if self._delivery_error is not None:
                raise KafkaException(self._delivery_error)
            if now >= next_commit or len(p) >= lim.producer_queue_records_max // 2:
                self._commit(c, p)
                next_commit = time.monotonic() + lim.commit_interval_ms / 1000
        self._commit(c, p)  # what was released is done; the buffer is read again next time

    def _take(self, msg: Message, now: float, topic_index: dict[str, int]) -> None:
        topic, pn, offset = _where(msg)
        part = self._parts[(topic, pn)]
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                part.idle = True
                return
            raise KafkaException(err)
        part.next_offset = offset + 1
        part.idle = False
        got = _decode(self.codec, msg)
        if got is None:
            return
        ts, rank, action = got
        if ts > part.high_ts:
            part.high_ts = ts
        if action is None:
            return
        part.waiting.append(offset)
        heapq.heappush(self._buffer, (ts, rank, topic_index[topic], pn, offset, now, action))

    def _release(self, p: Producer, now: float) -> None:
        """Process buffered events in ts order, as far as it is safe (see the module doc)."""
        buf = self._buffer
        if not buf:
            return
        hold, max_hold = self.limits.hold_ms / 1000, self.limits.max_hold_ms / 1000
        parts = self._parts.values()
        det = self.detector
        inputs = self.inputs
        while buf:
            ts, _rank, ti, pn, offset, arrived, action = buf[0]
            waited = now - arrived
            if waited < max_hold:
                behind = [q for q in parts if q.high_ts < ts]
                if behind and (waited < hold or not all(q.idle for q in behind)):
                    return
            heapq.heappop(buf)
            for alert in _apply(det, action, ts, emit=True):
                self._produce(p, alert)
            self._parts[(inputs[ti], pn)].released.add(offset)
            self.events_processed += 1

    def _produce(self, p: Producer, alert: Alert) -> None:
        value = self.codec.encode("Alert", alert.to_record())
        topic = self.topics.alerts
        while True:
            try:
                p.produce(topic, value, alert.alert_id.encode(), on_delivery=self._delivered)
                break
            except BufferError:
                p.poll(0.1)  # the local queue is full: let deliveries drain it
        self.alerts_emitted += 1

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self._delivery_error is None:
            self._delivery_error = err

    def _commit(self, c: Consumer, p: Producer) -> None:
        """Flush the alerts, then commit each partition up to its oldest buffered event."""
        left = p.flush(self.limits.flush_timeout_s)
        if left:
            raise TimeoutError(f"{left} alerts not delivered in {self.limits.flush_timeout_s}s")
        if self._delivery_error is not None:
            raise KafkaException(self._delivery_error)
        meta = json.dumps({"wm": self.detector.watermark})
        offsets = []
        for (t, pn), part in self._parts.items():
            off = part.commit_offset()
            if off >= 0 and self._committed.get((t, pn)) != off:
                offsets.append(TopicPartition(t, pn, off, metadata=meta))
        if not offsets:
            return
        retrying(lambda: c.commit(offsets=offsets, asynchronous=False), self.limits.kafka_timeout_s)
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        log.debug("committed %d partitions, %d alerts so far", len(offsets), self.alerts_emitted)


def run_detector(
    settings: Settings,
    max_hops: int = DEFAULT_MAX_HOPS,
    window_s: float = DEFAULT_WINDOW_S,
    *,
    stop: threading.Event | None = None,
    limits: DetectorLimits | None = None,
) -> None:
    """Run the detector until ``stop`` is set (or SIGTERM/SIGINT when called from the main
    thread without a ``stop``). Raises on unrecoverable Kafka errors: ``paystream detector``
    restarts the process in place, and it resumes from the committed offsets."""
    own = stop is None
    stop = stop or threading.Event()
    if own and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    runner = DetectorRunner(settings, max_hops, window_s, limits)
    runner.run(stop)
    log.info(
        "detector stopped: %d events, %d alerts, %d rebuilt",
        runner.events_processed,
        runner.alerts_emitted,
        runner.replayed,
    )


def read_alerts(settings: Settings, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every alert on the alerts topic (committed), once per ``alert_id``, ordered by
    (ts, kind, alert_id). Each is the ``Alert`` record: alert_id, kind, accounts,
    transfer_ids, command_ids, amounts, currency, timestamps, related_accounts,
    relation_kinds, relation_path, ts."""
    codec = Codec.default()
    seen: dict[str, dict[str, Any]] = {}
    for msg in scan(settings, TopicNames(settings.topic_prefix).alerts, timeout_s=timeout_s):
        value = msg.value()
        if value is None:
            continue
        name, rec = codec.decode(value)
        if name == "Alert":
            seen.setdefault(rec["alert_id"], rec)
    return sorted(seen.values(), key=lambda r: (r["ts"], r["kind"], r["alert_id"]))
