"""The ledger side of payments end to end: a real worker process, the real broker, the six
payment commands as the payments workers send them (Avro on the commands topic, with
``reply_to``), the replies on the payments topic, balances and the replay audit."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from base.kafka import scan
from base.topics import TopicNames
from paystream import queries
from producers.producer import CommandProducer
from schemas.codec import Codec
from streams.ledger.money import parse_signed
from streams.partitioner import partition_for
from tests.stack import LedgerStack, cli

pytestmark = pytest.mark.integration

ACCOUNT = "acct-pay"


@pytest.fixture
def stack(settings):  # type: ignore[no-untyped-def]
    s = LedgerStack(settings, workers=1)
    s.start()
    yield s
    s.stop()


def payment(schema: str, order: str, step: str, reply_to: str | None, **fields: Any) -> Any:
    record: dict[str, Any] = {
        "command_id": f"{order}/{step}",
        "account": ACCOUNT,
        "payment_order_id": order,
        **fields,
        "reply_to": reply_to,
    }
    return schema, record


# In log order: ((schema, record), the answer: None for accepted, "duplicate" for none at all).
SCRIPT = [
    (
        payment("AuthorizePayin", "in-1/1", "authorize", "in-1", amount="20.00", currency="USD"),
        None,
    ),
    (payment("SettlePayin", "in-1/1", "settle", "in-1", psp="cardco"), None),
    (payment("AuthorizePayin", "in-2/1", "authorize", "in-2", amount="7.00", currency="USD"), None),
    (payment("CancelPayin", "in-2/1", "cancel", "in-2", reason="card_declined"), None),
    (payment("HoldPayout", "out-1/1", "hold", "out-1", amount="15.00", currency="USD"), None),
    (payment("VoidPayout", "out-1/1", "void", "out-1", reason="psp_unavailable"), None),
    (payment("HoldPayout", "out-2/1", "hold", "out-2", amount="30.00", currency="USD"), None),
    (payment("PostPayout", "out-2/1", "post", "out-2", psp="bankco"), None),
    (payment("HoldPayout", "out-3/1", "hold", "out-3", amount="10.00", currency="USD"), None),
    # Refusals reach the payment too.
    (payment("SettlePayin", "in-9/1", "settle", "in-9", psp="cardco"), "payment_order_not_found"),
    (
        payment("HoldPayout", "out-4/1", "hold", "out-4", amount="999.00", currency="USD"),
        "insufficient_funds",
    ),
    # Without reply_to: an answer on the outcomes topic only.
    (payment("AuthorizePayin", "in-3/1", "authorize", None, amount="1.00", currency="USD"), None),
    # A redo of the settle: a duplicate, no second posting, no second answer.
    (payment("SettlePayin", "in-1/1", "settle", "in-1", psp="cardco"), "duplicate"),
]


def test_payment_commands_post_and_reply(stack: LedgerStack) -> None:
    settings = stack.settings
    names = TopicNames(settings.topic_prefix)
    opening = [
        {
            "type": "open_account",
            "command_id": "open-pay",
            "account": ACCOUNT,
            "user": "u-pay",
            "currency": "USD",
        },
        {"type": "deposit", "command_id": "dep-pay", "account": ACCOUNT, "amount": "50.00"},
    ]
    assert stack.send(opening) == 0
    stack.wait()
    producer = CommandProducer(settings, client_id="test-payments")
    try:
        for (schema, record), _ in SCRIPT:
            producer.send_record(schema, ACCOUNT, record)
        assert producer.flush(30) == 0
    finally:
        producer.close(5)
    stack.wait()

    # Every command but the duplicate has one outcome, the expected one.
    outcomes = {o["command_id"]: o for o in stack.outcomes()}
    assert len(outcomes) == len(stack.outcomes())
    for (_, record), answer in SCRIPT[:-1]:
        o = outcomes[record["command_id"]]
        assert (o["reason"] or o["status"]) == (answer or "accepted"), o
        assert o["reply_to"] == record["reply_to"]
    assert len(outcomes) == 2 + len(SCRIPT) - 1

    # The answers to payments: on the payments topic, keyed and partitioned by the reply key,
    # each the same record as its outcome, none for the command without reply_to.
    codec = Codec.default()
    replies = []
    for msg in scan(settings, names.payments):
        key = (msg.key() or b"").decode()
        schema, record = codec.decode(msg.value() or b"")
        assert schema == "CommandOutcome"
        assert msg.partition() == partition_for(key, settings.partitions)
        replies.append((key, record))
    expected = [
        (r["reply_to"], outcomes[r["command_id"]])
        for (_, r), answer in SCRIPT[:-1]
        if r["reply_to"] is not None
    ]
    assert sorted(replies, key=lambda kv: kv[1]["command_id"]) == sorted(
        expected, key=lambda kv: kv[1]["command_id"]
    )

    # Balances: 50 + 20 (pay-in) - 15 + 15 (held, voided) - 30 (paid out) - 10 (held) = 30.
    view = queries.account(settings, ACCOUNT)
    assert view is not None
    assert (view["balance"], view["held"], view["payouts_held"]) == ("30.00", "0.00", "10.00")
    shown = json.loads(cli(settings, "balance", ACCOUNT, "--json").stdout)
    assert (shown["balance"], shown["payouts_held"]) == ("30.00", "10.00")

    # The ledger log alone: zero-sum, gapless, equal to the live state; the system accounts
    # hold what the PSPs owe and what is being paid out.
    r = queries.replay(settings)
    assert r.problems == [] and r.duplicates == 0
    assert queries.verify(settings, r) == []
    assert {a: b for a, b in r.balances.items() if b} == {
        ACCOUNT: 3000,
        "@world/USD": -5000,
        "@psp/cardco/USD": -2000,  # collected 20.00 for us
        "@psp/bankco/USD": 3000,  # paid 30.00 out for us
        "@payout/USD": 1000,  # out-3, held
    }
    assert r.seqs[ACCOUNT] == 6  # deposit, settle, hold, void, hold, hold (a post has no leg here)
    kinds: dict[str, int] = defaultdict(int)
    entries: dict[str, int] = defaultdict(int)
    for msg in scan(settings, names.ledger):
        p = codec.decode(msg.value() or b"")[1]
        kinds[p["kind"]] += 1
        entries[p["entry_id"]] += parse_signed(p["amount"], p["currency"])
    assert dict(kinds) == {
        "deposit": 2,
        "payin": 2,
        "payout_hold": 6,
        "payout_void": 2,
        "payout_post": 2,
    }
    assert all(total == 0 for total in entries.values())
    verified = cli(settings, "replay", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
