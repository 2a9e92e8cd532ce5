"""Fields of the payment records, checked: shared by the payments' wire mapping
(``streams.payments_agent``) and its records to and from the risk engine
(``streams.payments_risk``)."""

from __future__ import annotations

import re
from typing import Any

from streams.agent import BadInput
from streams.payments import model as pm

PAYMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}\Z")
CURRENCY = re.compile(r"[A-Z]{3}\Z")
IDEMPOTENCY_KEY_CHARS_MAX = 255
ID_CHARS_MAX = 128  # user ids, accounts, instruments, tokens (as the ledger's ids)
AMOUNT_CHARS_MAX = 40


def req_str(r: dict[str, Any], name: str, chars_max: int = ID_CHARS_MAX) -> str:
    v = r.get(name)
    if not isinstance(v, str) or not v or len(v) > chars_max:
        raise BadInput("bad_field", f"{name} must be a string of 1..{chars_max} characters")
    return v


def opt_str(r: dict[str, Any], name: str) -> str | None:
    v = r.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or len(v) > 1024:
        raise BadInput("bad_field", f"{name} must be a string or null")
    return v


def request_fields(req: pm.PaymentRequest) -> dict[str, Any]:
    return {
        "payment_id": req.payment_id,
        "user_id": req.user_id,
        "type": req.type.value,
        "from_acct": req.from_acct,
        "to_acct": req.to_acct,
        "amount": req.amount,
        "currency": req.currency,
        "payment_option": req.payment_option.value,
    }
