"""The scheduled-payments part of ``paystream demo``: a few schedules through the API, one
MINUTELY firing in front of you (its first occurrence a minute ago is caught up at once, the
next falls due seconds later), checked against the account's balance.

The MINUTELY schedule ends after those two (COUNT): its payments pass the risk engine like
any other, and the risk demo that follows publishes rules that hold a user's fifth payment in
an hour for review and block the eighth (docs/risk.md); a schedule still firing then would
leave its payments in the review queue, or be paused by their rejections."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from base.config import Settings
from ops.procs import Supervisor
from paystream import queries
from producers.commands import parse_command
from producers.producer import CommandProducer

FIRINGS = 2  # the MINUTELY schedule's occurrences the demo waits for
TIMEOUT_S = 90.0
CARD = "card_4242424242424242"
BANK = "bank_DE89370400440532013000"


def scheduler_running(settings: Settings) -> bool:
    return any(p["role"] == "scheduler" and p["alive"] for p in Supervisor(settings.home).list())


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def run(settings: Settings, seed: int) -> dict[str, Any]:
    if not scheduler_running(settings):
        return {"available": False}
    from paystream.api.schedule_client import SchedulesClient

    prefix = f"sched{seed}-{int(time.time())}"
    user, acct = f"{prefix}-user", f"{prefix}-acct"
    with CommandProducer(settings, client_id="paystream-demo") as p:
        p.send(parse_command({"type": "open_account", "command_id": f"{prefix}-open",
                              "account": acct, "user": user, "currency": "USD"}))  # fmt: skip
        p.flush(60)
    queries.wait(settings, timeout_s=TIMEOUT_S)
    now = datetime.now(UTC).replace(microsecond=0)
    first_of_month = (now.replace(day=1) + timedelta(days=32)).replace(day=1)
    base = {"user_id": user, "currency": "USD"}
    pay_in = {
        **base,
        "type": "pay_in",
        "from_acct": CARD,
        "to_acct": acct,
        "payment_option": "card",
    }
    wanted = [
        ("minutely", {**pay_in, "amount": "1.00", "rrule": f"FREQ=MINUTELY;COUNT={FIRINGS}",
                      "start_at": _iso(now - timedelta(seconds=55))}),
        ("hourly", {**pay_in, "amount": "5.00", "rrule": "FREQ=HOURLY;INTERVAL=2",
                    "start_at": _iso(now + timedelta(hours=1))}),
        ("monthly", {**base, "type": "pay_in", "from_acct": BANK, "to_acct": acct,
                     "payment_option": "bank_account", "amount": "25.00",
                     "rrule": "FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12",
                     "start_at": first_of_month.strftime("%Y-%m-%dT09:00:00"),
                     "timezone": "Europe/Berlin"}),
        ("weekly pay-out (paused)", {**base, "type": "pay_out", "from_acct": acct, "to_acct": BANK,
                                     "payment_option": "bank_account", "amount": "3.00",
                                     "rrule": "FREQ=WEEKLY;BYDAY=FR", "start_at": _iso(now)}),
    ]  # fmt: skip
    created: dict[str, str] = {}
    with SchedulesClient.from_settings(settings) as client:
        for name, body in wanted:
            got, _ = client.create(body, f"{prefix}-{name}")
            created[name] = got["schedule_id"]
        client.update(created["weekly pay-out (paused)"], {"status": "paused"})
        minutely = created["minutely"]
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            fired = [o for o in client.get(minutely)["occurrences"]
                     if o["payment_status"] == "succeeded"]  # fmt: skip
            if len(fired) >= FIRINGS:
                break
            time.sleep(1.0)
        views = {name: client.get(sid) for name, sid in created.items()}
    fired = [o for o in views["minutely"]["occurrences"] if o["payment_status"] == "succeeded"]
    fired.sort(key=lambda o: o["occurrence_at"])
    late = [round(_s(o["submitted_at"]) - _s(o["due_at"]), 2) for o in fired]
    model = Decimal("1.00") * len(fired)
    view = queries.account(settings, acct)
    balance = None if view is None else Decimal(view["balance"])
    return {
        "available": True,
        "account": acct,
        "schedules": [_row(name, v) for name, v in views.items()],
        "minutely": {
            "schedule_id": minutely,
            "fired": len(fired),
            "occurrences": [o["occurrence_at"] for o in fired],
            "seconds_late": late,
        },
        "balance": None if balance is None else str(balance),
        "balance_model": str(model),
        "verified": len(fired) >= FIRINGS and balance == model,
    }


def _row(name: str, v: dict[str, Any]) -> dict[str, Any]:
    keys = ("schedule_id", "type", "amount", "rrule", "timezone", "status", "next_run_at")
    return {"name": name, **{k: v[k] for k in keys}}


def _s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def print_summary(s: dict[str, Any]) -> None:
    console = Console()
    if not s.get("available"):
        console.print("scheduled payments: no scheduler running (paystream up starts it)")
        return
    t = Table(title="scheduled payments demo", title_justify="left")
    t.add_column("schedule")
    t.add_column("id", no_wrap=True)
    t.add_column("amount", justify="right")
    t.add_column("rule", overflow="fold")
    t.add_column("status")
    t.add_column("next run", overflow="fold")
    for x in s["schedules"]:
        rule = x["rrule"] + ("" if x["timezone"] == "UTC" else f" ({x['timezone']})")
        t.add_row(
            x["name"], x["schedule_id"], x["amount"], rule, x["status"], x["next_run_at"] or ""
        )
    console.print(t)
    m = s["minutely"]
    fired = ", ".join(
        f"{at} (+{late} s)" for at, late in zip(m["occurrences"], m["seconds_late"], strict=True)
    )
    console.print(
        f"the MINUTELY schedule fired {m['fired']} times, submitted after due by: {fired} (its "
        f"first was a minute old when it was created: caught up at once); balance "
        f"{s['balance']} = model {s['balance_model']}: "
        f"{'yes' if s['balance'] == s['balance_model'] else 'NO'}"
    )
    console.print(
        f"It fires every minute, 30 times: paystream schedule show {m['schedule_id']} | "
        "paystream schedule list | paystream schedule --help"
    )
