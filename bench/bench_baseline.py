#!/usr/bin/env python
"""Raw Kafka baseline: a plain transactional consume -> produce copy loop (no domain logic).

Same message count and size as the write-side throughput run (one command per transfer),
same batch size per transaction, timed the same way (from the first produce until the last
record is committed): the ceiling paystream's exactly-once loop is compared with.
"""

from __future__ import annotations

import argparse
import os
import time

from common import emit, namespace, private_broker
from confluent_kafka import Consumer, Producer, TopicPartition

from base.config import Limits
from base.topics import TopicNames


def copy_loop(settings, n: int, size: int, batch: int) -> dict:  # type: ignore[no-untyped-def]
    names = TopicNames(settings.topic_prefix)
    src, dst = names.commands, names.saga
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    payload = os.urandom(size)
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(src, payload, f"acct-{i % 10000}".encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)
    c = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": settings.topic_prefix + "baseline",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
        }
    )
    tp = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": settings.topic_prefix + "baseline",
            "linger.ms": Limits().transaction_linger_ms,
            "retry.backoff.ms": Limits().transaction_retry_backoff_ms,
            "retry.backoff.max.ms": Limits().transaction_retry_backoff_max_ms,
            "compression.type": "lz4",
            "batch.num.messages": 10_000,
        }
    )
    tp.init_transactions(30)
    c.subscribe([src])
    copied = 0
    while copied < n:
        msgs = c.consume(batch, timeout=0.1)
        if not msgs:
            continue
        tp.begin_transaction()
        offsets: dict[int, int] = {}
        for m in msgs:
            if m.error():
                continue
            tp.produce(dst, m.value(), m.key(), m.partition())
            offsets[m.partition()] = m.offset() + 1
            copied += 1
        tp.send_offsets_to_transaction(
            [TopicPartition(src, q, o) for q, o in offsets.items()], c.consumer_group_metadata(), 30
        )
        tp.commit_transaction(60)
    elapsed = time.perf_counter() - start
    c.close()
    return {
        "name": "raw_transactional_copy",
        "messages": copied,
        "bytes_per_message": size,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "messages_per_s": round(copied / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=50_000, help="as many as the EOS run")
    ap.add_argument("--size", type=int, default=120, help="bytes, about an Avro command")
    ap.add_argument("--batch", type=int, default=Limits().batch_records_max)
    a = ap.parse_args()
    with private_broker() as cluster:
        emit(copy_loop(namespace(cluster), a.messages, a.size, a.batch))


if __name__ == "__main__":
    main()
