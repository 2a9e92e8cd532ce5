"""Payment records (paystream.payment-events.v1) as warehouse rows (ops/sql/0004_payments.sql).

Like the ledger's row functions in ``connectors/sink.py``: a decoded record plus its Kafka
position in, a row in the table's column order out. Anything ClickHouse would refuse for the
whole batch (an amount that does not fit Decimal(38, 6) exactly, a negative version) raises
``PoisonRecord`` here instead, so the sink dead-letters that one record and goes on.
payment_orders and payment_requests get no rows from Python: materialized views derive them
from payment_status_changes.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation
from typing import Any

from connectors.errors import PoisonRecord

PAYMENT_STATUS_TABLE = "payment_status_changes"
PAYMENT_ATTEMPT_TABLE = "payment_attempts"

PAYMENT_STATUS_COLUMNS = [
    "event_id", "version", "payment_id", "user_id", "type", "from_acct", "to_acct", "amount",
    "currency", "payment_option", "payment_order_id", "status", "reason", "psp", "psp_status",
    "ledger_updated", "wallet_updated", "is_complete", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
PAYMENT_ATTEMPT_COLUMNS = [
    "event_id", "payment_id", "payment_order_id", "attempt", "version", "psp", "candidates",
    "routing_reason", "token", "phase", "outcome", "code", "psp_reference", "started_at", "ts",
    "checks", "review", "kafka_partition", "kafka_offset",
]  # fmt: skip

# Decimal(38, 6): 32 integer digits, 6 fractional.
_SCALE = Decimal("0.000001")
_INTEGER_DIGITS_MAX = 32
_WIDE = Context(prec=_INTEGER_DIGITS_MAX + 8)
_UINT32_MAX = 2**32 - 1
_INT64_MAX = 2**63 - 1


def money(text: Any) -> Decimal:
    """The amount as a Decimal that Decimal(38, 6) holds exactly, or PoisonRecord."""
    if not isinstance(text, str):
        raise PoisonRecord(f"amount {text!r} is not a string")
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise PoisonRecord(f"amount {text[:48]!r} is not a number") from None
    if not d.is_finite():
        raise PoisonRecord(f"amount {text[:48]!r} is not a number")
    if d and d.adjusted() >= _INTEGER_DIGITS_MAX:
        raise PoisonRecord(f"amount {text[:48]!r} has more than 32 integer digits")
    exact = d.quantize(_SCALE, context=_WIDE)
    if exact != d:
        raise PoisonRecord(f"amount {text[:48]!r} has more than 6 decimal places")
    return exact


def _count(r: dict[str, Any], name: str, count_max: int = _INT64_MAX) -> int:
    """A version or attempt number: 1..count_max (the columns are unsigned)."""
    v = r[name]
    if type(v) is not int or not 1 <= v <= count_max:
        raise PoisonRecord(f"{name} {v!r} is not in 1..{count_max}")
    return v


def _flag(r: dict[str, Any], name: str) -> bool:
    v = r[name]
    if type(v) is not bool:
        raise PoisonRecord(f"{name} {v!r} is not a boolean")
    return v


def payment_status_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    """A PaymentStatusChanged snapshot: one row of payment_status_changes."""
    return [
        r["event_id"], _count(r, "version"), r["payment_id"], r["user_id"], r["type"],
        r["from_acct"], r["to_acct"], money(r["amount"]), r["currency"], r["payment_option"],
        r["payment_order_id"], r["status"], r["reason"], r["psp"], r["psp_status"],
        _flag(r, "ledger_updated"), _flag(r, "wallet_updated"), _flag(r, "is_complete"),
        r["ts"], p, o,
    ]  # fmt: skip


def payment_attempt_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    """A PaymentAttempt snapshot: one row of payment_attempts."""
    return [
        r["event_id"], r["payment_id"], r["payment_order_id"], _count(r, "attempt", _UINT32_MAX),
        _count(r, "version"), r["psp"], list(r["candidates"]), r["routing_reason"], r["token"],
        r["phase"], r["outcome"], r["code"], r["psp_reference"], r["started_at"], r["ts"],
        _checks(r), _flag(r, "review"), p, o,
    ]  # fmt: skip


def _checks(r: dict[str, Any]) -> int:
    v = r["checks"]
    if type(v) is not int or not 0 <= v <= _INT64_MAX:
        raise PoisonRecord(f"checks {v!r} is not in 0..{_INT64_MAX}")
    return v
