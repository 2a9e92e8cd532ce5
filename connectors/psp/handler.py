"""What the executor does for one request: the PSP calls, their retries and polls, and the
results they lead to. No Kafka here: results go to ``emit``, which returns once the broker
has acknowledged them.

* ``create_token``: a transient failure is retried briefly on the same PSP (bounded by
  ``token_attempts_max`` and ``token_retry_total_s``: no money moves and the merchant
  reference makes it idempotent); then ``token_created``, or ``token_failed`` and the payments
  worker falls back to the next PSP.
* ``execute``: retried on the same PSP with the same token while the failure is retryable
  (tenacity: exponential backoff with jitter, Retry-After honoured, bounded in attempts and
  time); the PSP answers a repeat with the original result. No definitive answer within the
  bounds: ``answered`` with ``status=unknown``, ``retryable=true``. A ``pending`` answer is
  reported, then the token is polled until it is definitive (bounded).
* ``status``: the token's status (retried like execute: it is read-only), ``source=poll``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from connectors.psp.base import PspAnswer, PspConnector, TokenOrder
from connectors.psp.errors import PspCallError
from connectors.psp.limits import ExecutorLimits
from connectors.psp.records import PspRequest, ResultStatus, Source, result_record

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, PspCallError) and exc.retryable


class RequestHandler:
    def __init__(
        self,
        connectors: Mapping[str, PspConnector],
        emit: Emit,
        limits: ExecutorLimits | None = None,
    ) -> None:
        self.connectors = connectors
        self.emit = emit
        self.limits = limits or ExecutorLimits()
        lim = self.limits
        self._backoff = wait_exponential_jitter(
            multiplier=lim.retry_backoff_initial_s,
            max=lim.retry_backoff_max_s,
            jitter=lim.retry_jitter_s,
        )

    async def handle(self, request: PspRequest) -> None:
        if request.kind == "create_token":
            await self._create_token(request)
        elif request.kind == "execute":
            await self._execute(request)
        else:
            await self._status(request)

    # --- the three kinds ----------------------------------------------------------------------

    async def _create_token(self, request: PspRequest) -> None:
        connector = self.connectors[request.psp]
        order = TokenOrder(
            merchant_reference=request.payment_order_id,
            direction=request.direction,
            amount=request.amount,
            currency=request.currency,
            payment_option=request.payment_option,
            instrument=request.instrument,
        )
        lim = self.limits
        retrying = AsyncRetrying(
            stop=stop_after_attempt(lim.token_attempts_max)
            | stop_before_delay(lim.token_retry_total_s),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        token = await connector.create_token(order)
                    except PspCallError as exc:
                        n = attempt.retry_state.attempt_number
                        self._log_failure(request, "create_token", n, exc)
                        raise
        except PspCallError as exc:
            await self.emit(
                result_record(
                    request,
                    "token_failed",
                    "executor",
                    code=exc.code,
                    retryable=exc.retryable,
                    http_status=exc.http_status,
                    latency_us=exc.latency_us,
                    detail=exc.detail,
                )
            )
            return
        log.info(
            "%s call=create_token -> %d %s token=%s in %.1f ms",
            request.describe(),
            token.http_status,
            "created" if token.created else "existing",
            token.token,
            token.latency_us / 1000,
        )
        await self.emit(
            result_record(
                request,
                "token_created",
                "executor",
                token=token.token,
                http_status=token.http_status,
                latency_us=token.latency_us,
                detail="created" if token.created else "the PSP's token for this order",
            )
        )

    async def _execute(self, request: PspRequest) -> None:
        assert request.token is not None  # parse_request checks it
        answer = await self._answer_or_unknown(request, "execute", "executor")
        if answer is not None and answer.status == "pending":
            await self._poll_pending(request, request.token)

    async def _status(self, request: PspRequest) -> None:
        await self._answer_or_unknown(request, "get_status", "poll")

    # --- retries and polls --------------------------------------------------------------------

    async def _answer_or_unknown(
        self, request: PspRequest, call: str, source: Source
    ) -> PspAnswer | None:
        """Call with retries, emit what came of it; the answer, if there was one."""
        started = time.monotonic()
        outcome, attempts = await self._with_retries(request, call)
        if isinstance(outcome, PspCallError):
            exc = outcome
            spent_s = time.monotonic() - started
            why = "no definitive answer" if exc.retryable else "a final error"
            await self.emit(
                result_record(
                    request,
                    "answered",
                    source,
                    status="unknown",
                    code=exc.code,
                    retryable=exc.retryable,
                    http_status=exc.http_status,
                    latency_us=exc.latency_us,
                    detail=self._cut(
                        f"{call}: {why} after {attempts} attempt(s) in {spent_s:.1f} s: "
                        f"{exc.detail}"
                    ),
                )
            )
            return None
        await self.emit(self._answered(request, outcome, source, call, attempts))
        return outcome

    async def _with_retries(
        self, request: PspRequest, call: str
    ) -> tuple[PspAnswer | PspCallError, int]:
        """``call`` on the request's token, retried on the same PSP while retryable: the
        answer, or the last failure, and the attempts made."""
        connector = self.connectors[request.psp]
        token = request.token
        assert token is not None
        lim = self.limits
        retrying = AsyncRetrying(
            stop=stop_after_attempt(lim.execute_attempts_max)
            | stop_before_delay(lim.execute_retry_total_s),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        attempt_no = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempt_no = attempt.retry_state.attempt_number
                    try:
                        if call == "execute":
                            answer = await connector.execute(token)
                        else:
                            answer = await connector.get_status(token)
                    except PspCallError as exc:
                        self._log_failure(request, call, attempt_no, exc)
                        raise
                    self._log_answer(request, call, attempt_no, answer)
                    return answer, attempt_no
        except PspCallError as exc:  # final, or retryable past the bounds (reraise=True)
            return exc, attempt_no
        raise AssertionError("tenacity ended without an outcome")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with jitter, or the PSP's Retry-After if that is longer."""
        backoff: float = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, PspCallError) and exc.retry_after_s is not None:
            return max(backoff, min(exc.retry_after_s, self.limits.retry_after_max_s))
        return backoff

    async def _poll_pending(self, request: PspRequest, token: str) -> None:
        """Poll a pending token until it is definitive, or the poll window ends (then the
        payments side's poller and webhooks take over)."""
        connector = self.connectors[request.psp]
        lim = self.limits
        deadline = time.monotonic() + lim.pending_poll_total_s
        delay = lim.pending_poll_initial_s
        polls = 0
        while time.monotonic() + delay <= deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, lim.pending_poll_interval_max_s)
            polls += 1
            try:
                answer = await connector.get_status(token)
            except PspCallError as exc:
                self._log_failure(request, "get_status", polls, exc)
                if not exc.retryable:
                    return
                continue
            self._log_answer(request, "get_status", polls, answer)
            if answer.definitive:
                await self.emit(self._answered(request, answer, "poll", "get_status", polls))
                return
        log.warning(
            "%s token=%s still pending after %d polls in %.0f s; left to the poller",
            request.describe(),
            token,
            polls,
            lim.pending_poll_total_s,
        )

    # --- results and logs ---------------------------------------------------------------------

    def _answered(
        self, request: PspRequest, answer: PspAnswer, source: Source, call: str, attempts: int
    ) -> dict[str, Any]:
        status: ResultStatus
        code = answer.code
        if answer.status == "created":
            # The token was never executed: no money moved. Not a decline (execute may still
            # come), not an answer the schema has a word for: unknown, with why.
            status, code = "unknown", "not_executed"
            detail = "the PSP has the token but never executed it: no money moved"
        else:
            status = answer.status
            detail = f"{call}: HTTP {answer.http_status} {answer.status}"
            if answer.already_executed:
                detail += " (already executed: the original result)"
            if attempts > 1:
                detail += f" after {attempts} attempts"
        return result_record(
            request,
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

    def _log_answer(self, request: PspRequest, call: str, attempt: int, answer: PspAnswer) -> None:
        log.info(
            "%s call=%s token=%s try=%d -> %d %s%s%s%s in %.1f ms",
            request.describe(),
            call,
            answer.token,
            attempt,
            answer.http_status,
            answer.status,
            f" code={answer.code}" if answer.code else "",
            f" ref={answer.psp_reference}" if answer.psp_reference else "",
            " (already executed)" if answer.already_executed else "",
            answer.latency_us / 1000,
        )

    def _log_failure(self, request: PspRequest, call: str, attempt: int, exc: PspCallError) -> None:
        log.info(
            "%s call=%s token=%s try=%d -> %s %s (%s%s) in %.1f ms: %s",
            request.describe(),
            call,
            request.token or "-",
            attempt,
            exc.http_status if exc.http_status is not None else "no answer",
            exc.code,
            "retryable" if exc.retryable else "final",
            "" if exc.sent else ", not sent",
            exc.latency_us / 1000,
            exc.detail,
        )

    def _cut(self, text: str) -> str:
        return text[: self.limits.detail_chars_max]
