"""The public JSON shapes of a payment (``GET /payments/payment/v1/{id}``, the CLI). Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .model import Attempt, PaymentState, Status
from .statuses import TERMINAL


def iso(ts_us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC (``2026-11-29T22:10:01.123456Z``)."""
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def payment_view(p: PaymentState) -> dict[str, Any]:
    r = p.request
    a = p.attempt
    view: dict[str, Any] = {
        "payment_id": r.payment_id,
        "user_id": r.user_id,
        "type": r.type.value,
        "from_acct": r.from_acct,
        "to_acct": r.to_acct,
        "amount": r.amount,
        "currency": r.currency,
        "payment_option": r.payment_option.value,
        "status": p.status.value,
        "reason": p.reason,
        "is_complete": p.status in TERMINAL,
        "created_at": iso(p.created_at),
        "orders": [
            {
                "payment_order_id": p.order_id,
                "psp": a.psp if a is not None else None,
                "payment_order_status": p.status.value,
                "psp_status": p.psp_status,
                "ledger_updated": p.ledger_updated,
                "wallet_updated": p.wallet_updated,
                "attempts": [attempt_view(x) for x in p.attempts],
            }
        ],
        "history": [{"status": s.value, "at": iso(ts)} for s, ts in p.history],
        "risk": risk_view(p),
    }
    return view


def risk_view(p: PaymentState) -> dict[str, Any] | None:
    """The risk engine's decision (and the reviewer's), or None before it decided."""
    r = p.risk
    if r is None:
        return None
    return {
        "action": r.action,
        "rules": list(r.rules),
        "score": r.score,
        "version": r.version,
        "decided_at": iso(r.decided_at),
        "review_id": r.review_id,
        "review_decision": r.review_decision,
        "reviewer": r.reviewer,
        "note": r.note,
        "reviewed_at": iso(r.reviewed_at) if r.reviewed_at is not None else None,
    }


def attempt_view(a: Attempt) -> dict[str, Any]:
    return {
        "attempt": a.n,
        "psp": a.psp,
        "phase": a.phase.value,
        "token": a.token,
        "outcome": a.outcome.value if a.outcome is not None else None,
        "code": a.code,
        "psp_reference": a.psp_reference,
        "candidates": list(a.candidates),
        "routing_reason": a.routing_reason,
        "started_at": iso(a.started_at),
        "updated_at": iso(a.updated_at or a.started_at),
        "checks": a.checks,
        "review": a.review,
    }


def admission_view(p: PaymentState) -> dict[str, Any]:
    """The payment as it was when it was admitted: the body of the 201 (and of every replay
    of it), the same whenever and wherever it is asked for."""
    first = replace(
        p,
        status=Status.received,
        reason=None,
        attempts=(),
        ledger_updated=False,
        wallet_updated=False,
        history=((Status.received, p.created_at),),
        risk=None,
    )
    return payment_view(first)
