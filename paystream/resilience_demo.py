"""The resilience part of ``paystream demo`` (issue 13): an outage of ``cardco`` while card
payments come in (they move to ``backupcard``; cardco's circuit breaker opens, then closes
after the outage), and the unknown orders of the payments scenario (the lost and the held
answers) recovered by the janitor. Checked: every payment of the outage succeeded once, on
backupcard; the breaker opened and closed; each recovered order went through ``unknown``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from base.config import Settings
from paystream import psp_ops
from paystream.api.client import PaymentsClient

OUTAGE_S = 15.0
PAYMENTS = 8
# After the outage: the breaker's cool-down (5 s), a probe or two, its trials.
CLOSE_WITHIN_S = 45.0
TERMINAL = ("succeeded", "failed", "rejected")


def _wait(predicate: Callable[[], Any], timeout_s: float, poll_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(poll_s)
    return None


def _breaker(settings: Settings, psp: str) -> str:
    b = psp_ops.breakers(settings).get(psp)
    return b["state"] if b else "closed"


def outage(settings: Settings, prefix: str, account: str, user: str) -> dict[str, Any]:
    """cardco out for OUTAGE_S while PAYMENTS card pay-ins come in."""
    problems: list[str] = []
    psp_ops.outage(settings, "cardco", OUTAGE_S)
    started = time.monotonic()
    ids = [f"{prefix}-outage-{i}" for i in range(PAYMENTS)]
    opened_s: float | None = None
    with PaymentsClient.from_settings(settings) as client:
        for pid in ids:
            client.pay(
                payment_id=pid, user_id=user, type="pay_in", from_acct="card_4242424242424242",
                to_acct=account, amount="5.00", currency="USD", payment_option="card",
                idempotency_key=f"{pid}-key",
            )  # fmt: skip
            if opened_s is None and _breaker(settings, "cardco") == "open":
                opened_s = time.monotonic() - started
        if opened_s is None and _wait(lambda: _breaker(settings, "cardco") == "open", OUTAGE_S):
            opened_s = time.monotonic() - started
        bodies = {pid: _wait_terminal(client, pid) for pid in ids}
        left_s = OUTAGE_S - (time.monotonic() - started)
        time.sleep(max(0.0, left_s))
        ended = time.monotonic()
        closed = _wait(lambda: _breaker(settings, "cardco") == "closed", CLOSE_WITHIN_S, 0.5)
        closed_s = time.monotonic() - ended if closed else None
        after = f"{prefix}-after-outage"
        client.pay(
            payment_id=after, user_id=user, type="pay_in", from_acct="card_4242424242424242",
            to_acct=account, amount="5.00", currency="USD", payment_option="card",
            idempotency_key=f"{after}-key",
        )  # fmt: skip
        after_body = _wait_terminal(client, after)
    via = {pid: (b or {}).get("orders", [{}])[0].get("psp") for pid, b in bodies.items()}
    for pid, b in bodies.items():
        if not b or b["status"] != "succeeded" or via[pid] != "backupcard":
            problems.append(f"{pid}: {b and b['status']} via {via[pid]}; expected succeeded via backupcard")  # fmt: skip
    if opened_s is None:
        problems.append("cardco's breaker never opened during the outage")
    if closed_s is None:
        problems.append(f"cardco's breaker not closed {CLOSE_WITHIN_S:g} s after the outage")
    after_psp = (after_body or {}).get("orders", [{}])[0].get("psp")
    if not after_body or after_body["status"] != "succeeded" or after_psp != "cardco":
        problems.append(f"{after}: not back on cardco after the outage ({after_psp})")
    return {
        "outage_s": OUTAGE_S,
        "payments": len(ids),
        "via": dict(Counter(str(p) for p in via.values())),
        "breaker_open_after_s": None if opened_s is None else round(opened_s, 1),
        "breaker_closed_after_outage_s": None if closed_s is None else round(closed_s, 1),
        "after_outage_psp": after_psp,
        "payment_ids": [*ids, after],
        "problems": problems,
        "verified": not problems,
    }


def _wait_terminal(client: PaymentsClient, pid: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _wait(lambda: _terminal(client, pid), 60)
    return found


def _terminal(client: PaymentsClient, pid: str) -> dict[str, Any] | None:
    try:
        body = client.get_payment(pid)
    except Exception:
        return None
    return body if body["status"] in TERMINAL else None


def recovered_unknowns(settings: Settings, payment_ids: list[str]) -> list[dict[str, Any]]:
    """Orders that went through ``unknown`` and how they ended: the janitor's work."""
    out = []
    with PaymentsClient.from_settings(settings) as client:
        for pid in payment_ids:
            body = client.get_payment(pid)
            hist = [(h["status"], h["at"]) for h in body["history"]]
            if not any(s == "unknown" for s, _ in hist):
                continue
            went = next(at for s, at in hist if s == "unknown")
            left = next((at for s, at in hist if s in ("posting", "failed", "reversing", "pending")
                         and at >= went), None)  # fmt: skip
            attempt = body["orders"][0]["attempts"][-1]
            out.append(
                {
                    "payment_id": pid,
                    "status": body["status"],
                    "psp": attempt["psp"],
                    "checks": attempt["checks"],
                    "unknown_for_s": None if left is None else round(_s(left) - _s(went), 1),
                }
            )
    return out


def _s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
