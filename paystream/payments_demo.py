"""The payments part of ``paystream demo``: the payments scenario (every test instrument of the
PSP simulator, pay-ins and pay-outs, through the payment API), its check against the model,
the resilience part (an outage of cardco, and the unknown orders the janitor recovered:
paystream.resilience_demo), and the day's settlement file of each PSP written beside it."""

from __future__ import annotations

import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from base.config import Settings
from paystream import payments_scenario, queries, recon_demo, resilience_demo, schedules_demo
from producers.commands import parse_command
from producers.producer import CommandProducer

TIMEOUT_S = 240.0


def api_up(settings: Settings) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{settings.api_port}/health", timeout=2).read()
    except OSError:
        return False
    return True


def run(settings: Settings, seed: int) -> dict[str, Any]:
    if not api_up(settings):
        return {"available": False}

    def send(commands: list[dict[str, Any]]) -> None:
        with CommandProducer(settings, client_id="paystream-demo") as p:
            for c in commands:
                p.send(parse_command(c))
            p.flush(60)

    def wait() -> None:
        queries.wait(settings, timeout_s=TIMEOUT_S)

    def balance(account: str) -> Decimal | None:
        view = queries.account(settings, account)
        return None if view is None else Decimal(view["balance"])

    prefix = f"pay{seed}-{int(time.time())}"
    report = payments_scenario.run(settings, prefix, send, wait, balance, TIMEOUT_S)
    sc = payments_scenario.Scenario(settings, prefix)
    outage = resilience_demo.outage(settings, prefix, sc.account, sc.user)
    recovered = resilience_demo.recovered_unknowns(
        settings, [o.payment_id for o in report.outcomes]
    )
    janitor_ok = any(r["status"] == "succeeded" for r in recovered)
    problems = list(report.problems) + outage["problems"]
    if not janitor_ok:
        problems.append("no unknown order was recovered by the janitor")
    # The warehouse must hold every order's last status before its files are reconciled:
    # the outage's payments ended just now, and recon matches against the warehouse.
    if not queries.wait(settings, timeout_s=TIMEOUT_S):
        problems.append("the warehouse did not catch up before the reconciliation")
    files = _settlement_files(settings)
    schedules = schedules_demo.run(settings, seed)
    try:
        recon = recon_demo.run(settings, prefix, files)
    except Exception as exc:  # the demo reports it; it must not hide the rest
        recon = []
        problems.append(f"reconciliation failed: {exc}")
    problems += [
        f"reconciliation of {r['file']}: {r['review']} for review: {'; '.join(r['for_review'])}"
        for r in recon
        if r["review"]
    ]
    return {
        "available": True,
        "prefix": prefix,
        "payments": [
            {
                "payment_id": o.payment_id,
                "type": o.case.type,
                "instrument": o.case.instrument,
                "amount": o.case.amount,
                "currency": o.case.currency,
                "status": o.status,
                "reason": o.reason,
                "psp": o.psp,
                "as_expected": o.ok,
            }
            for o in report.outcomes
        ],
        "balance": str(report.balance_live),
        "balance_model": str(report.balance_expected),
        "charged_at_most_once": all(n <= 1 for n in report.charges.values()),
        "settlement_rows": sum(report.settlement.values()),
        "settlement_files": files,
        "outage": outage,
        "recovered_unknowns": recovered,
        "reconciliation": recon,
        "problems": problems,
        "seconds": round(report.seconds, 1),
        "schedules": schedules,
        "verified": report.ok and not problems and schedules.get("verified", True),
    }


def _settlement_files(settings: Settings) -> list[str]:
    """Today's settlement file of each simulated PSP, under $PAYSTREAM_HOME/settlement/."""
    import httpx

    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = settings.home / "settlement"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for psp, url in payments_scenario.psp_urls(settings).items():
        r = httpx.get(f"{url}/v1/settlement", params={"date": day}, timeout=30)
        if r.status_code == 200:
            path = Path(out / f"{psp}-{day}.csv")
            path.write_text(r.text)
            written.append(str(path))
    return written


def print_summary(s: dict[str, Any]) -> None:
    console = Console()
    if not s.get("available"):
        console.print("payments: the payment API is not running (paystream up starts it)")
        return
    t = Table(title="payments demo: every PSP test instrument", title_justify="left")
    t.add_column("payment")
    t.add_column("instrument", overflow="fold")
    t.add_column("amount", justify="right")
    t.add_column("status (reason) via PSP", overflow="fold")
    t.add_column("ok")
    for p in s["payments"]:
        status = p["status"] + (f" ({p['reason']})" if p["reason"] else "")
        status += f" via {p['psp']}" if p["psp"] else ""
        kind = "in" if p["type"] == "pay_in" else "out"
        t.add_row(
            f"{kind}: {p['payment_id'].split('-', 2)[-1]}", p["instrument"],
            f"{p['amount']} {p['currency']}", status, "yes" if p["as_expected"] else "NO",
        )  # fmt: skip
    console.print(t)
    console.print(
        f"balance {s['balance']} = model {s['balance_model']}: "
        f"{'yes' if s['balance'] == s['balance_model'] else 'NO'}; "
        f"each order charged at most once: {'yes' if s['charged_at_most_once'] else 'NO'}; "
        f"settlement rows for succeeded orders: {s['settlement_rows']}; {s['seconds']} s"
    )
    o = s["outage"]
    console.print(
        f"outage: cardco down {o['outage_s']:g} s, {o['payments']} card payments meanwhile, "
        f"via {o['via']}; cardco's breaker opened {o['breaker_open_after_s']} s after the "
        f"outage began and closed {o['breaker_closed_after_outage_s']} s after it ended; the "
        f"next card payment went to {o['after_outage_psp']}: "
        f"{'yes' if o['verified'] else 'NO'}"
    )
    for r in s["recovered_unknowns"]:
        console.print(
            f"recovered unknown: {r['payment_id'].split('-', 2)[-1]} {r['status']} at {r['psp']} "
            f"after {r['unknown_for_s']} s unknown, {r['checks']} janitor check(s)"
        )
    for f in s["settlement_files"]:
        console.print(f"  settlement file: {f}")
    for p in s["problems"]:
        console.print(f"[red]{p}[/red]")
    console.print(
        "Try: paystream payment <id> | paystream pay-in --help | "
        "paystream psp settlement cardco --date <YYYY-MM-DD> | paystream psp status | "
        "paystream psp outage cardco --seconds 30 | paystream psp dlq list"
    )
    schedules_demo.print_summary(s.get("schedules", {}))


def print_reconciliation(s: dict[str, Any]) -> None:
    """The demo's last word: its settlement files reconciled (docs/recon.md)."""
    if not s.get("reconciliation"):
        return
    console = Console()
    console.print("reconciliation: the demo's settlement files against the ledger")
    for r in s.get("reconciliation", []):
        ok = r["review"] == 0
        console.print(
            f"  reconciled {r['psp']}: {r['rows']} rows, {r['matched']} matched, "
            f"fees booked {r['fees_booked']}, for review {r['review']}"
            + ("" if ok else " [red]NOT ALL MATCHED[/red]")
        )
    console.print(
        "Try: paystream recon settlement --psp PSP --file F.csv | paystream recon internal"
    )
