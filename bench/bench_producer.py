#!/usr/bin/env python
"""Producer throughput: Avro-encoded Transfer commands to the commands topic.

Usage::

    python bench/bench_producer.py [--bootstrap HOST:PORT] [--prefix bench.] [--commands N]

The records are built before the clock starts; encoding, producing and the final flush
(every record acknowledged by the broker) are timed. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from pathlib import Path

# Runnable as `python bench/bench_producer.py` from a checkout that is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka.admin import AdminClient

from base.config import Settings, load_settings
from base.logs import configure_logging
from ops.topics import ensure_topics
from producers.producer import CommandProducer

TARGET_PER_S = 100_000
ACCOUNTS = 10_000


def _records(n: int) -> list[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    return [
        {
            "command_id": f"bench-{run}-{i}",
            "from": f"acct-{i % ACCOUNTS}",
            "to": f"acct-{(i * 7919 + 1) % ACCOUNTS}",
            "amount": f"{1 + i % 500}.{i % 100:02d}",
        }
        for i in range(n)
    ]


def run(bootstrap: str, prefix: str, commands: int, partitions: int) -> dict[str, object]:
    brokers = len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).brokers)
    ensure_topics(bootstrap, prefix, partitions=partitions, brokers=max(1, brokers))
    settings = Settings(home=Path.cwd(), bootstrap=bootstrap, topic_prefix=prefix)
    records = _records(commands)
    producer = CommandProducer(settings, client_id="paystream-bench")
    # Connect and fetch metadata before the clock starts: that is start-up, not throughput.
    producer.send_record("Transfer", "warm-up", {**records[0], "command_id": "warm-up"})
    if producer.flush(30) != 0:
        raise SystemExit(f"broker at {bootstrap} did not acknowledge the warm-up record")
    before = producer.delivered

    send = producer.send_record
    start = time.perf_counter()
    for record in records:
        send("Transfer", record["from"], record)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - start

    delivered = producer.delivered - before
    if remaining or producer.failed or delivered != commands:
        raise SystemExit(
            f"only {delivered} of {commands} delivered ({producer.failed} failed, {remaining} queued)"
        )
    return {
        "name": "producer",
        "commands": commands,
        "seconds": round(seconds, 3),
        "commands_per_s": round(commands / seconds),
        "target_per_s": TARGET_PER_S,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=load_settings().bootstrap or "127.0.0.1:9092")
    parser.add_argument("--prefix", default="bench.")
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=12)
    args = parser.parse_args(argv)
    configure_logging(logging.WARNING)
    result = run(args.bootstrap, args.prefix, args.commands, args.partitions)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
