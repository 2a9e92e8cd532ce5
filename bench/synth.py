"""Synthetic ledger postings (valid: zero-sum entries, gapless sequences) for read-path benches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from confluent_kafka import Producer

from base.config import Settings
from base.topics import TopicNames
from schemas.codec import Codec
from streams.ledger.money import format_amount
from streams.partitioner import partition_for


def postings(n_entries: int, accounts: int) -> Iterator[dict[str, Any]]:
    """Deposits of 1.00 into accounts round-robin: two postings per entry."""
    seq = [0] * accounts
    bal = [0] * accounts
    for i in range(n_entries):
        a = i % accounts
        seq[a] += 1
        bal[a] += 100
        entry = f"acct-{a}/dep-{i}/deposit"
        common = {
            "entry_id": entry,
            "command_id": f"dep-{i}",
            "transfer_id": None,
            "currency": "USD",
            "kind": "deposit",
            "ts": 1_795_000_000_000_000 + i,
        }
        yield {
            **common,
            "event_id": entry + "/d",
            "account": "@world/USD",
            "counterparty": f"acct-{a}",
            "amount": "-1.00",
            "balance_after": None,
            "account_seq": 0,
        }
        yield {
            **common,
            "event_id": entry + "/c",
            "account": f"acct-{a}",
            "counterparty": "@world/USD",
            "amount": "1.00",
            "balance_after": format_amount(bal[a], "USD"),
            "account_seq": seq[a],
        }


def produce_postings(settings: Settings, n_entries: int, accounts: int) -> int:
    topic = TopicNames(settings.topic_prefix).ledger
    codec = Codec.default()
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000,
            "batch.num.messages": 10_000,
        }
    )
    n = 0
    for rec in postings(n_entries, accounts):
        while True:
            try:
                p.produce(
                    topic,
                    codec.encode("LedgerPosting", rec),
                    rec["account"].encode(),
                    partition_for(rec["account"], settings.partitions),
                )
                break
            except BufferError:
                p.poll(0.05)
        n += 1
    p.flush(120)
    return n
