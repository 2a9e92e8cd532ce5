#!/usr/bin/env python
"""Write-side throughput and latency, end to end through the real broker and worker processes.

* throughput: N transfers produced as fast as possible; time from the first produce until
  every transfer is posted (both legs) and settled (``wait``). Exactly-once and at-least-once.
* latency: transfers offered at a steady rate; per transfer, the time from its produce to
  its ``posted`` lifecycle event becoming visible to a read_committed consumer.
"""

from __future__ import annotations

import argparse
import os
import re
import threading
import time
import uuid

from common import Workers, emit, namespace, now, private_broker
from confluent_kafka import Consumer

from base.config import Limits
from base.topics import TopicNames
from paystream import queries
from producers.commands import parse_command
from producers.producer import CommandProducer


def setup_accounts(settings, accounts: int) -> None:  # type: ignore[no-untyped-def]
    with CommandProducer(settings) as p:
        for i in range(accounts):
            p.send(
                parse_command(
                    {
                        "type": "open_account",
                        "command_id": f"o{i}",
                        "account": f"a{i}",
                        "user": f"u{i}",
                        "currency": "USD",
                    }
                )
            )
            p.send(
                parse_command(
                    {
                        "type": "deposit",
                        "command_id": f"d{i}",
                        "account": f"a{i}",
                        "amount": "1000000.00",
                    }
                )
            )
        p.flush(60)
    if not queries.wait(settings, 600):
        raise SystemExit("set-up did not finish")


def transfers(n: int, accounts: int, tag: str) -> list:  # type: ignore[type-arg]
    return [
        parse_command(
            {
                "type": "transfer",
                "command_id": f"{tag}-{i}",
                "from": f"a{i % accounts}",
                "to": f"a{(i * 7919 + 1) % accounts}",
                "amount": "0.01",
            }
        )
        for i in range(n)
    ]


def throughput(cluster, guarantee: str, workers: int, n: int, accounts: int) -> dict:  # type: ignore[no-untyped-def]
    settings = namespace(cluster, guarantee=guarantee)
    w = Workers(settings, workers)
    w.start()
    try:
        setup_accounts(settings, accounts)
        cmds = transfers(n, accounts, uuid.uuid4().hex[:6])
        cpu_before = w.cpu_s()
        start = now()
        with CommandProducer(settings) as p:
            for c in cmds:
                p.send(c)
            p.flush(120)
        produced = now() - start
        if not queries.wait(settings, 900):
            raise SystemExit("throughput run did not finish")
        elapsed = now() - start
        cpu = w.cpu_s() - cpu_before
        rss = w.rss_mb()
        peak = w.peak_rss_mb()
    finally:
        w.stop()
    return {
        "name": f"ledger_throughput_{guarantee}",
        "transfers": n,
        "workers": workers,
        "seconds": round(elapsed, 2),
        "produce_seconds": round(produced, 2),
        "transfers_per_s": round(n / elapsed),
        "worker_cpu_s": round(cpu, 2),
        "transfers_per_worker_cpu_s": round(n / cpu) if cpu > 0 else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "target_per_s": 10_000 if guarantee == "exactly_once" else None,
        "worker_rss_mb": rss,
        "worker_peak_rss_mb": peak,
    }


def latency(
    cluster, rate: int, seconds: float, workers: int, accounts: int, warmup_s: float
) -> dict:  # type: ignore[no-untyped-def]
    """Produce -> posted at a steady rate. The first ``warmup_s`` of sends are reported apart
    (the bench's producer getting its id, the first transactions). Where a worker's batch time
    goes (build, send_offsets, commit) comes from the workers' stats lines of the run."""
    settings = namespace(cluster)
    w = Workers(settings, workers, log_level="INFO")
    w.start()
    try:
        setup_accounts(settings, accounts)
        # The set-up's batches are in the next stats line: let it be written, then mark.
        time.sleep(Limits().worker_stats_interval_s + 1)
        marks = {name: len(_log(w, name)) for name in _worker_names(workers)}
        n = int(rate * seconds)
        warm_n = int(rate * warmup_s)
        cmds = transfers(warm_n + n, accounts, "lat")
        warm_ids = {c.record["command_id"] for c in cmds[:warm_n]}
        sent_at: dict[str, float] = {}
        seen: dict[str, float] = {}
        done = threading.Event()

        def watch() -> None:
            c = Consumer(
                {
                    "bootstrap.servers": settings.bootstrap,
                    "group.id": f"lat-{uuid.uuid4().hex}",
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 5,
                    "enable.auto.commit": False,
                }
            )
            from schemas.codec import Codec

            codec = Codec.default()
            c.subscribe([TopicNames(settings.topic_prefix).transfers])
            while not done.is_set() or len(seen) < len(cmds):
                # consume() waits out its whole timeout unless 1,000 records come, which
                # added up to 100 ms to every latency at these rates: wait for one record,
                # then take what else is there at once.
                first = c.poll(0.1)
                for m in [] if first is None else [first, *c.consume(1000, timeout=0)]:
                    if m.error():
                        continue
                    rec = codec.decode(m.value())[1]
                    if rec["status"] == "posted":
                        seen.setdefault(rec["transfer_id"], time.perf_counter())
                if done.is_set() and time.perf_counter() > deadline:
                    break
            c.close()

        deadline = float("inf")
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        time.sleep(3)  # the watcher joins its group
        with CommandProducer(settings, config={"linger.ms": 1}) as p:
            start = time.perf_counter()
            for i, c in enumerate(cmds):
                target = start + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent_at[c.record["command_id"]] = time.perf_counter()
                p.send(c)
                p.poll(0)
            p.flush(60)
        deadline = time.perf_counter() + 60
        done.set()
        t.join(90)
        time.sleep(Limits().worker_stats_interval_s)  # the last interval's stats line
    finally:
        w.stop()
    batches = worker_batches({name: _log(w, name)[mark:] for name, mark in marks.items()})
    warm = sorted((seen[k] - sent_at[k]) * 1000 for k in warm_ids if k in seen)
    timed = {k: t for k, t in sent_at.items() if k not in warm_ids}
    lat = sorted((seen[k] - t) * 1000 for k, t in timed.items() if k in seen)
    # When the slowest 1% were sent (s after the first timed send): a stall, or spread.
    first_sent = min(timed.values(), default=0.0)
    slow = sorted(
        ((seen[k] - t, t - first_sent) for k, t in timed.items() if k in seen), reverse=True
    )[: max(1, len(lat) // 100)]
    slow_s = sorted(round(at) for _, at in slow)
    pct = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None  # noqa: E731
    return {
        "name": "ledger_latency",
        "offered_per_s": rate,
        "transfers": n,
        "observed": len(lat),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 1) if lat else None,
        "slowest_1pct_sent_at_s": {s: slow_s.count(s) for s in sorted(set(slow_s))},
        "warmup_s": warmup_s,
        "warmup_p50_ms": round(warm[len(warm) // 2], 1) if warm else None,
        "warmup_max_ms": round(warm[-1], 1) if warm else None,
        "worker_ms_per_batch": batches,
        "target_p99_ms": 250,
    }


def _worker_names(workers: int) -> list[str]:
    return [f"ledger-{i}" for i in range(1, workers + 1)]


def _log(w: Workers, name: str) -> list[str]:
    path = w.sup.log_path(name)
    return path.read_text().splitlines() if path.exists() else []


STATS = re.compile(
    r"stats: (\d+) batches, (\d+) records; ms per batch: build ([\d.]+), "
    r"send_offsets ([\d.]+), commit ([\d.]+)"
)


def worker_batches(logs: dict[str, list[str]]) -> dict[str, float]:
    """Records and ms per batch in each step, over the workers' stats lines given."""
    batches = records = 0
    ms = [0.0, 0.0, 0.0]
    for lines in logs.values():
        for line in lines:
            m = STATS.search(line)
            if m:
                b = int(m[1])
                batches += b
                records += int(m[2])
                for k in range(3):
                    ms[k] += float(m[3 + k]) * b
    if not batches:
        return {}
    return {
        "batches": batches,
        "records_per_batch": round(records / batches, 1),
        "build_ms": round(ms[0] / batches, 1),
        "send_offsets_ms": round(ms[1] / batches, 1),
        "commit_ms": round(ms[2] / batches, 1),
    }


def rss_with_accounts(cluster, accounts: int) -> dict:  # type: ignore[no-untyped-def]
    """Worker memory with ``accounts`` open accounts: state restored from the changelog."""
    from confluent_kafka import Producer

    from streams.ledger import model as m
    from streams.partitioner import partition_for
    from streams.records import encode_state

    settings = namespace(cluster)
    topic = TopicNames(settings.topic_prefix).ledger_state
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "linger.ms": 20,
            "enable.idempotence": True,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    for i in range(accounts):
        key = f"a{i}"
        recent = tuple(
            m.Remembered(f"cmd-{i}-{j}", "0123456789abcdef", "accepted") for j in range(8)
        )
        state = m.AccountState(key, m.Status.open, f"u{i}", "USD", 100_000, 0, 8, recent)
        while True:
            try:
                p.produce(
                    topic,
                    encode_state(state),
                    key.encode(),
                    partition_for(key, settings.partitions),
                )
                break
            except BufferError:
                p.poll(0.05)
    p.flush(300)
    w = Workers(settings, 1, log_level="INFO")  # we watch the log for the end of the restore
    start = time.perf_counter()
    w.start()
    log = w.sup.log_path("ledger-1")
    try:
        while "assigned partitions" not in (log.read_text() if log.exists() else ""):
            if time.perf_counter() - start > 1200:
                raise SystemExit("restore did not finish")
            time.sleep(1)
        restored_s = time.perf_counter() - start
        after_restore = w.rss_mb()["ledger-1"]
        with CommandProducer(settings) as prod:
            for c in transfers(20_000, accounts, "rss"):
                prod.send(c)
        if not queries.wait(settings, 600):
            raise SystemExit("transfers did not finish")
        after_work = w.rss_mb()["ledger-1"]
    finally:
        w.stop()
    return {
        "name": "ledger_worker_rss",
        "accounts": accounts,
        "restore_seconds": round(restored_s, 1),
        "rss_mb_after_restore": after_restore,
        "rss_mb_after_20k_transfers": after_work,
        "target_mb": 500,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument(
        "--workers", default="1,2", help="worker processes, comma-separated: one run for each"
    )
    ap.add_argument(
        "--rate", default="500,1000,2000", help="offered transfers/s for latency, comma-separated"
    )
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup-s", type=float, default=2, help="latency: sends reported apart")
    ap.add_argument("--only", choices=["eos", "alo", "latency", "rss"])
    ap.add_argument("--rss-accounts", type=int, default=1_000_000)
    a = ap.parse_args()
    with private_broker() as cluster:
        workers = [int(w) for w in a.workers.split(",")]
        for n in workers:
            if a.only in (None, "eos"):
                emit(throughput(cluster, "exactly_once", n, a.transfers, a.accounts))
            if a.only in (None, "alo"):
                emit(throughput(cluster, "at_least_once", n, a.transfers, a.accounts))
        if a.only in (None, "latency"):
            for rate in (int(r) for r in a.rate.split(",")):
                emit(latency(cluster, rate, a.seconds, workers[0], a.accounts, a.warmup_s))
        if a.only in (None, "rss"):
            emit(rss_with_accounts(cluster, a.rss_accounts))


if __name__ == "__main__":
    main()
