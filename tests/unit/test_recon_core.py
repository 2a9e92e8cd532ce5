"""Reconciliation's pure core (streams/recon): the file's checks, each category, the lag, and a
property: reconciling a file against itself after its auto-resolutions finds nothing new."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pspsim.settlement import build_rows, to_csv
from pspsim.store import ChargeRow
from streams.recon import parse_file, reconcile
from streams.recon.match import window
from streams.recon.model import (
    FEE,
    MOVEMENTS,
    Action,
    Category,
    FeeBatch,
    FileRefused,
    Movement,
    Order,
    Refusal,
    Resolution,
    SettlementRow,
)
from streams.recon.parse import batch_imbalances, file_days

DAY = "2026-11-30"


def charge(ref: str, amount: int, direction: str = "pay_in", cur: str = "USD") -> ChargeRow:
    return ChargeRow(
        1, "cardco", f"tok-{ref}", f"{ref}/1", f"psp-{ref}", direction, "card", amount, cur,
        amount // 100, f"{DAY}T10:00:00.000000Z",
    )  # fmt: skip


def sim_file(charges: Iterable[ChargeRow]) -> str:
    return to_csv(build_rows("cardco", DAY, list(charges)))


def test_the_simulators_file_parses_and_its_batches_balance() -> None:
    rows = parse_file(sim_file([charge("a", 10_000), charge("b", 500, "pay_out")]))
    assert [r.type for r in rows] == ["Settled", "PaidOut", "Fee", "MerchantPayout"]
    assert rows[0].gross == Decimal("100.00") and rows[0].line == 2
    assert batch_imbalances(rows) == {}
    assert file_days(rows) == (DAY, DAY)


def test_extra_columns_are_ignored() -> None:
    text = sim_file([charge("a", 10_000)])
    lines = text.splitlines()
    text = "\n".join([lines[0] + ",Extra"] + [ln + ",x" for ln in lines[1:]])
    assert len(parse_file(text)) == 3


@pytest.mark.parametrize(
    ("edit", "refusal", "line", "column"),
    [
        (lambda t: t.replace("Batch Number", "Batch"), Refusal.column_missing, 1, "Batch Number"),
        (lambda t: t.replace(",100.00,", ",1O0.00,", 1), Refusal.bad_number, 2, "Gross Credit (GC)"),
        (lambda t: t.replace("2026-11-30 10:00:00", "2026-11-31 10:00:00", 1), Refusal.bad_date,
         2, "Creation Date"),
        (lambda t: t.replace(",Settled,", ",Refund,", 1), Refusal.bad_type, 2, "Type"),
        (lambda t: t + "a,b\n", Refusal.cells_count, 5, None),
        (lambda t: "", Refusal.empty, 1, None),
        (lambda t: "a\x00b", Refusal.not_csv, 1, None),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_its_line_and_column(
    edit: object, refusal: Refusal, line: int, column: str | None
) -> None:
    text = sim_file([charge("a", 10_000)])
    with pytest.raises(FileRefused) as exc:
        parse_file(edit(text))  # type: ignore[operator]
    assert (exc.value.refusal, exc.value.line, exc.value.column) == (refusal, line, column)


# --- categories, on hand-made pairs ---


def row(ref: str, amount: str, kind: str = "Settled", cur: str = "USD") -> SettlementRow:
    a = Decimal(amount)
    credit, debit = (a, Decimal(0)) if kind == "Settled" else (Decimal(0), a)
    return SettlementRow(
        2, f"psp-{ref}", f"{ref}/1", kind, cur, debit, credit, cur, debit, credit,
        Decimal(0), f"{DAY} 10:00:00", "20261130",
    )  # fmt: skip


def order(ref: str, amount: str, status: str = "succeeded", type_: str = "pay_in") -> Order:
    posted = Decimal(amount) if status == "succeeded" else None
    return Order(f"{ref}/1", ref, type_, status, Decimal(amount), "USD", "cardco", posted, 1, DAY)


def one(m: Movement) -> tuple[Category, Resolution] | None:
    got = reconcile("cardco", [m], [], [], {}, (DAY, DAY), 0).mismatches
    assert len(got) <= 1
    return (got[0].category, got[0].resolution) if got else None


def test_each_category() -> None:
    rv, auto = Resolution.review, Resolution.auto_resolved
    assert one(Movement(row("a", "10.00"), order("a", "10.00"))) is None
    assert one(Movement(row("a", "10.00"), order("a", "10.00", "posting"))) is None
    assert one(Movement(row("a", "10.00"), None)) == (Category.missing_in_ledger, rv)
    assert one(Movement(row("a", "10.00"), order("a", "10.00", "failed"))) == (
        Category.missing_in_ledger, rv)  # fmt: skip
    assert one(Movement(row("a", "10.00"), order("a", "10.00", "unknown"))) == (
        Category.missing_in_ledger, auto)  # fmt: skip
    assert one(Movement(row("a", "11.00"), order("a", "10.00"))) == (Category.amount_mismatch, rv)
    assert one(Movement(row("a", "10.00", cur="EUR"), order("a", "10.00"))) == (
        Category.currency_mismatch, rv)  # fmt: skip
    assert one(Movement(row("a", "10.00"), order("a", "10.00"), seen_before=1)) == (
        Category.duplicate_in_settlement, rv)  # fmt: skip
    voided = order("a", "10.00", "failed", "pay_out")
    assert one(Movement(row("a", "10.00", "PaidOut"), voided)) == (Category.status_mismatch, rv)
    no_posting = replace(order("a", "10.00"), posted=None)
    assert one(Movement(row("a", "10.00"), no_posting)) == (Category.missing_in_ledger, rv)


def test_fees_are_booked_once_and_a_changed_fee_goes_to_review() -> None:
    def fees(booked: str | None) -> list[tuple[Category, Action]]:
        f = FeeBatch(
            "20261130", "USD", Decimal("1.50"), None if booked is None else Decimal(booked)
        )
        return [(m.category, m.action) for m in reconcile("p", [], [], [f], {}, None, 0).mismatches]

    assert fees(None) == [(Category.fee, Action.book_fee)]
    assert fees("1.50") == []
    assert fees("1.00") == [(Category.fee, Action.review)]


def test_the_lag_decides_when_an_unsettled_order_is_missing() -> None:
    old = replace(order("a", "10.00"), day="2026-11-28")
    today = order("b", "10.00")
    for lag, missing in ((0, ["b/1"]), (2, ["a/1"]), (5, [])):
        got = reconcile("p", [], [old, today], [], {}, (DAY, DAY), lag).mismatches
        assert [m.payment_order_id for m in got] == missing, lag
        assert all(m.category is Category.missing_in_settlement for m in got)
    assert window((DAY, DAY), 2) == ("2026-11-28", "2026-11-28")


def test_an_unbalanced_batch_is_reported() -> None:
    got = reconcile("p", [], [], [], {("20261130", "USD"): Decimal("-1")}, None, 0).mismatches
    assert [m.category for m in got] == [Category.batch_imbalance]


# --- the property: after the auto-resolutions, a second pass finds nothing new ---

STATUSES = ("succeeded", "unknown", "pending", "failed", "posting", "absent")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[dict[str, Order], list[SettlementRow], dict[str, Decimal]]:
    n = draw(st.integers(1, 12))
    orders: dict[str, Order] = {}
    rows: list[SettlementRow] = []
    for i in range(n):
        ref = f"o{i}"
        kind = draw(st.sampled_from(["Settled", "PaidOut"]))
        amount = f"{draw(st.integers(1, 9999))}.00"
        status = draw(st.sampled_from(STATUSES))
        type_ = "pay_in" if kind == "Settled" else "pay_out"
        if status != "absent":
            orders[f"{ref}/1"] = order(ref, amount, status, type_)
        if draw(st.booleans()) or status != "succeeded":
            r = row(ref, draw(st.sampled_from([amount, "1.00"])), kind)
            rows += [replace(r, line=len(rows) + 2)] * draw(st.integers(1, 2))
    fee = FeeBatch("20261130", "USD", Decimal(draw(st.integers(0, 500))) / 100, None)
    return orders, rows, {"fee": fee.amount}


def fake_join(
    orders: dict[str, Order], rows: list[SettlementRow], booked: Decimal | None, fee: Decimal
) -> tuple[list[Movement], list[Order], list[FeeBatch]]:
    """What the warehouse's SQL gives the core, computed from a fake world."""
    seen: dict[tuple[str, str], int] = {}
    moves = []
    for r in rows:
        k = (r.psp_reference, r.type)
        moves.append(Movement(r, orders.get(r.merchant_reference), seen.get(k, 0)))
        seen[k] = seen.get(k, 0) + 1
    refs = {r.merchant_reference for r in rows if r.type in MOVEMENTS}
    unsettled = [o for o in orders.values() if o.status == "succeeded" and o.payment_order_id
                 not in refs]  # fmt: skip
    fees = [FeeBatch("20261130", "USD", fee, booked)] if fee else []
    return moves, unsettled, fees


@settings(max_examples=200, deadline=None)
@given(worlds(), st.integers(0, 3))
def test_a_file_reconciled_again_after_its_auto_resolutions_finds_nothing_new(
    world: tuple[dict[str, Order], list[SettlementRow], dict[str, Decimal]], lag: int
) -> None:
    orders, rows, f = world
    first = reconcile("cardco", *fake_join(orders, rows, None, f["fee"]), {}, (DAY, DAY), lag)
    booked: Decimal | None = None
    for m in first.mismatches:
        if m.action is Action.mark_succeeded:  # the payments core posts it: succeeded
            o = orders[m.payment_order_id or ""]
            orders[o.payment_order_id] = replace(o, status="succeeded", posted=o.amount)
        elif m.action is Action.book_fee:
            booked = f["fee"]
    second = reconcile("cardco", *fake_join(orders, rows, booked, f["fee"]), {}, (DAY, DAY), lag)
    assert all(m.resolution is Resolution.review for m in second.mismatches)
    reviewed = {
        (m.category, m.subject) for m in first.mismatches if m.resolution is Resolution.review
    }
    assert {(m.category, m.subject) for m in second.mismatches} <= reviewed
    assert second.matched >= first.matched
    assert FEE not in {m.category.value for m in second.mismatches if m.action is Action.book_fee}


# --- the hourly internal check ---


def test_the_internal_check_categories() -> None:
    from streams.recon.internal import InternalCategory as C
    from streams.recon.internal import LiveOrder, check_balances, check_orders

    now = 10_000 * 1_000_000
    old, fresh = now - 3_600 * 1_000_000, now - 1_000_000

    def cat(status: str, at: int, wv: int | None = 3, posted: bool = False) -> list[str]:
        o = LiveOrder("p/1", "pay_in", status, 3, at, "cardco")
        got = check_orders([o], {} if wv is None else {"p/1": wv},
                           {"p/1/settle"} if posted else set(), now, 900, 120)  # fmt: skip
        return [f"{f.category.value}:{f.resolution}" for f in got]

    assert cat("succeeded", old, posted=True) == []
    assert cat("succeeded", old) == [f"{C.psp_succeeded_ledger_missing.value}:auto_resolved"]
    assert cat("succeeded", fresh) == [f"{C.warehouse_lag.value}:auto_resolved"]
    assert cat("succeeded", old, wv=2, posted=True) == [f"{C.warehouse_lag.value}:auto_resolved"]
    assert cat("posting", old) == [f"{C.psp_succeeded_ledger_missing.value}:auto_resolved"]
    assert cat("failed", old, posted=True) == [f"{C.ledger_posted_psp_failed.value}:review"]
    assert cat("unknown", old) == [f"{C.stuck_in_flight.value}:auto_resolved"]
    assert cat("unknown", fresh) == []
    got = check_balances(["alice: write side 1.00, warehouse 2.00"])
    assert [(f.category, f.subject, f.resolution) for f in got] == [
        (C.wallet_mismatch, "alice", "review")
    ]
