"""What the executor does for one request: one PSP call (two for a janitor's resolve), and
what comes of it. No Kafka and no sleeping here: results, retries and dead letters go to the
``Outbox``, whose calls return once the broker has acknowledged them.

* ``create_token``: refused at once with ``circuit_open`` while the PSP's breaker is open.
  ``token_created``; or, on a failure, ``token_failed`` at once when another PSP can take
  the order (``fallback``), else the request is retried through the delay topics and
  ``token_failed`` is reported only when the retries are exhausted.
* ``execute``: ``answered`` with the PSP's answer. A failure that left the outcome unknown
  (sent, and no readable answer: the error table's ``ambiguous`` codes) or a final error is
  reported ``unknown`` at once: the order goes to the janitor, never to another PSP. Any
  other retryable failure (the PSP said "not now", or the call never reached it) is retried
  through the delay topics with the same token, then reported ``unknown``.
* ``status`` (the poller): one try; whatever comes of it is answered, the payments core's
  schedule decides what next. ``resolve`` (the janitor): the status, and the token executed
  if it never was; a call the PSP refused is retried like an execute (no dead letter: the
  janitor's schedule goes on), anything else is answered. A poll or check already running
  here is not run twice.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from connectors.psp.base import PspAnswer, PspConnector, TokenOrder
from connectors.psp.board import BreakerBoard
from connectors.psp.errors import PspCallError
from connectors.psp.limits import ExecutorLimits
from connectors.psp.records import (
    CIRCUIT_OPEN,
    NOT_EXECUTED,
    PspRequest,
    ResultStatus,
    Source,
    dead_letter_record,
    failure_entry,
    result_record,
)
from connectors.psp.retry import Exhausted, Retry, plan
from schemas import now_micros

log = logging.getLogger(__name__)


class Outbox(Protocol):
    async def result(self, record: dict[str, Any]) -> None:
        """A ``PspResult`` for the payments workers."""
        ...

    async def retry(self, record: dict[str, Any], key: str, topic: str) -> None:
        """A request's record for its next call, to a delay topic (its key)."""
        ...

    async def dead(self, record: dict[str, Any]) -> None:
        """A ``PspDeadLetter``."""
        ...

    def encode_request(self, record: dict[str, Any]) -> bytes: ...


class RequestHandler:
    def __init__(
        self,
        connectors: Mapping[str, PspConnector],
        outbox: Outbox,
        board: BreakerBoard,
        limits: ExecutorLimits | None = None,
        *,
        executor: str = "psp-executor-1",
        clock: Callable[[], int] = now_micros,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.connectors = connectors
        self.outbox = outbox
        self.board = board
        self.limits = limits or ExecutorLimits()
        self.executor = executor
        self.clock = clock
        self.draw = draw
        self.running_checks: set[str] = set()  # polls and janitor checks being worked on
        self.counters = {"retries": 0, "dead_letters": 0, "circuit_open": 0, "skipped": 0}

    async def handle(self, request: PspRequest) -> None:
        if request.kind == "create_token":
            await self._create_token(request)
        elif request.kind == "execute":
            await self._execute(request)
        else:
            if request.request_id in self.running_checks:
                # The same poll or check is running here already (a redelivery): skip it.
                self.counters["skipped"] += 1
                log.info("%s %s already running: skipped", request.describe(), request.kind)
                return
            self.running_checks.add(request.request_id)
            try:
                if request.kind == "status":
                    await self._status(request)
                else:
                    await self._resolve(request)
            finally:
                self.running_checks.discard(request.request_id)

    # --- the four kinds ------------------------------------------------------------------------

    async def _create_token(self, r: PspRequest) -> None:
        permit = self.board.allow(r.psp)
        if permit is None:
            self.counters["circuit_open"] += 1
            state, since = self.board.state(r.psp)
            exc = PspCallError(
                CIRCUIT_OPEN,
                f"the circuit breaker of {r.psp} is {state.value} since {since}: not called",
                retryable=True,
                sent=False,
            )
            log.info("%s call=create_token -> %s (not sent)", r.describe(), CIRCUIT_OPEN)
            await self._token_failed(r, exc)
            return
        order = TokenOrder(
            merchant_reference=r.payment_order_id,
            direction=r.direction,
            amount=r.amount,
            currency=r.currency,
            payment_option=r.payment_option,
            instrument=r.instrument,
        )
        connector = self.connectors[r.psp]
        self.board.started(r.psp)
        try:
            token = await connector.create_token(order)
        except PspCallError as exc:
            self.board.ended(r.psp, not exc.retryable, exc.latency_us, permit.trial)
            self._log_failure(r, "create_token", exc)
            await self._token_failed(r, exc)
            return
        except BaseException:
            self.board.ended(r.psp, False, 0, permit.trial)  # a trial slot is never lost
            raise
        self.board.ended(r.psp, True, token.latency_us, permit.trial)
        log.info(
            "%s call=create_token try=%d -> %d %s token=%s in %.1f ms",
            r.describe(),
            r.tries + 1,
            token.http_status,
            "created" if token.created else "existing",
            token.token,
            token.latency_us / 1000,
        )
        await self.outbox.result(
            result_record(
                r,
                "token_created",
                "executor",
                token=token.token,
                http_status=token.http_status,
                latency_us=token.latency_us,
                detail="created" if token.created else "the PSP's token for this order",
            )
        )

    async def _token_failed(self, r: PspRequest, exc: PspCallError) -> None:
        report = result_record(
            r,
            "token_failed",
            "executor",
            code=exc.code,
            retryable=exc.retryable,
            http_status=exc.http_status,
            latency_us=exc.latency_us,
            detail=self._cut(exc.detail),
        )
        if exc.retryable and not r.fallback:
            # The order's last candidate: worth waiting for (no money moves either way).
            await self._retry_or_give_up(r, exc, report)
            return
        await self.outbox.result(report)

    async def _execute(self, r: PspRequest) -> None:
        assert r.token is not None  # parse_request checks it
        try:
            answer = await self._call(r, "execute", r.token)
        except PspCallError as exc:
            unknown = self._unknown(r, exc, "execute")
            errors = self.connectors[r.psp].errors
            if exc.retryable and not errors.outcome_unknown(exc.code, exc.http_status, exc.sent):
                await self._retry_or_give_up(r, exc, unknown)
            else:
                await self.outbox.result(unknown)
            return
        await self.outbox.result(self._answered(r, answer, "execute"))

    async def _status(self, r: PspRequest) -> None:
        assert r.token is not None
        try:
            answer = await self._call(r, "get_status", r.token)
        except PspCallError as exc:
            await self.outbox.result(self._unknown(r, exc, "get_status"))
            return
        await self.outbox.result(self._answered(r, answer, "get_status"))

    async def _resolve(self, r: PspRequest) -> None:
        """The janitor: what the PSP says of the token; a token it never executed is executed
        now (the same token: at most once at the PSP), so the answer is definitive, and a
        late execute of the order (a redelivery) meets "already executed". A call the PSP
        refused (5xx, 429, 503) is retried through the delay topics like an execute; its
        failure after that is answered, and the janitor's schedule goes on."""
        assert r.token is not None
        call = "get_status"
        try:
            answer = await self._call(r, "get_status", r.token)
            if answer.status == "created":
                call = "execute (never executed)"
                answer = await self._call(r, "execute", r.token)
        except PspCallError as exc:
            unknown = self._unknown(r, exc, f"resolve: {call}")
            errors = self.connectors[r.psp].errors
            if exc.retryable and not errors.outcome_unknown(exc.code, exc.http_status, exc.sent):
                await self._retry_or_give_up(r, exc, unknown, dead_letter=False)
            else:
                await self.outbox.result(unknown)
            return
        await self.outbox.result(self._answered(r, answer, call))

    # --- retries -------------------------------------------------------------------------------

    async def _retry_or_give_up(
        self, r: PspRequest, exc: PspCallError, report: dict[str, Any], dead_letter: bool = True
    ) -> None:
        """The next call through a delay topic, or (exhausted) a dead letter (unless the
        janitor's own schedule goes on after it) and ``report``."""
        lim = self.limits
        now = self.clock()
        tries = r.tries + 1
        entry = failure_entry(exc, self.executor, now, lim.detail_chars_max)
        step = plan(
            tries=tries,
            first_tried_at_us=r.first_tried_at or now,
            now_us=now,
            retry_after_s=exc.retry_after_s,
            limits=lim,
            draw=self.draw(),
        )
        if isinstance(step, Retry):
            self.counters["retries"] += 1
            record = r.retried(entry, step.not_before_us, now, lim.retry_history_max)
            log.info(
                "%s %s: retry %d in %.1f s through %s (%s)",
                r.describe(),
                r.kind,
                tries,
                step.delay_s,
                step.topic,
                exc.code,
            )
            await self.outbox.retry(record, r.payment_order_id, step.topic)
            return
        assert isinstance(step, Exhausted)
        last = r.retried(entry, now, now, lim.retry_history_max)
        reason = self._cut(f"retries exhausted: {step.reason}; last: {exc.code}: {exc.detail}")
        if not dead_letter:
            log.warning("%s %s: %s", r.describe(), r.kind, reason)
            await self.outbox.result({**report, "detail": self._cut(f"{reason} ({tries} calls)")})
            return
        self.counters["dead_letters"] += 1
        dead = dead_letter_record(
            r,
            self.outbox.encode_request(last),
            list(last["history"]),
            tries=tries,
            reason=reason,
            now_us=now,
        )
        log.warning("%s %s dead-lettered: %s", r.describe(), r.kind, reason)
        await self.outbox.dead(dead)
        report = {**report, "detail": self._cut(f"{reason} ({tries} calls)")}
        await self.outbox.result(report)

    # --- calls ---------------------------------------------------------------------------------

    async def _call(self, r: PspRequest, call: str, token: str) -> PspAnswer:
        connector = self.connectors[r.psp]
        self.board.started(r.psp)
        try:
            if call == "execute":
                answer = await connector.execute(token)
            else:
                answer = await connector.get_status(token)
        except PspCallError as exc:
            self.board.ended(r.psp, not exc.retryable, exc.latency_us)
            self._log_failure(r, call, exc)
            raise
        except BaseException:
            self.board.ended(r.psp, False, 0)
            raise
        self.board.ended(r.psp, True, answer.latency_us)
        self._log_answer(r, call, answer)
        return answer

    # --- results and logs ----------------------------------------------------------------------

    def _unknown(self, r: PspRequest, exc: PspCallError, call: str) -> dict[str, Any]:
        why = "a final error" if not exc.retryable else "no definitive answer"
        return result_record(
            r,
            "answered",
            r.source,
            status="unknown",
            code=exc.code,
            retryable=exc.retryable,
            http_status=exc.http_status,
            latency_us=exc.latency_us,
            detail=self._cut(f"{call}: {why} (try {r.tries + 1}): {exc.detail}"),
        )

    def _answered(self, r: PspRequest, answer: PspAnswer, call: str) -> dict[str, Any]:
        status: ResultStatus
        code = answer.code
        source: Source = r.source
        if answer.status == "created":
            # The token was never executed: no money moved. Not a decline (execute may still
            # come), not an answer the schema has a word for: unknown, with why.
            status, code = "unknown", NOT_EXECUTED
            detail = "the PSP has the token but never executed it: no money moved"
        else:
            status = answer.status
            detail = f"{call}: HTTP {answer.http_status} {answer.status}"
            if answer.already_executed:
                detail += " (already executed: the original result)"
            if r.tries:
                detail += f" after {r.tries + 1} attempts"
        return result_record(
            r,
            "answered",
            source,
            token=answer.token,
            status=status,
            code=code,
            psp_reference=answer.psp_reference,
            http_status=answer.http_status,
            latency_us=answer.latency_us,
            detail=self._cut(detail),
        )

    def _log_answer(self, r: PspRequest, call: str, answer: PspAnswer) -> None:
        log.info(
            "%s call=%s token=%s try=%d -> %d %s%s%s%s in %.1f ms",
            r.describe(),
            call,
            answer.token,
            r.tries + 1,
            answer.http_status,
            answer.status,
            f" code={answer.code}" if answer.code else "",
            f" ref={answer.psp_reference}" if answer.psp_reference else "",
            " (already executed)" if answer.already_executed else "",
            answer.latency_us / 1000,
        )

    def _log_failure(self, r: PspRequest, call: str, exc: PspCallError) -> None:
        log.info(
            "%s call=%s token=%s try=%d -> %s %s (%s%s) in %.1f ms: %s",
            r.describe(),
            call,
            r.token or "-",
            r.tries + 1,
            exc.http_status if exc.http_status is not None else "no answer",
            exc.code,
            "retryable" if exc.retryable else "final",
            "" if exc.sent else ", not sent",
            exc.latency_us / 1000,
            exc.detail,
        )

    def _cut(self, text: str) -> str:
        return text[: self.limits.detail_chars_max]
