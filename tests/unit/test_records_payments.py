"""The payment commands on the wire: Avro records <-> domain, replies to the payments topic,
the account state's changelog encoding, and CommandOutcome's reply_to across versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from schemas.codec import Codec
from streams.ledger import model as m
from streams.ledger.rejections import Rejection
from streams.records import (
    BadRecord,
    command_record,
    decode_state,
    encode_state,
    to_command,
    to_records,
)

CODEC = Codec.default()
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

PAYMENT_RECORDS: list[tuple[str, dict[str, Any]]] = [
    (
        "AuthorizePayin",
        {
            "command_id": "pay-1/1/authorize",
            "account": "acct-1",
            "payment_order_id": "pay-1/1",
            "amount": "12.50",
            "currency": "USD",
            "reply_to": "pay-1",
        },
    ),
    (
        "SettlePayin",
        {
            "command_id": "pay-1/1/settle",
            "account": "acct-1",
            "payment_order_id": "pay-1/1",
            "psp": "cardco",
            "reply_to": None,
        },
    ),
    (
        "CancelPayin",
        {
            "command_id": "pay-1/1/cancel",
            "account": "acct-1",
            "payment_order_id": "pay-1/1",
            "reason": "card_declined",
            "reply_to": "pay-1",
        },
    ),
    (
        "HoldPayout",
        {
            "command_id": "pay-2/1/hold",
            "account": "acct-é",
            "payment_order_id": "pay-2/1",
            "amount": "100",
            "currency": "JPY",
            "reply_to": "pay-2",
        },
    ),
    (
        "PostPayout",
        {
            "command_id": "pay-2/1/post",
            "account": "acct-é",
            "payment_order_id": "pay-2/1",
            "psp": "bankco",
            "reply_to": "pay-2",
        },
    ),
    (
        "VoidPayout",
        {
            "command_id": "pay-2/1/void",
            "account": "acct-é",
            "payment_order_id": "pay-2/1",
            "reason": None,
            "reply_to": None,
        },
    ),
]
TYPES = {
    "AuthorizePayin": (m.AuthorizePayin, "authorize_payin"),
    "SettlePayin": (m.SettlePayin, "settle_payin"),
    "CancelPayin": (m.CancelPayin, "cancel_payin"),
    "HoldPayout": (m.HoldPayout, "hold_payout"),
    "PostPayout": (m.PostPayout, "post_payout"),
    "VoidPayout": (m.VoidPayout, "void_payout"),
}


@pytest.mark.parametrize(("schema", "record"), PAYMENT_RECORDS, ids=[s for s, _ in PAYMENT_RECORDS])
def test_payment_commands_round_trip(schema: str, record: dict[str, Any]) -> None:
    # Avro -> domain
    name, decoded = CODEC.decode(CODEC.encode(schema, record))
    cmd = to_command(name, decoded, 1_700_000_000_000_000)
    cls, command_type = TYPES[schema]
    assert isinstance(cmd, cls)
    assert (cmd.command_type, cmd.key, cmd.reply_to) == (
        command_type,
        record["account"],
        record["reply_to"],
    )
    assert cmd.payment_order_id == record["payment_order_id"]
    # domain -> Avro -> domain: the same command, digest included (a deferred one keeps it)
    back_schema, back = command_record(cmd)
    assert (back_schema, back) == (schema, record)
    assert list(back) == [f["name"] for f in CODEC.schema(schema)["fields"]]
    again = to_command(*CODEC.decode(CODEC.encode(back_schema, back)), cmd.ts)
    assert again == cmd


def test_reply_to_is_part_of_the_payload() -> None:
    schema, record = PAYMENT_RECORDS[0]
    a = to_command(schema, record, 0)
    b = to_command(schema, {**record, "reply_to": "other"}, 0)
    assert a.digest != b.digest


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("reply_to", 5, "bad_field"),
        ("payment_order_id", None, "bad_field"),
        ("psp", None, "bad_field"),
        ("reply_to", "p" * 129, "id_too_long"),
        ("payment_order_id", "p" * 129, "id_too_long"),
        ("account", "@user/u1", "reserved_key"),
    ],
)
def test_bad_payment_command_records(field: str, value: Any, code: str) -> None:
    record = {**PAYMENT_RECORDS[1][1], field: value}
    with pytest.raises(BadRecord) as info:
        to_command("SettlePayin", record, 0)
    assert info.value.code == code


def test_a_long_psp_is_a_rejection_not_a_dead_letter() -> None:
    cmd = to_command("SettlePayin", {**PAYMENT_RECORDS[1][1], "psp": "x" * 129}, 0)
    assert isinstance(cmd, m.SettlePayin)


# --- outcomes and replies ---


def _outcomes(reply_to: str | None) -> list[m.CommandAccepted | m.CommandRejected]:
    return [
        m.CommandAccepted("p1/1/settle", "settle_payin", "acct-1", "d" * 16, 5, True, reply_to),
        m.CommandRejected(
            "p1/1/settle",
            "settle_payin",
            "acct-1",
            "e" * 16,
            Rejection.exists_with_different_payload,
            5,
            False,
            reply_to,
        ),
        m.CommandRejected(
            "p1/1/hold",
            "hold_payout",
            "acct-1",
            "f" * 16,
            Rejection.insufficient_funds,
            5,
            True,
            reply_to,
        ),
    ]


@pytest.mark.parametrize("event", _outcomes("pay-1"))
def test_an_outcome_with_reply_to_also_goes_to_the_payment(
    event: m.CommandAccepted | m.CommandRejected,
) -> None:
    outs = list(to_records(event))
    assert [(o.topic, o.schema) for o in outs] == [
        ("outcomes", "CommandOutcome"),
        ("payments", "CommandOutcome"),
    ]
    outcome, reply = outs
    assert outcome.key == event.command_id
    assert reply.key == "pay-1"
    assert reply.record == outcome.record
    assert outcome.record["reply_to"] == "pay-1"
    # Both encode with today's schema and read back as written.
    for o in outs:
        assert CODEC.decode(CODEC.encode(o.schema, o.record)) == ("CommandOutcome", o.record)


@pytest.mark.parametrize("event", _outcomes(None))
def test_an_outcome_without_reply_to_goes_to_the_outcomes_topic_only(
    event: m.CommandAccepted | m.CommandRejected,
) -> None:
    outs = list(to_records(event))
    assert [o.topic for o in outs] == ["outcomes"]
    assert outs[0].record["reply_to"] is None


def test_upstream_commands_never_reply() -> None:
    state = m.AccountState("a1", m.Status.open, "u1", "USD", balance=100)
    from streams.ledger import decide

    cmd = to_command("Deposit", {"command_id": "d", "account": "a1", "amount": "1"}, 0)
    topics = [o.topic for e in decide(state, cmd) for o in to_records(e)]
    assert "payments" not in topics and "outcomes" in topics


# --- the account state's changelog encoding ---


def test_state_with_orders_in_flight_round_trips() -> None:
    deferred = to_command(*PAYMENT_RECORDS[0], 3)
    state = m.AccountState(
        "acct-1",
        m.Status.open,
        "u1",
        "USD",
        balance=500,
        held=20,
        seq=4,
        recent=(m.Remembered("p0/1/authorize", "d" * 16, "accepted"),),
        deferred=(deferred,),
        payins=(("p0/1", 1250), ("p9/1", 1)),
        payouts=(("q0/1", 300),),
    )
    assert decode_state(encode_state(state)) == state
    only_payouts = m.AccountState("acct-1", m.Status.blocked, "u1", "USD", payouts=(("q", 1),))
    assert decode_state(encode_state(only_payouts)) == only_payouts


def test_state_without_orders_encodes_as_before() -> None:
    state = m.AccountState("acct-1", m.Status.open, "u1", "USD", balance=5, seq=1)
    assert json.loads(encode_state(state)) == [
        "a",
        "acct-1",
        "open",
        "u1",
        "USD",
        5,
        0,
        1,
        [],
        [],
    ]


@pytest.mark.parametrize(
    "old",
    [
        # Written before payments (and before deferred messages): no orders.
        b'["a","acct-1","open","u1","USD",1234,0,3,[["c1","0123456789abcdef","accepted"]],[]]',
        b'["a","acct-1","blocked","u1","USD",1234,0,3,[]]',
    ],
)
def test_old_states_decode_without_orders(old: bytes) -> None:
    state = decode_state(old)
    assert isinstance(state, m.AccountState)
    assert (state.balance, state.seq, state.payins, state.payouts) == (1234, 3, (), ())


# --- CommandOutcome.reply_to across schema versions ---


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


CURRENT = _load(SCHEMAS / "CommandOutcome.avsc")
V1 = _load(SCHEMAS / "history" / "CommandOutcome.v1.avsc")
OUTCOME = {
    "event_id": "acct-1/p1/1/settle/outcome",
    "command_id": "p1/1/settle",
    "command_type": "settle_payin",
    "account": "acct-1",
    "status": "accepted",
    "reason": None,
    "digest": "0123456789abcdef",
    "reply_to": "pay-1",
    "ts": 1_700_000_000_000_000,
}


def as_fastavro_reads(record: dict[str, Any]) -> dict[str, Any]:
    """fastavro reads a timestamp-micros field as a datetime (our codec keeps the int)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {**record, "ts": epoch + timedelta(microseconds=record["ts"])}


def test_an_old_reader_reads_a_new_outcome_by_schema_resolution() -> None:
    """A consumer that only knows v1 (no reply_to) reads what today's ledger writes."""
    buf = BytesIO()
    schemaless_writer(buf, parse_schema(CURRENT, {}), OUTCOME)
    buf.seek(0)
    read = schemaless_reader(buf, parse_schema(CURRENT, {}), parse_schema(V1, {}))
    assert read == as_fastavro_reads({k: v for k, v in OUTCOME.items() if k != "reply_to"})
    # The same through the codec: an old codec that has learnt the new writer's fingerprint.
    old = Codec(current=[V1])
    old.register(CURRENT)
    data = CODEC.encode("CommandOutcome", OUTCOME)
    assert old.decode(data) == (
        "CommandOutcome",
        {k: v for k, v in OUTCOME.items() if k != "reply_to"},
    )


def test_todays_codec_reads_a_v1_outcome_with_reply_to_null() -> None:
    v1_record = {k: v for k, v in OUTCOME.items() if k != "reply_to"}
    data = Codec(current=[V1]).encode("CommandOutcome", v1_record)
    # The v1 fingerprint is known to today's codec (schemas/history), so it resolves it.
    assert CODEC.decode(data) == ("CommandOutcome", {**v1_record, "reply_to": None})
    buf = BytesIO()
    schemaless_writer(buf, parse_schema(V1, {}), v1_record)
    buf.seek(0)
    read = schemaless_reader(buf, parse_schema(V1, {}), parse_schema(CURRENT, {}))
    assert read == as_fastavro_reads({**v1_record, "reply_to": None})
