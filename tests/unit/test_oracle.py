"""The sequential model (``paystream.oracle``) knows every currency and every rejection.

Each rejection reason of the core's enum has a scenario here; the test fails when a reason
has none, so a new reason cannot be forgotten by the model. Every scenario runs through the
model and through the pure core with its sagas (``tests.harness``): same outcome for the last
command, same balances for every account.
"""

from __future__ import annotations

from typing import Any

import pytest

from paystream.oracle import EXP, Oracle
from streams.ledger.money import CURRENCY_EXPONENTS
from streams.ledger.rejections import Rejection
from tests.harness import InMemoryLedger

Cmd = dict[str, Any]
BIG = "1000000000000000.00"  # 10**17 minor units of USD: the largest amount one command moves


def _open(account: str, user: str, currency: str = "USD", cid: str | None = None) -> Cmd:
    return {
        "type": "open_account",
        "command_id": cid or f"open-{account}",
        "account": account,
        "user": user,
        "currency": currency,
    }


def _money(kind: str, account: str, amount: str, cid: str) -> Cmd:
    return {"type": kind, "command_id": cid, "account": account, "amount": amount}


def _transfer(src: str, dst: str, amount: str, cid: str) -> Cmd:
    return {"type": "transfer", "command_id": cid, "from": src, "to": dst, "amount": amount}


def _relate(account: str, related: str, kind: str, cid: str) -> Cmd:
    return {
        "type": "relate_accounts",
        "command_id": cid,
        "account": account,
        "related": related,
        "kind": kind,
    }


def _pay(kind: str, account: str, order: str, **fields: str) -> Cmd:
    step = kind.split("_")[0]
    return {
        "type": kind,
        "command_id": f"{order}/{step}",
        "account": account,
        "payment_order_id": order,
        "reply_to": order.split("/")[0],
        **fields,
    }


BASE: list[Cmd] = [
    _open("a1", "u1"),
    _open("a2", "u2"),
    _open("a3", "u3", "JPY"),
    _open("b1", "u4"),
    _money("deposit", "a1", "100.00", "fund-a1"),
    {"type": "block_account", "command_id": "block-b1", "account": "b1", "reason": "test"},
]
FILL_A2 = [_money("deposit", "a2", BIG, f"fill-{i}") for i in range(10)]  # 10**18: the ceiling

# The scenario of each reason: commands after BASE; the last one gets the reason.
SCENARIOS: dict[Rejection, list[Cmd]] = {
    Rejection.exists_with_different_payload: [
        _money("deposit", "a1", "1.00", "d1"),
        _money("deposit", "a1", "2.00", "d1"),
    ],
    Rejection.command_id_invalid: [_money("deposit", "a1", "1.00", "")],
    Rejection.account_id_invalid: [_money("deposit", "@world/USD", "1.00", "w1")],
    Rejection.user_id_invalid: [_open("n1", "@system")],
    Rejection.account_exists: [_open("a1", "u9", cid="again")],
    Rejection.user_has_account: [_open("n2", "u1")],
    Rejection.currency_not_supported: [_open("n3", "u9", "XXX")],
    Rejection.account_not_found: [_money("deposit", "nobody", "1.00", "d2")],
    Rejection.account_blocked: [_money("deposit", "b1", "1.00", "d3")],
    Rejection.debit_account_not_found: [_transfer("nobody", "a1", "1.00", "t1")],
    Rejection.credit_account_not_found: [_transfer("a1", "nobody", "1.00", "t2")],
    Rejection.debit_account_blocked: [_transfer("b1", "a1", "1.00", "t3")],
    Rejection.credit_account_blocked: [_transfer("a1", "b1", "1.00", "t4")],
    Rejection.accounts_must_be_different: [_transfer("a1", "a1", "1.00", "t5")],
    Rejection.currency_mismatch: [_transfer("a1", "a3", "1.00", "t6")],
    Rejection.amount_malformed: [_money("deposit", "a1", "1,00", "d4")],
    Rejection.amount_must_be_positive: [_money("deposit", "a1", "0.00", "d5")],
    Rejection.amount_too_precise: [_money("deposit", "a1", "1.001", "d6")],
    Rejection.amount_too_large: [_money("deposit", "a1", "1000000000000000.01", "d7")],
    Rejection.insufficient_funds: [_money("withdraw", "a1", "100.01", "w2")],
    Rejection.balance_would_overflow: [*FILL_A2, _money("deposit", "a2", "0.01", "d8")],
    Rejection.account_already_blocked: [
        {"type": "block_account", "command_id": "x1", "account": "b1", "reason": None}
    ],
    Rejection.account_not_blocked: [
        {"type": "unblock_account", "command_id": "x2", "account": "a1", "reason": None}
    ],
    Rejection.related_account_not_found: [_relate("a1", "nobody", "family", "r1")],
    Rejection.relation_kind_invalid: [_relate("a1", "a2", " ", "r2")],
    # The payments' commands (docs/payments.md, "Money").
    Rejection.payment_order_not_found: [_pay("settle_payin", "a1", "p9/1", psp="cardco")],
    Rejection.psp_invalid: [
        _pay("authorize_payin", "a1", "p8/1", amount="1.00", currency="USD"),
        _pay("settle_payin", "a1", "p8/1", psp="Not A Slug"),
    ],
    Rejection.too_many_payments_in_flight: [
        _pay("authorize_payin", "a1", f"p{i}/1", amount="1.00", currency="USD") for i in range(65)
    ],
}
# More ways to the same reasons: the credit side's turn-back, and the order of the checks.
MORE: list[tuple[Rejection, list[Cmd]]] = [
    (Rejection.balance_would_overflow, [*FILL_A2, _transfer("a1", "a2", "0.01", "t7")]),
    (Rejection.credit_account_not_found, [_transfer("a1", "@world/USD", "x", "t8")]),
    (Rejection.related_account_not_found, [_relate("a1", "@x", " ", "r3")]),
    (Rejection.amount_malformed, [_money("deposit", "a1", "1" * 41, "d9")]),
    (Rejection.amount_malformed, [_money("deposit", "a1", "1.", "d10")]),
]


def _run(commands: list[Cmd]) -> tuple[Oracle, InMemoryLedger, str | None, str | None]:
    """Both models over the commands, one at a time; the last command's outcome in each."""
    oracle, core = Oracle(), InMemoryLedger()
    want = None
    for c in commands:
        want = oracle.apply(c)
        before = len(core.outcomes)
        core.submit(c)
        core.drain()
    mine = [o for o in core.outcomes[before:] if o["command_id"] == commands[-1]["command_id"]]
    got = (mine[-1]["reason"] or mine[-1]["status"]) if mine else None
    return oracle, core, want, got


def _same_balances(oracle: Oracle, core: InMemoryLedger) -> None:
    for name, acct in oracle.accounts.items():
        state = core.account(name)
        assert (state.balance, state.currency) == (acct.balance, acct.currency), name
        assert (state.status.value == "blocked") == acct.blocked, name


def test_every_rejection_reason_has_a_scenario() -> None:
    assert set(SCENARIOS) == set(Rejection)


@pytest.mark.parametrize(
    ("reason", "commands"),
    [*SCENARIOS.items(), *MORE],
    ids=[r.value for r in SCENARIOS] + [f"{r.value}-{i}" for i, (r, _) in enumerate(MORE)],
)
def test_the_model_and_the_core_agree_on_every_reason(
    reason: Rejection, commands: list[Cmd]
) -> None:
    oracle, core, want, got = _run(BASE + commands)
    assert (want, got) == (reason.value, reason.value)
    _same_balances(oracle, core)


def test_the_model_knows_every_currency_of_the_core() -> None:
    assert EXP == CURRENCY_EXPONENTS


@pytest.mark.parametrize("currency", sorted(CURRENCY_EXPONENTS))
def test_amounts_in_every_currency(currency: str) -> None:
    exp = CURRENCY_EXPONENTS[currency]
    smallest = "0." + "0" * (exp - 1) + "1" if exp else "1"
    too_precise = "0." + "0" * exp + "1"
    commands = [
        _open("c1", "u1", currency),
        _money("deposit", "c1", "12" + ("." + "3" * exp if exp else ""), "d1"),
        _money("withdraw", "c1", smallest, "w1"),
        _money("withdraw", "c1", too_precise, "w2"),
    ]
    oracle, core, want, got = _run(commands)
    assert want == got == "amount_too_precise"
    assert oracle.balances()["c1"]["balance"] == ("12." + "3" * (exp - 1) + "2" if exp else "11")
    _same_balances(oracle, core)
