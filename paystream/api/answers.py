"""What a payment request's answer is, from the state alone: pure, no I/O.

The answer to ``POST /payments/payment/v1`` is derived from the payments workers' state (the
idempotency key's record and its payment's), never from this process's memory, so it is the
same after a restart and from every API process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from streams.payments import model as pm
from streams.payments.views import admission_view

from .models import PaymentBody

DIGEST_PREFIX = "sha256:"


def normalised(body: PaymentBody) -> bytes:
    """The body's canonical bytes: its fields as sorted, compact JSON (so key order and
    whitespace in the request do not matter; values are compared exactly as sent)."""
    return json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def digest(body: PaymentBody) -> str:
    return DIGEST_PREFIX + hashlib.sha256(normalised(body)).hexdigest()


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


def key_reused() -> Answer:
    return Answer(
        422,
        {
            "error": "idempotency_key_reused",
            "message": "this Idempotency-Key was used with another request body",
        },
    )


def answer_for(
    key: pm.KeyState | None, payment: pm.PaymentState | None, digest: str
) -> Answer | None:
    """The answer for a request with ``digest`` whose key's state is ``key`` and whose key's
    payment (at ``key.payment_id``) is ``payment``; None while the state cannot tell yet."""
    if key is None:
        return None
    if key.digest != digest:
        return key_reused()  # the first request in the log with this key had another body
    if payment is None:
        return None  # the key is reserved; the payment is on its way
    if payment.scope == key.scope and payment.idempotency_key == key.idempotency_key:
        return Answer(201, admission_view(payment))
    return Answer(
        409,
        {
            "error": "payment_exists",
            "message": f"payment {payment.payment_id} was created with another Idempotency-Key",
        },
    )
