"""Properties of the payment commands over random sequences, against the sequential model.

Accounts are opened first; then any sequence of the six payment commands, deposits,
withdrawals, blocks and unblocks (none of them has a saga) is decided one command at a time,
by the core through the wire mapping (tests/harness.py) and by ``paystream.oracle``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from paystream.oracle import Oracle
from streams.ledger import model as m
from streams.ledger.money import parse_signed
from tests.harness import InMemoryLedger, command

ACCOUNTS = ["a1", "a2", "a3", "ghost"]  # a1, a2 in USD, a3 in JPY, ghost never opened
CURRENCY = {"a1": "USD", "a2": "USD", "a3": "JPY"}
ORDERS = ["p1/1", "p2/1", "p3/1"]
AMOUNTS = ["1", "5.00", "0.01", "12.5", "40", "0", "1.234", "abc"]
PSPS = ["cardco", "cardco", "cardco", "bankco", "Bad PSP"]
STEPS = {
    "authorize_payin": "authorize",
    "settle_payin": "settle",
    "cancel_payin": "cancel",
    "hold_payout": "hold",
    "post_payout": "post",
    "void_payout": "void",
}
# Short scripts: every account remembers all its command ids (32), so the model, which
# remembers them forever, gives the same answers.
SCRIPT_MAX = 28


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    t = draw(
        st.sampled_from([*STEPS, *STEPS, "deposit", "withdraw", "block_account", "unblock_account"])
    )
    acct = draw(st.sampled_from(["a1", "a1", *ACCOUNTS]))
    if t in ("deposit", "withdraw"):
        n = draw(st.integers(0, 5))
        amount = draw(st.sampled_from(AMOUNTS))
        return {"type": t, "command_id": f"{t}-{n}", "account": acct, "amount": amount}
    if t in ("block_account", "unblock_account"):
        return {"type": t, "command_id": f"{t}-{draw(st.integers(0, 3))}", "account": acct}
    order = draw(st.sampled_from(ORDERS))
    c: dict[str, Any] = {
        "type": t,
        "command_id": f"{order}/{STEPS[t]}",
        "account": acct,
        "payment_order_id": order,
        # As the payments workers send them: the same reply key for every step of an order.
        "reply_to": None if order == ORDERS[-1] else order.split("/")[0],
    }
    if t in ("authorize_payin", "hold_payout"):
        c["amount"] = draw(st.sampled_from([*AMOUNTS[:5], *AMOUNTS]))
        own = CURRENCY.get(acct, "USD")
        c["currency"] = draw(st.sampled_from([own, own, own, "JPY" if own == "USD" else "USD"]))
    elif t in ("settle_payin", "post_payout"):
        c["psp"] = draw(st.sampled_from(PSPS))
    else:
        c["reason"] = draw(st.sampled_from([None, "card_declined"]))
    return c


@st.composite
def scripts(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Commands in any order; a settle, cancel, post or void mostly goes to the account that
    last authorized or held its order, so that orders do finish (and finish again)."""
    script: list[dict[str, Any]] = []
    last: dict[str, str] = {}  # order -> account of its last authorize or hold
    for _ in range(draw(st.integers(0, SCRIPT_MAX))):
        c = draw(commands())
        order = c.get("payment_order_id")
        if c["type"] in ("authorize_payin", "hold_payout"):
            last[order] = c["account"]
        elif order in last and draw(st.integers(0, 3)):
            c["account"] = last[order]
        script.append(c)
    return script


def setup() -> tuple[InMemoryLedger, Oracle]:
    ledger, oracle = InMemoryLedger(), Oracle()
    opening: list[dict[str, Any]] = []
    for acct, cur in CURRENCY.items():
        opening.append(
            {
                "type": "open_account",
                "command_id": f"open-{acct}",
                "account": acct,
                "user": f"u-{acct}",
                "currency": cur,
            }
        )
        opening.append(
            {"type": "deposit", "command_id": f"seed-{acct}", "account": acct, "amount": "30"}
        )
    for c in opening:
        ledger.submit(c)
        ledger.drain()
        oracle.apply(c)
    return ledger, oracle


def currency_of(account: str) -> str:
    return CURRENCY.get(account) or account.rsplit("/", 1)[-1]


@settings(max_examples=300, deadline=None)
@given(scripts())
def test_payments_keep_the_books(script: list[dict[str, Any]]) -> None:
    ledger, oracle = setup()
    in_flight: dict[tuple[str, str, str], bool] = defaultdict(bool)  # (kind, account, order)
    for c in script:
        outcomes_before, replies_before = len(ledger.outcomes), len(ledger.replies)
        events = ledger.handle(command(c))
        assert not ledger.inbox  # none of these commands has a saga
        # The same answer as the sequential model (None: a duplicate, no outcome at all).
        want = oracle.apply(c)
        got = [o["reason"] or o["status"] for o in ledger.outcomes[outcomes_before:]]
        assert got == ([] if want is None else [want]), c
        # One reply to the payment when asked for, with the outcome.
        replies = ledger.replies[replies_before:]
        if got and c.get("reply_to"):
            assert [(r.key, r.record) for r in replies] == [(c["reply_to"], ledger.outcomes[-1])]
        else:
            assert replies == []
        # An order is settled or cancelled (posted or voided) only while held, so never twice.
        for e in events:
            match e:
                case m.PayinAuthorized() | m.PayoutHeld():
                    kind = "in" if isinstance(e, m.PayinAuthorized) else "out"
                    assert not in_flight[(kind, e.account, e.payment_order_id)]
                    in_flight[(kind, e.account, e.payment_order_id)] = True
                case m.PayinSettled() | m.PayinCancelled():
                    assert in_flight[("in", e.account, e.payment_order_id)]
                    in_flight[("in", e.account, e.payment_order_id)] = False
                case m.PayoutPosted() | m.PayoutVoided():
                    assert in_flight[("out", e.account, e.payment_order_id)]
                    in_flight[("out", e.account, e.payment_order_id)] = False
        for name in CURRENCY:
            acct = ledger.account(name)
            assert acct.balance >= 0
            assert len(acct.payins) <= m.PAYMENTS_IN_FLIGHT_MAX
            assert len(acct.payouts) <= m.PAYMENTS_IN_FLIGHT_MAX
    check_books(ledger, oracle, in_flight)


def check_books(
    ledger: InMemoryLedger, oracle: Oracle, in_flight: dict[tuple[str, str, str], bool]
) -> None:
    postings = [r.record for r in ledger.records if r.topic == "ledger"]
    # Every entry is zero-sum and posted once (two sides, distinct event ids).
    entries: dict[str, int] = defaultdict(int)
    sides: dict[str, int] = defaultdict(int)
    for p in postings:
        entries[p["entry_id"]] += parse_signed(p["amount"], p["currency"])
        sides[p["entry_id"]] += 1
    assert all(total == 0 for total in entries.values())
    assert all(n == 2 for n in sides.values())
    assert len({p["event_id"] for p in postings}) == len(postings)
    # Balances, orders in flight and the system accounts equal the model's.
    assert {k: v for k, v in ledger.postings.items() if not k.startswith("@") and v} == {
        k: a.balance for k, a in oracle.accounts.items() if a.balance
    }
    for name in CURRENCY:
        acct = ledger.account(name)
        assert dict(acct.payins) == oracle.payins.get(name, {})
        assert dict(acct.payouts) == oracle.payouts.get(name, {})
        assert {("in", o) for o, _ in acct.payins} | {("out", o) for o, _ in acct.payouts} == {
            (kind, o) for (kind, a, o), held in in_flight.items() if a == name and held
        }
    system = {k: v for k, v in ledger.postings.items() if k.startswith(("@psp/", "@payout/")) and v}
    assert system == {k: v for k, v in oracle.system.items() if v}
    # Per currency: what the PSPs moved in and out is what the accounts, the pay-outs in
    # flight and the outside world (deposits, withdrawals) hold.
    settled: dict[str, int] = defaultdict(int)
    paid_out: dict[str, int] = defaultdict(int)
    for p in postings:
        amount = parse_signed(p["amount"], p["currency"])
        if p["kind"] == "payin" and amount > 0:
            settled[p["currency"]] += amount
        if p["kind"] == "payout_post" and amount > 0:
            paid_out[p["currency"]] += amount
    by_currency: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for account, balance in ledger.postings.items():
        group = account.split("/", 1)[0] if account.startswith("@") else "accounts"
        by_currency[currency_of(account)][group] += balance
    for cur, groups in by_currency.items():
        assert groups["@psp"] == paid_out[cur] - settled[cur]
        assert (
            groups["accounts"] + groups["@payout"] + groups["@world"]
            == settled[cur] - paid_out[cur]
        )
        assert groups["@payout"] == sum(
            ledger.account(a).payouts_total for a, c in CURRENCY.items() if c == cur
        )
