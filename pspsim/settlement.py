"""The daily settlement file, in the columns of Adyen's "Settlement details report".

Rows are built from the `charges` table alone (one row per money movement), so the file can be
produced offline from a state directory, without the server.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from pspsim.clock import parse_iso
from pspsim.config import LIMITS
from pspsim.money import exponent, format_minor
from pspsim.store import ChargeRow, Store

COLUMNS: tuple[str, ...] = (
    "Company Account",
    "Merchant Account",
    "Psp Reference",
    "Merchant Reference",
    "Payment Method",
    "Creation Date",
    "TimeZone",
    "Type",
    "Modification Reference",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Exchange Rate",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Markup (NC)",
    "Scheme Fees (NC)",
    "Interchange (NC)",
    "Batch Number",
)

COMPANY_ACCOUNT = "Paystream"
Row = dict[str, str]
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_day(text: str) -> str:
    """Checks YYYY-MM-DD (a real date) and returns it."""
    if not _DAY.fullmatch(text):
        raise ValueError(f"date must be YYYY-MM-DD: {text!r}")
    date.fromisoformat(text)
    return text


def merchant_account(psp: str) -> str:
    return f"Paystream_{psp}"


def _row(psp: str, day: str, currency: str, cells: dict[str, str]) -> Row:
    assert set(cells) <= set(COLUMNS), set(cells) - set(COLUMNS)
    row = dict.fromkeys(COLUMNS, "")
    row.update(
        {
            "Company Account": COMPANY_ACCOUNT,
            "Merchant Account": merchant_account(psp),
            "TimeZone": "UTC",
            "Gross Currency": currency,
            "Net Currency": currency,
            "Batch Number": day.replace("-", ""),
        }
    )
    row.update(cells)
    return row


def _movement(c: ChargeRow, day: str) -> Row:
    cur = c.currency

    def fmt(minor: int) -> str:
        return format_minor(minor, cur)

    cells = {
        "Psp Reference": c.psp_reference,
        "Merchant Reference": c.merchant_reference,
        "Payment Method": c.payment_option,
        "Creation Date": parse_iso(c.charged_at).strftime("%Y-%m-%d %H:%M:%S"),
        "Modification Reference": c.psp_reference,
        "Exchange Rate": "1",
        "Commission (NC)": fmt(c.commission_minor),
    }
    if c.direction == "pay_in":
        cells |= {
            "Type": "Settled",
            "Gross Credit (GC)": fmt(c.amount_minor),
            "Net Credit (NC)": fmt(c.amount_minor - c.commission_minor),
        }
    else:
        cells |= {
            "Type": "PaidOut",
            "Gross Debit (GC)": fmt(c.amount_minor),
            "Net Debit (NC)": fmt(c.amount_minor + c.commission_minor),
        }
    return _row(c.psp, day, cur, cells)


def cell_minor(cell: str, currency: str) -> int:
    """A settlement amount cell in minor units ('' is 0)."""
    return int(Decimal(cell or "0").scaleb(exponent(currency)))


def net_minor(row: Row) -> int:
    """Net Credit minus Net Debit of one row, in minor units."""
    cur = row["Net Currency"]
    return cell_minor(row["Net Credit (NC)"], cur) - cell_minor(row["Net Debit (NC)"], cur)


def build_rows(psp: str, day: str, charges: Iterable[ChargeRow]) -> list[Row]:
    """The day's rows: movements in order, then per currency a Fee and a MerchantPayout row
    that brings the batch's net to zero."""
    parse_day(day)
    by_currency: dict[str, list[Row]] = {}
    for c in charges:
        if c.charged_at[:10] != day or c.psp != psp:
            continue
        by_currency.setdefault(c.currency, []).append(_movement(c, day))
    rows: list[Row] = []
    end_of_day = f"{day} 23:59:59"
    batch = day.replace("-", "")
    for cur in sorted(by_currency):
        movements = by_currency[cur]
        fee = _row(
            psp,
            day,
            cur,
            {
                "Type": "Fee",
                "Creation Date": end_of_day,
                "Modification Reference": f"fee-{batch}-{cur}",
                "Net Debit (NC)": format_minor(LIMITS.daily_fee_minor, cur),
            },
        )
        net = sum(net_minor(r) for r in [*movements, fee])
        payout = _row(
            psp,
            day,
            cur,
            {
                "Type": "MerchantPayout",
                "Creation Date": end_of_day,
                "Modification Reference": f"payout-{batch}-{cur}",
            },
        )
        # Paying the merchant its positive net debits the account; a negative net is collected.
        side = "Net Debit (NC)" if net >= 0 else "Net Credit (NC)"
        payout[side] = format_minor(abs(net), cur)
        rows += [*movements, fee, payout]
    return rows


def batch_imbalances(rows: Sequence[Row]) -> dict[tuple[str, str], int]:
    """Net sum per (batch, currency) over every row; a consistent file has all zeros."""
    sums: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (r["Batch Number"], r["Net Currency"])
        sums[key] = sums.get(key, 0) + net_minor(r)
    return sums


def to_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def settlement_rows(store: Store, psp: str, day: str) -> list[Row]:
    return build_rows(psp, parse_day(day), store.charges_on(psp, day))


def settlement_csv_offline(state_dir: Path, psp: str, day: str) -> str:
    """The same file as GET /v1/settlement, from a state directory (server running or not)."""
    db = state_dir / "pspsim.sqlite3"
    if not db.exists():
        raise FileNotFoundError(f"no simulator state in {state_dir} ({db.name} is missing)")
    store = Store(db, read_only=True)
    try:
        return to_csv(settlement_rows(store, psp, day))
    finally:
        store.close()
