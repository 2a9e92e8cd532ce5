"""How the CLI shows warehouse results: money in its currency's minor units, tables that fit.

The warehouse stores amounts as Decimal(38, 6) whatever the currency; a person reads USD
``0.04`` and JPY ``5``, never ``0.040000``. An empty value is an empty cell, not ``None``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.tree import Tree

from streams.ledger.money import CURRENCY_EXPONENTS, format_amount


def money(value: Decimal | int | str | None, currency: str) -> str:
    """``value`` with exactly the currency's decimals; '' for None.

    Raises ValueError for an unknown currency or a value finer than its minor unit: the
    ledger never makes either, so showing it rounded would hide a fault.
    """
    if value is None:
        return ""
    exp = CURRENCY_EXPONENTS.get(currency)
    if exp is None:
        raise ValueError(f"unknown currency {currency!r}")
    minor = Decimal(value).scaleb(exp)
    if minor != minor.to_integral_value():
        raise ValueError(f"{value} {currency} is finer than the currency's minor unit")
    return format_amount(int(minor), currency)


def cell(value: Any) -> str:
    """A table cell: '' for None, ISO time to the second for datetimes, else str()."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


# --- history -----------------------------------------------------------------------------------

HISTORY_SQL = (
    "SELECT account_seq, ts, kind, amount, balance_after, counterparty, transfer_id, command_id,"
    " currency FROM account_history WHERE account = {acc:String} ORDER BY account_seq"
)


def history_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Warehouse rows as objects, amounts in the currency's decimals."""
    out = []
    for row in rows:
        r = dict(zip(columns, row, strict=True))
        cur = r["currency"]
        r["amount"] = money(r["amount"], cur)
        r["balance_after"] = money(r["balance_after"], cur) or None
        out.append(r)
    return out


def history_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``paystream history --json``: times in ISO 8601, nulls kept."""
    return [
        {**r, "ts": r["ts"].isoformat() if isinstance(r["ts"], dt.datetime) else r["ts"]}
        for r in rows
    ]


# Columns of the history table, in order; the optional ones only when the console is wide
# enough (they are in --json): (heading, row key, justify, may wrap).
_HISTORY_COLUMNS = [
    ("seq", "account_seq", "right", False),
    ("time (UTC)", "ts", "left", True),
    ("kind", "kind", "left", False),
    ("amount", "amount", "right", False),
    ("balance", "balance_after", "right", False),
    ("counterparty", "counterparty", "left", True),
]
_HISTORY_OPTIONAL = [
    ("transfer", "transfer_id", "left", True),
    ("command", "command_id", "left", True),
]


def history_table(account: str, rows: list[dict[str, Any]], console: Console) -> Table:
    """The widest table that fits the console: transfer and command ids when there is room."""
    title = f"history of {account}" + (f" ({rows[0]['currency']})" if rows else "")
    table = _history_table(title, rows, _HISTORY_COLUMNS)
    for extra in (_HISTORY_OPTIONAL, _HISTORY_OPTIONAL[:1]):
        wider = _history_table(title, rows, _HISTORY_COLUMNS + extra)
        # Measured without the console's limit: a table always "fits" by cutting its cells.
        unbounded = console.options.update_width(1 << 16)
        if Measurement.get(console, unbounded, wider).maximum <= console.width:
            return wider
    return table


def _history_table(
    title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str, str, bool]]
) -> Table:
    # No vertical rules: six columns of a posting fit in 80 characters without wrapping.
    t = Table(
        title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True
    )
    for heading, _, justify, wraps in columns:
        # Ids fold rather than end in "…": a cut id is a wrong id.
        t.add_column(
            heading,
            justify="right" if justify == "right" else "left",
            no_wrap=not wraps,
            overflow="fold",
        )
    for r in rows:
        t.add_row(*[cell(r[key]) for _, key, _, _ in columns])
    return t


# --- trace -------------------------------------------------------------------------------------


def trace_tree(tree: dict[str, Any]) -> Tree:
    root = Tree(f"[bold]{tree['account']}[/bold]")
    for direction, label in (("out", "money went to"), ("in", "money came from")):
        branch = root.add(label)
        _add(branch, tree[direction])
    return root


def _add(node: Tree, items: list[dict[str, Any]]) -> None:
    for item in items:
        n = item["transfers"]
        child = node.add(
            f"{item['account']}  {item['amount']} {item['currency']}"
            f" ({n} transfer{'' if n == 1 else 's'})"
        )
        _add(child, item["next"])
