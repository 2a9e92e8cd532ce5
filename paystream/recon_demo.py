"""The demo's reconciliation (``make run``): each PSP's settlement file cut to the demo run's
own orders (a re-run on the same day must not meet its earlier rows as duplicates), each
batch's payout line recomputed, then ``recon settlement`` on each: all matched, fees booked."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

from base.config import Settings
from pspsim.settlement import COLUMNS, to_csv

Row = dict[str, str]


def rebalanced(rows: list[Row]) -> list[Row]:
    """The rows without their payout lines, then one payout line per batch and currency that
    brings the batch's net to zero (as the PSP writes it)."""
    kept = [r for r in rows if r["Type"] != "MerchantPayout"]
    sums: dict[tuple[str, str], Decimal] = {}
    for r in kept:
        k = (r["Batch Number"], r["Net Currency"])
        net = Decimal(r["Net Credit (NC)"] or "0") - Decimal(r["Net Debit (NC)"] or "0")
        sums[k] = sums.get(k, Decimal(0)) + net
    out = list(kept)
    for (batch, cur), net in sorted(sums.items()):
        p = dict.fromkeys(COLUMNS, "")
        day = f"{batch[:4]}-{batch[4:6]}-{batch[6:8]}"
        p.update(
            {"Type": "MerchantPayout", "Batch Number": batch, "Gross Currency": cur,
             "Net Currency": cur, "Creation Date": f"{day} 23:59:59",
             "Modification Reference": f"payout-{batch}-{cur}"}
        )  # fmt: skip
        p["Net Debit (NC)" if net >= 0 else "Net Credit (NC)"] = f"{abs(net):.2f}"
        out.append(p)
    return out


def own_file(text: str, prefix: str) -> str:
    """The file's movements for orders of ``prefix`` only, its fee lines, new payout lines."""
    rows = list(csv.DictReader(io.StringIO(text)))
    keep = [
        r for r in rows
        if r["Type"] == "Fee" or r["Merchant Reference"].startswith(prefix + "-")
    ]  # fmt: skip
    return to_csv(rebalanced(keep))


def run(settings: Settings, prefix: str, files: list[str]) -> list[dict[str, Any]]:
    from paystream.recon_settlement import settle

    out = []
    for f in files:
        path = Path(f)
        psp = path.name.split("-", 1)[0]
        mine = path.with_name(f"{path.stem}-{prefix}.csv")
        mine.write_text(own_file(path.read_text(), prefix))
        report = settle(settings, psp, mine, lag_days=0, scope=prefix + "-")
        out.append(
            {
                "file": str(mine),
                "psp": psp,
                "rows": report.rows,
                "matched": report.matched,
                "fees_booked": sum(m.action.value == "book_fee" for m in report.mismatches),
                "review": sum(m.resolution.value == "review" for m in report.mismatches),
                # What a reviewer would see, so a run that is not all matched says why.
                "for_review": [
                    f"{m.category.value} {m.payment_order_id or '-'} ({m.psp_reference or '-'}):"
                    f" expected {m.expected}, found {m.found}"
                    for m in report.mismatches
                    if m.resolution.value == "review"
                ],
            }
        )
    return out
