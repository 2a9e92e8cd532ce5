"""What every API view of a topic shares: its consumer, the requests waiting for a key, and
the thread that follows the topic once the view has read it to its end.

A view (``ChangelogView``, ``SchedulesView``, ``ReviewsView``) reads its topic at start its
own way, then calls ``_follow``. From then on the tail's thread hands each batch of usable
records to the view's ``_apply``, which returns the keys it changed; the requests waiting for
those keys are woken after the change (they register before they read: no arrival is missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from base.config import Settings, kafka_client_config

from .errors import ViewFailed

log = logging.getLogger(__name__)

# How long one poll of the tail waits when nothing arrives (also how fast close() is served).
_POLL_S = 0.1
# A progress line at most this often, when something was applied.
_PROGRESS_EVERY_S = 60.0
# Consume errors logged one by one before they are only counted.
_ERRORS_LOGGED = 10


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Follower:
    """The tail of ``topic`` on a thread, and the futures waiting for its keys."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        name: str,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name  # in the consumer's group and client id, the thread's name, the logs
        self.records_applied = 0
        self.failure: BaseException | None = None
        self._on_failure = on_failure
        # Guards the waiters, and whatever state the view keeps (its reads and its _apply).
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._errors = 0

    # --- for the view ---

    def _new_consumer(self, **extra: Any) -> Consumer:
        """A read_committed consumer of a group of its own (it never commits)."""
        prefix = self.settings.topic_prefix
        self._consumer = Consumer(
            {
                **kafka_client_config(self.settings),
                "group.id": f"{prefix}paystream-api-{self.name}-{uuid.uuid4().hex[:8]}",
                "client.id": f"paystream-api-{self.name}-{self.settings.api_port}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
                # librdkafka's own lines through logging, not straight to stderr.
                "logger": logging.getLogger("paystream.api.rdkafka"),
                **extra,
            }
        )
        return self._consumer

    def _apply(self, msgs: list[Message]) -> Iterable[str]:
        """Apply usable records (the tail's thread); return the keys they changed."""
        raise NotImplementedError

    def _usable(self, msgs: list[Message]) -> list[Message]:
        """The records among ``msgs``: a fatal error raises, the others are logged (the first
        few) and counted, partition ends are skipped."""
        out = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                out.append(msg)
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            if err.fatal():
                raise KafkaException(err)
            self._errors += 1
            if self._errors <= _ERRORS_LOGGED:
                log.warning("%s view: consume error (%d so far): %s", self.name, self._errors, err)
        return out

    def _follow(self) -> None:
        """Follow the topic from where the consumer stands, on a thread."""
        self._thread = threading.Thread(target=self._tail, name=f"api-{self.name}", daemon=True)
        self._thread.start()

    def _check(self) -> None:
        if self.failure is not None:
            raise ViewFailed(f"the {self.name} view stopped: {self.failure}")

    # --- for requests (event loop) ---

    def watch(self, keys: Iterable[str]) -> asyncio.Future[None]:
        """A future resolved when a record for any of ``keys`` is applied. Register it before
        reading the state it waits for; ``unwatch`` it when done."""
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

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        elif self._consumer is not None:
            self._consumer.close()

    # --- the tail (its own thread) ---

    def _tail(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        batch_max = self.settings.limits.restore_batch_records_max
        last_log, logged_applied = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                # consume() waits out its whole timeout unless the batch fills: wait for one
                # record, then take what else is there at once (requests wait on it).
                first = consumer.poll(_POLL_S)
                if first is None:
                    continue
                msgs = self._usable([first, *consumer.consume(batch_max - 1, timeout=0)])
                if not msgs:
                    continue
                self._wake_keys(self._apply(msgs))
                self.records_applied += len(msgs)
                now = time.monotonic()
                if now - last_log > _PROGRESS_EVERY_S and self.records_applied != logged_applied:
                    log.info(
                        "%s view: %d records applied since start (%d in the last %.0f s)",
                        self.name,
                        self.records_applied,
                        self.records_applied - logged_applied,
                        now - last_log,
                    )
                    last_log, logged_applied = now, self.records_applied
        except BaseException as exc:
            self.failure = exc
            log.exception("%s view: following %s failed", self.name, self.topic)
            if self._on_failure is not None:
                self._on_failure(exc)
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _wake_keys(self, keys: Iterable[str]) -> None:
        woken: list[asyncio.Future[None]] = []
        with self._lock:
            for k in keys:
                woken.extend(self._waiters.pop(k, ()))
        for fut in woken:
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                fut.get_loop().call_soon_threadsafe(_wake, fut)
