"""``paystream demo`` (and ``make run``): a phased workload, then a verified summary.

The workload plants related-party chains, cycles and relation changes among its random
traffic (``Workload(plant=True)``). The summary checks the balances against the sequential
model (``paystream.oracle``), the warehouse against the same model when it runs, and the
detector's alerts against the brute-force implementation of the rules
(``streams.detector.bruteforce``) run over the workload itself when the detector runs.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from base.config import Settings
from paystream import payments_demo, queries, risk_demo, wallet_demo
from paystream.oracle import EXP, Oracle
from paystream.workload import Workload
from producers.commands import parse_command
from producers.producer import CommandProducer
from streams.detector import bruteforce
from streams.detector.bruteforce import Event, Relate, Unrelate
from streams.detector.graph import DEFAULT_MAX_HOPS, DEFAULT_WINDOW_US, KINDS, TransferEdge

PHASE_US = 1_000_000  # the oracle's clock: every event of phase k is at k seconds
DETECTOR_TIMEOUT_S = 300.0


def run_demo(settings: Settings, accounts: int, transfers: int, seed: int, as_json: bool) -> int:
    console = Console(stderr=True)
    work = Workload(
        accounts=accounts, transfers=transfers, seed=seed, prefix=f"demo{seed}", plant=True
    )
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
        task = progress.add_task("  detector (alerts)", total=None)
        detector = wait_for_detector(settings, DETECTOR_TIMEOUT_S)
        progress.update(task, description=f"  detector: {detector}")
    elapsed = time.monotonic() - started
    summary = _summary(settings, work, oracle, elapsed)
    summary["alerts"] = _alerts(settings, work, detector)
    summary["verified"] = summary["verified"] and summary["alerts"].get("matches", True)
    if not as_json:
        _print(summary)
        console.print("payments: every PSP test instrument through the payment API...")
    summary["payments"] = payments_demo.run(settings, seed)
    summary["verified"] = summary["verified"] and summary["payments"].get("verified", True)
    if summary["payments"].get("available"):  # the wallet runs where the payment API does
        summary["wallet"] = wallet_demo.run(settings, seed)
        summary["verified"] = summary["verified"] and summary["wallet"]["verified"]
    if summary["payments"].get("available"):
        if not as_json:
            console.print("risk: planted fraud beside legit users, the review queue, a model...")
        summary["risk"] = risk_demo.run(settings, seed)
        summary["verified"] = summary["verified"] and not summary["risk"]["problems"]
    if as_json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        payments_demo.print_summary(summary["payments"])
        if "wallet" in summary:
            wallet_demo.print_summary(summary["wallet"])
        risk_demo.print_summary(summary.get("risk", {}))
        payments_demo.print_reconciliation(summary["payments"])
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
            t: int(str(client.command(f"SELECT count() FROM {t} FINAL")))
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


# --- the related-transfer detector's alerts ---


def wait_for_detector(settings: Settings, timeout_s: float, poll_s: float = 0.2) -> str:
    """Once the ledger is caught up (``queries.wait``): wait until the detector has processed
    every transfer and relation event and its alerts are on the alerts topic.

    ``queries.wait`` cannot tell: it waits for downstream groups that have members, and the
    detector assigns its partitions (no group membership). The detector commits an input
    partition only up to the oldest event still in its reorder buffer (which holds events up
    to ``hold_ms``/``max_hold_ms``), and only after the alerts of everything before it were
    acknowledged by the broker; so its group being caught up on both input topics means
    everything left the buffer and every alert is on the topic.

    Returns "caught up", "not running" or "behind" (timed out).
    """
    from base.topics import TopicNames
    from streams.detector.app import DETECTOR_GROUP

    if not queries.detector_running(settings):
        return "not running"
    names = TopicNames(settings.topic_prefix)
    group = settings.topic_prefix + DETECTOR_GROUP
    deadline = time.monotonic() + timeout_s
    while not queries.caught_up(settings, group, [names.transfers, names.accounts]):
        if time.monotonic() > deadline:
            return "behind"
        time.sleep(poll_s)
    return "caught up"


def detector_events(work: Workload) -> list[Event]:
    """What the detector sees, derived from the workload alone: the relation changes and
    transfers that the sequential model accepts, in phase order, at ``PHASE_US`` per phase.

    Inside a phase the real order (and ts) is the broker's, which the workload makes
    irrelevant: no phase mixes relation changes with transfers or changes one relation twice,
    and no account both sends and receives in one phase, so no chain lies inside a phase and
    each transfer sees the relations of the phases before it. Checked here: ValueError if not.
    """
    oracle = Oracle()
    events: list[Event] = []
    for k, (name, commands) in enumerate(work.phases):
        ts = (k + 1) * PHASE_US
        senders: set[str] = set()
        receivers: set[str] = set()
        pairs: set[frozenset[str]] = set()
        for c in commands:
            if oracle.apply(c) != "accepted":  # None: a duplicate, taking no effect
                continue
            if c["type"] in ("relate_accounts", "unrelate_accounts"):
                pair = frozenset((c["account"], c["related"]))
                if pair in pairs:
                    raise ValueError(f"phase {name!r} changes the relation {sorted(pair)} twice")
                pairs.add(pair)
                if c["type"] == "relate_accounts":
                    events.append(Relate(c["account"], c["related"], c["kind"], ts))
                else:
                    events.append(Unrelate(c["account"], c["related"], ts))
            elif c["type"] == "transfer":
                cur = oracle.accounts[c["from"]].currency
                minor = oracle.amount(c["amount"], cur)
                assert isinstance(minor, int)  # accepted
                whole, frac = divmod(minor, 10 ** EXP[cur])
                amount = f"{whole}.{frac:0{EXP[cur]}d}" if EXP[cur] else str(whole)
                cid = c["command_id"]  # a transfer's id is its command's id
                events.append(TransferEdge(cid, cid, c["from"], c["to"], amount, cur, ts))
                senders.add(c["from"])
                receivers.add(c["to"])
        if pairs and senders:
            raise ValueError(f"phase {name!r} mixes relation changes and transfers")
        if senders & receivers:
            some = sorted(senders & receivers)[:3]
            raise ValueError(f"in phase {name!r}, {some} both send and receive")
    return events


def expected_alerts(
    work: Workload, max_hops: int = DEFAULT_MAX_HOPS, window_us: int = DEFAULT_WINDOW_US
) -> list[dict[str, Any]]:
    """The alerts the rules give for the workload (brute force), as ``Alert`` records without
    the times (``ts``, ``timestamps``: the broker's clock, not the workload's)."""
    alerts = bruteforce.detect(detector_events(work), max_hops, window_us)
    return [comparable(a.to_record()) for a in alerts]


def comparable(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert record without its times, lists as lists (JSON, Avro and the oracle agree)."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in alert.items()
        if k not in ("ts", "timestamps")
    }


def _alerts(settings: Settings, work: Workload, detector: str) -> dict[str, Any]:
    """Alerts on this demo's accounts, checked against the brute force, when the detector
    runs (the demo works without one)."""
    from streams.detector.app import read_alerts

    if detector == "not running":
        return {"available": False, "detector": detector}
    prefix = work.prefix + "-"
    got = [a for a in read_alerts(settings) if all(x.startswith(prefix) for x in a["accounts"])]
    mine = {a["alert_id"]: comparable(a) for a in got}
    try:
        want = {a["alert_id"]: a for a in expected_alerts(work)}
        oracle_problem = None
    except ValueError as exc:  # the workload does not determine the alerts: a workload bug
        want, oracle_problem = {}, str(exc)
    missing = sorted(k for k in want if k not in mine)
    unexpected = sorted(k for k in mine if k not in want)
    different = sorted(k for k in mine if k in want and mine[k] != want[k])
    kinds_on: dict[str, list[str]] = {}
    for a in sorted(got, key=lambda a: KINDS.index(a["kind"])):
        kinds_on.setdefault(a["transfer_ids"][-1], []).append(a["kind"])
    planted_ok = sum(1 for p in work.planted if tuple(kinds_on.get(p.closing, ())) == p.kinds)
    return {
        "available": True,
        "detector": detector,
        "max_hops": DEFAULT_MAX_HOPS,
        "window_s": DEFAULT_WINDOW_US // 1_000_000,
        "count": len(mine),
        "by_kind": {k: sum(1 for a in got if a["kind"] == k) for k in KINDS},
        "examples": _examples(got),
        "expected": len(want),
        "planted": len(work.planted),
        "planted_as_expected": planted_ok,
        "missing": [_brief(want[k]) for k in missing[:10]],
        "unexpected": [_brief(mine[k]) for k in unexpected[:10]],
        "different": different[:10],
        "oracle_problem": oracle_problem,
        "matches": detector == "caught up"
        and oracle_problem is None
        and not missing
        and not unexpected
        and not different,
    }


def _brief(a: dict[str, Any]) -> dict[str, Any]:
    return {k: a[k] for k in ("alert_id", "kind", "accounts", "transfer_ids", "amounts")}


def _examples(alerts: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One alert per kind, the longest path first (the most telling)."""
    out = []
    for kind in KINDS:
        of_kind = [a for a in alerts if a["kind"] == kind]
        if of_kind:
            a = max(of_kind, key=lambda a: (len(a["accounts"]), a["alert_id"]))
            out.append({**_brief(a), "relation_path": a["relation_path"]})
    return out


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
    t.add_row(
        "replay of the ledger log",
        f"{s['ledger_events']:,} events: zero-sum, gapless, = live state"
        if not s["replay_problems"]
        else "MISMATCH",
    )
    w = s["warehouse"]
    if w.get("available"):
        t.add_row("warehouse", w["where"])
        for table, n in w["rows"].items():
            t.add_row(f"  {table}", f"{n:,} rows")
        t.add_row("warehouse balances = model", "yes" if w["matches"] else "NO")
    else:
        t.add_row("warehouse", "not running")
    al = s["alerts"]
    if al.get("available"):
        t.add_row(
            "detector",
            f"{al['detector']} (max hops {al['max_hops']}, window {al['window_s'] // 86400} days)",
        )
        for kind, n in al["by_kind"].items():
            t.add_row(f"  alerts: {kind}", str(n))
        t.add_row("alerts = brute-force oracle", "yes" if al["matches"] else "NO")
        t.add_row("planted patterns as expected", f"{al['planted_as_expected']}/{al['planted']}")
    else:
        t.add_row("detector", al.get("detector", "not running"))
    console.print(t)
    if al.get("available"):
        console.print("Alerts (paystream alerts [--json] [--kind K] [--account A]), for example:")
        for a in al["examples"]:
            path = " -> ".join(a["accounts"])
            rel = f"  related via {' - '.join(a['relation_path'])}" if a["relation_path"] else ""
            console.print(f"  {a['kind']}: {path}  ({', '.join(a['amounts'])}){rel}")
        if al["oracle_problem"]:
            console.print(f"[red]alert oracle: {al['oracle_problem']}[/red]")
        for label in ("missing", "unexpected"):
            for a in al[label]:
                console.print(f"[red]{label} alert {a}[/red]")
        for alert_id in al["different"]:
            console.print(f"[red]alert {alert_id} differs from the oracle's[/red]")
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
