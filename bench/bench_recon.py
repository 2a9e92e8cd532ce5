#!/usr/bin/env python
"""Reconciliation, two figures (``--only settlement|internal``; both by default):

* settlement: a file of --rows movement rows (default 1,000,000; Adyen's Settlement details
  report columns) imported into the warehouse and reconciled
  (``paystream.recon_settlement.settle``: parse and check, load ``settlement_rows``, match in
  SQL against as many payment orders and ledger postings, categorise, book the fees). Target
  <= 60 s.
* internal: ``paystream recon internal`` (``paystream.recon_internal.check``) over --orders
  payment orders (default 1,000,000): their states read from the payments changelog on a
  private broker, the warehouse's orders and postings, the core's comparison, and audit.
  Target <= 60 s.

The warehouse is embedded chDB behind its fronts, in this process; the orders, postings and
states are made beforehand (not timed)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import emit

from base.config import Settings
from connectors.chhttp import ChdbExecutor, serve
from connectors.warehouse import migrate
from paystream.bootstrap import writer_front
from paystream.recon_settlement import settle
from pspsim.settlement import COLUMNS

DAY = "2026-11-02"
PSP = "cardco"


def orders_sql(n: int) -> list[str]:
    amount = "toDecimal128((number % 1000) + 1, 6)"
    return [
        f"""INSERT INTO payment_orders SELECT concat('b', toString(number), '/1'),
            concat('b', toString(number)), 'ext', 'acct', {amount}, 'USD', 'succeeded', '{PSP}',
            'succeeded', true, true, 'user', 'pay_in', 'card', NULL, 7,
            toDateTime64('{DAY} 10:00:00', 6, 'UTC') FROM numbers({n})""",
        f"""INSERT INTO ledger_entries SELECT concat('e', toString(number)), concat('x', toString(number)),
            concat('b', toString(number), '/1/settle'), NULL, '@psp/{PSP}/USD', 'acct', 'USD',
            -{amount}, NULL, 0, 'payin', toDateTime64('{DAY} 10:00:00', 6, 'UTC'), 0, number
            FROM numbers({n})""",
    ]


def write_file(path: Path, n: int) -> None:
    idx = {c: i for i, c in enumerate(COLUMNS)}
    blank = [""] * len(COLUMNS)
    net = 0
    with path.open("w") as f:
        f.write(",".join(COLUMNS) + "\n")
        for i in range(n):
            gross = (i % 1000) + 1
            row = list(blank)
            row[idx["Psp Reference"]] = f"P{i:010d}"
            row[idx["Merchant Reference"]] = f"b{i}/1"
            row[idx["Type"]] = "Settled"
            row[idx["Gross Currency"]] = row[idx["Net Currency"]] = "USD"
            row[idx["Gross Credit (GC)"]] = f"{gross}.00"
            row[idx["Net Credit (NC)"]] = f"{gross - 0.01:.2f}"
            row[idx["Commission (NC)"]] = "0.01"
            row[idx["Creation Date"]] = f"{DAY} 10:00:00"
            row[idx["Batch Number"]] = DAY.replace("-", "")
            net += gross * 100 - 1
            f.write(",".join(row) + "\n")
        payout = list(blank)
        payout[idx["Type"]] = "MerchantPayout"
        payout[idx["Gross Currency"]] = payout[idx["Net Currency"]] = "USD"
        payout[idx["Net Debit (NC)"]] = f"{net // 100}.{net % 100:02d}"
        payout[idx["Creation Date"]] = f"{DAY} 23:59:59"
        payout[idx["Batch Number"]] = DAY.replace("-", "")
        f.write(",".join(payout) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=["settlement", "internal"])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--orders", type=int, default=1_000_000)
    a = ap.parse_args()
    if a.only in (None, "settlement"):
        bench_settlement(a.rows)
    if a.only in (None, "internal"):
        bench_internal(a.orders)
    return 0


def bench_settlement(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-recon-") as tmp:
        home = Path(tmp)
        executor = ChdbExecutor(str(home / "warehouse"))
        client = executor.client()
        migrate(client)
        for sql in orders_sql(n):
            client.command(sql)
        path = home / "settlement.csv"
        write_file(path, n)
        settings = Settings(home=home, bootstrap=None)
        writer = writer_front(settings, executor)  # as the warehouse process serves it
        try:
            t0 = time.perf_counter()
            report = settle(settings, PSP, path, lag_days=0)
            seconds = time.perf_counter() - t0
        finally:
            writer.shutdown()
            executor.close()
        by_cat: dict[str, int] = {}
        for m in report.mismatches:
            by_cat[m.category.value] = by_cat.get(m.category.value, 0) + 1
        emit(
            {
                "name": "recon: settlement file import + reconcile",
                "rows": report.rows,
                "matched": report.matched,
                "mismatches": by_cat,
                "seconds": round(seconds, 1),
                "rows_per_s": round(report.rows / seconds),
                "target_s": 60,
                "ok": seconds <= 60 and report.matched == n,
                "file_mb": round(path.stat().st_size / 1e6, 1),
            }
        )


def _states(n: int) -> Iterator[tuple[bytes, bytes]]:
    from streams import payments_state
    from streams.payments import model as pm

    ts = 1_793_000_000_000_000  # 2026-10-26
    for i in range(n):
        pid = f"b{i}"
        req = pm.PaymentRequest(
            pid, "user", pm.PaymentType.pay_in, "card_4242424242424242", "acct",
            f"{(i % 1000) + 1}.00", "USD", pm.PaymentOption.card,
        )  # fmt: skip
        a = pm.Attempt(
            1, PSP, (PSP,), "cheapest", ts, pm.Phase.answered, "tok", pm.PspStatus.succeeded,
            None, f"P{i:010d}", ts, 3,
        )  # fmt: skip
        p = pm.PaymentState(
            req, "service", f"k{i}", "d", ts, pm.Status.succeeded, None, (PSP,), "cheapest",
            (a,), True, True, ((pm.Status.succeeded, ts),), 7,
        )  # fmt: skip
        yield pid.encode(), payments_state.encode_state(p)


def bench_internal(n: int) -> None:
    from common import namespace, private_broker
    from confluent_kafka import Producer

    from base.config import kafka_client_config
    from base.topics import TopicNames
    from paystream.recon_internal import check
    from streams.partitioner import partition_for

    with private_broker() as cluster, tempfile.TemporaryDirectory(prefix="bench-recon-") as tmp:
        settings = namespace(cluster).with_(home=Path(tmp))
        topic = TopicNames(settings.topic_prefix).payments_state
        p = Producer({**kafka_client_config(settings), "linger.ms": 50, "acks": "all",
                      "queue.buffering.max.messages": 500_000})  # fmt: skip
        for key, value in _states(n):
            while True:
                try:
                    p.produce(topic, value, key, partition_for(key.decode(), settings.partitions))
                    break
                except BufferError:
                    p.poll(0.1)
            p.poll(0)
        p.flush(120)
        del p  # before the broker stops
        executor = ChdbExecutor(str(Path(tmp) / "warehouse"))
        client = executor.client()
        migrate(client)
        for sql in orders_sql(n):
            client.command(sql)
        front = serve(executor, port=0)
        settings = settings.with_(warehouse_port=front.port)
        try:
            t0 = time.perf_counter()
            report = check(settings)
            seconds = time.perf_counter() - t0
        finally:
            front.shutdown()
            executor.close()
        emit(
            {
                "name": "recon: internal check",
                "orders": report.orders,
                "mismatches": len(report.findings),
                "seconds": round(seconds, 1),
                "orders_per_s": round(report.orders / seconds),
                "target_s": 60,
                "ok": seconds <= 60 and report.orders == n and not report.findings,
            }
        )


if __name__ == "__main__":
    raise SystemExit(main())
