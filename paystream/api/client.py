"""A small synchronous client of the payment API (the CLI's ``pay-in``, ``pay-out``, ``payment``).

::

    with PaymentsClient.from_settings(settings) as api:
        answer = api.pay(payment_id="p1", user_id="u1", type="pay_in", ...)
        api.get_payment("p1")

Every non-2xx answer raises ``ApiError`` with the server's code. ``pay`` retries a 503 or a
lost connection with the same Idempotency-Key, which is always safe: the server answers a
retry with the original answer.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from base.config import Settings, api_token

from .errors import ApiError

PAYMENTS_PATH = "/payments/payment/v1"
RETRIES_MAX = 2
RETRY_PAUSE_S = 0.5
# Above the server's admission wait (Limits.api_admission_timeout_s), so it answers first.
TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Payment:
    """A POST's answer: the payment as admitted, and whether it was an earlier request's."""

    body: dict[str, Any]
    status: int
    replayed: bool
    idempotency_key: str


class ServiceClient:
    """The API of one paystream home with a bearer token: the clients' shared plumbing."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_s: float = TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,  # tests give a mock
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, timeout_s: float = TIMEOUT_S) -> Self:
        """The API of this home (127.0.0.1:``api_port``) with its service token."""
        return cls(f"http://127.0.0.1:{settings.api_port}", api_token(settings), timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()


class PaymentsClient(ServiceClient):
    def pay(
        self,
        *,
        payment_id: str,
        user_id: str,
        type: str,
        from_acct: str,
        to_acct: str,
        amount: str,
        currency: str,
        payment_option: str,
        idempotency_key: str | None = None,
    ) -> Payment:
        """Create a payment (``type`` pay_in or pay_out); a fresh key unless one is given."""
        key = idempotency_key or str(uuid.uuid4())
        body = {
            "payment_id": payment_id,
            "user_id": user_id,
            "type": type,
            "from_acct": from_acct,
            "to_acct": to_acct,
            "amount": amount,
            "currency": currency,
            "payment_option": payment_option,
        }
        for attempt in range(RETRIES_MAX + 1):
            last = attempt == RETRIES_MAX
            try:
                r = self._http.post(PAYMENTS_PATH, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if last:
                    raise
            else:
                if r.status_code != 503 or last:
                    break
            time.sleep(RETRY_PAUSE_S * 2**attempt)
        if r.status_code != 201:
            raise _error(r)
        replayed = r.headers.get("Idempotent-Replayed") == "true"
        return Payment(r.json(), r.status_code, replayed, key)

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        """The payment as it stands; ApiError 404 ``payment_not_found`` if there is none."""
        r = self._http.get(f"{PAYMENTS_PATH}/{quote(payment_id, safe='')}")
        if r.status_code != 200:
            raise _error(r)
        body: dict[str, Any] = r.json()
        return body


def _error(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(
        r.status_code,
        str(body.get("error", f"http_{r.status_code}")),
        str(body.get("message", r.text[:200])),
        body.get("field"),
    )
