"""Payment events into the warehouse: real broker, the warehouse process (chDB, its sink), its
ClickHouse HTTP front. Records from the payments core, produced out of order, twice, and next
to poison; the tables must show each snapshot once and the latest version per order/payment."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from confluent_kafka import Producer

from base.config import Settings
from base.kafka import scan
from base.topics import TopicNames
from connectors.sink import SINK_GROUP
from paystream import queries
from schemas.codec import Codec
from streams.agent import Out
from tests.payment_events import flows
from tests.stack import LedgerStack

pytestmark = pytest.mark.integration

CODEC = Codec.default()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "warehouse.md"


@pytest.fixture
def stack(settings: Settings, free_port_base: Callable[[int], int]) -> Iterator[LedgerStack]:
    s = LedgerStack(settings, workers=0)  # no ledger: only the warehouse process
    s.start_warehouse(free_port_base(1))
    yield s
    s.stop()


def _produce(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    topic = TopicNames(settings.topic_prefix).payment_events
    p = Producer({"bootstrap.servers": settings.bootstrap, "partitioner": "murmur2_random"})
    for key, value in values:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def _encoded(outs: list[Out]) -> list[tuple[bytes, bytes]]:
    return [(o.key.encode(), CODEC.encode(o.schema, o.record)) for o in outs]


def _drain(stack: LedgerStack, timeout_s: float = 90) -> None:
    """Until the sink committed every record of the topic (so it inserted them)."""
    s = stack.settings
    topic = TopicNames(s.topic_prefix).payment_events
    deadline = time.monotonic() + timeout_s
    while not queries.caught_up(s, s.topic_prefix + SINK_GROUP, [topic]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the sink did not catch up:\n{stack.logs()}")
        time.sleep(0.2)


def _swap_versions(outs: list[Out], first: str, second: str) -> list[Out]:
    """``outs`` with the records of two event ids trading places (a later version first)."""
    i, j = (
        next(k for k, o in enumerate(outs) if o.record["event_id"] == e) for e in (first, second)
    )
    out = list(outs)
    out[i], out[j] = out[j], out[i]
    return out


def _documented_queries() -> list[str]:
    """The example queries of docs/warehouse.md's Payments section, in order."""
    section = DOCS.read_text().split("\n## Payments\n")[1].split("\n## ")[0]
    return [q.strip().rstrip(";") for q in re.findall(r"```sql\n(.*?)```", section, re.S)]


def test_payment_events_land_once_each_and_the_latest_version_wins(stack: LedgerStack) -> None:
    events = flows().events
    statuses = [o.record for o in events if o.schema == "PaymentStatusChanged"]
    attempts = [o.record for o in events if o.schema == "PaymentAttempt"]
    latest: dict[str, dict[str, Any]] = {}
    for r in statuses:
        if r["version"] > latest.get(r["payment_id"], {"version": 0})["version"]:
            latest[r["payment_id"]] = r

    # Round 1: later versions before earlier ones, a duplicate, and two records the tables
    # cannot take (an amount finer than Decimal(38, 6), a record of another type).
    round1 = _swap_versions(events, "pi-ok/v5", "pi-ok/v6")
    round1 = _swap_versions(round1, "pi-declined/v5", "pi-declined/v6")
    round1 = _swap_versions(round1, "pi-ok/1/2/v2", "pi-ok/1/2/v3")
    poison = {**statuses[0], "event_id": "poison/v1", "payment_id": "poison", "amount": "0.0000001"}
    other = {"source": "x", "reason": "x", "error_code": "x", "payload": b"", "ts": 1}
    _produce(
        stack.settings,
        [
            *_encoded(round1[:5]),
            *_encoded(round1[4:5]),  # the same record again, in the same batch
            (b"poison", CODEC.encode("PaymentStatusChanged", poison)),
            (b"poison", CODEC.encode("DeadLetter", other)),
            *_encoded(round1[5:]),
        ],
    )
    _drain(stack)
    # Round 2: everything again, newest first, in later batches: a sink replay's duplicates,
    # which only the tables' deduplication can drop (the insert tokens differ).
    _produce(stack.settings, _encoded(events[::-1]))
    _drain(stack)

    ch = clickhouse_connect.get_client(host="127.0.0.1", port=stack.warehouse_port)

    counts = ch.query(
        "SELECT event_id, count() FROM payment_status_changes FINAL GROUP BY event_id"
    ).result_rows
    assert {e: n for e, n in counts} == {r["event_id"]: 1 for r in statuses}
    row = ch.query(
        "SELECT amount, ledger_updated, is_complete, psp, reason, toUnixTimestamp64Micro(ts)"
        " FROM payment_status_changes FINAL WHERE event_id = 'pi-ok/v6'"
    ).result_rows
    assert row == [(Decimal("10.5"), True, True, "backupcard", None, latest["pi-ok"]["ts"])]

    orders = ch.query(
        "SELECT payment_order_id, payment_order_status, version, psp, psp_status, ledger_updated,"
        " wallet_updated, amount, reason, user_id, type, toUnixTimestamp64Micro(ts)"
        " FROM payment_orders FINAL"
    ).result_rows
    assert {o[0]: o[1:] for o in orders} == {
        r["payment_order_id"]: (
            r["status"],
            r["version"],
            r["psp"],
            r["psp_status"],
            r["ledger_updated"],
            r["wallet_updated"],
            Decimal(r["amount"]),
            r["reason"],
            r["user_id"],
            r["type"],
            r["ts"],
        )
        for r in latest.values()
    }
    assert len(orders) == 4  # one row per order with FINAL

    requests = ch.query(
        "SELECT payment_id, is_complete, version, user_id, payment_option, type"
        " FROM payment_requests FINAL"
    ).result_rows
    assert {r[0]: r[1:] for r in requests} == {
        p: (r["is_complete"], r["version"], r["user_id"], r["payment_option"], r["type"])
        for p, r in latest.items()
    }
    assert {r[0]: r[1] for r in requests} == {
        "pi-ok": True,
        "pi-declined": True,
        "po-rejected": True,
        "pi-stuck": False,
    }

    snapshots = ch.query(
        "SELECT event_id, attempt, version, psp, phase, outcome, candidates"
        " FROM payment_attempts FINAL"
    ).result_rows
    assert sorted(map(tuple, snapshots)) == sorted(
        (
            a["event_id"],
            a["attempt"],
            a["version"],
            a["psp"],
            a["phase"],
            a["outcome"],
            a["candidates"],
        )
        for a in attempts
    )

    topics = TopicNames(stack.settings.topic_prefix)
    deadline = time.monotonic() + 30
    while True:  # dead letters are produced asynchronously by the sink
        dead = [CODEC.decode(m.value() or b"")[1] for m in scan(stack.settings, topics.deadletter)]
        if len(dead) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(dead) == 2 and all(d["source"].startswith(topics.payment_events) for d in dead)
    assert any("6 decimal places" in d["reason"] for d in dead)
    assert any("DeadLetter" in d["reason"] for d in dead)

    # The documented analyst queries run over HTTP and say what they should of these flows.
    docs = _documented_queries()
    assert len(docs) == 5
    history, by_psp, rates, fallbacks, stuck = (ch.query(sql).result_rows for sql in docs)
    assert [h[:2] for h in history] == [(r["version"], r["status"]) for r in statuses[:6]]
    assert sorted(by_psp, key=str) == sorted(
        [
            ("backupcard", "succeeded", "USD", 1, Decimal("10.5")),
            ("cardco", "failed", "USD", 1, Decimal(7)),
            ("cardco", "processing", "USD", 1, Decimal("1.25")),
            (None, "rejected", "USD", 1, Decimal(99)),
        ],
        key=str,
    )
    # cardco: a failed token (pi-ok) and a decline; backupcard: pi-ok's success.
    assert [(r[1], r[2], r[3]) for r in rates] == [("backupcard", 1, 1), ("cardco", 2, 0)]
    assert fallbacks == [
        (
            "pi-ok/1",
            2,
            [
                (1, "cardco", "token_failed", "psp_unavailable"),
                (2, "backupcard", "succeeded", None),
            ],
        )
    ]
    assert [(s[0], s[1]) for s in stuck] == [("pi-stuck/1", "processing")]
