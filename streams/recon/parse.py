"""A settlement file (Adyen's Settlement details report columns) parsed and checked, whole:
the first bad cell refuses the file with its line and column (docs/recon.md)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from datetime import date
from decimal import Decimal
from functools import lru_cache

from .limits import CELL_CHARS_MAX, FILE_ROWS_MAX
from .model import (
    AMOUNT_COLUMNS,
    FEE,
    MERCHANT_PAYOUT,
    MOVEMENTS,
    REQUIRED_COLUMNS,
    FileRefused,
    Refusal,
    SettlementRow,
)

_AMOUNT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,6})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_BATCH = re.compile(r"[0-9A-Za-z_-]{1,32}")
_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?: ([0-9]{2}:[0-9]{2}:[0-9]{2}))?")
_TYPES = frozenset({*MOVEMENTS, FEE, MERCHANT_PAYOUT})
_ZERO = Decimal(0)


def parse_file(text: str) -> list[SettlementRow]:
    """Every row of the file, or FileRefused for the first problem (nothing is half-read)."""
    if "\x00" in text:
        raise FileRefused(Refusal.not_csv, 1, None)
    return list(parse_lines(text.splitlines()))


def parse_lines(lines: Iterable[str]) -> Iterator[SettlementRow]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise FileRefused(Refusal.not_csv, 1, None, str(exc)) from exc
    if not header:
        raise FileRefused(Refusal.empty, 1, None)
    header = [h.strip().lstrip("\ufeff") for h in header]
    index: dict[str, int] = {}
    for col in REQUIRED_COLUMNS:
        n = header.count(col)
        if n == 0:
            raise FileRefused(Refusal.column_missing, 1, col)
        if n > 1:
            raise FileRefused(Refusal.column_twice, 1, col)
        index[col] = header.index(col)
    width = len(header)
    line = 1
    try:
        for cells in reader:
            line += 1
            if not cells or cells == [""]:
                continue  # a blank line
            if line - 1 > FILE_ROWS_MAX:
                raise FileRefused(Refusal.too_many_rows, line, None)
            if len(cells) != width:
                raise FileRefused(Refusal.cells_count, line, None, f"{len(cells)} of {width}")
            yield _row(line, {c: cells[i] for c, i in index.items()})
    except csv.Error as exc:
        raise FileRefused(Refusal.not_csv, line + 1, None, str(exc)) from exc


def _row(line: int, cells: dict[str, str]) -> SettlementRow:
    for col, v in cells.items():
        if len(v) > CELL_CHARS_MAX:
            raise FileRefused(Refusal.cell_too_long, line, col)
    amounts = {c: _amount(line, c, cells[c].strip()) for c in AMOUNT_COLUMNS}
    gross_cur = _currency(line, "Gross Currency", cells["Gross Currency"].strip())
    net_cur = _currency(line, "Net Currency", cells["Net Currency"].strip())
    kind = cells["Type"].strip()
    if kind not in _TYPES:
        raise FileRefused(Refusal.bad_type, line, "Type", kind)
    if gross_cur != net_cur:
        raise FileRefused(Refusal.currencies_differ, line, "Net Currency", net_cur)
    psp_ref = cells["Psp Reference"].strip()
    merchant_ref = cells["Merchant Reference"].strip()
    if kind in MOVEMENTS:
        if not psp_ref:
            raise FileRefused(Refusal.reference_missing, line, "Psp Reference")
        if not merchant_ref:
            raise FileRefused(Refusal.reference_missing, line, "Merchant Reference")
    batch = cells["Batch Number"].strip()
    if not _BATCH.fullmatch(batch):
        raise FileRefused(Refusal.bad_batch, line, "Batch Number", batch)
    return SettlementRow(
        line=line,
        psp_reference=psp_ref,
        merchant_reference=merchant_ref,
        type=kind,
        gross_currency=gross_cur,
        gross_debit=amounts["Gross Debit (GC)"],
        gross_credit=amounts["Gross Credit (GC)"],
        net_currency=net_cur,
        net_debit=amounts["Net Debit (NC)"],
        net_credit=amounts["Net Credit (NC)"],
        commission=amounts["Commission (NC)"],
        created=_date(line, cells["Creation Date"].strip()),
        batch=batch,
    )


def _amount(line: int, col: str, v: str) -> Decimal:
    if not v:
        return _ZERO
    if not _AMOUNT.fullmatch(v):
        raise FileRefused(Refusal.bad_number, line, col, v)
    return Decimal(v)


def _currency(line: int, col: str, v: str) -> str:
    if not _CURRENCY.fullmatch(v):
        raise FileRefused(Refusal.bad_currency, line, col, v)
    return v


def _date(line: int, v: str) -> str:
    m = _DATE.fullmatch(v)
    if m is None or not _real_day(m.group(1)) or not _real_time(m.group(2) or "00:00:00"):
        raise FileRefused(Refusal.bad_date, line, "Creation Date", v)
    return v if m.group(2) else f"{v} 00:00:00"


@lru_cache(maxsize=4096)
def _real_day(day: str) -> bool:
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    return True


def _real_time(t: str) -> bool:
    return int(t[:2]) < 24 and int(t[3:5]) < 60 and int(t[6:8]) < 60


def batch_imbalances(rows: Iterable[SettlementRow]) -> dict[tuple[str, str], Decimal]:
    """Net sum per (batch, currency) over every row, its payout line included: a consistent
    batch sums to zero (its payout line pays out exactly the net of the others)."""
    sums: dict[tuple[str, str], Decimal] = {}
    for r in rows:
        key = (r.batch, r.net_currency)
        sums[key] = sums.get(key, _ZERO) + r.net
    return {k: v for k, v in sums.items() if v != 0}


def file_days(rows: Iterable[SettlementRow]) -> tuple[str, str] | None:
    """The first and last day of the file's movements (None: no movement)."""
    days = [r.day for r in rows if r.type in MOVEMENTS]
    return (min(days), max(days)) if days else None
