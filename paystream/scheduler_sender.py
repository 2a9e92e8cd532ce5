"""The scheduler's client of the payment API: each due occurrence is a
``POST /payments/payment/v1`` with the service token, the same path as any client's payment.

The Idempotency-Key is the payment id (``sched-<S>-<T>``), so a second submission of an
occurrence (after a crash, a lost answer) gets the original payment. What the answers mean
to the scheduler:

* 201 (created, or replayed): admitted.
* 409 ``payment_exists`` or 422 ``idempotency_key_reused``: the payment exists already (it
  was submitted before a crash with the schedule's previous amount): admitted, not paid again.
* 400, 403, 404, 413: refused for good (counts as a failed payment of the schedule).
* 401, 409 ``request_in_progress``, 429, 5xx, a timeout or a lost connection: retried.
"""

from __future__ import annotations

import logging

import httpx

from base.config import Settings, api_token
from streams.scheduler.submit import ADMITTED, REFUSED, RETRY, Answer, Job

log = logging.getLogger(__name__)

PAYMENTS_PATH = "/payments/payment/v1"
_EXISTS = {"payment_exists", "idempotency_key_reused"}
_FOR_GOOD = {400, 403, 404, 413}


class PaymentApiSender:
    def __init__(self, base_url: str, token: str, connections_max: int, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=connections_max, max_keepalive_connections=connections_max
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PaymentApiSender:
        # One line per request is httpx's INFO; the scheduler logs each occurrence itself.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        limits = settings.limits
        return cls(
            f"http://127.0.0.1:{settings.api_port}",
            api_token(settings),
            limits.scheduler_submits_in_flight_max,
            limits.scheduler_submit_timeout_s,
        )

    async def send(self, job: Job) -> Answer:
        try:
            r = await self._http.post(
                PAYMENTS_PATH, json=job.body, headers={"Idempotency-Key": job.payment_id}
            )
        except httpx.HTTPError as exc:
            return Answer(RETRY, type(exc).__name__)
        code = _code(r)
        if r.status_code == 201:
            return Answer(ADMITTED, None, 201)
        if code in _EXISTS:
            return Answer(ADMITTED, code, r.status_code)
        if r.status_code in _FOR_GOOD:
            log.warning("payment %s refused: %d %s", job.payment_id, r.status_code, code)
            return Answer(REFUSED, code or f"http_{r.status_code}", r.status_code)
        return Answer(RETRY, code, r.status_code)

    async def aclose(self) -> None:
        await self._http.aclose()


def _code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None
