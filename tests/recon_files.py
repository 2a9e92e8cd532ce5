"""Settlement files with planted faults, built from a PSP simulator's own file (its columns,
pspsim.settlement): each batch's payout line recomputed, so the file stays consistent."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from pspsim.settlement import COLUMNS, to_csv

Row = dict[str, str]


def read(text: str) -> list[Row]:
    return list(csv.DictReader(io.StringIO(text)))


def by_reference(rows: list[Row], merchant_reference: str) -> Row:
    return next(r for r in rows if r["Merchant Reference"] == merchant_reference)


def _net(r: Row) -> Decimal:
    return Decimal(r["Net Credit (NC)"] or "0") - Decimal(r["Net Debit (NC)"] or "0")


def rebalanced(rows: list[Row]) -> list[Row]:
    """The rows without their payout lines, then one payout line per batch and currency that
    brings its net to zero."""
    kept = [r for r in rows if r["Type"] != "MerchantPayout"]
    sums: dict[tuple[str, str], Decimal] = {}
    for r in kept:
        k = (r["Batch Number"], r["Net Currency"])
        sums[k] = sums.get(k, Decimal(0)) + _net(r)
    out = list(kept)
    for (batch, cur), net in sorted(sums.items()):
        p = dict.fromkeys(COLUMNS, "")
        p.update(
            {"Type": "MerchantPayout", "Batch Number": batch, "Gross Currency": cur,
             "Net Currency": cur, "Creation Date": f"{batch[:4]}-{batch[4:6]}-{batch[6:]} 23:59:59",
             "Modification Reference": f"payout-{batch}-{cur}"}
        )  # fmt: skip
        p["Net Debit (NC)" if net >= 0 else "Net Credit (NC)"] = f"{abs(net):.2f}"
        out.append(p)
    return out


def write(rows: list[Row]) -> str:
    return to_csv(rows)
