"""Properties of the core over random command sequences with randomly interleaved sagas."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ledger import model as m
from tests.harness import InMemoryLedger

ACCOUNTS = ["a1", "a2", "a3", "a4", "a5"]
USERS = ["u1", "u2", "u3", "u4"]
AMOUNTS = ["1", "5.00", "0.01", "12.5", "100", "0", "1.234", "-3", "abc", "250.00"]


@st.composite
def commands(draw: st.DrawFn) -> dict[str, str]:
    t = draw(
        st.sampled_from(
            [
                "open_account",
                "deposit",
                "deposit",
                "withdraw",
                "transfer",
                "transfer",
                "transfer",
                "block_account",
                "unblock_account",
                "relate_accounts",
            ]
        )
    )
    cid = f"c{draw(st.integers(0, 40))}"  # a small pool, so ids repeat
    acct = draw(st.sampled_from(ACCOUNTS))
    if t == "open_account":
        return {
            "type": t,
            "command_id": cid,
            "account": acct,
            "user": draw(st.sampled_from(USERS)),
            "currency": draw(st.sampled_from(["USD", "USD", "JPY"])),
        }
    if t in ("deposit", "withdraw"):
        return {
            "type": t,
            "command_id": cid,
            "account": acct,
            "amount": draw(st.sampled_from(AMOUNTS)),
        }
    if t == "transfer":
        return {
            "type": t,
            "command_id": cid,
            "from": acct,
            "to": draw(st.sampled_from(ACCOUNTS)),
            "amount": draw(st.sampled_from(AMOUNTS)),
        }
    if t == "relate_accounts":
        return {
            "type": t,
            "command_id": cid,
            "account": acct,
            "related": draw(st.sampled_from(ACCOUNTS)),
            "kind": "family",
        }
    return {"type": t, "command_id": cid, "account": acct}


def check_books(ledger: InMemoryLedger) -> None:
    # Zero-sum over every account, system and clearing included.
    assert sum(ledger.postings.values()) == 0
    for key, state in ledger.states.items():
        if isinstance(state, m.AccountState):
            assert state.balance >= 0
            assert state.held >= 0
            assert state.balance == ledger.postings.get(key, 0)
    # Each journal entry is posted once.
    assert len(ledger.entry_ids) == len(set(ledger.entry_ids))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(commands(), st.lists(st.integers(0, 50), max_size=3)), max_size=60))
def test_books_balance_at_every_step(script: list[tuple[dict[str, str], list[int]]]) -> None:
    ledger = InMemoryLedger()
    submitted: set[tuple[str, str]] = set()
    for cmd, steps in script:
        ledger.submit(cmd)
        submitted.add(
            (cmd["from"] if cmd["type"] == "transfer" else cmd["account"], cmd["command_id"])
        )
        check_books(ledger)
        for i in steps:  # let some sagas run, in any order
            if ledger.inbox:
                ledger.step(i)
                check_books(ledger)
    ledger.drain()
    check_books(ledger)
    # Nothing stays in flight once the sagas are done.
    assert all(v == 0 for k, v in ledger.postings.items() if k.startswith("@clearing/"))
    assert all(s.held == 0 for s in ledger.states.values() if isinstance(s, m.AccountState))
    # Every command has exactly one outcome (a reused id's rejection is a separate record).
    final = Counter(
        (o["account"], o["command_id"])
        for o in ledger.outcomes
        if o["reason"] != "exists_with_different_payload"
    )
    assert set(final) == submitted
    assert all(n == 1 for n in final.values())
    # The ledger log alone rebuilds every balance.
    replayed: Counter[str] = Counter()
    for r in ledger.records:
        if r.topic == "ledger":
            whole = r.record["amount"]
            replayed[r.record["account"]] += round(
                float(whole) * (1 if r.record["currency"] == "JPY" else 100)
            )
    for key, state in ledger.states.items():
        if isinstance(state, m.AccountState):
            assert replayed[key] == state.balance
