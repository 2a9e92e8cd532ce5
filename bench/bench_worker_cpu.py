#!/usr/bin/env python
"""The ledger worker's Python CPU per transfer, without a broker: a stable A/B figure.

The real ``Processor``, ``LedgerAgent`` and rocksdict state, over the in-memory broker of the
deterministic simulation (``tests/sim/fakekafka.py``, whose produce is a list append): what
is left is the worker's own Python work per transfer (decode, decide, evolve, records, Avro,
state encoding, the processor's loop), measured in CPU time of this process, which other load
on the machine disturbs little. librdkafka's share is not in it (``profile_ledger.py`` has
the real worker). ``--pyspy`` profiles the transfer phase and prints the top frames.

One JSON line: {"name": "worker_cpu_in_memory", "cpu_us_per_transfer", ...}.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit
from profile_ledger import PY_SPY, top_frames

from base.config import Limits, Settings
from base.topics import TopicNames
from producers.commands import parse_command
from schemas.codec import Codec
from streams.ledger_agent import LedgerAgent
from streams.partitioner import partition_for
from streams.processor import Clients, Processor
from tests.sim.fakekafka import FakeBroker, FakeConsumer, FakeProducer, Idle, Scheduler

CODEC = Codec.default()


def send(broker: FakeBroker, topics: TopicNames, partitions: int, commands: list[dict]) -> None:  # type: ignore[type-arg]
    for c in commands:
        cmd = parse_command(c)
        value = CODEC.encode(cmd.schema, dict(cmd.record))
        broker.produce_input(topics.commands, partition_for(cmd.key, partitions), cmd.key, value)


def run_until_idle(broker: FakeBroker, settings: Settings) -> Processor:
    group = "paystream-ledger"
    clients = Clients(
        FakeConsumer(broker, group),
        FakeProducer(broker, f"{group}-1"),
        FakeConsumer(broker, f"{group}-restore-1", eof=True),
    )
    proc = Processor(LedgerAgent(), settings, 1, clients=clients)
    try:
        proc.run()
    except Idle:
        pass
    finally:
        proc.watchdog.stop()
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--batch", type=int, default=2_000, help="records per transaction")
    ap.add_argument("--pyspy", action="store_true", help="profile the transfer phase")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="paystream-cpu-"))
    settings = Settings(
        home=home,
        bootstrap="sim:0",
        partitions=a.partitions,
        limits=Limits(batch_records_max=a.batch),
    )
    topics = TopicNames("")
    broker = FakeBroker(list(topics.all().values()), a.partitions, Scheduler())
    opens = []
    for i in range(a.accounts):
        opens.append(
            {
                "type": "open_account",
                "command_id": f"o{i}",
                "account": f"a{i}",
                "user": f"u{i}",
                "currency": "USD",
            }
        )
    send(broker, topics, a.partitions, opens)
    run_until_idle(broker, settings)
    deposits = [
        {"type": "deposit", "command_id": f"d{i}", "account": f"a{i}", "amount": "1000000.00"}
        for i in range(a.accounts)
    ]
    send(broker, topics, a.partitions, deposits)
    run_until_idle(broker, settings)
    n = a.transfers
    send(
        broker,
        topics,
        a.partitions,
        [
            {
                "type": "transfer",
                "command_id": f"t-{i}",
                "from": f"a{i % a.accounts}",
                "to": f"a{(i * 7919 + 1) % a.accounts}",
                "amount": "0.01",
            }
            for i in range(n)
        ],
    )
    spy = None
    raw = home / "pyspy.raw"
    if a.pyspy:
        spy = subprocess.Popen(
            [
                str(PY_SPY),
                "record",
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(raw),
                "-p",
                str(os.getpid()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    proc = run_until_idle(broker, settings)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    posted = sum(1 for _, _, r in broker.records(topics.transfers))
    result: dict[str, object] = {
        "name": "worker_cpu_in_memory",
        "transfers": n,
        "accounts": a.accounts,
        "batch": a.batch,
        "batches": proc.counters.batches,
        "transfer_records": posted,
        "records_out_per_transfer": round(
            sum(len(log) for t in topics.all().values() for log in broker.logs[t]) / n, 2
        ),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_transfer": round(cpu * 1e6 / n, 1),
        "wall_s": round(wall, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if spy is not None and raw.exists():
        result["profile"] = top_frames(raw, a.top)
    emit(result)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
