#!/usr/bin/env python
"""What one Kafka transaction costs, per call, with the worker's producer settings and others.

The measurement of issue 17's table, repeatable: for each setting, ``--transactions``
transactions, each ``--records`` records spread over 4 topics x 12 partitions, plus consumer
offsets for 12 partitions (what a ledger batch sends). Per call: ``send_offsets_to_transaction``
and ``commit_transaction`` (p50/p95 ms), the whole transaction from ``begin`` to the end of the
commit, and transactions per second. The ``worker`` setting is the ledger worker's own
(``base.config.Limits``); the others are for comparison.

One JSON line per setting: {"name": "transaction_cost", "setting", ...}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from common import emit, namespace, private_broker
from confluent_kafka import Consumer, Producer, TopicPartition

from base.config import Limits
from base.topics import TopicNames

_LIMITS = Limits()
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults, linger.ms=100": {"linger.ms": 100},
    "defaults, linger.ms=5": {"linger.ms": 5},
    "worker": {
        "linger.ms": _LIMITS.transaction_linger_ms,
        "retry.backoff.ms": _LIMITS.transaction_retry_backoff_ms,
        "retry.backoff.max.ms": _LIMITS.transaction_retry_backoff_max_ms,
    },
    "retry.backoff.ms=1, linger.ms=0": {"linger.ms": 0, "retry.backoff.ms": 1},
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def measure(settings: Any, label: str, conf: dict[str, Any], n: int, records: int) -> dict:  # type: ignore[type-arg]
    names = TopicNames(settings.topic_prefix)
    topics = [names.ledger, names.outcomes, names.transfers, names.ledger_state]
    group = f"{settings.topic_prefix}txn-probe-{os.urandom(3).hex()}"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap, "group.id": group})
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": group,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
            **conf,
        }
    )
    producer.init_transactions(30)
    meta = consumer.consumer_group_metadata()
    payload = os.urandom(150)
    send_ms: list[float] = []
    commit_ms: list[float] = []
    whole_ms: list[float] = []
    for t in range(n + 3):  # the first three warm the connections up; not counted
        t0 = time.perf_counter()
        producer.begin_transaction()
        for i in range(records):
            producer.produce(topics[i % 4], payload, f"k{i}".encode(), (i // 4) % 12)
        offsets = [TopicPartition(names.commands, p, t * 100 + 1) for p in range(12)]
        t1 = time.perf_counter()
        producer.send_offsets_to_transaction(offsets, meta, 30)
        t2 = time.perf_counter()
        producer.commit_transaction(60)
        t3 = time.perf_counter()
        if t >= 3:
            send_ms.append((t2 - t1) * 1000)
            commit_ms.append((t3 - t2) * 1000)
            whole_ms.append((t3 - t0) * 1000)
    consumer.close()
    return {
        "name": "transaction_cost",
        "setting": label,
        "producer_config": conf,
        "transactions": n,
        "records_per_transaction": records,
        "send_offsets_p50_ms": pct(send_ms, 0.5),
        "send_offsets_p95_ms": pct(send_ms, 0.95),
        "commit_p50_ms": pct(commit_ms, 0.5),
        "commit_p95_ms": pct(commit_ms, 0.95),
        "transaction_p50_ms": pct(whole_ms, 0.5),
        "transaction_p95_ms": pct(whole_ms, 0.95),
        "transactions_per_s": round(1000 / statistics.mean(whole_ms), 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transactions", type=int, default=40)
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append")
    a = ap.parse_args()
    with private_broker() as cluster:
        settings = namespace(cluster)
        for label, conf in SETTINGS.items():
            if a.only and label not in a.only:
                continue
            emit(measure(settings, label, conf, a.transactions, a.records))


if __name__ == "__main__":
    main()
