"""The API's read model of ``paystream.schedules.v1``, the schedule store (compacted).

Every schedule in memory (decoded), with an index by user and by Idempotency-Key: read from
the beginning of the topic at start (``streams.store.restore``), then kept current by a
read_committed consumer on its own thread, which wakes the requests waiting for a schedule
when its record arrives.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from base.config import Settings
from base.kafka import partition_count
from base.topics import TopicNames
from streams.scheduler import wire
from streams.scheduler.memstore import LatestRecords
from streams.schedules.model import ScheduleState
from streams.store import restore

from .follower import Follower

log = logging.getLogger(__name__)


class SchedulesView(Follower):
    def __init__(
        self, settings: Settings, on_failure: Callable[[BaseException], None] | None = None
    ) -> None:
        topic = TopicNames(settings.topic_prefix).schedules
        super().__init__(settings, topic, "schedules", on_failure)
        self.partitions = 0
        self._states: dict[str, ScheduleState] = {}
        self._by_user: dict[str, set[str]] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        self._sorted: list[str] = []  # every schedule id, sorted (rebuilt when ids are added)
        self._sorted_stale = False

    # --- lifecycle ---

    def start(self) -> None:
        started = time.monotonic()
        limits = self.settings.limits
        consumer = self._new_consumer(**{"enable.partition.eof": True})  # restore() needs it
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
        self._follow()

    # --- reads (event loop) ---

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

    def _apply(self, msgs: list[Message]) -> list[str]:
        changed = []
        for msg in msgs:
            key, value = msg.key(), msg.value()
            if not isinstance(key, bytes):
                continue
            sid = key.decode(errors="replace")
            state = None if value is None else wire.decode_state(value)
            with self._lock:
                self._put(sid, state)
            changed.append(sid)
        return changed
