"""``paystream demo`` (and ``make run``): a phased workload, then a verified summary."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from paystream import queries
from paystream.config import Settings
from paystream.oracle import Oracle
from paystream.workload import Workload
from producers.commands import parse_command
from producers.producer import CommandProducer


def run_demo(settings: Settings, accounts: int, transfers: int, seed: int, as_json: bool) -> int:
    console = Console(stderr=True)
    work = Workload(accounts=accounts, transfers=transfers, seed=seed, prefix=f"demo{seed}")
    oracle = Oracle()
    total = sum(len(c) for _, c in work.phases)
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    ) as progress:
        overall = progress.add_task("demo workload", total=total)
        with CommandProducer(settings, client_id="paystream-demo") as producer:
            for name, commands in work.phases:
                task = progress.add_task(f"  {name}", total=len(commands))
                for c in commands:
                    oracle.apply(c)
                    producer.send(parse_command(c))
                    progress.advance(task)
                    progress.advance(overall)
                if producer.flush(60):
                    console.print("[red]some commands were not delivered[/red]")
                    return 1
                progress.update(task, description=f"  {name} (processing)")
                if not queries.wait(settings, timeout_s=300):
                    console.print(f"[red]the ledger did not catch up with phase {name!r}[/red]")
                    return 1
                progress.update(task, description=f"  {name} ✓")
    elapsed = time.monotonic() - started
    summary = _summary(settings, work, oracle, elapsed)
    if as_json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        _print(summary)
    return 0 if summary["verified"] else 1


def _summary(settings: Settings, work: Workload, oracle: Oracle, elapsed: float) -> dict[str, Any]:
    prefix = work.prefix + "-"
    live = {
        b["account"]: {k: b[k] for k in ("account", "user", "currency", "balance", "status")}
        for b in queries.balances(settings)
        if b["account"].startswith(prefix)
    }
    expected = oracle.balances()
    replay = queries.replay(settings)
    diffs = queries.verify(settings, replay) + replay.problems
    totals: dict[str, int] = Counter()
    for b in live.values():
        totals[b["currency"]] += int(b["balance"].replace(".", ""))
    outcomes = Counter(oracle.outcomes.values())
    warehouse = _warehouse(settings, prefix, expected)
    return {
        "accounts": len(live),
        "blocked": sum(1 for b in live.values() if b["status"] == "blocked"),
        "commands": sum(len(c) for _, c in work.phases),
        "transfers_accepted": sum(
            1 for cid, o in oracle.outcomes.items() if "-tr-" in cid and o == "accepted"
        ),
        "outcomes": dict(outcomes.most_common()),
        "ledger_events": replay.events,
        "replay_events_per_s": round(replay.events / replay.seconds) if replay.seconds else 0,
        "totals_minor_units": dict(totals),
        "seconds": round(elapsed, 1),
        "matches_sequential_model": live == expected,
        "replay_problems": diffs[:20],
        "warehouse": warehouse,
        "sample_account": work.name(1),
        "verified": live == expected and not diffs and warehouse.get("matches", True),
    }


EXAMPLE_QUERIES = [
    "SELECT account, balance FROM account_balances ORDER BY balance_decimal DESC LIMIT 5",
    "SELECT toDate(ts) AS day, currency, sum(abs(amount)) / 2 AS volume FROM ledger_entries FINAL"
    " WHERE kind = 'transfer_post' GROUP BY day, currency",
    "SELECT reason, count() FROM command_outcomes FINAL WHERE status = 'rejected' GROUP BY reason"
    " ORDER BY count() DESC",
]


def _warehouse(settings: Settings, prefix: str, expected: dict[str, Any]) -> dict[str, Any]:
    """Warehouse figures, when a warehouse is running (the demo works without one)."""
    from connectors.warehouse import describe, query_client

    try:
        client = query_client(settings)
        rows = client.query(
            "SELECT account, balance FROM account_balances WHERE startsWith(account, {p:String})",
            parameters={"p": prefix},
        ).result_rows
        counts = {
            t: int(client.command(f"SELECT count() FROM {t} FINAL"))
            for t in ("ledger_entries", "transfers", "command_outcomes", "account_events")
        }
    except Exception as exc:  # not running: say so, don't fail the demo
        return {"available": False, "error": str(exc)[:200]}
    got = {a: b for a, b in rows}
    return {
        "available": True,
        "where": describe(settings),
        "rows": counts,
        "matches": got == {a: v["balance"] for a, v in expected.items()},
        "examples": EXAMPLE_QUERIES,
    }


def _print(s: dict[str, Any]) -> None:
    console = Console()
    t = Table(title="paystream demo", show_header=False)
    t.add_row("accounts (blocked)", f"{s['accounts']} ({s['blocked']})")
    t.add_row("commands sent", str(s["commands"]))
    t.add_row("transfers posted", str(s["transfers_accepted"]))
    t.add_row("ledger events", f"{s['ledger_events']} (replayed at {s['replay_events_per_s']:,}/s)")
    t.add_row("time", f"{s['seconds']} s")
    for reason, n in s["outcomes"].items():
        t.add_row(f"  outcome: {reason}", str(n))
    t.add_row("balances = sequential model", "yes" if s["matches_sequential_model"] else "NO")
    t.add_row("replay of the ledger log", "balances" if not s["replay_problems"] else "MISMATCH")
    w = s["warehouse"]
    if w.get("available"):
        t.add_row("warehouse", w["where"])
        for table, n in w["rows"].items():
            t.add_row(f"  {table}", f"{n:,} rows")
        t.add_row("warehouse balances = model", "yes" if w["matches"] else "NO")
    else:
        t.add_row("warehouse", "not running")
    console.print(t)
    if w.get("available"):
        console.print(
            "Ask the warehouse (paystream sql, or any ClickHouse client on 127.0.0.1:8123):"
        )
        for q in w["examples"]:
            console.print(f'  paystream sql "{q}"')
    for p in s["replay_problems"]:
        console.print(f"[red]{p}[/red]")
    console.print(
        "Try: paystream balances | paystream balance demo7-1 | paystream outcome <id> | paystream replay --verify"
    )
