"""``paystream schedule create|list|show|update|pause|resume|delete|backfill`` and the
``scheduler`` process verb. Through the payment API (the same code path as any client), with
the service token (docs/schedules.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from base.config import Settings

Verb = Callable[..., argparse.ArgumentParser]

OPTIONS = ("card", "bank_account", "paypal", "apple_pay", "google_pay")
EPILOG = """\
examples:
  paystream schedule create --user user-1 --type pay_in --from card_4242424242424242 \\
      --to acct-1 --amount 10.00 --rrule 'FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12' \\
      --start-at 2026-01-01T09:00:00 --timezone Europe/Berlin
  paystream schedule list --user user-1
  paystream schedule show s-1f2e...            # the last 20 occurrences and their payments
  paystream schedule update s-1f2e... --amount 12.50
  paystream schedule pause s-1f2e...  /  resume  /  delete
  paystream schedule backfill s-1f2e... --from 2026-01-01T00:00:00Z --to 2026-01-02T00:00:00Z

Rules are RFC 5545 RRULEs (python-dateutil), MINUTELY at the finest. An occurrence at T is
paid once, as payment sched-<id>-<T as YYYYMMDDTHHMMSSZ>."""


def register(sub: Any, verb: Verb) -> None:
    sp = verb("schedule", cmd_help, "scheduled payments: recurring pay-ins and pay-outs")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = EPILOG
    ss = sp.add_subparsers(dest="schedule_verb", metavar="SCHEDULE_VERB")

    def sub_verb(name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
        p = ss.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = sub_verb("create", cmd_create, "create a schedule (POST /payments/scheduled-payment/v1)")
    p.add_argument("--user", required=True, help="the user the payments are for")
    p.add_argument("--type", required=True, choices=("pay_in", "pay_out"))
    p.add_argument("--from", dest="from_acct", required=True,
                   help="pay-in: the instrument charged; pay-out: the account")  # fmt: skip
    p.add_argument("--to", dest="to_acct", required=True,
                   help="pay-in: the account; pay-out: the instrument paid")  # fmt: skip
    p.add_argument("--amount", required=True, help='each payment\'s amount, e.g. "10.00"')
    p.add_argument("--currency", default="USD", help="ISO 4217 (default USD)")
    p.add_argument("--option", default="card", choices=OPTIONS, help="payment option")
    p.add_argument("--rrule", required=True, help="RFC 5545 RRULE, e.g. 'FREQ=HOURLY;INTERVAL=2'")
    p.add_argument("--start-at", required=True, help="ISO 8601 (DTSTART), e.g. 2026-01-01T09:00")
    p.add_argument("--end-at", help="ISO 8601: no occurrence after it")
    p.add_argument("--timezone", default="UTC", help="IANA zone of the rule (default UTC)")
    p.add_argument("--id", dest="schedule_id", help="the schedule's id (default: from the key)")
    p.add_argument("--key", help="Idempotency-Key (default: a new uuid; repeat one to retry)")

    p = sub_verb("list", cmd_list, "schedules, filtered, a page at a time")
    p.add_argument("--user", help="only this user's")
    p.add_argument("--type", choices=("pay_in", "pay_out"))
    p.add_argument("--status", choices=("active", "paused", "completed", "deleted"))
    p.add_argument("--limit", type=int, default=50, help="per page (default 50, at most 500)")
    p.add_argument("--after", help="the page after this schedule id")
    p.add_argument("--all", action="store_true", help="every page")

    p = sub_verb("show", cmd_show, "a schedule, its last 20 occurrences and their payments")
    p.add_argument("schedule_id")

    p = sub_verb(
        "update", cmd_update, "change the amount, the rule or the end (from the next occurrence)"
    )
    p.add_argument("schedule_id")
    p.add_argument("--amount")
    p.add_argument("--rrule", help="a new rule, followed from now on")
    p.add_argument("--start-at", help="a new DTSTART for the rule")
    end = p.add_mutually_exclusive_group()
    end.add_argument("--end-at", help="a new end (ISO 8601)")
    end.add_argument("--no-end", action="store_true", help="remove the end")

    for name, help in (
        ("pause", "pause: nothing is paid until it is resumed"),
        ("resume", "resume: the pause's occurrences are not paid"),
        ("delete", "delete: nothing more is paid; the history stays"),
    ):
        p = sub_verb(name, cmd_status, help)
        p.add_argument("schedule_id")

    p = sub_verb("backfill", cmd_backfill, "pay the occurrences of a past range, skipped ones too")
    p.add_argument("schedule_id")
    p.add_argument("--from", dest="from_at", required=True, help="ISO 8601, inclusive")
    p.add_argument("--to", dest="to_at", required=True, help="ISO 8601, inclusive, not future")

    # The process verb (no help: `paystream up` runs it).
    sp = sub.add_parser("scheduler")
    sp.set_defaults(fn=cmd_scheduler)
    sp.add_argument("--instance", type=int, default=1)


def cmd_help(a: argparse.Namespace, s: Settings) -> int:
    print("usage: paystream schedule {create,list,show,update,pause,resume,delete,backfill} "
          "...  (paystream schedule --help)", file=sys.stderr)  # fmt: skip
    return 2


def _client(s: Settings) -> Any:
    from paystream.api.schedule_client import SchedulesClient
    from paystream.bootstrap import resolved

    return SchedulesClient.from_settings(resolved(s))


def _run(a: argparse.Namespace, s: Settings, call: Callable[[Any], dict[str, Any]]) -> int:
    import httpx

    from paystream.api.errors import ApiError

    try:
        with _client(s) as client:
            body = call(client)
    except ApiError as exc:
        if a.json:
            print(json.dumps({"error": exc.code, "message": exc.message, "field": exc.field}))
        else:
            where = f" ({exc.field})" if exc.field else ""
            print(f"refused: {exc.status} {exc.code}{where}: {exc.message}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"error: the payment API does not answer ({exc}); is the stack up?", file=sys.stderr)
        return 1
    if a.json:
        json.dump(body, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    elif "schedules" in body:
        _print_list(body)
    else:
        _print_one(body)
    return 0


def cmd_create(a: argparse.Namespace, s: Settings) -> int:
    body = {
        "user_id": a.user, "type": a.type, "from_acct": a.from_acct, "to_acct": a.to_acct,
        "amount": a.amount, "currency": a.currency, "payment_option": a.option,
        "rrule": a.rrule, "start_at": a.start_at, "timezone": a.timezone,
    }  # fmt: skip
    if a.end_at:
        body["end_at"] = a.end_at
    if a.schedule_id:
        body["schedule_id"] = a.schedule_id
    return _run(a, s, lambda c: c.create(body, a.key)[0])


def cmd_list(a: argparse.Namespace, s: Settings) -> int:
    def call(c: Any) -> dict[str, Any]:
        filters = {"user_id": a.user, "type": a.type, "status": a.status, "limit": a.limit}
        page = c.list(**filters, after=a.after)
        out = list(page["schedules"])
        while a.all and page["next_after"]:
            page = c.list(**filters, after=page["next_after"])
            out += page["schedules"]
        return {"schedules": out, "next_after": None if a.all else page["next_after"]}

    return _run(a, s, call)


def cmd_show(a: argparse.Namespace, s: Settings) -> int:
    return _run(a, s, lambda c: c.get(a.schedule_id))


def cmd_update(a: argparse.Namespace, s: Settings) -> int:
    changes: dict[str, Any] = {}
    for name in ("amount", "rrule", "start_at", "end_at"):
        if getattr(a, name):
            changes[name] = getattr(a, name)
    if a.no_end:
        changes["end_at"] = None
    if not changes:
        print("error: nothing to change (--amount, --rrule, --start-at, --end-at, --no-end)",
              file=sys.stderr)  # fmt: skip
        return 2
    return _run(a, s, lambda c: c.update(a.schedule_id, changes))


def cmd_status(a: argparse.Namespace, s: Settings) -> int:
    verb = a.schedule_verb
    if verb == "delete":
        return _run(a, s, lambda c: c.delete(a.schedule_id))
    status = "paused" if verb == "pause" else "active"
    return _run(a, s, lambda c: c.update(a.schedule_id, {"status": status}))


def cmd_backfill(a: argparse.Namespace, s: Settings) -> int:
    return _run(a, s, lambda c: c.backfill(a.schedule_id, a.from_at, a.to_at))


def _print_list(body: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table()
    t.add_column("schedule", no_wrap=True)
    t.add_column("type")
    t.add_column("amount", justify="right")
    t.add_column("rule", overflow="fold")
    t.add_column("status")
    t.add_column("next run", overflow="fold")
    for x in body["schedules"]:
        t.add_row(
            x["schedule_id"], x["type"], f"{x['amount']} {x['currency']}", x["rrule"],
            x["status"], x["next_run_at"] or "",
        )  # fmt: skip
    console = Console()
    console.print(t)
    if body.get("next_after"):
        console.print(f"more: --after {body['next_after']} (or --all)")


def _print_one(x: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    reason = f" ({x['status_reason']})" if x.get("status_reason") else ""
    console.print(
        f"[bold]{x['schedule_id']}[/bold] {x['type']} {x['amount']} {x['currency']} "
        f"{x['from_acct']} -> {x['to_acct']} via {x['payment_option']}, user {x['user_id']}: "
        f"[bold]{x['status']}[/bold]{reason}"
    )
    end = f", until {x['end_at']}" if x.get("end_at") else ""
    console.print(f"rule {x['rrule']} from {x['start_at']} ({x['timezone']}){end}")
    console.print(
        f"next run {x['next_run_at'] or '-'} (submitted at {x['next_due_at'] or '-'}); "
        f"failures in a row {x['failures_in_row']}"
    )
    if x.get("backfill"):
        b = x["backfill"]
        console.print(f"backfill {b['from']} .. {b['to']}: next {b['next']}")
    occurrences = x.get("occurrences") or []
    if occurrences:
        t = Table()
        t.add_column("occurrence", no_wrap=True)
        t.add_column("status")
        t.add_column("payment status")
        t.add_column("late (s)", justify="right")
        t.add_column("note", overflow="fold")
        for o in occurrences:
            late = ""
            if o["submitted_at"] and o["due_at"]:
                late = f"{_seconds(o['submitted_at']) - _seconds(o['due_at']):.1f}"
            note = o["reason"] or ""
            if o["status"] == "skipped":
                note = f"{o['skipped_count']} through {o['skipped_through']}: {note}"
            if o["backfill"]:
                note = f"backfill {note}".strip()
            t.add_row(o["occurrence_at"], o["status"], o["payment_status"] or "", late, note)
        console.print(t)
        console.print("payments: sched-<schedule id>-<occurrence as YYYYMMDDTHHMMSSZ>")


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def cmd_scheduler(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_scheduler_process

    return run_scheduler_process(s, a.instance)
