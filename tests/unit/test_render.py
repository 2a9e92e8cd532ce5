"""How the CLI shows warehouse results: money in minor units, empty cells, tables at 80 columns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from rich.console import Console

from paystream.render import history_json, history_rows, history_table, money, trace_tree

COLUMNS = [
    "account_seq", "ts", "kind", "amount", "balance_after", "counterparty", "transfer_id",
    "command_id", "currency",
]  # fmt: skip
T = dt.datetime(2026, 11, 29, 22, 10, 55, 123456)


def _rows(currency: str = "USD") -> list[list[object]]:
    d = Decimal
    return [
        [1, T, "deposit", d("100.000000"), d("100.000000"), f"@world/{currency}", None,
         "dep-1", currency],
        [2, T, "transfer_hold", d("-0.040000"), d("99.960000"), f"@clearing/{currency}",
         "xfer-000000000001", "xfer-000000000001", currency],
        [3, T, "transfer_post", d("3734.830000"), d("3834.790000"), f"@clearing/{currency}",
         "xfer-000000000002", "xfer-000000000002", currency],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "currency", "text"),
    [
        (Decimal("0.040000"), "USD", "0.04"),
        (Decimal("-3734.830000"), "USD", "-3734.83"),
        (Decimal("5.000000"), "JPY", "5"),
        (Decimal("-5"), "JPY", "-5"),
        (Decimal("1.500000"), "KWD", "1.500"),
        ("12.3", "EUR", "12.30"),
        (None, "USD", ""),
    ],
)
def test_money_in_the_currency_minor_units(value: Decimal | None, currency: str, text: str) -> None:
    assert money(value, currency) == text


def test_money_refuses_what_the_ledger_never_makes() -> None:
    with pytest.raises(ValueError, match="finer"):
        money(Decimal("0.001"), "USD")
    with pytest.raises(ValueError, match="unknown currency"):
        money(Decimal("1"), "XXX")


def test_history_json_keeps_nulls_and_formats_money() -> None:
    rows = history_json(history_rows(COLUMNS, _rows()))
    assert [r["amount"] for r in rows] == ["100.00", "-0.04", "3734.83"]
    assert [r["balance_after"] for r in rows] == ["100.00", "99.96", "3834.79"]
    assert rows[0]["transfer_id"] is None
    assert rows[0]["ts"] == "2026-11-29T22:10:55.123456"


@pytest.mark.parametrize("currency", ["USD", "JPY"])
def test_the_history_table_reads_well_at_80_columns(currency: str) -> None:
    rows = _rows() if currency == "USD" else [
        [1, T, "deposit", Decimal("500"), Decimal("500"), "@world/JPY", None, "d", "JPY"],
        [2, T, "withdrawal", Decimal("-5"), Decimal("495"), "@world/JPY", None, "w", "JPY"],
    ]  # fmt: skip
    console = Console(width=80, record=True, color_system=None)
    console.print(history_table("acct-1", history_rows(COLUMNS, rows), console))
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text and "None" not in text and "000000" not in text
    assert f"history of acct-1 ({currency})" in text
    # One line per posting, every cell whole: a posting can be read across its line.
    if currency == "USD":
        assert any(
            "2026-11-29 22:10:55" in line and "transfer_hold" in line and "-0.04" in line
            and "99.96" in line and "@clearing/USD" in line
            for line in lines
        ), text  # fmt: skip
        assert any("3734.83" in line and "3834.79" in line for line in lines), text
    else:
        assert any("withdrawal" in line and "-5" in line and "495" in line for line in lines)


def test_the_history_table_shows_the_ids_when_there_is_room() -> None:
    rows = history_rows(COLUMNS, _rows())
    narrow, wide = Console(width=80, record=True), Console(width=160, record=True)
    narrow.print(history_table("acct-1", rows, narrow))
    wide.print(history_table("acct-1", rows, wide))
    assert "xfer-000000000001" not in narrow.export_text()
    text = wide.export_text()
    assert "xfer-000000000001" in text and "dep-1" in text and "…" not in text


def test_the_trace_tree() -> None:
    tree = {
        "account": "a",
        "depth": 2,
        "out": [{"account": "b", "currency": "USD", "amount": "0.04", "transfers": 1,
                 "next": [{"account": "c", "currency": "USD", "amount": "3734.83",
                           "transfers": 3, "next": []}]}],
        "in": [],
    }  # fmt: skip
    console = Console(width=80, record=True)
    console.print(trace_tree(tree))
    text = console.export_text()
    assert "b  0.04 USD (1 transfer)" in text
    assert "c  3734.83 USD (3 transfers)" in text
    assert "money came from" in text
