"""Admission of a payment request (docs/payments.md, "Admission and idempotency").

1. Look the key up in the view: a known key answers from the state (a replay, or 422).
2. A key this process is already admitting: 409 ``request_in_progress``.
3. Otherwise produce ``RequestPayment`` (stage ``reserve``) keyed ``@idem/<scope>/<key>`` and
   wait, bounded, until the view shows the key and its payment; the answer comes from them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.payments import model as pm
from streams.payments_agent import request_record

from .answers import Answer, answer_for, digest
from .auth import Principal
from .errors import NotDelivered
from .models import PaymentBody

log = logging.getLogger(__name__)


class View(Protocol):
    def key_state(self, scope: str, key: str) -> pm.KeyState | None: ...

    def payment(self, payment_id: str) -> pm.PaymentState | None: ...

    def watch(self, keys: list[str]) -> asyncio.Future[None]: ...

    def unwatch(self, keys: list[str], fut: asyncio.Future[None]) -> None: ...


class Sink(Protocol):
    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    answer: Answer
    replayed: bool  # the key was known before this request: its original answer
    outcome: str  # for the log line


def _error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": code, "message": message})


class Admissions:
    def __init__(
        self,
        view: View,
        sink: Sink,
        topic: str,
        partitions: int,
        timeout_s: float,
        in_flight_max: int,
        codec: Codec | None = None,
    ) -> None:
        self.view = view
        self.sink = sink
        self.topic = topic
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.in_flight_max = in_flight_max
        self.codec = codec or Codec.default()
        # Keys this process is admitting now: a second request with one of them gets 409.
        self._in_progress: set[tuple[str, str]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_progress)

    async def admit(self, principal: Principal, key: str, body: PaymentBody) -> Admitted:
        started = time.perf_counter()
        result = await self._admit(principal.scope, key, body)
        log.info(
            "payment %s: %s (%d) key %s/%s in %.1f ms",
            body.payment_id,
            result.outcome,
            result.answer.status,
            principal.scope,
            key,
            (time.perf_counter() - started) * 1000,
        )
        return result

    async def _admit(self, scope: str, key: str, body: PaymentBody) -> Admitted:
        d = digest(body)
        known = self.view.key_state(scope, key)
        if known is not None:
            answer = answer_for(known, self.view.payment(known.payment_id), d)
            if answer is not None:
                return _admitted(answer, replayed=answer.status != 422)
        if (scope, key) in self._in_progress:
            return Admitted(
                _error(409, "request_in_progress", "a request with this key is being admitted"),
                False,
                "request_in_progress",
            )
        if len(self._in_progress) >= self.in_flight_max:
            return Admitted(
                _error(503, "overloaded", "too many admissions in flight; retry"),
                False,
                "overloaded",
            )
        self._in_progress.add((scope, key))
        try:
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            if known is None:
                idem = pm.idem_key(scope, key)
                record = request_record("reserve", scope, key, d, body.to_request(), 0)
                value = self.codec.encode("RequestPayment", record)
                try:
                    await self.sink.send(
                        self.topic, partition_for(idem, self.partitions), idem, value
                    )
                except NotDelivered as exc:
                    return Admitted(
                        _error(503, "not_delivered", f"the broker did not take it: {exc}"),
                        False,
                        "not_delivered",
                    )
            answer = await self._settled(scope, key, d, deadline)
        finally:
            self._in_progress.discard((scope, key))
        if answer is None:
            return Admitted(
                _error(
                    503,
                    "not_admitted_in_time",
                    "the request is in the log but was not admitted in time; "
                    "retry with the same Idempotency-Key for its answer",
                ),
                False,
                "not_admitted_in_time",
            )
        # Known before this request (another process, or before a restart): a replay.
        return _admitted(answer, replayed=known is not None and answer.status != 422)

    async def _settled(self, scope: str, key: str, d: str, deadline: float) -> Answer | None:
        """Wait until the view answers for this key, or None at ``deadline``."""
        loop = asyncio.get_running_loop()
        watched = [pm.idem_key(scope, key)]
        while True:
            fut = self.view.watch(watched)
            try:
                # Read only after watching: an arrival in between still wakes us.
                known = self.view.key_state(scope, key)
                if known is not None and known.payment_id not in watched:
                    watched = [*watched, known.payment_id]
                    continue  # watch the payment too before reading it
                payment = None if known is None else self.view.payment(known.payment_id)
                answer = answer_for(known, payment, d)
                if answer is not None:
                    return answer
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return None
            finally:
                self.view.unwatch(watched, fut)


def _admitted(answer: Answer, replayed: bool) -> Admitted:
    outcome = "created" if answer.status == 201 else str(answer.body.get("error"))
    return Admitted(answer, replayed, f"replayed {outcome}" if replayed else outcome)
