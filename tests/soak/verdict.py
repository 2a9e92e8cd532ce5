"""The verdict: one JSON document of the run (checks, chaos, timings, logs) and its one screen."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Verdict:
    ok: bool
    data: dict[str, Any]
    path: Path


def print_verdict(v: Verdict, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:  # a file or a pipe gets 120 columns, not rich's 80
        console = Console() if sys.stdout.isatty() else Console(width=120)
    d = v.data
    t = Table(
        title=f"chaos soak, seed {d['seed']}: {'PASS' if v.ok else 'FAIL'}", title_justify="left"
    )
    t.add_column("check")
    t.add_column("", justify="center")
    t.add_column("detail", overflow="fold")
    for c in d["checks"]:
        mark = "[green]PASS[/]" if c["ok"] else "[bold red]FAIL[/]"
        detail = c["detail"]
        if c["problems"]:
            detail += f"\n[red]{c['problems'][0]}[/]" + (
                f" (+{c['problems_total'] - 1} more)" if c["problems_total"] > 1 else ""
            )
        t.add_row(c["name"], mark, detail)
    if d["failure"]:
        t.add_row("run", "[bold red]FAIL[/]", d["failure"])
    console.print(t)
    tm = d["timing"]
    w = d["workload"]
    ch = d["chaos"]
    console.print(
        f"workload: {w['by_type'].get('transfer', 0)} transfers, {w['commands']} commands "
        f"({', '.join(f'{k} {n}' for k, n in sorted(w['by_type'].items()) if k != 'transfer')}; "
        f"{w['refused_lines']} refused lines, {w['exact_repeats']} repeats, {w['reused_ids']} reused ids)"
    )
    kills = ", ".join(f"{k} {n}" for k, n in sorted(ch["kills_by_kind"].items()))
    console.print(
        f"chaos: {len(ch['kills'])} kill -9 ({kills}); broker restarts {len(ch['broker_restarts'])}; "
        f"{len(ch['self_exits'])} processes exited by themselves and were restarted"
    )
    console.print(
        f"time: {d['duration_s']}s in all (stack up {tm['stack_up_s']}s, workload {tm['workload_s']}s, "
        f"drain {tm['drain_s']}s, verify {tm['verify_s']}s); write side {tm['transfers_per_s']} "
        f"transfers/s under kill -9 (the broker's restart not counted)"
    )
    dr = d["drain"]
    if dr.get("lag_at_start"):
        console.print(
            "drain: behind at the end of the workload "
            + ", ".join(f"{k} {n}" for k, n in dr["lag_at_start"].items())
            + " records; caught up after "
            + ", ".join(
                f"{k} {dr[k]}s" for k in ("ledger", "detector", "warehouse", "readside") if k in dr
            )
        )
    console.print(f"verdict: {v.path}" + (f"; home kept: {d['home']}" if d["home"] else ""))
