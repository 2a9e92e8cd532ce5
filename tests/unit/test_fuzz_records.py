"""Fuzzing the record -> domain conversion (streams/records.py) and what the worker does next.

``to_command`` and ``to_saga_step`` turn every bad record into a ``BadRecord`` with a code (the
worker dead-letters those); every command they let through is decided by the ledger without
an exception, gets one outcome with a reason when rejected, and every record the worker would
produce for it encodes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.ledger import decide, evolve_all
from streams.ledger import model as m
from streams.ledger.rejections import Rejection
from streams.records import (
    TS_MAX,
    BadRecord,
    decode_state,
    encode_state,
    to_command,
    to_records,
    to_saga_step,
)
from tests.fuzz.strategies import AMOUNT_FRAGMENTS, hostile_strings, long_strings

CODEC = Codec.default()
# Each command schema's fields, read from the Avro schemas (the contract), not from the code
# under test.
COMMAND_SCHEMAS = {
    name: tuple(f["name"] for f in CODEC.schema(name)["fields"])
    for name in (
        "Transfer",
        "Deposit",
        "Withdraw",
        "OpenAccount",
        "BlockAccount",
        "UnblockAccount",
        "RelateAccounts",
        "UnrelateAccounts",
        "AuthorizePayin",
        "SettlePayin",
        "CancelPayin",
        "HoldPayout",
        "PostPayout",
        "VoidPayout",
    )
}
BAD_RECORD_CODES = {
    "not_a_command",
    "bad_field",
    "bad_timestamp",
    "id_too_long",
    "reserved_key",
    "unknown_step",
    "bad_target",
}
ACCOUNTS = ("a1", "a2", "a3", "@user/u1", "@world/USD", "@clearing/USD", "")
avro_strings = hostile_strings().map(lambda s: s.encode("utf-8", "replace").decode())


def field_value(name: str) -> st.SearchStrategy[str | None]:
    if name in ("account", "from", "to", "related"):
        return st.one_of(st.sampled_from(ACCOUNTS), avro_strings, long_strings((129, 1 << 20)))
    if name == "amount":
        return st.one_of(st.sampled_from(("1", "0.5", "70.00", *AMOUNT_FRAGMENTS)), avro_strings)
    if name == "currency":
        return st.one_of(st.sampled_from(("USD", "JPY", "usd", "XXX", "")), avro_strings)
    if name == "command_id":
        return st.one_of(st.text("cdefgh", min_size=1, max_size=3), avro_strings, long_strings())
    if name == "reason":
        return st.one_of(st.none(), avro_strings)
    if name == "payment_order_id":
        return st.one_of(st.sampled_from(("p1/1", "p2/1", "", "@p")), avro_strings, long_strings())
    if name == "psp":
        return st.one_of(st.sampled_from(("cardco", "bankco", "CardCo", "")), avro_strings)
    if name == "reply_to":
        return st.one_of(st.none(), st.sampled_from(("p1", "p2")), avro_strings, long_strings())
    return st.one_of(st.sampled_from(("u1", "u2", "u9", "family")), avro_strings)


@st.composite
def command_records(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """What the codec can hand the worker for a command: every field typed, any content."""
    schema = draw(st.sampled_from(sorted(COMMAND_SCHEMAS)))
    return schema, {f: draw(field_value(f)) for f in COMMAND_SCHEMAS[schema]}


timestamps = st.one_of(
    st.integers(0, 2_000_000_000_000_000),
    st.integers(TS_MAX - 10, TS_MAX + 10),
    st.integers(1 << 70, 1 << 80),
    st.integers(-(1 << 64), -1),
)


class Worker:
    """The worker's decide loop in memory, with every output record through the Avro codec."""

    def __init__(self) -> None:
        self.states: dict[str, m.State] = {}
        self.inbox: list[m.SagaStep] = []
        self.outcomes: list[dict[str, Any]] = []

    def handle(self, msg: m.Message) -> None:
        state = self.states.get(msg.key)
        events = decide(state, msg)
        new = evolve_all(state, events)
        if new is not None:
            assert decode_state(encode_state(new)) == new
            self.states[msg.key] = new
        for event in events:
            for out in to_records(event):
                _, record = CODEC.decode(CODEC.encode(out.schema, out.record))
                if out.topic == "saga":
                    self.inbox.append(to_saga_step(record))
                elif out.topic == "outcomes":
                    self.outcomes.append(record)

    def drain(self) -> None:
        while self.inbox:
            self.handle(self.inbox.pop(0))

    def submit(self, schema: str, record: dict[str, Any], ts: int = 0) -> None:
        self.handle(to_command(schema, record, ts))
        self.drain()


def opened_ledger() -> Worker:
    w = Worker()
    w.submit("OpenAccount", {"command_id": "o1", "account": "a1", "user": "u1", "currency": "USD"})
    w.submit("OpenAccount", {"command_id": "o2", "account": "a2", "user": "u2", "currency": "JPY"})
    w.submit("Deposit", {"command_id": "d1", "account": "a1", "amount": "100.00"})
    assert [o["status"] for o in w.outcomes] == ["accepted"] * 3
    return w


@given(st.lists(st.tuples(command_records(), timestamps), min_size=1, max_size=8))
def test_hostile_commands_end_as_bad_records_or_outcomes(
    batch: list[tuple[tuple[str, dict[str, Any]], int]],
) -> None:
    w = opened_ledger()
    seen: set[tuple[str, str]] = set()
    for (schema, record), ts in batch:
        try:
            cmd = to_command(schema, record, ts)
        except BadRecord as exc:
            assert exc.code in BAD_RECORD_CODES, exc.code
            assert str(exc)
            continue
        before = len(w.outcomes)
        w.handle(cmd)
        w.drain()
        new = w.outcomes[before:]
        if (cmd.key, cmd.command_id) not in seen:
            # Every first use of a command id has an outcome; a rejection has its reason.
            assert any(o["command_id"] == cmd.command_id for o in new), (cmd, new)
        seen.add((cmd.key, cmd.command_id))
        for o in new:
            assert o["status"] in ("accepted", "rejected")
            if o["status"] == "rejected":
                assert Rejection(o["reason"])
    # The books still balance: system accounts included, every amount sums to zero.
    assert all(
        s.balance >= 0 and s.held >= 0 for s in w.states.values() if isinstance(s, m.AccountState)
    )


@pytest.mark.parametrize("account", ["@user/u1", "@user/", "@user/a1"])
@pytest.mark.parametrize("schema", ["Deposit", "Withdraw", "BlockAccount", "Transfer"])
def test_commands_keyed_by_a_user_reservation_are_bad_records(account: str, schema: str) -> None:
    """Regression: a command keyed "@user/u1" was decided against u1's user state and raised
    InvariantViolation, which stopped the worker on every restart (a poison pill)."""
    record = {"command_id": "x", "account": account, "from": account, "to": "a2"}
    record |= {"amount": "1", "reason": None}
    fields = COMMAND_SCHEMAS[schema]
    with pytest.raises(BadRecord) as info:
        to_command(schema, {f: record[f] for f in fields}, 0)
    assert info.value.code == "reserved_key"


def test_other_system_accounts_still_get_a_rejection() -> None:
    w = opened_ledger()
    w.submit("Deposit", {"command_id": "x", "account": "@world/USD", "amount": "1"})
    assert w.outcomes[-1]["reason"] == "account_id_invalid"


@pytest.mark.parametrize("ts", [-1, TS_MAX + 1, 1 << 80])
def test_log_times_that_no_record_could_carry(ts: int) -> None:
    record = {"command_id": "x", "account": "a1", "amount": "1"}
    with pytest.raises(BadRecord) as info:
        to_command("Deposit", record, ts)
    assert info.value.code == "bad_timestamp"


@pytest.mark.parametrize("schema", ["DeadLetter", "LedgerPosting", "SagaStep", "Alert", "x"])
def test_records_that_are_not_commands(schema: str) -> None:
    record = {"source": "s", "payload": b"\x00\xff", "ts": 0, "command_id": "c"}
    with pytest.raises(BadRecord) as info:
        to_command(schema, record, 0)
    assert info.value.code == "not_a_command"


@given(
    st.sampled_from(sorted(COMMAND_SCHEMAS)),
    st.dictionaries(
        st.sampled_from(["command_id", "account", "from", "to", "amount", "user", "currency"]),
        st.one_of(st.none(), st.integers(), st.binary(max_size=4), st.lists(st.none())),
    ),
)
def test_wrongly_typed_command_records(schema: str, record: dict[str, Any]) -> None:
    with pytest.raises(BadRecord) as info:
        to_command(schema, record, 0)
    assert info.value.code == "bad_field"


STEPS = ("credit", "settle", "void", "reserve_user", "user_reserved", "user_taken", "relate")
saga_values = st.one_of(
    st.none(),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(("USD", "JPY", "XXX", "credit_account_not_found", "nope")),
    st.sampled_from(("1.00", "-3", "\uff11", "1_0", "NaN", "1e3", "")),
    avro_strings,
)


@given(
    st.fixed_dictionaries(
        {
            "step": st.one_of(st.sampled_from((*STEPS, "unrelate", "explode")), avro_strings),
            "command_id": avro_strings,
            "command_type": avro_strings,
            "digest": avro_strings,
            "target": avro_strings,
            "account": saga_values,
            "other": saga_values,
            "user": saga_values,
            "currency": saga_values,
            "amount": saga_values,
            "kind": saga_values,
            "reason": saga_values,
            "ts": timestamps,
        }
    )
)
def test_hostile_saga_steps(record: dict[str, Any]) -> None:
    try:
        step = to_saga_step(record)
    except BadRecord as exc:
        assert exc.code in BAD_RECORD_CODES, exc.code
        return
    assert isinstance(step.key, str)
    assert step.key.startswith("@") == isinstance(step, m.ReserveUser)


@pytest.mark.parametrize("missing", ["amount", "other", "currency", "ts", "digest", "step"])
def test_saga_steps_with_holes(missing: str) -> None:
    """Regression: a credit step without an amount raised AttributeError (not dead-lettered)."""
    record = {
        "step": "credit",
        "command_id": "t1",
        "command_type": "transfer",
        "digest": "d",
        "target": "a2",
        "account": "a1",
        "other": "a2",
        "currency": "USD",
        "amount": "1.00",
        "ts": 0,
    }
    to_saga_step(record)
    record[missing] = None
    with pytest.raises(BadRecord):
        to_saga_step(record)
    del record[missing]
    with pytest.raises(BadRecord):
        to_saga_step(record)
