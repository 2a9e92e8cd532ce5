"""The ledger rules, one by one, on the pure core (with sagas run in memory)."""

from __future__ import annotations

import pytest

from streams.ledger import decide, evolve
from streams.ledger import model as m
from streams.ledger.errors import InvariantViolation
from streams.ledger.money import format_amount, parse_amount
from streams.ledger.rejections import Rejection
from tests.harness import InMemoryLedger, command


def outcome(ledger: InMemoryLedger, command_id: str) -> str:
    found = [o for o in ledger.outcomes if o["command_id"] == command_id]
    assert len(found) == 1, found
    return found[0]["reason"] or found[0]["status"]


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


def test_open_account_then_one_account_per_user() -> None:
    ledger = opened("a")
    assert ledger.account("a").status is m.Status.open
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "c2",
            "account": "b",
            "user": "u-a",
            "currency": "USD",
        }
    )
    ledger.drain()
    assert outcome(ledger, "c2") == "user_has_account"
    assert ledger.account("b").status is m.Status.absent
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "c3",
            "account": "a",
            "user": "u-x",
            "currency": "USD",
        }
    )
    assert outcome(ledger, "c3") == "account_exists"
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "c4",
            "account": "z",
            "user": "u-z",
            "currency": "XXX",
        }
    )
    assert outcome(ledger, "c4") == "currency_not_supported"
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "c5",
            "account": "@world/USD",
            "user": "u",
            "currency": "USD",
        }
    )
    assert outcome(ledger, "c5") == "account_id_invalid"


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("0", "amount_must_be_positive"),
        ("1.234", "amount_too_precise"),
        ("-5", "amount_malformed"),
        ("1e3", "amount_malformed"),
        ("NaN", "amount_malformed"),
        (" 1", "amount_malformed"),
        ("1.", "amount_malformed"),
        ("", "amount_malformed"),
        ("1" * 30, "amount_too_large"),
        ("10.00", "accepted"),
        ("10.5", "accepted"),
        ("7", "accepted"),
    ],
)
def test_deposit_amounts(amount: str, reason: str) -> None:
    ledger = opened("a")
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": amount})
    assert outcome(ledger, "d") == reason


def test_jpy_has_no_decimals() -> None:
    assert parse_amount("100", "JPY") == 100
    assert format_amount(100, "JPY") == "100"
    assert format_amount(-1005, "USD") == "-10.05"
    ledger = opened("a", currency="JPY")
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": "1.5"})
    assert outcome(ledger, "d") == "amount_too_precise"


def test_deposit_and_withdraw_post_against_world() -> None:
    ledger = opened("a", deposit="100.00")
    ledger.submit({"type": "withdraw", "command_id": "w1", "account": "a", "amount": "30.50"})
    ledger.submit({"type": "withdraw", "command_id": "w2", "account": "a", "amount": "70.00"})
    assert outcome(ledger, "w2") == "insufficient_funds"
    assert ledger.account("a").balance == 6950
    assert ledger.postings["@world/USD"] == -6950
    assert ledger.account("a").seq == 2


def test_transfer_posts_through_clearing_and_settles() -> None:
    ledger = opened("a", "b", deposit="10.00")
    ledger.submit({"type": "transfer", "command_id": "t", "from": "a", "to": "b", "amount": "4.00"})
    assert ledger.account("a").balance == 600
    assert ledger.account("a").held == 400
    assert ledger.postings["@clearing/USD"] == 400
    ledger.drain()
    assert outcome(ledger, "t") == "accepted"
    assert (ledger.account("a").balance, ledger.account("b").balance) == (600, 1400)
    assert ledger.account("a").held == 0
    assert ledger.postings["@clearing/USD"] == 0


@pytest.mark.parametrize(
    ("setup", "transfer", "reason"),
    [
        ([], {"from": "a", "to": "a"}, "accounts_must_be_different"),
        ([], {"from": "a", "to": "nobody"}, "credit_account_not_found"),
        ([], {"from": "nobody", "to": "a"}, "debit_account_not_found"),
        ([], {"from": "a", "to": "b", "amount": "11.00"}, "insufficient_funds"),
        (
            [{"type": "block_account", "command_id": "x", "account": "b"}],
            {"from": "a", "to": "b"},
            "credit_account_blocked",
        ),
        (
            [{"type": "block_account", "command_id": "x", "account": "a"}],
            {"from": "a", "to": "b"},
            "debit_account_blocked",
        ),
        ([], {"from": "a", "to": "e"}, "currency_mismatch"),
    ],
)
def test_transfer_rejections(
    setup: list[dict[str, str]], transfer: dict[str, str], reason: str
) -> None:
    ledger = opened("a", "b", deposit="10.00")
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "open-e",
            "account": "e",
            "user": "u-e",
            "currency": "EUR",
        }
    )
    for c in setup:
        ledger.submit(c)
    ledger.drain()
    ledger.submit({"type": "transfer", "command_id": "t", "amount": "1.00", **transfer})
    ledger.drain()
    assert outcome(ledger, "t") == reason
    assert ledger.account("a").balance == 1000
    assert ledger.account("a").held == 0
    assert ledger.postings["@clearing/USD"] == 0


def test_transfer_in_flight_to_an_account_blocked_meanwhile_is_turned_back() -> None:
    ledger = opened("a", "b", deposit="10.00")
    ledger.submit({"type": "transfer", "command_id": "t", "from": "a", "to": "b", "amount": "3.00"})
    ledger.submit(
        {"type": "block_account", "command_id": "blk", "account": "b", "reason": "court order"}
    )
    ledger.drain()
    assert outcome(ledger, "t") == "credit_account_blocked"
    assert ledger.account("a").balance == 1000
    kinds = [
        r.record["kind"]
        for r in ledger.records
        if r.topic == "ledger" and r.record["account"] == "a"
    ]
    assert kinds == ["deposit", "transfer_hold", "transfer_void"]


def test_blocked_accounts_move_no_money_until_unblocked() -> None:
    ledger = opened("a", deposit="10.00")
    ledger.submit({"type": "block_account", "command_id": "b1", "account": "a"})
    ledger.submit({"type": "block_account", "command_id": "b2", "account": "a"})
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": "1"})
    ledger.submit({"type": "withdraw", "command_id": "w", "account": "a", "amount": "1"})
    assert [outcome(ledger, c) for c in ("b1", "b2", "d", "w")] == [
        "accepted",
        "account_already_blocked",
        "account_blocked",
        "account_blocked",
    ]
    ledger.submit({"type": "unblock_account", "command_id": "u", "account": "a"})
    ledger.submit({"type": "withdraw", "command_id": "w2", "account": "a", "amount": "1"})
    assert outcome(ledger, "w2") == "accepted"


def test_duplicates_take_effect_once_and_reuse_is_rejected() -> None:
    ledger = opened("a")
    dep = {"type": "deposit", "command_id": "d", "account": "a", "amount": "5.00"}
    ledger.submit(dep)
    ledger.submit(dep)
    assert ledger.account("a").balance == 500
    assert outcome(ledger, "d") == "accepted"
    ledger.submit({**dep, "amount": "6.00"})
    reused = [o for o in ledger.outcomes if o["command_id"] == "d" and o["status"] == "rejected"]
    assert [o["reason"] for o in reused] == ["exists_with_different_payload"]
    assert (
        reused[0]["event_id"]
        != next(o for o in ledger.outcomes if o["status"] == "accepted" and o["command_id"] == "d")[
            "event_id"
        ]
    )
    assert ledger.account("a").balance == 500
    # A duplicate transfer while the first is still in flight holds nothing more.
    ledger = opened("a", "b", deposit="10.00")
    t = {"type": "transfer", "command_id": "t", "from": "a", "to": "b", "amount": "1.00"}
    ledger.submit(t)
    ledger.submit(t)
    ledger.drain()
    ledger.submit(t)
    ledger.drain()
    assert (ledger.account("a").balance, ledger.account("b").balance) == (900, 1100)


def test_command_memory_is_bounded() -> None:
    ledger = opened("a")
    ledger.memory_max = 4
    for i in range(10):
        ledger.submit({"type": "deposit", "command_id": f"d{i}", "account": "a", "amount": "1"})
    assert [r.command_id for r in ledger.account("a").recent] == ["d6", "d7", "d8", "d9"]


def test_relations_need_both_accounts() -> None:
    ledger = opened("a", "b")
    ledger.submit(
        {
            "type": "relate_accounts",
            "command_id": "r1",
            "account": "a",
            "related": "b",
            "kind": "family",
        }
    )
    ledger.submit(
        {
            "type": "relate_accounts",
            "command_id": "r2",
            "account": "a",
            "related": "zz",
            "kind": "family",
        }
    )
    ledger.submit(
        {
            "type": "relate_accounts",
            "command_id": "r3",
            "account": "a",
            "related": "a",
            "kind": "family",
        }
    )
    ledger.submit({"type": "unrelate_accounts", "command_id": "r4", "account": "a", "related": "b"})
    ledger.drain()
    assert [outcome(ledger, c) for c in ("r1", "r2", "r3", "r4")] == [
        "accepted",
        "related_account_not_found",
        "accounts_must_be_different",
        "accepted",
    ]
    kinds = [r.record["kind"] for r in ledger.records if r.topic == "accounts"]
    assert kinds[-2:] == ["related", "unrelated"]


def test_invariants_raise_instead_of_asserting() -> None:
    state = m.AccountState("a", m.Status.open, "u", "USD", balance=5, seq=1)
    bad = m.Posted(
        "e",
        "c",
        None,
        m.PostingKind.withdrawal,
        "USD",
        m.Leg("a", -10, -5, 2),
        m.Leg("@world/USD", 10, None, 0),
        0,
    )
    with pytest.raises(InvariantViolation):
        evolve(state, bad)
    unbalanced = m.Posted(
        "e",
        "c",
        None,
        m.PostingKind.deposit,
        "USD",
        m.Leg("@world/USD", -10, None, 0),
        m.Leg("a", 11, 16, 2),
        0,
    )
    with pytest.raises(InvariantViolation):
        evolve(state, unbalanced)


def test_decide_is_deterministic() -> None:
    state = m.AccountState("a", m.Status.open, "u", "USD", balance=500, seq=1)
    cmd = command(
        {"type": "transfer", "command_id": "t", "from": "a", "to": "b", "amount": "1"}, ts=42
    )
    assert decide(state, cmd) == decide(state, cmd)
    assert all(getattr(e, "ts", 42) == 42 for e in decide(state, cmd))
    assert Rejection("insufficient_funds") is Rejection.insufficient_funds


def test_commands_for_an_opening_account_wait_for_it() -> None:
    ledger = InMemoryLedger()
    ledger.submit(
        {"type": "open_account", "command_id": "o", "account": "a", "user": "u", "currency": "USD"}
    )
    ledger.submit({"type": "deposit", "command_id": "d", "account": "a", "amount": "5.00"})
    ledger.submit(
        {"type": "open_account", "command_id": "o2", "account": "b", "user": "u", "currency": "USD"}
    )
    ledger.submit({"type": "deposit", "command_id": "d2", "account": "b", "amount": "5.00"})
    assert ledger.account("a").status is m.Status.opening
    assert len(ledger.account("a").deferred) == 1
    ledger.drain()
    assert outcome(ledger, "d") == "accepted"
    assert ledger.account("a").balance == 500
    assert outcome(ledger, "o2") == "user_has_account"
    assert outcome(ledger, "d2") == "account_not_found"


def test_a_credit_for_an_opening_account_waits_too() -> None:
    ledger = opened("a", deposit="10.00")
    ledger.submit(
        {
            "type": "open_account",
            "command_id": "o",
            "account": "b",
            "user": "u-b",
            "currency": "USD",
        }
    )
    ledger.submit({"type": "transfer", "command_id": "t", "from": "a", "to": "b", "amount": "2.00"})
    ledger.step(1)  # the credit reaches b before its user reservation comes back
    assert len(ledger.account("b").deferred) == 1
    ledger.drain()
    assert outcome(ledger, "t") == "accepted"
    assert ledger.account("b").balance == 200
