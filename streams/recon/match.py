"""Each movement of a settlement file against our side, in categories (docs/recon.md). Pure:
the warehouse's SQL finds the pairs, this decides what each pair means and what to do."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from .errors import InvariantViolation
from .model import (
    MOVEMENTS,
    SETTLED,
    Action,
    Category,
    FeeBatch,
    Mismatch,
    Movement,
    Order,
    Resolution,
    SettlementRow,
)

# An order in one of these statuses that the PSP settled is certainly done: the settlement is
# the PSP's definitive answer (unknown: no answer came; pending: the answer is late).
ANSWERABLE = frozenset({"unknown", "pending"})
# The ledger's posting is on its way: a match.
POSTING = "posting"
SUCCEEDED = "succeeded"


@dataclass(frozen=True, slots=True)
class Result:
    matched: int  # movement rows that agree with our side
    mismatches: tuple[Mismatch, ...]


def reconcile(
    psp: str,
    movements: Sequence[Movement],
    unsettled: Iterable[Order],
    fees: Iterable[FeeBatch],
    imbalances: dict[tuple[str, str], Decimal],
    days: tuple[str, str] | None,
    lag_days: int,
) -> Result:
    """``movements``: the file's movement rows, each with its order; ``unsettled``: our
    succeeded orders with this PSP that no imported file holds; ``fees``: per batch and
    currency, what the PSP kept and what is booked; ``imbalances``: batches whose net does not
    equal their payout line; ``days``: the file's first and last movement day."""
    if lag_days < 0:
        raise InvariantViolation(f"lag_days {lag_days} is negative")
    out: list[Mismatch] = []
    matched = 0
    for m in movements:
        got = movement(psp, m)
        if got is None:
            matched += 1
        else:
            out.append(got)
    out += missing(unsettled, days, lag_days)
    out += fee_bookings(fees)
    for (batch, cur), diff in sorted(imbalances.items()):
        out.append(
            Mismatch(
                Category.batch_imbalance, None, f"batch:{batch}:{cur}", "0", f"{diff} {cur}",
                Resolution.review, Action.review,
                {"batch": batch, "currency": cur, "net_sum_with_payout": str(diff)},
            )
        )  # fmt: skip
    return Result(matched, tuple(out))


def _review(cat: Category, m: Movement, expected: str | None, found: str | None) -> Mismatch:
    o = m.order
    return Mismatch(
        cat,
        o.payment_order_id if o else m.row.merchant_reference,
        m.row.psp_reference,
        expected,
        found,
        Resolution.review,
        Action.review,
        evidence(m),
    )


def movement(psp: str, m: Movement) -> Mismatch | None:
    """What one movement row means (None: it matches)."""
    r = m.row
    if r.type not in MOVEMENTS:
        raise InvariantViolation(f"line {r.line}: {r.type} is not a movement")
    if m.seen_before > 0:
        return _review(Category.duplicate_in_settlement, m, "once", f"{m.seen_before + 1} times")
    o = m.order
    found = f"{r.gross} {r.gross_currency}"
    if o is None:
        return _review(Category.missing_in_ledger, m, None, found)
    kind = "pay_in" if r.type == SETTLED else "pay_out"
    if o.type != kind:
        return _review(Category.status_mismatch, m, o.type, r.type)
    if o.psp is not None and o.psp != psp:
        return _review(Category.status_mismatch, m, f"at {o.psp}", f"settled by {psp}")
    if r.gross_currency != o.currency:
        return _review(Category.currency_mismatch, m, o.currency, r.gross_currency)
    if r.gross != o.amount:
        return _review(Category.amount_mismatch, m, f"{o.amount} {o.currency}", found)
    if o.status == SUCCEEDED:
        if o.posted is None:
            return _review(Category.missing_in_ledger, m, "posted", "no posting")
        if o.posted != o.amount:
            return _review(Category.amount_mismatch, m, f"posted {o.posted}", found)
        return None
    if o.status == POSTING:
        return None
    if o.status in ANSWERABLE:
        return Mismatch(
            Category.missing_in_ledger, o.payment_order_id, r.psp_reference, SUCCEEDED,
            o.status, Resolution.auto_resolved, Action.mark_succeeded, evidence(m),
        )  # fmt: skip
    if kind == "pay_out" and o.status in ("failed", "reversing"):
        # We gave the hold back; the PSP says it paid: money left twice.
        return _review(Category.status_mismatch, m, o.status, r.type)
    return _review(Category.missing_in_ledger, m, o.status, found)


def missing(
    unsettled: Iterable[Order], days: tuple[str, str] | None, lag_days: int
) -> list[Mismatch]:
    """Our succeeded orders no file holds, past the lag: an order of day D is expected in a
    file up to D + lag; a file whose days are [first, last] covers orders of
    [first - lag, last - lag]."""
    if days is None:
        return []
    lo = _minus(days[0], lag_days)
    hi = _minus(days[1], lag_days)
    out = []
    for o in sorted(unsettled, key=lambda o: o.payment_order_id):
        if lo <= o.day <= hi:
            out.append(
                Mismatch(
                    Category.missing_in_settlement, o.payment_order_id, None,
                    f"{o.amount} {o.currency}", None, Resolution.review, Action.review,
                    {"ours": order_evidence(o), "settlement": None, "lag_days": lag_days},
                )
            )  # fmt: skip
    return out


def fee_bookings(fees: Iterable[FeeBatch]) -> list[Mismatch]:
    out = []
    for f in sorted(fees, key=lambda f: (f.batch, f.currency)):
        if f.booked == f.amount:
            continue
        ref = f"fee:{f.batch}:{f.currency}"
        ev: dict[str, object] = {
            "batch": f.batch, "currency": f.currency, "fees": str(f.amount),
            "booked": None if f.booked is None else str(f.booked),
        }  # fmt: skip
        if f.booked is None:
            out.append(
                Mismatch(
                    Category.fee, None, ref, None, f"{f.amount} {f.currency}",
                    Resolution.auto_resolved, Action.book_fee, ev,
                )
            )  # fmt: skip
        else:
            out.append(
                Mismatch(
                    Category.fee, None, ref, f"{f.booked} {f.currency}",
                    f"{f.amount} {f.currency}", Resolution.review, Action.review, ev,
                )
            )  # fmt: skip
    return out


def _minus(day: str, days: int) -> str:
    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def row_evidence(r: SettlementRow) -> dict[str, object]:
    return {
        "line": r.line, "psp_reference": r.psp_reference,
        "merchant_reference": r.merchant_reference, "type": r.type,
        "gross": str(r.gross), "currency": r.gross_currency, "net": str(r.net),
        "commission": str(r.commission), "created": r.created, "batch": r.batch,
    }  # fmt: skip


def order_evidence(o: Order) -> dict[str, object]:
    return {
        "payment_order_id": o.payment_order_id, "payment_id": o.payment_id,
        "attempt": o.attempt, "type": o.type, "status": o.status,
        "amount": str(o.amount), "currency": o.currency, "psp": o.psp,
        "posted": None if o.posted is None else str(o.posted),
    }  # fmt: skip


def evidence(m: Movement) -> dict[str, object]:
    return {
        "settlement": row_evidence(m.row),
        "ours": order_evidence(m.order) if m.order else None,
        "seen_before": m.seen_before,
    }


def window(days: tuple[str, str], lag_days: int) -> tuple[str, str]:
    """The days of the orders a file covers: [first - lag, last - lag]."""
    return _minus(days[0], lag_days), _minus(days[1], lag_days)
