"""Submitting due occurrences, off the scheduler's main loop.

A ``SubmitPool`` runs an asyncio loop on its own thread: each job is sent by a ``Sender``
(the payment API's client, ``paystream.scheduler_sender``) with at most ``in_flight_max`` at
once, started in the order they were submitted (the scheduler submits in due order). A
submission the API could not take is sent again, with the same Idempotency-Key, after a
pause that doubles up to ``backoff_max_s``, until it is admitted or refused for good, or the
pool closes. Answers wait in ``drain`` for the main loop, which records them in its next
transaction; a crash before that only means the occurrence is submitted again, which the
payment API's idempotency makes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from streams.schedules.model import Submitted

from .clock import Clock

log = logging.getLogger(__name__)

ADMITTED, REFUSED, RETRY = "admitted", "refused", "retry"
_BACKOFF_FIRST_S = 0.2


@dataclass(frozen=True, slots=True)
class Job:
    """One occurrence's payment, as the payment API takes it."""

    schedule_id: str
    at: int
    due_at: int
    backfill: bool
    body: dict[str, str]  # POST /payments/payment/v1's body (payment_id sched-<S>-<T>)

    @property
    def payment_id(self) -> str:
        return self.body["payment_id"]


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: str  # ADMITTED (created, or it exists), REFUSED (for good), RETRY
    code: str | None = None  # the API's error code
    status: int | None = None  # the HTTP status, if one came


class Sender(Protocol):
    async def send(self, job: Job) -> Answer: ...

    async def aclose(self) -> None: ...


class Pool(Protocol):
    """What the scheduler's loop needs of its submitter (tests give an inline one)."""

    @property
    def in_flight(self) -> int: ...

    def start(self) -> None: ...

    def submit(self, job: Job) -> None: ...

    def drain(self) -> list[Submitted]: ...

    def close(self) -> None: ...


class SubmitPool:
    def __init__(
        self, sender: Sender, clock: Clock, in_flight_max: int, backoff_max_s: float
    ) -> None:
        self.sender = sender
        self.clock = clock
        self.in_flight_max = in_flight_max
        self.backoff_max_s = backoff_max_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="scheduler-submit", daemon=True)
        self._results: deque[Submitted] = deque()
        self._jobs = 0  # submitted and not answered (read by the main loop)
        self._lock = threading.Lock()
        self._sem: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts = 0  # sends, retries included
        self.retries = 0

    @property
    def in_flight(self) -> int:
        return self._jobs

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._sem = asyncio.Semaphore(self.in_flight_max)
        self._loop.run_forever()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._jobs += 1
        self._loop.call_soon_threadsafe(self._start, job)

    def _start(self, job: Job) -> None:
        task = self._loop.create_task(self._send(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, job: Job) -> None:
        assert self._sem is not None
        async with self._sem:
            pause = _BACKOFF_FIRST_S
            while True:
                self.attempts += 1
                try:
                    answer = await self.sender.send(job)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a sender bug must not lose the occurrence
                    log.exception("submitting %s failed", job.payment_id)
                    answer = Answer(RETRY, type(exc).__name__)
                if answer.outcome != RETRY:
                    break
                self.retries += 1
                if self.retries <= 10 or self.retries % 1000 == 0:
                    log.warning(
                        "payment %s not admitted (%s, %s): retrying in %.1fs (%d retries so far)",
                        job.payment_id,
                        answer.status,
                        answer.code,
                        pause,
                        self.retries,
                    )
                await asyncio.sleep(pause)
                pause = min(self.backoff_max_s, pause * 2)
        result = Submitted(
            job.schedule_id,
            job.at,
            answer.outcome == ADMITTED,
            self.clock.now_us(),
            job.due_at,
            job.backfill,
            answer.code,
        )
        with self._lock:
            self._results.append(result)
            self._jobs -= 1

    def drain(self) -> list[Submitted]:
        with self._lock:
            out = list(self._results)
            self._results.clear()
        return out

    def close(self) -> None:
        """Stop: submissions still waiting are dropped (submitted again after a restart)."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.sender.aclose()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
