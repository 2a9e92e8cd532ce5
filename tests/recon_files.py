"""Settlement files with planted faults, built from a PSP simulator's own file (its columns,
pspsim.settlement): each batch's payout line recomputed, so the file stays consistent."""

from __future__ import annotations

import csv
import io

from paystream.recon_demo import rebalanced
from pspsim.settlement import to_csv

Row = dict[str, str]
__all__ = ["by_reference", "read", "rebalanced", "write"]


def read(text: str) -> list[Row]:
    return list(csv.DictReader(io.StringIO(text)))


def by_reference(rows: list[Row], merchant_reference: str) -> Row:
    return next(r for r in rows if r["Merchant Reference"] == merchant_reference)


def write(rows: list[Row]) -> str:
    return to_csv(rows)
