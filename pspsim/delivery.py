"""Webhook delivery: at least once, retried with exponential backoff, resumed after a restart
(the schedule lives in the `events` table, not in memory)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from pspsim.clock import iso, now
from pspsim.config import LIMITS, Limits
from pspsim.store import DeliveryRow, EventRow, Store
from pspsim.webhooks import signed_headers

log = logging.getLogger("pspsim.delivery")


class Deliverer:
    def __init__(self, store: Store, secrets: dict[str, str], limits: Limits = LIMITS) -> None:
        self.store = store
        self.secrets = secrets
        self.limits = limits
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        """A new event is due now: do not wait for the next poll."""
        self._wake.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.limits.webhook_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as self._session:
            try:
                while True:
                    free = self.limits.webhook_concurrency - len(self._inflight)
                    if free > 0:
                        due = self.store.due_events(
                            list(self.secrets), time.time(), free + len(self._inflight)
                        )
                        for e in due:
                            if e.event_id not in self._inflight:
                                self._spawn(self._attempt(e), e.event_id)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.limits.poll_interval_s)
            finally:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: object, event_id: str | None = None) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        if event_id is not None:
            self._inflight.add(event_id)
        task.add_done_callback(self._tasks.discard)
        if event_id is not None:
            task.add_done_callback(lambda _t: self._inflight.discard(event_id))

    def redeliver(self, event: EventRow, *, tamper: bool, delay_ms: int) -> None:
        """Send a stored event once more, outside its retry schedule (a test's tool)."""

        async def later() -> None:
            await asyncio.sleep(delay_ms / 1000)
            await self._post(event, redelivery=True, tamper=tamper)

        self._spawn(later())

    async def _attempt(self, e: EventRow) -> None:
        try:
            await self._attempt_once(e)
        except Exception:
            # Left pending: the next poll tries again.
            log.exception("webhook %s: recording the attempt failed", e.event_id)

    async def _attempt_once(self, e: EventRow) -> None:
        ok = await self._post(e, redelivery=False, tamper=False)
        attempts = e.attempts + 1
        with self.store.tx():
            if ok:
                self.store.update_event(
                    e.event_id, state="delivered", attempts=attempts, next_attempt=None
                )
            elif attempts >= self.limits.webhook_max_attempts:
                self.store.update_event(
                    e.event_id, state="failed", attempts=attempts, next_attempt=None
                )
                log.warning(
                    "webhook %s to %s failed %d times: giving up", e.event_id, e.url, attempts
                )
            else:
                backoff_s = self.limits.webhook_backoff_base_s * 2 ** (attempts - 1)
                self.store.update_event(
                    e.event_id, attempts=attempts, next_attempt=time.time() + backoff_s
                )

    async def _post(self, e: EventRow, *, redelivery: bool, tamper: bool) -> bool:
        assert self._session is not None and e.url is not None
        at = now()
        headers = signed_headers(self.secrets[e.psp], e.event_id, at, e.body, tamper=tamper)
        status: int | None = None
        error: str | None = None
        try:
            async with self._session.post(e.url, data=e.body.encode(), headers=headers) as resp:
                await resp.read()
                status = resp.status
        except Exception as exc:
            # Any URL, any receiver: whatever goes wrong is a failed attempt, not a crash.
            error = f"{type(exc).__name__}: {exc}"[: self.limits.error_text_max_chars]
        ok = status is not None and 200 <= status < 300
        with self.store.tx():
            self.store.insert_delivery(
                DeliveryRow(0, e.event_id, iso(at), ok, status, error, redelivery, tamper)
            )
        return ok
