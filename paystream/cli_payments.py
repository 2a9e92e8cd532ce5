"""The payments' CLI verbs: ``pay-in``, ``pay-out``, ``payment``, ``psp settlement``, and the
payments' process verbs. They go through the payment API (the same code path as any client),
with the service token."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from base.config import Settings

Verb = Callable[..., argparse.ArgumentParser]

OPTIONS = ("card", "bank_account", "paypal", "apple_pay", "google_pay")
TERMINAL = ("succeeded", "failed", "rejected")
WAIT_POLL_S = 0.2


def register(sub: Any, verb: Verb) -> None:
    for kind, frm, to in (
        ("pay-in", "the external instrument charged, e.g. card_4242424242424242", "your account"),
        (
            "pay-out",
            "your account",
            "the external instrument paid, e.g. bank_DE89370400440532013000",
        ),
    ):
        sp = verb(
            kind,
            cmd_pay,
            f"a {kind.replace('-', '')} through a PSP (POST /payments/payment/v1)",
            True,
        )
        sp.set_defaults(payment_type=kind.replace("-", "_"))
        sp.add_argument("--from", dest="from_acct", required=True, help=frm)
        sp.add_argument("--to", dest="to_acct", required=True, help=to)
        sp.add_argument("--amount", required=True, help='a decimal string, e.g. "10.00"')
        sp.add_argument("--currency", default="USD", help="ISO 4217 (default USD)")
        sp.add_argument("--option", default="card", choices=OPTIONS, help="payment option")
        sp.add_argument("--user", required=True, help="the user the payment is for")
        sp.add_argument("--payment-id", help="the payment's id (default: a new uuid)")
        sp.add_argument(
            "--key", help="Idempotency-Key (default: a new uuid; repeat one to retry safely)"
        )
        sp.add_argument(
            "--wait", type=float, metavar="S", help="wait up to S seconds for a terminal status"
        )
    sp = verb("payment", cmd_payment, "a payment as it stands, with its attempts and history", True)
    sp.add_argument("payment_id")

    psp = verb(
        "psp", cmd_psp_help, "PSP operations: status, outage, dead letters, settlement files"
    )
    psp_sub = psp.add_subparsers(dest="psp_verb", metavar="PSP_VERB")
    from paystream.cli_psp import register as register_psp

    register_psp(psp_sub)  # status, outage, dlq list|replay (issue 13)
    sp = psp_sub.add_parser(
        "settlement",
        help="a PSP's settlement file for a day (Adyen Settlement details report columns)",
        description="Fetch a PSP's settlement file for one day from the PSP (CSV).",
    )
    sp.set_defaults(fn=cmd_psp_settlement)
    sp.add_argument("psp", help="a PSP of psps.toml, e.g. cardco")
    sp.add_argument("--date", required=True, help="YYYY-MM-DD (UTC)")
    sp.add_argument("--out", help="write the CSV here (default: stdout)")

    # Internal process verbs (no help: they stay out of the list; `paystream up` runs them).
    sp = sub.add_parser("payments-worker")
    sp.set_defaults(fn=cmd_payments_worker)
    sp.add_argument("--instance", type=int, required=True)
    sp = sub.add_parser("executor")
    sp.set_defaults(fn=cmd_executor)
    sp.add_argument("--instance", type=int, default=1)
    sub.add_parser("api").set_defaults(fn=cmd_api)
    sub.add_parser("psp-sim").set_defaults(fn=cmd_psp_sim)


def _client(s: Settings) -> Any:
    from paystream.api.client import PaymentsClient
    from paystream.bootstrap import resolved

    return PaymentsClient.from_settings(resolved(s))


def cmd_pay(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.errors import ApiError

    payment_id = a.payment_id or f"pay-{uuid.uuid4().hex[:16]}"
    with _client(s) as client:
        try:
            got = client.pay(
                payment_id=payment_id,
                user_id=a.user,
                type=a.payment_type,
                from_acct=a.from_acct,
                to_acct=a.to_acct,
                amount=a.amount,
                currency=a.currency,
                payment_option=a.option,
                idempotency_key=a.key,
            )
        except ApiError as exc:
            return _refused(exc, a.json)
        body = got.body
        if a.wait:
            body = _wait_terminal(client, payment_id, a.wait) or body
    _show(body, a.json)
    return 0 if body["status"] not in ("failed", "rejected") else 2


def cmd_payment(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.errors import ApiError

    with _client(s) as client:
        try:
            body = client.get_payment(a.payment_id)
        except ApiError as exc:
            return _refused(exc, a.json)
    _show(body, a.json)
    return 0


def _wait_terminal(client: Any, payment_id: str, timeout_s: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        body = client.get_payment(payment_id)
        if body["status"] in TERMINAL:
            return body
        time.sleep(WAIT_POLL_S)
    return body


def _refused(exc: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": exc.code, "message": exc.message, "field": exc.field}))
    else:
        where = f" ({exc.field})" if exc.field else ""
        print(f"refused: {exc.status} {exc.code}{where}: {exc.message}", file=sys.stderr)
    return 1


def _show(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(body, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return
    from rich.console import Console
    from rich.table import Table

    order = body["orders"][0]
    reason = f" ({body['reason']})" if body.get("reason") else ""
    console = Console()
    console.print(
        f"[bold]{body['payment_id']}[/bold] {body['type']} {body['amount']} {body['currency']} "
        f"{body['from_acct']} -> {body['to_acct']} via {body['payment_option']}: "
        f"[bold]{body['status']}[/bold]{reason}"
    )
    console.print(
        f"order {order['payment_order_id']}: psp {order['psp'] or ''}, psp status "
        f"{order['psp_status'] or ''}, ledger updated {order['ledger_updated']}"
    )
    if order["attempts"]:
        t = Table("attempt", "psp", "phase", "outcome", "code", "psp reference", "why this PSP")
        for x in order["attempts"]:
            t.add_row(
                str(x["attempt"]), x["psp"], x["phase"], x["outcome"] or "", x["code"] or "",
                x["psp_reference"] or "", x["routing_reason"],
            )  # fmt: skip
        console.print(t)
    console.print("history: " + ", ".join(f"{h['status']} {h['at']}" for h in body["history"]))


def cmd_psp_help(a: argparse.Namespace, s: Settings) -> int:
    print(
        "usage: paystream psp status [--json] | outage PSP --seconds S | dlq list|replay | "
        "settlement PSP --date YYYY-MM-DD [--out F.csv]",
        file=sys.stderr,
    )
    return 2


def cmd_psp_settlement(a: argparse.Namespace, s: Settings) -> int:
    import httpx

    from connectors.psp.config import load_psps, psps_path
    from connectors.psp.errors import PspConfigError

    try:
        psps = {p.name: p for p in load_psps(psps_path(s.home))}
    except PspConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if a.psp not in psps:
        print(f"error: no PSP {a.psp!r} in psps.toml ({', '.join(psps)})", file=sys.stderr)
        return 1
    url = psps[a.psp].base_url.rstrip("/") + "/v1/settlement"
    try:
        r = httpx.get(url, params={"date": a.date}, timeout=60)
    except httpx.HTTPError as exc:
        print(f"error: {a.psp} at {url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"error: {a.psp} answered {r.status_code}: {r.text[:300]}", file=sys.stderr)
        return 1
    if a.out:
        with open(a.out, "w", newline="") as f:
            f.write(r.text)
        rows = max(0, r.text.count("\n") - 1)
        print(f"{a.out}: {rows} rows from {a.psp} for {a.date}", file=sys.stderr)
    else:
        sys.stdout.write(r.text)
    return 0


def cmd_payments_worker(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_payments_worker

    return run_payments_worker(s, a.instance)


def cmd_executor(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_executor_process

    return run_executor_process(s, a.instance)


def cmd_api(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_api_process

    return run_api_process(s)


def cmd_psp_sim(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_psp_simulator

    return run_psp_simulator(s)
