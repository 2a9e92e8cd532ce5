"""Payment records into warehouse rows: real records from the payments core, through the codec
as the sink reads them, into rows of ops/sql/0004_payments.sql's tables."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from connectors.errors import PoisonRecord
from connectors.payment_rows import (
    PAYMENT_ATTEMPT_COLUMNS,
    PAYMENT_STATUS_COLUMNS,
    money,
    payment_attempt_row,
    payment_status_row,
)
from connectors.sink import COLUMNS
from connectors.warehouse import migration_files, statements
from schemas.codec import Codec
from tests.payment_events import flows

CODEC = Codec.default()


def _decoded(schema: str) -> list[dict[str, Any]]:
    """Every record of ``schema`` the flows produced, encoded and decoded as on the wire."""
    out = []
    for o in flows().events:
        if o.schema == schema:
            name, record = CODEC.decode(CODEC.encode(o.schema, o.record))
            assert name == schema
            out.append(record)
    return out


def test_a_status_snapshot_becomes_a_row_with_decimal_amount_and_bool_flags() -> None:
    records = _decoded("PaymentStatusChanged")
    rows = [
        dict(zip(PAYMENT_STATUS_COLUMNS, payment_status_row(r, 3, 42), strict=True))
        for r in records
    ]
    done = next(r for r in rows if r["event_id"] == "pi-ok/v6")  # v2: risk_check
    assert done == {
        "event_id": "pi-ok/v6",
        "version": 6,
        "payment_id": "pi-ok",
        "user_id": "u1",
        "type": "pay_in",
        "from_acct": "card_4242424242424242",
        "to_acct": "acct-1",
        "amount": Decimal("10.50"),
        "currency": "USD",
        "payment_option": "card",
        "payment_order_id": "pi-ok/1",
        "status": "succeeded",
        "reason": None,
        "psp": "backupcard",
        "psp_status": "succeeded",
        "ledger_updated": True,
        "wallet_updated": True,
        "is_complete": True,
        "ts": done["ts"],
        "kafka_partition": 3,
        "kafka_offset": 42,
    }
    for row in rows:
        assert type(row["amount"]) is Decimal and row["amount"].as_tuple().exponent == -6
        assert all(
            type(row[f]) is bool for f in ("ledger_updated", "wallet_updated", "is_complete")
        )
        assert type(row["version"]) is int and type(row["ts"]) is int  # µs: DateTime64(6) ticks
    rejected = next(r for r in rows if r["payment_id"] == "po-rejected" and r["is_complete"])
    assert rejected["reason"] == "insufficient_funds" and rejected["psp"] is None
    assert rejected["amount"] == Decimal(99)


def test_an_attempt_snapshot_becomes_a_row_with_its_candidates_as_an_array() -> None:
    rows = [
        dict(zip(PAYMENT_ATTEMPT_COLUMNS, payment_attempt_row(r, 0, 7), strict=True))
        for r in _decoded("PaymentAttempt")
    ]
    fallback = next(r for r in rows if r["event_id"] == "pi-ok/1/2/v3")
    assert fallback["attempt"] == 2 and fallback["version"] == 3 and fallback["psp"] == "backupcard"
    assert fallback["candidates"] == ["cardco", "backupcard"]
    assert type(fallback["candidates"]) is list
    assert "fallback: cardco" in fallback["routing_reason"]
    assert (fallback["phase"], fallback["outcome"], fallback["token"]) == (
        "answered",
        "succeeded",
        "tok-b",
    )
    assert fallback["psp_reference"] == "ref-b" and fallback["code"] is None
    assert type(fallback["started_at"]) is int and fallback["started_at"] <= fallback["ts"]
    first = next(r for r in rows if r["event_id"] == "pi-ok/1/1/v2")
    assert (first["phase"], first["code"]) == ("token_failed", "psp_unavailable")


def test_the_sink_writes_the_columns_the_row_functions_fill() -> None:
    assert COLUMNS["payment_status_changes"] == PAYMENT_STATUS_COLUMNS
    assert COLUMNS["payment_attempts"] == PAYMENT_ATTEMPT_COLUMNS
    status = _decoded("PaymentStatusChanged")[0]
    attempt = _decoded("PaymentAttempt")[0]
    # Every field of each record has its column, plus the Kafka position.
    assert [*status, "kafka_partition", "kafka_offset"] == PAYMENT_STATUS_COLUMNS
    assert [*attempt, "kafka_partition", "kafka_offset"] == PAYMENT_ATTEMPT_COLUMNS


def test_the_migration_creates_the_four_tables_and_two_views() -> None:
    (sql,) = [text for _, name, text in migration_files() if name == "0004_payments.sql"]
    created = [
        re.match(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS (\w+)", s)[1]  # type: ignore[index]
        for s in statements(sql)
    ]
    assert created == [
        "payment_status_changes",
        "payment_attempts",
        "payment_orders",
        "payment_orders_mv",
        "payment_requests",
        "payment_requests_mv",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.50", Decimal("10.500000")),
        ("0", Decimal(0)),
        ("1E+2", Decimal(100)),
        ("0.000001", Decimal("0.000001")),
        ("1.2300000000", Decimal("1.23")),  # trailing zeros past 6 places lose nothing
        ("9" * 32 + ".999999", Decimal("9" * 32 + ".999999")),
    ],
)
def test_amounts_that_fit_decimal_38_6_exactly(text: str, expected: Decimal) -> None:
    assert money(text) == expected


@pytest.mark.parametrize(
    "text",
    ["abc", "", "NaN", "Infinity", "-inf", "0.0000001", "1" + "0" * 32, "1E+40", "1E-999999", None],
)
def test_amounts_the_table_cannot_hold_exactly_are_poison(text: Any) -> None:
    with pytest.raises(PoisonRecord):
        money(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 0),
        ("version", -1),
        ("version", 2**63),
        ("ledger_updated", 1),
        ("amount", "1e99"),
    ],
)
def test_a_status_record_clickhouse_would_refuse_is_poison_not_a_stuck_batch(
    field: str, value: Any
) -> None:
    record = {**_decoded("PaymentStatusChanged")[0], field: value}
    with pytest.raises(PoisonRecord):
        payment_status_row(record, 0, 0)


@pytest.mark.parametrize(("field", "value"), [("attempt", 0), ("attempt", 2**32), ("version", -5)])
def test_an_attempt_record_with_numbers_out_of_range_is_poison(field: str, value: Any) -> None:
    record = {**_decoded("PaymentAttempt")[0], field: value}
    with pytest.raises(PoisonRecord):
        payment_attempt_row(record, 0, 0)
