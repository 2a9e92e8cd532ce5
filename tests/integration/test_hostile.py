"""Hostile input straight onto the commands topic: no worker crashes, nothing blocks.

Every bad record ends as a rejection outcome or a dead-letter record with its reason, and a
good command behind it on the same partition is still applied.
"""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Producer

from paystream import queries
from schemas.codec import Codec
from streams.partitioner import partition_for
from tests.stack import LedgerStack, cli

pytestmark = pytest.mark.integration


def test_poison_never_blocks_a_partition(settings, topics) -> None:  # type: ignore[no-untyped-def]
    stack = LedgerStack(settings, workers=1)
    stack.start()
    try:
        assert (
            stack.send(
                [
                    {
                        "type": "open_account",
                        "command_id": "o",
                        "account": "victim",
                        "user": "u",
                        "currency": "USD",
                    }
                ]
            )
            == 0
        )
        stack.wait()
        codec = Codec.default()
        p = Producer({"bootstrap.servers": settings.bootstrap})
        part = partition_for("victim", settings.partitions)
        bad_values = [
            b"",  # empty
            b"not avro at all",
            b"\xc3\x01" + b"\x00" * 8 + b"\x02x",  # unknown fingerprint
            codec.encode("Deposit", {"command_id": "t1", "account": "victim", "amount": "5.00"})[
                :-3
            ],  # truncated
            codec.encode(
                "LedgerPosting",
                {  # a valid record of the wrong kind
                    "event_id": "e",
                    "entry_id": "e",
                    "command_id": "c",
                    "transfer_id": None,
                    "account": "victim",
                    "counterparty": "x",
                    "currency": "USD",
                    "amount": "1",
                    "balance_after": None,
                    "account_seq": 0,
                    "kind": "deposit",
                    "ts": 0,
                },
            ),
            codec.encode(
                "Deposit", {"command_id": "big", "account": "v" * 1_000_00, "amount": "1"}
            ),
        ]
        for v in bad_values:
            p.produce(topics.commands, v, b"victim", part)
        odd_amounts = [
            "NaN",
            "-1",
            "1e9",
            "9" * 60,
            "0x10",
            "\uff11\uff12",  # fullwidth digits
            "1,00",
            "'; DROP TABLE x; --",
            "$(rm -rf /)",
        ]
        for i, a in enumerate(odd_amounts):
            p.produce(
                topics.commands,
                codec.encode(
                    "Deposit", {"command_id": f"odd-{i}", "account": "victim", "amount": a}
                ),
                b"victim",
                part,
            )
        p.produce(
            topics.commands,
            codec.encode("Deposit", {"command_id": "good", "account": "victim", "amount": "7.00"}),
            b"victim",
            part,
        )
        p.flush(10)
        stack.wait()
        assert stack.balances()["victim"]["balance"] == "7.00"
        dead = [codec.decode(m.value())[1] for m in queries.scan(settings, topics.deadletter)]
        assert len(dead) == len(bad_values)
        assert all(d["reason"] and d["error_code"] for d in dead)
        outcomes = {o["command_id"]: o for o in stack.outcomes()}
        for i in range(len(odd_amounts)):
            assert outcomes[f"odd-{i}"]["status"] == "rejected"
            assert outcomes[f"odd-{i}"]["reason"].startswith("amount_")
        assert outcomes["good"]["status"] == "accepted"
        # The worker that saw all this is still the one running.
        status = json.loads(cli(settings, "status", "--json").stdout)
        assert all(p["alive"] for p in status["processes"] if p["name"].startswith("ledger"))
    finally:
        stack.stop()
