"""The auditor's tools: compare the three views of every balance, and trace money."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from base.config import Settings
from connectors.warehouse import query_client
from paystream import queries
from paystream.render import money
from streams.ledger import model as m
from streams.ledger.money import format_amount

TRACE_DEPTH_MAX = 6


def audit(settings: Settings) -> dict[str, Any]:
    """Write side (changelog state) vs. a replay of the ledger log vs. the warehouse."""
    live = {
        k: s
        for k, s in queries.live_state(settings).items()
        if isinstance(s, m.AccountState) and s.exists
    }
    replay = queries.replay(settings)
    rows = (
        query_client(settings)
        .query("SELECT account, currency, balance FROM account_balances")
        .result_rows
    )
    warehouse = {r[0]: (r[1], r[2]) for r in rows}
    diffs: list[str] = list(replay.problems)
    for acct in sorted(set(live) | set(warehouse)):
        s = live.get(acct)
        w = warehouse.get(acct)
        if s is None:
            diffs.append(f"{acct}: in the warehouse, not on the write side")
            continue
        want = format_amount(s.balance, s.currency)
        got_replay = format_amount(replay.balances.get(acct, 0), s.currency)
        if got_replay != want:
            diffs.append(f"{acct}: write side {want}, replay {got_replay}")
        if w is None:
            diffs.append(f"{acct}: on the write side ({want}), missing in the warehouse")
        elif Decimal(w[1]) != Decimal(want):
            diffs.append(f"{acct}: write side {want}, warehouse {w[1]}")
    return {
        "live_accounts": len(live),
        "replayed_events": replay.events,
        "warehouse_accounts": len(warehouse),
        "differences": diffs,
    }


def trace(settings: Settings, account: str, depth: int) -> dict[str, Any]:
    """Posted transfers out of and into ``account``, followed ``depth`` hops each way."""
    depth = max(1, min(depth, TRACE_DEPTH_MAX))
    client = query_client(settings)

    def follow(
        frontier: list[str], outgoing: bool, left: int, seen: set[str]
    ) -> dict[str, list[dict[str, Any]]]:
        if left == 0 or not frontier:
            return {}
        me, other = ("from_account", "to_account") if outgoing else ("to_account", "from_account")
        rows = client.query(
            f"SELECT {me}, {other}, currency, sum(amount), count() FROM transfers FINAL"
            f" WHERE status = 'posted' AND {me} IN {{accts:Array(String)}}"
            f" GROUP BY {me}, {other}, currency ORDER BY sum(amount) DESC LIMIT 1000",
            parameters={"accts": frontier},
        ).result_rows
        by_src: dict[str, list[dict[str, Any]]] = defaultdict(list)
        nxt = [r[1] for r in rows if r[1] not in seen]
        deeper = follow(nxt, outgoing, left - 1, seen | set(nxt))
        for src, dst, cur, amount, n in rows:
            by_src[src].append(
                {
                    "account": dst,
                    "currency": cur,
                    "amount": money(amount, cur),
                    "transfers": n,
                    "next": deeper.get(dst, []) if dst not in seen else [],
                }
            )
        return by_src

    return {
        "account": account,
        "depth": depth,
        "out": follow([account], True, depth, {account}).get(account, []),
        "in": follow([account], False, depth, {account}).get(account, []),
    }
