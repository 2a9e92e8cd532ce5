"""The payments as an agent of the exactly-once processor: Avro records <-> the pure core.

The only place that knows both the payment records (schemas/*.avsc) and the domain types of
``streams.payments``; docs/payments.md describes the flows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from streams.agent import TS_MAX, BadInput, Out
from streams.payments import decide, evolve_all
from streams.payments import model as pm
from streams.payments.routing import Health, PspInfo
from streams.payments.statuses import TERMINAL
from streams.payments_fields import AMOUNT_CHARS_MAX as AMOUNT_CHARS_MAX
from streams.payments_fields import CURRENCY as CURRENCY
from streams.payments_fields import ID_CHARS_MAX as ID_CHARS_MAX
from streams.payments_fields import IDEMPOTENCY_KEY_CHARS_MAX as IDEMPOTENCY_KEY_CHARS_MAX
from streams.payments_fields import PAYMENT_ID as PAYMENT_ID
from streams.payments_fields import opt_str as _opt
from streams.payments_fields import req_str as _str
from streams.payments_fields import request_fields as _request_fields
from streams.payments_risk import (
    review_opened,
    risk_request,
    to_review_decided,
    to_risk_decided,
)
from streams.payments_state import decode_state, encode_state

log = logging.getLogger(__name__)

_PSP_KINDS = frozenset({"token_created", "token_failed", "answered", "notified"})
CHECKS_MAX = 1_000_000  # polls and janitor checks of one attempt: far beyond any schedule


class PaymentsAgent:
    """Payments keyed by payment id, and idempotency keys keyed ``@idem/<scope>/<key>``."""

    name = "payments"
    input_topics: tuple[str, ...] = ("payments",)
    step_topic = "payments"
    changelog_topic = "payments_state"

    def __init__(
        self, psps: tuple[PspInfo, ...], health: Callable[[], Health] | None = None
    ) -> None:
        """``health``: the PSPs' circuit breakers as last read (streams.psp_health), for
        routing; none: every PSP is taken as healthy."""
        self.psps = psps
        self.health = health

    # --- in ---

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> pm.Message:
        if schema == "RequestPayment":
            return to_request(record, ts_us)
        if schema == "PspResult":
            return to_psp_reported(record, ts_us)
        if schema == "CommandOutcome":
            return to_ledger_replied(record, ts_us)
        if schema == "RiskDecision":
            return to_risk_decided(record, ts_us)
        if schema == "ReviewEvent":
            return to_review_decided(record, ts_us)
        raise BadInput("not_a_payment_message", f"{schema} is not a payments message")

    def decode_step(self, record: dict[str, Any]) -> pm.Message:
        return to_request(record, 0)

    def decide(self, state: pm.State | None, message: pm.Message) -> list[pm.Event]:
        health = self.health() if self.health is not None else None
        events = decide(state, message, self.psps, health)
        answer = isinstance(message, pm.LedgerReplied | pm.PspReported)
        if not events and answer and not isinstance(state, pm.PaymentState):
            log.warning("answer for unknown payment %r dropped: %s", message.key, message)
        return events

    def evolve(self, state: pm.State | None, events: list[pm.Event]) -> pm.State | None:
        return evolve_all(state, events)

    def direct_step(self, event: pm.Event) -> pm.Message | None:
        if isinstance(event, pm.KeyReserved):
            k = event.state
            return pm.CreatePayment(k.scope, k.idempotency_key, k.digest, event.request, k.ts)
        return None

    # --- out ---

    def records(self, event: pm.Event, direct: bool) -> Iterable[Out]:
        return to_records(event, direct)

    def encode_state(self, state: pm.State) -> bytes:
        return encode_state(state)

    def decode_state(self, data: bytes) -> pm.State:
        return decode_state(data)


# --- records in ---


def _ts(v: Any, fallback: int) -> int:
    if type(v) is not int or not 0 <= v <= TS_MAX:
        raise BadInput("bad_timestamp", f"ts {v!r} is out of range")
    return v or fallback


def to_payment_request(r: dict[str, Any]) -> pm.PaymentRequest:
    payment_id = _str(r, "payment_id")
    if not PAYMENT_ID.match(payment_id):
        raise BadInput("bad_field", "payment_id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
    currency = _str(r, "currency")
    if not CURRENCY.match(currency):
        raise BadInput("bad_field", "currency must be three capital letters")
    try:
        ptype = pm.PaymentType(_str(r, "type"))
        option = pm.PaymentOption(_str(r, "payment_option"))
    except ValueError as exc:
        raise BadInput("bad_field", str(exc)) from None
    return pm.PaymentRequest(
        payment_id=payment_id,
        user_id=_str(r, "user_id"),
        type=ptype,
        from_acct=_str(r, "from_acct"),
        to_acct=_str(r, "to_acct"),
        amount=_str(r, "amount", AMOUNT_CHARS_MAX),
        currency=currency,
        payment_option=option,
    )


def to_request(r: dict[str, Any], log_ts: int) -> pm.ReserveKey | pm.CreatePayment:
    stage = r.get("stage")
    fields = (
        _str(r, "scope", ID_CHARS_MAX + 5),
        _str(r, "idempotency_key", IDEMPOTENCY_KEY_CHARS_MAX),
        _str(r, "digest"),
        to_payment_request(r),
        _ts(r.get("ts", 0), log_ts),
    )
    if stage == "reserve":
        return pm.ReserveKey(*fields)
    if stage == "create":
        return pm.CreatePayment(*fields)
    raise BadInput("bad_field", f"stage {str(stage)[:32]!r} is neither reserve nor create")


def to_ledger_replied(r: dict[str, Any], log_ts: int) -> pm.LedgerReplied:
    reply_to = r.get("reply_to")
    if not isinstance(reply_to, str) or not PAYMENT_ID.match(reply_to):
        raise BadInput("bad_field", "a ledger outcome on the payments topic needs a reply_to")
    status = r.get("status")
    if status not in ("accepted", "rejected"):
        raise BadInput("bad_field", f"outcome status {str(status)[:32]!r}")
    return pm.LedgerReplied(
        reply_to, _str(r, "command_id"), status == "accepted", _opt(r, "reason"), log_ts
    )


def to_psp_reported(r: dict[str, Any], log_ts: int) -> pm.PspReported:
    kind = _str(r, "kind")
    if kind not in _PSP_KINDS:
        raise BadInput("bad_field", f"unknown PSP result kind {kind[:32]!r}")
    attempt = r.get("attempt")
    if type(attempt) is not int or not 1 <= attempt <= 1000:
        raise BadInput("bad_field", f"attempt {attempt!r} is out of range")
    check = r.get("check", 0)
    if type(check) is not int or not 0 <= check <= CHECKS_MAX:
        raise BadInput("bad_field", f"check {check!r} is out of range")
    status = _opt(r, "status")
    try:
        psp_status = None if status is None else pm.PspStatus(status)
    except ValueError:
        raise BadInput("bad_field", f"unknown PSP status {str(status)[:32]!r}") from None
    return pm.PspReported(
        payment_id=_str(r, "payment_id"),
        attempt=attempt,
        psp=_str(r, "psp"),
        kind=kind,
        token=_opt(r, "token"),
        status=psp_status,
        code=_opt(r, "code"),
        psp_reference=_opt(r, "psp_reference"),
        retryable=r.get("retryable") is True,
        source=_opt(r, "source") or "executor",
        ts=log_ts,
        check=check,
    )


# --- records out ---


def request_record(
    stage: str, scope: str, key: str, digest: str, req: pm.PaymentRequest, ts: int
) -> dict[str, Any]:
    """A RequestPayment record (the API writes stage ``reserve``; the worker ``create``)."""
    return {
        "stage": stage,
        "scope": scope,
        "idempotency_key": key,
        "digest": digest,
        **_request_fields(req),
        "ts": ts,
    }


_LEDGER_SCHEMAS = {
    pm.LedgerStep.authorize: "AuthorizePayin",
    pm.LedgerStep.settle: "SettlePayin",
    pm.LedgerStep.cancel: "CancelPayin",
    pm.LedgerStep.hold: "HoldPayout",
    pm.LedgerStep.post: "PostPayout",
    pm.LedgerStep.void: "VoidPayout",
}


def _ledger_command(e: pm.LedgerCommandIssued) -> Out:
    req = e.payment
    record: dict[str, Any] = {
        "command_id": e.command_id,
        "account": req.account,
        "payment_order_id": pm.order_id_of(req.payment_id),
        "reply_to": req.payment_id,
    }
    if e.step in (pm.LedgerStep.authorize, pm.LedgerStep.hold):
        record.update(amount=req.amount, currency=req.currency)
    elif e.step in (pm.LedgerStep.settle, pm.LedgerStep.post):
        record["psp"] = e.psp
    else:
        record["reason"] = e.reason
    return Out("commands", _LEDGER_SCHEMAS[e.step], req.account, record)


def _psp_request(e: pm.PspRequested) -> Out:
    req, a = e.payment, e.attempt
    order = pm.order_id_of(req.payment_id)
    request_id = f"{order}/{a.n}/{e.kind.value}" + (f"/{e.check}" if e.check else "")
    return Out(
        "psp_requests",
        "PspRequest",
        order,
        {
            "request_id": request_id,
            "payment_id": req.payment_id,
            "payment_order_id": order,
            "attempt": a.n,
            "kind": e.kind.value,
            "psp": a.psp,
            "token": a.token,
            "direction": req.type.value,
            "amount": req.amount,
            "currency": req.currency,
            "payment_option": req.payment_option.value,
            "instrument": req.instrument,
            "ts": e.ts,
            "check": e.check,
            "fallback": e.fallback,
            "not_before": e.ts + e.delay_us if e.delay_us else None,
            "tries": 0,
            "first_tried_at": None,
            "history": [],
        },
    )


def _review_record(e: pm.ReviewRequested) -> Out:
    """An order the poller or the janitor gave up on: an item on the review queue (kind
    recon, category psp_unresolved), its evidence what the PSP last said."""
    p, a = e.payment, e.attempt
    item = pm.psp_review_id_of(p.payment_id, a.n, a.checks)
    evidence = {
        "payment_order_id": p.order_id,
        "attempt": a.n,
        "psp": a.psp,
        "token": a.token,
        "status": p.status.value,
        "checks": a.checks,
        "code": a.code,
        "reason": e.reason,
        "type": p.request.type.value,
        "amount": p.request.amount,
        "currency": p.request.currency,
    }
    return Out(
        "reviews",
        "ReviewRequest",
        item,
        {
            "request_id": f"{item}/open",
            "op": "open",
            "item_id": item,
            "kind": pm.PSP_REVIEW_KIND,
            "payment_id": p.payment_id,
            "rules": [],
            "category": pm.PSP_REVIEW_CATEGORY,
            "evidence": json.dumps(evidence, separators=(",", ":")),
            "actions": ["resolve"],
            "decision": None,
            "note": None,
            "reviewer": None,
            "ts": e.ts,
        },
    )


def _attempt_record(payment_id: str, a: pm.Attempt) -> Out:
    order = pm.order_id_of(payment_id)
    return Out(
        "payment_events",
        "PaymentAttempt",
        payment_id,
        {
            "event_id": f"{order}/{a.n}/v{a.version}",
            "payment_id": payment_id,
            "payment_order_id": order,
            "attempt": a.n,
            "version": a.version,
            "psp": a.psp,
            "candidates": list(a.candidates),
            "routing_reason": a.routing_reason,
            "token": a.token,
            "phase": a.phase.value,
            "outcome": a.outcome.value if a.outcome is not None else None,
            "code": a.code,
            "psp_reference": a.psp_reference,
            "started_at": a.started_at,
            "ts": a.updated_at or a.started_at,
            "checks": a.checks,
            "review": a.review,
        },
    )


def _status_record(p: pm.PaymentState) -> Out:
    a = p.attempt
    ts = p.history[-1][1] if p.history else p.created_at
    return Out(
        "payment_events",
        "PaymentStatusChanged",
        p.payment_id,
        {
            "event_id": f"{p.payment_id}/v{p.version}",
            "version": p.version,
            **_request_fields(p.request),
            "payment_order_id": p.order_id,
            "status": p.status.value,
            "reason": p.reason,
            "psp": a.psp if a is not None else None,
            "psp_status": p.psp_status,
            "ledger_updated": p.ledger_updated,
            "wallet_updated": p.wallet_updated,
            "is_complete": p.status in TERMINAL,
            "ts": max(ts, a.updated_at if a is not None else 0),
        },
    )


def to_records(event: pm.Event, direct: bool = False) -> Iterator[Out]:
    match event:
        case pm.KeyReserved():
            if not direct:
                k = event.state
                yield Out(
                    "payments",
                    "RequestPayment",
                    k.payment_id,
                    request_record(
                        "create", k.scope, k.idempotency_key, k.digest, event.request, k.ts
                    ),
                )
        case pm.LedgerCommandIssued():
            yield _ledger_command(event)
        case pm.PspRequested():
            yield _psp_request(event)
        case pm.ReviewRequested():
            yield _review_record(event)
        case pm.AttemptStarted() | pm.AttemptChanged():
            yield _attempt_record(event.payment_id, event.attempt)
        case pm.Snapshot():
            yield _status_record(event.state)
        case pm.RiskRequested():
            yield risk_request("payment", event.payment, None, None, event.ts)
        case pm.OutcomeReported():
            yield risk_request("outcome", event.payment, event.status.value, event.reason, event.ts)
        case pm.ReviewOpened():
            yield review_opened(event)
        case _:
            # PaymentCreated, StatusChanged, LedgerUpdated, LedgerRefused: the snapshot says it.
            return
