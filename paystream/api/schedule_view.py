"""The API's read model of ``paystream.schedules.v1``, the schedule store (compacted).

Every schedule in memory (decoded), with an index by user and by Idempotency-Key: read from
the beginning of the topic at start (``streams.store.restore``), then kept current by a
read_committed consumer on its own thread, which wakes the requests waiting for a schedule
when its record arrives.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count
from base.topics import TopicNames
from streams.scheduler import wire
from streams.scheduler.memstore import LatestRecords
from streams.schedules.model import ScheduleState
from streams.store import restore

from .errors import ViewFailed

log = logging.getLogger(__name__)

_POLL_S = 0.1


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class SchedulesView:
    def __init__(
        self, settings: Settings, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        self.settings = settings
        self.topic = TopicNames(settings.topic_prefix).schedules
        self.partitions = 0
        self.records_applied = 0
        self.failure: BaseException | None = None
        self._on_failure = on_failure
        self._states: dict[str, ScheduleState] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._sorted: list[str] = []  # every schedule id, sorted (rebuilt when ids are added)
        self._sorted_stale = False
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None

    # --- lifecycle ---

    def start(self) -> None:
        started = time.monotonic()
        limits = self.settings.limits
        consumer = Consumer(
            {
                **kafka_client_config(self.settings),
                "group.id": f"{self.settings.topic_prefix}paystream-api-schedules-{uuid.uuid4().hex[:8]}",
                "client.id": f"paystream-api-schedules-{self.settings.api_port}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                "logger": logging.getLogger("paystream.api.rdkafka"),
            }
        )
        self._consumer = consumer
        self.partitions = partition_count(consumer, self.topic)
        stores = {p: LatestRecords() for p in range(self.partitions)}
        restore(
            consumer,
            stores,
            self.topic,
            batch_records_max=limits.restore_batch_records_max,
            timeout_s=limits.transaction_timeout_ms / 1000 + 60,
        )
        with self._lock:
            for store in stores.values():
                for key, value in store.latest.items():
                    self._put(key.decode(), None if value is None else wire.decode_state(value))
        consumer.assign(
            [
                TopicPartition(self.topic, p, s.checkpoint or OFFSET_BEGINNING)
                for p, s in stores.items()
            ]
        )
        log.info(
            "view of %s: %d schedules in %.1f s; following it",
            self.topic,
            len(self._states),
            time.monotonic() - started,
        )
        self._thread = threading.Thread(target=self._tail, name="api-schedules", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif self._consumer is not None:
            self._consumer.close()

    # --- reads (event loop) ---

    def _check(self) -> None:
        if self.failure is not None:
            raise ViewFailed(f"the schedules view stopped: {self.failure}")

    def get(self, schedule_id: str) -> ScheduleState | None:
        self._check()
        return self._states.get(schedule_id)

    def by_key(self, scope: str, key: str) -> ScheduleState | None:
        """The schedule first created with this Idempotency-Key (by this scope)."""
        self._check()
        sid = self._by_key.get((scope, key))
        return None if sid is None else self._states.get(sid)

    def page(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[ScheduleState], str | None]:
        """Schedules by id after ``after``, filtered; and the id to pass for the next page."""
        self._check()
        with self._lock:
            if user_id is not None:
                ids = sorted(self._by_user.get(user_id, ()))
            else:
                if self._sorted_stale:
                    self._sorted = sorted(self._states)
                    self._sorted_stale = False
                ids = self._sorted
            start = 0 if after is None else bisect.bisect_right(ids, after)
            out: list[ScheduleState] = []
            last = None
            for sid in ids[start:]:
                s = self._states[sid]
                if (type is None or s.definition.type.value == type) and (
                    status is None or s.status.value == status
                ):
                    if len(out) == limit:
                        return out, last
                    out.append(s)
                    last = sid
        return out, None

    def watch(self, keys: Iterable[str]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            for k in keys:
                self._waiters.setdefault(k, set()).add(fut)
        return fut

    def unwatch(self, keys: Iterable[str], fut: asyncio.Future[None]) -> None:
        with self._lock:
            for k in keys:
                waiting = self._waiters.get(k)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[k]

    # --- writes (under the lock) ---

    def _put(self, sid: str, s: ScheduleState | None) -> None:
        old = self._states.get(sid)
        if s is None:
            if old is not None:
                del self._states[sid]
                self._by_user.get(old.definition.user_id, set()).discard(sid)
                self._sorted_stale = True
            return
        self._states[sid] = s
        if old is None:
            self._by_user.setdefault(s.definition.user_id, set()).add(sid)
            self._by_key.setdefault((s.scope, s.idempotency_key), sid)
            self._sorted_stale = True

    # --- the tail (its own thread) ---

    def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batch_max = self.settings.limits.restore_batch_records_max
        try:
            while not self._stop.is_set():
                first = consumer.poll(_POLL_S)
                if first is None:
                    continue
                woken: list[asyncio.Future[None]] = []
                for msg in [first, *consumer.consume(batch_max - 1, timeout=0)]:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("schedules view: consume error: %s", err)
                        continue
                    key, value = msg.key(), msg.value()
                    if not isinstance(key, bytes):
                        continue
                    sid = key.decode(errors="replace")
                    state = None if value is None else wire.decode_state(value)
                    with self._lock:
                        self._put(sid, state)
                        woken.extend(self._waiters.pop(sid, ()))
                    self.records_applied += 1
                for fut in woken:
                    with contextlib.suppress(RuntimeError):
                        fut.get_loop().call_soon_threadsafe(_wake, fut)
        except BaseException as exc:
            self.failure = exc
            log.exception("schedules view: following %s failed", self.topic)
            if self._on_failure is not None:
                self._on_failure(exc)
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()
