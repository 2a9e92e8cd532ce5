"""The payments scenario: every test instrument of the PSP simulator, pay-ins and pay-outs,
through the payment API, checked against a model. ``paystream demo`` runs it (when the
payments run) and the end-to-end and chaos tests run it under fire.

The model is the simulator's contract (docs/psp-simulator.md): each instrument's outcome,
and the money that follows from it. The checks: every payment ends in the status (and
reason) its instrument dictates; each account's balance is its succeeded pay-ins minus its
succeeded pay-outs; each PSP charged each order at most once, and its settlement file for
the day holds exactly one row per succeeded order (none for the others).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from base.config import Settings
from paystream.api.client import PaymentsClient
from paystream.api.errors import ApiError

TERMINAL = ("succeeded", "failed", "rejected")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    type: str  # pay_in | pay_out
    instrument: str
    option: str
    amount: str
    expect_status: str
    expect_reason: str | None = None
    psp: str | None = None  # the PSP that should move the money
    account: str = "main"  # "main", or "missing" (an account that does not exist)
    currency: str = "USD"


# Phase 1 pays in (every instrument); phase 2 pays out of what came in.
PAY_INS: tuple[Case, ...] = (
    Case("ok", "pay_in", "card_4242424242424242", "card", "100.00", "succeeded", psp="cardco"),
    Case("declined", "pay_in", "card_4000000000000002", "card", "11.00", "failed", "card_declined"),
    Case("no-funds", "pay_in", "card_4000000000009995", "card", "12.00", "failed", "insufficient_funds"),
    Case("flaky", "pay_in", "card_4000000000000119", "card", "13.00", "succeeded", psp="cardco"),
    Case("lost-answer", "pay_in", "card_4000000000000259", "card", "14.00", "succeeded", psp="cardco"),
    Case("hangs", "pay_in", "card_4000000000000341", "card", "15.00", "succeeded", psp="cardco"),
    Case("apple-pay", "pay_in", "card_4242424242424242", "apple_pay", "16.00", "succeeded", psp="cardco"),
    Case("bank", "pay_in", "bank_DE89370400440532013000", "bank_account", "17.00", "succeeded", psp="bankco"),
    Case("bank-closed", "pay_in", "bank_DE62370400440532013001", "bank_account", "18.00", "failed", "account_closed"),
    Case("paypal", "pay_in", "paypal_ok@example.com", "paypal", "19.00", "succeeded", psp="walletco"),
    Case("paypal-declined", "pay_in", "paypal_declined@example.com", "paypal", "20.00", "failed", "payment_declined"),
    Case("no-account", "pay_in", "card_4242424242424242", "card", "21.00", "rejected", "account_not_found", account="missing"),
    Case("no-psp", "pay_in", "bank_DE89370400440532013000", "bank_account", "22.00", "failed", "no_eligible_psp", currency="JPY"),
)  # fmt: skip
PAY_OUTS: tuple[Case, ...] = (
    Case("payout", "pay_out", "bank_DE89370400440532013000", "bank_account", "30.00", "succeeded", psp="bankco"),
    Case("payout-card", "pay_out", "card_4242424242424242", "card", "5.00", "succeeded", psp="cardco"),
    Case("payout-declined", "pay_out", "card_4000000000000002", "card", "7.00", "failed", "card_declined"),
    Case("payout-overdraw", "pay_out", "card_4242424242424242", "card", "100000.00", "rejected", "insufficient_funds"),
)  # fmt: skip


@dataclass
class Outcome:
    case: Case
    payment_id: str
    status: str = ""
    reason: str | None = None
    psp: str | None = None
    ok: bool = False


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    balance_expected: Decimal = Decimal(0)
    balance_live: Decimal | None = None
    charges: dict[str, int] = field(default_factory=dict)  # order id -> charges, all PSPs
    settlement: dict[str, int] = field(default_factory=dict)  # order id -> rows, all PSPs
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    retries: int = 0  # submissions retried with the same key while the API was away

    @property
    def ok(self) -> bool:
        return not self.problems


class Scenario:
    """One run, under its own prefix (ids and the account), so runs never collide."""

    def __init__(self, settings: Settings, prefix: str, user: str | None = None) -> None:
        self.settings = settings
        self.prefix = prefix
        self.user = user or f"{prefix}-user"
        self.account = f"{prefix}-acct"
        self.retries = 0  # submissions retried with the same key (the API was away)

    def payment_id(self, case: Case) -> str:
        return f"{self.prefix}-{case.name}"

    def open_account(self, send: Callable[[list[dict[str, Any]]], None]) -> None:
        send([{
            "type": "open_account", "command_id": f"{self.prefix}-open", "account": self.account,
            "user": self.user, "currency": "USD",
        }])  # fmt: skip

    def submit(
        self, client: PaymentsClient, cases: tuple[Case, ...], retry_s: float = 120.0
    ) -> list[Outcome]:
        """Submit each case; a refusal for want of the API (it may be restarting) is retried
        with the same Idempotency-Key, which is what makes a retry safe."""
        out = []
        for c in cases:
            pid = self.payment_id(c)
            account = self.account if c.account == "main" else f"{self.prefix}-nobody"
            frm, to = (c.instrument, account) if c.type == "pay_in" else (account, c.instrument)
            deadline = time.monotonic() + retry_s
            while True:
                try:
                    client.pay(
                        payment_id=pid, user_id=self.user, type=c.type, from_acct=frm,
                        to_acct=to, amount=c.amount, currency=c.currency,
                        payment_option=c.option, idempotency_key=f"{pid}-key",
                    )  # fmt: skip
                    break
                except (ApiError, httpx.HTTPError) as exc:
                    retry = not isinstance(exc, ApiError) or exc.status in (409, 503)
                    if not retry or time.monotonic() > deadline:
                        raise
                    self.retries += 1
                    time.sleep(0.5)
            out.append(Outcome(c, pid))
        return out

    def settle(
        self, client: PaymentsClient, outcomes: list[Outcome], timeout_s: float, poll_s: float = 0.5
    ) -> None:
        """Wait until every payment is terminal (or the time is up), recording each."""
        deadline = time.monotonic() + timeout_s
        left = list(outcomes)
        while left and time.monotonic() < deadline:
            for o in list(left):
                try:
                    body = client.get_payment(o.payment_id)
                except (ApiError, httpx.HTTPError):
                    continue  # the API restarting, or not there yet: ask again
                o.status, o.reason = body["status"], body.get("reason")
                o.psp = body["orders"][0]["psp"]
                if o.status in TERMINAL:
                    left.remove(o)
            if left:
                time.sleep(poll_s)

    def check(
        self,
        report: Report,
        live_balance: Decimal | None,
        psp_urls: dict[str, str],
        fallbacks: dict[tuple[str, str], tuple[str, ...]] | None = None,
    ) -> None:
        """``fallbacks``: when a fault may have moved a payment to another PSP before any
        money moved (issue 13: a refused connection, an open breaker), the PSPs eligible for
        each (option, currency), any of which is then right."""
        for o in report.outcomes:
            c = o.case
            psps = (fallbacks or {}).get((c.option, c.currency), ()) or (c.psp,)
            o.ok = o.status == c.expect_status and (
                c.expect_reason is None or o.reason == c.expect_reason
            ) and (c.psp is None or o.psp in psps)  # fmt: skip
            if not o.ok:
                report.problems.append(
                    f"{o.payment_id}: {o.status} ({o.reason}, psp {o.psp}); expected "
                    f"{c.expect_status} ({c.expect_reason}, psp {c.psp})"
                )
        sign = {"pay_in": 1, "pay_out": -1}
        report.balance_expected = sum(
            (Decimal(o.case.amount) * sign[o.case.type] for o in report.outcomes
             if o.case.expect_status == "succeeded" and o.case.account == "main"),
            Decimal(0),
        )  # fmt: skip
        report.balance_live = live_balance
        if live_balance != report.balance_expected:
            report.problems.append(
                f"{self.account}: balance {live_balance}, the model says {report.balance_expected}"
            )
        ours = {f"{o.payment_id}/1": o for o in report.outcomes}
        now = datetime.now(UTC)
        # A run that crosses midnight (UTC) settles on two days.
        days = {(now - timedelta(days=d)).strftime("%Y-%m-%d") for d in (0, 1)}
        for psp, url in psp_urls.items():
            for ref, n in _charges(url).items():
                if ref in ours:
                    report.charges[ref] = report.charges.get(ref, 0) + n
            for row in (r for day in sorted(days) for r in _settlement_rows(url, day)):
                ref = row.get("Merchant Reference") or ""
                if ref in ours:
                    report.settlement[ref] = report.settlement.get(ref, 0) + 1
                    if ours[ref].psp != psp:
                        report.problems.append(f"{ref}: settled by {psp}, paid via {ours[ref].psp}")
        for ref, o in ours.items():
            charged = report.charges.get(ref, 0)
            rows = report.settlement.get(ref, 0)
            want = 1 if o.case.expect_status == "succeeded" else 0
            if charged > 1:
                report.problems.append(f"{ref}: charged {charged} times")
            if rows != want:
                report.problems.append(f"{ref}: {rows} settlement rows, expected {want}")


def _charges(url: str) -> dict[str, int]:
    got: dict[str, int] = httpx.get(f"{url}/v1/admin/stats", timeout=10).json()[
        "charges_by_reference"
    ]
    return got


def _settlement_rows(url: str, day: str) -> list[dict[str, str]]:
    r = httpx.get(f"{url}/v1/settlement", params={"date": day}, timeout=30)
    r.raise_for_status()
    return list(csv.DictReader(io.StringIO(r.text)))


def _fallbacks(settings: Settings) -> dict[tuple[str, str], tuple[str, ...]]:
    """The eligible PSPs (psps.toml's routing) of every case's option and currency."""
    from connectors.psp.config import load_psps, psps_path
    from streams.payments.routing import eligible

    infos = [p.info() for p in load_psps(psps_path(settings.home))]
    return {
        (c.option, c.currency): tuple(p.name for p in eligible(infos, c.option, c.currency))
        for c in (*PAY_INS, *PAY_OUTS)
    }


def psp_urls(settings: Settings) -> dict[str, str]:
    """The PSPs of psps.toml that the simulator serves (their admin and settlement API)."""
    from connectors.psp.config import load_psps, psps_path

    return {
        p.name: p.base_url.rstrip("/")
        for p in load_psps(psps_path(settings.home))
        if p.connector == "simulator"
    }


def run(
    settings: Settings,
    prefix: str,
    send: Callable[[list[dict[str, Any]]], None],
    wait: Callable[[], None],
    live_balance: Callable[[str], Decimal | None],
    timeout_s: float = 180.0,
    between: Callable[[str], None] | None = None,
    allow_fallback: bool = False,
) -> Report:
    """The whole scenario: open the account, pay in with every instrument, pay out, check.
    ``between(phase)`` is called after each phase's submission and before the checks
    (``pay-ins``, ``pay-outs``, ``check``: the chaos test stops killing at the last)."""
    started = time.monotonic()
    sc = Scenario(settings, prefix)
    report = Report()
    sc.open_account(send)
    wait()
    with PaymentsClient.from_settings(settings) as client:
        ins = sc.submit(client, PAY_INS)
        if between:
            between("pay-ins")
        sc.settle(client, ins, timeout_s)
        outs = sc.submit(client, PAY_OUTS)
        if between:
            between("pay-outs")
        sc.settle(client, outs, timeout_s)
    report.outcomes = ins + outs
    report.retries = sc.retries
    if between:
        between("check")
    wait()
    sc.check(
        report,
        live_balance(sc.account),
        psp_urls(settings),
        _fallbacks(settings) if allow_fallback else None,
    )
    report.seconds = time.monotonic() - started
    return report
