#!/usr/bin/env python
"""Read paths: replay (events/s), warehouse sink ingest (rows/s), account_history latency."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import emit, namespace, private_broker
from synth import produce_postings

from connectors.sink import ClickHouseSink, WarehouseSink
from connectors.warehouse import migrate
from paystream import queries


def bench_replay(settings, entries: int, accounts: int) -> dict:  # type: ignore[no-untyped-def]
    n = produce_postings(settings, entries, accounts)
    r = queries.replay(settings)
    assert r.events == n and not r.problems, r.problems[:3]
    return {
        "name": "replay",
        "events": r.events,
        "seconds": round(r.seconds, 2),
        "events_per_s": round(r.events / r.seconds),
        "target_per_s": 200_000,
    }


def bench_sink(settings, events: int) -> dict:  # type: ignore[no-untyped-def]
    import clickhouse_connect

    path = Path(tempfile.mkdtemp(prefix="paystream-bench-ch-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    migrate(client)
    sink = WarehouseSink(settings, ClickHouseSink(client))
    sink.consumer.subscribe([sink.topics.ledger])
    start = time.perf_counter()
    rows = 0
    while rows < events:
        rows += sink.step()
    elapsed = time.perf_counter() - start
    sink.consumer.close()
    got = client.command("SELECT count() FROM ledger_entries")
    return {
        "name": "sink",
        "rows": int(got),
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "target_per_s": 200_000,
    }


def bench_history(rows: int, accounts: int) -> dict:
    import clickhouse_connect

    path = Path(tempfile.mkdtemp(prefix="paystream-bench-hist-"))
    client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    migrate(client)
    start = time.perf_counter()
    client.command(
        "INSERT INTO ledger_entries SELECT"
        f" concat('acct-', toString(number % {accounts}), '/', toString(number)) AS event_id,"
        " toString(number) AS entry_id, toString(number) AS command_id, NULL,"
        f" concat('acct-', toString(number % {accounts})) AS account, '@world/USD', 'USD',"
        f" toDecimal128(1, 6), toDecimal128(intDiv(number, {accounts}) + 1, 6), intDiv(number, {accounts}) + 1,"
        " 'deposit', toDateTime64(1795000000 + number / 1000, 6, 'UTC'), 0, number"
        f" FROM numbers({rows}) SETTINGS max_insert_threads = 2"
    )
    load_s = time.perf_counter() - start

    def timed() -> list[float]:
        times = []
        for i in range(30):
            acct = f"acct-{(i * 7919) % accounts}"
            t = time.perf_counter()
            r = client.query(
                "SELECT * FROM account_history WHERE account = {a:String} ORDER BY account_seq",
                parameters={"a": acct},
            )
            times.append((time.perf_counter() - t) * 1000)
            assert len(r.result_rows) == rows // accounts
        return sorted(times)

    fresh = timed()  # as inserted: several parts, FINAL merges at query time
    client.command("OPTIMIZE TABLE ledger_entries FINAL")
    merged = timed()
    return {
        "name": "account_history",
        "rows_in_table": rows,
        "rows_per_account": rows // accounts,
        "load_seconds": round(load_s, 1),
        "p50_ms": round(statistics.median(fresh), 1),
        "p99_ms": round(fresh[-1], 1),
        "merged_p50_ms": round(statistics.median(merged), 1),
        "merged_p99_ms": round(merged[-1], 1),
        "target_ms": 50,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--entries", type=int, default=500_000, help="journal entries (2 postings each)"
    )
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--history-rows", type=int, default=10_000_000)
    ap.add_argument("--only", choices=["replay", "sink", "history"])
    a = ap.parse_args()
    if a.only in (None, "history"):
        emit(bench_history(a.history_rows, 100_000))
    if a.only == "history":
        return
    with private_broker() as cluster:
        settings = namespace(cluster)
        if a.only in (None, "replay"):
            emit(bench_replay(settings, a.entries, a.accounts))
        else:
            produce_postings(settings, a.entries, a.accounts)
        if a.only in (None, "sink"):
            emit(bench_sink(settings, a.entries * 2))


if __name__ == "__main__":
    main()
