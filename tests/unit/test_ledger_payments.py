"""The ledger's payment commands (docs/payments.md, "Money"), rule by rule, on the pure core."""

from __future__ import annotations

from typing import Any

import pytest

from streams.ledger import decide, evolve
from streams.ledger import model as m
from streams.ledger.errors import InvariantViolation
from streams.ledger.invariants import BALANCE_MAX
from streams.ledger.money import AMOUNT_MINOR_MAX
from streams.records import state_view
from tests.harness import InMemoryLedger, command

STEPS = {
    "authorize_payin": "authorize",
    "settle_payin": "settle",
    "cancel_payin": "cancel",
    "hold_payout": "hold",
    "post_payout": "post",
    "void_payout": "void",
}


def opened(*names: str, currency: str = "USD", deposit: str | None = None) -> InMemoryLedger:
    ledger = InMemoryLedger()
    for n in names:
        ledger.submit(
            {
                "type": "open_account",
                "command_id": f"open-{n}",
                "account": n,
                "user": f"u-{n}",
                "currency": currency,
            }
        )
        ledger.drain()
        if deposit:
            ledger.submit(
                {"type": "deposit", "command_id": f"dep-{n}", "account": n, "amount": deposit}
            )
    return ledger


def pay(type_: str, order: str, account: str = "a", **fields: Any) -> dict[str, Any]:
    """A payment command as the payments workers send it: ``<payment_order_id>/<step>``."""
    cmd: dict[str, Any] = {
        "type": type_,
        "command_id": f"{order}/{STEPS[type_]}",
        "account": account,
        "payment_order_id": order,
    }
    if type_ in ("authorize_payin", "hold_payout"):
        cmd.update(amount="10.00", currency="USD")
    if type_ in ("settle_payin", "post_payout"):
        cmd["psp"] = "cardco"
    cmd.update(fields)
    return cmd


def outcome(ledger: InMemoryLedger, command_id: str) -> str:
    found = [o for o in ledger.outcomes if o["command_id"] == command_id]
    assert len(found) == 1, found
    return str(found[0]["reason"] or found[0]["status"])


def last_outcome(ledger: InMemoryLedger, command_id: str) -> str:
    found = [o for o in ledger.outcomes if o["command_id"] == command_id]
    return str(found[-1]["reason"] or found[-1]["status"])


def entries(ledger: InMemoryLedger, command_id: str) -> list[dict[str, Any]]:
    return [
        r.record
        for r in ledger.records
        if r.topic == "ledger" and r.record["command_id"] == command_id
    ]


def block(ledger: InMemoryLedger, account: str = "a") -> None:
    ledger.submit({"type": "block_account", "command_id": f"block-{account}", "account": account})
    assert ledger.account(account).status is m.Status.blocked


# --- authorize_payin ---


def test_authorize_reserves_the_order_and_posts_nothing() -> None:
    ledger = opened("a", deposit="5.00")
    ledger.submit(pay("authorize_payin", "p1/1", amount="12.34", reply_to="p1"))
    assert outcome(ledger, "p1/1/authorize") == "accepted"
    acct = ledger.account("a")
    assert acct.payins == (("p1/1", 1234),)
    assert (acct.balance, acct.seq, acct.held) == (500, 1, 0)
    assert entries(ledger, "p1/1/authorize") == []
    # The answer goes to the payment too, keyed by it, as the same record.
    assert [(r.key, r.record["command_id"]) for r in ledger.replies] == [("p1", "p1/1/authorize")]
    assert ledger.replies[0].record == ledger.outcomes[-1]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"account": "nobody"}, "account_not_found"),
        ({"currency": "EUR"}, "currency_mismatch"),
        ({"amount": "abc"}, "amount_malformed"),
        ({"amount": "-1"}, "amount_malformed"),
        ({"amount": "0"}, "amount_must_be_positive"),
        ({"amount": "1.001"}, "amount_too_precise"),
        ({"amount": str(AMOUNT_MINOR_MAX)}, "amount_too_large"),
        ({"command_id": ""}, "command_id_invalid"),
        ({"payment_order_id": ""}, "command_id_invalid"),
        ({"account": "@psp/cardco/USD"}, "account_id_invalid"),
    ],
)
@pytest.mark.parametrize("type_", ["authorize_payin", "hold_payout"])
def test_authorize_and_hold_refusals(type_: str, fields: dict[str, str], reason: str) -> None:
    ledger = opened("a", deposit="100.00")
    cmd = pay(type_, "p1/1", reply_to="p1", **fields)
    ledger.submit(cmd)
    assert outcome(ledger, cmd["command_id"]) == reason
    assert ledger.account("a").payins == ledger.account("a").payouts == ()
    assert ledger.account("a").balance == 10_000
    # Every answer reaches the payment, refusals too.
    assert [r.record["reason"] for r in ledger.replies] == [reason]


@pytest.mark.parametrize("type_", ["authorize_payin", "hold_payout"])
def test_authorize_and_hold_refused_on_a_blocked_account(type_: str) -> None:
    ledger = opened("a", deposit="100.00")
    block(ledger)
    ledger.submit(pay(type_, "p1/1"))
    assert outcome(ledger, f"p1/1/{STEPS[type_]}") == "account_blocked"


def test_authorize_leaves_room_for_every_pay_in_in_flight() -> None:
    ledger = opened("a")
    big = str(AMOUNT_MINOR_MAX // 100)  # USD: AMOUNT_MINOR_MAX in minor units
    for i in range(10):  # 10 x 1e17 = BALANCE_MAX
        ledger.submit(pay("authorize_payin", f"p{i}/1", amount=big))
        assert outcome(ledger, f"p{i}/1/authorize") == "accepted"
    ledger.submit(pay("authorize_payin", "p10/1", amount="0.01"))
    assert outcome(ledger, "p10/1/authorize") == "balance_would_overflow"
    # A deposit may not take the room either: the settles would then overflow.
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": "0.01"})
    assert outcome(ledger, "d") == "balance_would_overflow"
    for i in range(10):
        ledger.submit(pay("settle_payin", f"p{i}/1"))
    assert ledger.account("a").balance == BALANCE_MAX


def test_at_most_64_pay_ins_in_flight() -> None:
    ledger = opened("a")
    for i in range(m.PAYMENTS_IN_FLIGHT_MAX):
        ledger.submit(pay("authorize_payin", f"p{i}/1", amount="1"))
    assert len(ledger.account("a").payins) == m.PAYMENTS_IN_FLIGHT_MAX
    ledger.submit(pay("authorize_payin", "px/1", amount="1"))
    assert outcome(ledger, "px/1/authorize") == "too_many_payments_in_flight"
    # A redo of one already held is still the original answer.
    ledger.submit(pay("authorize_payin", "p0/1", amount="1", command_id="p0/1/authorize-again"))
    assert outcome(ledger, "p0/1/authorize-again") == "accepted"
    ledger.submit(pay("cancel_payin", "p0/1"))
    ledger.submit(pay("authorize_payin", "py/1", amount="1"))
    assert outcome(ledger, "py/1/authorize") == "accepted"


def test_authorize_redo_is_idempotent() -> None:
    ledger = opened("a", deposit="1.00")
    cmd = pay("authorize_payin", "p1/1", reply_to="p1")
    ledger.submit(cmd)
    before = ledger.account("a")
    # The same command again: a duplicate, nothing at all.
    ledger.submit(cmd)
    assert ledger.account("a") == before
    assert len(ledger.outcomes) == 3 and len(ledger.replies) == 1  # open, deposit, authorize
    # The same id with another payload.
    ledger.submit({**cmd, "amount": "11.00"})
    assert last_outcome(ledger, "p1/1/authorize") == "exists_with_different_payload"
    assert ledger.account("a").payins == before.payins


def test_authorize_redo_after_its_id_was_forgotten() -> None:
    ledger = InMemoryLedger(memory_max=2)
    ledger.submit(
        {"type": "open_account", "command_id": "o", "account": "a", "user": "u", "currency": "USD"}
    )
    ledger.drain()
    cmd = pay("authorize_payin", "p1/1")
    ledger.submit(cmd)
    for i in range(3):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": "1"})
    assert ledger.account("a").remembered("p1/1/authorize") is None
    before = ledger.account("a")
    ledger.submit(cmd)  # held already: accepted again, nothing changes
    assert [o["status"] for o in ledger.outcomes if o["command_id"] == "p1/1/authorize"] == [
        "accepted",
        "accepted",
    ]
    assert ledger.account("a").payins == before.payins
    assert ledger.account("a").balance == before.balance
    # The same order for another amount is not a redo.
    ledger.submit(pay("authorize_payin", "p1/1", amount="99.00", command_id="p1/1/other"))
    assert outcome(ledger, "p1/1/other") == "exists_with_different_payload"
    assert ledger.account("a").payins == (("p1/1", 1000),)


# --- settle_payin ---


def test_settle_posts_from_the_psp_to_the_account() -> None:
    ledger = opened("a", deposit="5.00")
    ledger.submit(pay("authorize_payin", "p1/1", amount="12.34"))
    ledger.submit(pay("settle_payin", "p1/1", psp="bankco", reply_to="p1"))
    assert outcome(ledger, "p1/1/settle") == "accepted"
    acct = ledger.account("a")
    assert (acct.balance, acct.seq, acct.payins) == (1734, 2, ())
    posted = entries(ledger, "p1/1/settle")
    assert {(p["account"], p["amount"], p["balance_after"], p["account_seq"]) for p in posted} == {
        ("@psp/bankco/USD", "-12.34", None, 0),
        ("a", "12.34", "17.34", 2),
    }
    assert {p["kind"] for p in posted} == {"payin"}
    assert {p["entry_id"] for p in posted} == {"a/p1/1/settle/payin"}
    assert {p["counterparty"] for p in posted} == {"@psp/bankco/USD", "a"}
    assert [r.key for r in ledger.replies] == ["p1"]


def test_settle_books_the_money_on_a_blocked_account() -> None:
    ledger = opened("a")
    ledger.submit(pay("authorize_payin", "p1/1"))
    block(ledger)
    ledger.submit(pay("settle_payin", "p1/1"))
    assert outcome(ledger, "p1/1/settle") == "accepted"
    assert ledger.account("a").balance == 1000


@pytest.mark.parametrize("type_", ["settle_payin", "cancel_payin"])
def test_settle_and_cancel_need_the_order_held(type_: str) -> None:
    ledger = opened("a", "b")
    ledger.submit(pay("authorize_payin", "p1/1", account="b"))
    ledger.submit(pay(type_, "p1/1", reply_to="p1"))  # held by b, not by a
    ledger.submit(pay(type_, "p2/1", account="nobody"))
    ledger.submit(pay(type_, "p3/1", account="b"))  # never authorized
    for cid in (f"p1/1/{STEPS[type_]}", f"p2/1/{STEPS[type_]}", f"p3/1/{STEPS[type_]}"):
        assert outcome(ledger, cid) == "payment_order_not_found"
    assert [r.record["reason"] for r in ledger.replies] == ["payment_order_not_found"]
    assert ledger.account("b").payins == (("p1/1", 1000),)


def test_a_pay_in_is_settled_once_whatever_the_command_memory() -> None:
    ledger = InMemoryLedger(memory_max=2)
    ledger.submit(
        {"type": "open_account", "command_id": "o", "account": "a", "user": "u", "currency": "USD"}
    )
    ledger.drain()
    ledger.submit(pay("authorize_payin", "p1/1"))
    settle = pay("settle_payin", "p1/1")
    ledger.submit(settle)
    ledger.submit(settle)  # remembered: a duplicate
    for i in range(3):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": "1"})
    ledger.submit(settle)  # forgotten: the order is no longer held
    ledger.submit(pay("cancel_payin", "p1/1"))
    assert [
        o["reason"] or o["status"] for o in ledger.outcomes if o["command_id"].startswith("p1/1/")
    ] == ["accepted", "accepted", "payment_order_not_found", "payment_order_not_found"]
    assert len(entries(ledger, "p1/1/settle")) == 2  # one entry, two sides
    assert ledger.account("a").balance == 1000 + 300


@pytest.mark.parametrize("psp", ["", "CardCo", "card co", "card/co", "@psp", "x" * 33, "carte-é"])
@pytest.mark.parametrize("type_", ["settle_payin", "post_payout"])
def test_psp_must_be_a_short_slug(type_: str, psp: str) -> None:
    ledger = opened("a", deposit="100.00")
    ledger.submit(pay("authorize_payin", "p1/1"))
    ledger.submit(pay("hold_payout", "p1/1"))
    ledger.submit(pay(type_, "p1/1", psp=psp))
    assert outcome(ledger, f"p1/1/{STEPS[type_]}") == "psp_invalid"
    assert ledger.account("a").payins == ledger.account("a").payouts == (("p1/1", 1000),)


@pytest.mark.parametrize("psp", ["a", "cardco", "backup_card-2", "x" * 32])
def test_psp_slugs_accepted(psp: str) -> None:
    ledger = opened("a")
    ledger.submit(pay("authorize_payin", "p1/1"))
    ledger.submit(pay("settle_payin", "p1/1", psp=psp))
    assert outcome(ledger, "p1/1/settle") == "accepted"
    assert ledger.postings[f"@psp/{psp}/USD"] == -1000


# --- cancel_payin ---


def test_cancel_drops_the_order_without_posting() -> None:
    ledger = opened("a")
    ledger.submit(pay("authorize_payin", "p1/1"))
    block(ledger)  # a cancel moves no money: fine on a blocked account too
    ledger.submit(pay("cancel_payin", "p1/1", reason="card_declined", reply_to="p1"))
    assert outcome(ledger, "p1/1/cancel") == "accepted"
    assert ledger.account("a").payins == ()
    assert ledger.account("a").seq == 0
    assert entries(ledger, "p1/1/cancel") == []
    ledger.submit(pay("settle_payin", "p1/1"))
    assert outcome(ledger, "p1/1/settle") == "payment_order_not_found"
    assert ledger.account("a").balance == 0


# --- hold_payout ---


def test_hold_takes_the_money_at_once() -> None:
    ledger = opened("a", deposit="30.00")
    ledger.submit(pay("hold_payout", "q1/1", amount="12.50", reply_to="q1"))
    assert outcome(ledger, "q1/1/hold") == "accepted"
    acct = ledger.account("a")
    assert (acct.balance, acct.seq, acct.held, acct.payouts) == (1750, 2, 0, (("q1/1", 1250),))
    posted = entries(ledger, "q1/1/hold")
    assert {(p["account"], p["amount"], p["balance_after"], p["kind"]) for p in posted} == {
        ("a", "-12.50", "17.50", "payout_hold"),
        ("@payout/USD", "12.50", None, "payout_hold"),
    }
    view = state_view(acct)
    assert (view["balance"], view["held"], view["payouts_held"]) == ("17.50", "0.00", "12.50")
    # The balance that is left is all that can leave.
    ledger.submit({"type": "withdraw", "command_id": "w", "account": "a", "amount": "17.51"})
    assert outcome(ledger, "w") == "insufficient_funds"


def test_hold_needs_enough_funds() -> None:
    ledger = opened("a", deposit="10.00")
    ledger.submit(pay("hold_payout", "q1/1", amount="10.01"))
    assert outcome(ledger, "q1/1/hold") == "insufficient_funds"
    ledger.submit(pay("hold_payout", "q2/1", amount="10.00"))
    assert outcome(ledger, "q2/1/hold") == "accepted"
    ledger.submit(pay("hold_payout", "q3/1", amount="0.01"))
    assert outcome(ledger, "q3/1/hold") == "insufficient_funds"


def test_at_most_64_pay_outs_in_flight() -> None:
    ledger = opened("a", deposit="1000.00")
    for i in range(m.PAYMENTS_IN_FLIGHT_MAX):
        ledger.submit(pay("hold_payout", f"q{i}/1", amount="1"))
    ledger.submit(pay("hold_payout", "qx/1", amount="1"))
    assert outcome(ledger, "qx/1/hold") == "too_many_payments_in_flight"
    assert ledger.account("a").balance == 100_000 - 64 * 100
    ledger.submit(pay("post_payout", "q0/1"))
    ledger.submit(pay("hold_payout", "qy/1", amount="1"))
    assert outcome(ledger, "qy/1/hold") == "accepted"
    # Pay-ins have their own 64.
    ledger.submit(pay("authorize_payin", "p1/1"))
    assert outcome(ledger, "p1/1/authorize") == "accepted"


def test_hold_redo_takes_the_money_once() -> None:
    ledger = InMemoryLedger(memory_max=2)
    ledger.submit(
        {"type": "open_account", "command_id": "o", "account": "a", "user": "u", "currency": "USD"}
    )
    ledger.drain()
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": "100"})
    hold = pay("hold_payout", "q1/1")
    ledger.submit(hold)
    ledger.submit(hold)
    for i in range(3):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": "1"})
    ledger.submit(hold)  # forgotten id, held order: the original answer, no second hold
    assert ledger.account("a").balance == 10_000 - 1000 + 300
    assert [o["status"] for o in ledger.outcomes if o["command_id"] == "q1/1/hold"] == [
        "accepted",
        "accepted",
    ]
    assert len(entries(ledger, "q1/1/hold")) == 2


# --- post_payout ---


def test_post_pays_the_psp_from_the_payout_account() -> None:
    ledger = opened("a", deposit="30.00")
    ledger.submit(pay("hold_payout", "q1/1", amount="12.50"))
    before = ledger.account("a")
    ledger.submit(pay("post_payout", "q1/1", psp="walletco", reply_to="q1"))
    assert outcome(ledger, "q1/1/post") == "accepted"
    after = ledger.account("a")
    # Two system accounts: no customer leg, the account's balance and sequence stay.
    assert (after.balance, after.seq, after.payouts) == (before.balance, before.seq, ())
    posted = entries(ledger, "q1/1/post")
    assert {(p["account"], p["amount"], p["balance_after"], p["account_seq"]) for p in posted} == {
        ("@payout/USD", "-12.50", None, 0),
        ("@psp/walletco/USD", "12.50", None, 0),
    }
    assert {p["kind"] for p in posted} == {"payout_post"}
    assert ledger.postings["@payout/USD"] == 0
    assert [r.key for r in ledger.replies] == ["q1"]


def test_post_on_a_blocked_account_is_booked() -> None:
    ledger = opened("a", deposit="30.00")
    ledger.submit(pay("hold_payout", "q1/1"))
    block(ledger)
    ledger.submit(pay("post_payout", "q1/1"))
    assert outcome(ledger, "q1/1/post") == "accepted"


# --- void_payout ---


def test_void_gives_the_money_back_even_when_blocked() -> None:
    ledger = opened("a", deposit="30.00")
    ledger.submit(pay("hold_payout", "q1/1", amount="12.50"))
    block(ledger)
    ledger.submit(pay("void_payout", "q1/1", reason="psp_unavailable", reply_to="q1"))
    assert outcome(ledger, "q1/1/void") == "accepted"
    acct = ledger.account("a")
    assert (acct.balance, acct.seq, acct.payouts) == (3000, 3, ())
    posted = entries(ledger, "q1/1/void")
    assert {(p["account"], p["amount"], p["balance_after"], p["kind"]) for p in posted} == {
        ("@payout/USD", "-12.50", None, "payout_void"),
        ("a", "12.50", "30.00", "payout_void"),
    }


@pytest.mark.parametrize("type_", ["post_payout", "void_payout"])
def test_post_and_void_need_the_order_held_and_happen_once(type_: str) -> None:
    ledger = opened("a", "b", deposit="30.00")
    ledger.submit(pay("hold_payout", "q1/1", account="b"))
    ledger.submit(pay(type_, "q1/1"))  # a does not hold it
    ledger.submit(pay(type_, "q2/1", account="nobody"))
    ledger.submit(pay(type_, "q1/1", account="b", command_id="first"))
    ledger.submit(pay(type_, "q1/1", account="b", command_id="second"))
    other = "void_payout" if type_ == "post_payout" else "post_payout"
    ledger.submit(pay(other, "q1/1", account="b", command_id="third"))
    step = STEPS[type_]
    assert outcome(ledger, f"q1/1/{step}") == "payment_order_not_found"
    assert outcome(ledger, f"q2/1/{step}") == "payment_order_not_found"
    assert outcome(ledger, "first") == "accepted"
    assert outcome(ledger, "second") == "payment_order_not_found"
    assert outcome(ledger, "third") == "payment_order_not_found"
    expected = 3000 if type_ == "void_payout" else 2000
    assert ledger.account("b").balance == expected
    assert sum(ledger.postings.values()) == 0


def test_a_void_after_the_room_was_filled_cannot_overflow() -> None:
    ledger = opened("a")
    big = str(AMOUNT_MINOR_MAX // 100)
    for i in range(10):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": big})
    assert ledger.account("a").balance == BALANCE_MAX
    ledger.submit(pay("hold_payout", "q1/1", amount=big))
    ledger.submit({"type": "deposit", "command_id": "fill", "account": "a", "amount": "0.01"})
    assert outcome(ledger, "fill") == "balance_would_overflow"
    ledger.submit(pay("void_payout", "q1/1"))
    assert outcome(ledger, "q1/1/void") == "accepted"
    assert ledger.account("a").balance == BALANCE_MAX


def test_a_transfer_void_after_the_room_was_filled_cannot_overflow() -> None:
    """Regression: a deposit while a transfer was held could fill the balance to its ceiling;
    the transfer's void then raised InvariantViolation, at every restart of the worker."""
    ledger = opened("a")
    big = str(AMOUNT_MINOR_MAX // 100)
    for i in range(10):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": big})
    transfer = {"type": "transfer", "command_id": "t", "from": "a", "to": "nobody", "amount": big}
    ledger.submit(transfer)  # held; the destination will turn it back
    ledger.submit({"type": "deposit", "command_id": "fill", "account": "a", "amount": "0.01"})
    assert outcome(ledger, "fill") == "balance_would_overflow"
    ledger.drain()
    assert outcome(ledger, "t") == "credit_account_not_found"
    assert ledger.account("a").balance == BALANCE_MAX


# --- across the commands ---


def test_a_command_waiting_for_the_opening_keeps_its_reply_to() -> None:
    ledger = InMemoryLedger()
    ledger.submit(
        {"type": "open_account", "command_id": "o", "account": "a", "user": "u", "currency": "USD"}
    )
    assert ledger.account("a").status is m.Status.opening
    ledger.submit(pay("authorize_payin", "p1/1", reply_to="p1"))
    ledger.submit(pay("hold_payout", "q1/1", reply_to="q1"))
    assert len(ledger.account("a").deferred) == 2  # and the state round-trips (the harness)
    ledger.drain()
    assert outcome(ledger, "p1/1/authorize") == "accepted"
    assert outcome(ledger, "q1/1/hold") == "insufficient_funds"
    assert [(r.key, r.record["command_id"]) for r in ledger.replies] == [
        ("p1", "p1/1/authorize"),
        ("q1", "q1/1/hold"),
    ]
    assert ledger.replies[0].record["reply_to"] == "p1"


def test_commands_without_reply_to_answer_on_the_outcomes_topic_only() -> None:
    ledger = opened("a")
    ledger.submit(pay("authorize_payin", "p1/1"))
    assert outcome(ledger, "p1/1/authorize") == "accepted"
    assert ledger.replies == []
    assert ledger.outcomes[-1]["reply_to"] is None


def test_deciding_again_gives_the_same_events() -> None:
    # A redo after an aborted transaction must produce the same ids.
    ledger = opened("a", deposit="50.00")
    ledger.submit(pay("authorize_payin", "p1/1"))
    ledger.submit(pay("hold_payout", "q1/1"))
    state = ledger.account("a")
    for c in (
        pay("settle_payin", "p1/1"),
        pay("cancel_payin", "p1/1"),
        pay("post_payout", "q1/1"),
        pay("void_payout", "q1/1"),
        pay("authorize_payin", "p2/1"),
        pay("hold_payout", "q2/1"),
    ):
        assert decide(state, command(c, ts=7)) == decide(state, command(c, ts=7))


def test_order_events_without_their_order_are_invariant_violations() -> None:
    state = m.AccountState("a", m.Status.open, "u", "USD", balance=100)
    with pytest.raises(InvariantViolation):
        evolve(state, m.PayinSettled("c", "a", "p1/1", "cardco", 100, 0))
    with pytest.raises(InvariantViolation):
        evolve(state, m.PayoutVoided("c", "a", "q1/1", 100, 0))
    held = evolve(state, m.PayoutHeld("c", "a", "q1/1", 100, 0))
    assert isinstance(held, m.AccountState)
    with pytest.raises(InvariantViolation):  # held twice
        evolve(held, m.PayoutHeld("c2", "a", "q1/1", 100, 0))
    with pytest.raises(InvariantViolation):  # dropped for another amount
        evolve(held, m.PayoutPosted("c3", "a", "q1/1", "cardco", 99, 0))
    # An entry between two system accounts leaves the account's books alone.
    entry = m.Posted(
        "a/c/payout_post",
        "c",
        None,
        m.PostingKind.payout_post,
        "USD",
        m.Leg("@payout/USD", -100, None, 0),
        m.Leg("@psp/cardco/USD", 100, None, 0),
        0,
    )
    assert evolve(held, entry) == held


def test_new_posting_kinds_and_reasons() -> None:
    assert {k.value for k in m.PostingKind} >= {
        "payin",
        "payout_hold",
        "payout_post",
        "payout_void",
    }
    from streams.ledger.rejections import Rejection

    assert {r.value for r in Rejection} >= {
        "payment_order_not_found",
        "too_many_payments_in_flight",
        "psp_invalid",
    }
