"""The payments as an agent of the exactly-once processor: Avro records <-> the pure core.

The only place that knows both the payment records (schemas/*.avsc) and the domain types of
``streams.payments``; docs/payments.md describes the flows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from streams.agent import TS_MAX, BadInput, Out
from streams.payments import decide, evolve_all
from streams.payments import model as pm
from streams.payments.routing import PspInfo
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
    risk_json,
    risk_of,
    risk_request,
    to_review_decided,
    to_risk_decided,
)

log = logging.getLogger(__name__)

_PSP_KINDS = frozenset({"token_created", "token_failed", "answered", "notified"})


class PaymentsAgent:
    """Payments keyed by payment id, and idempotency keys keyed ``@idem/<scope>/<key>``."""

    name = "payments"
    input_topics: tuple[str, ...] = ("payments",)
    step_topic = "payments"
    changelog_topic = "payments_state"

    def __init__(self, psps: tuple[PspInfo, ...]) -> None:
        self.psps = psps

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
        events = decide(state, message, self.psps)
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
    return Out(
        "psp_requests",
        "PspRequest",
        order,
        {
            "request_id": f"{order}/{a.n}/{e.kind}",
            "payment_id": req.payment_id,
            "payment_order_id": order,
            "attempt": a.n,
            "kind": e.kind,
            "psp": a.psp,
            "token": a.token,
            "direction": req.type.value,
            "amount": req.amount,
            "currency": req.currency,
            "payment_option": req.payment_option.value,
            "instrument": req.instrument,
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


# --- state <-> changelog bytes (compact JSON) ---


def encode_state(state: pm.State) -> bytes:
    if isinstance(state, pm.KeyState):
        v: list[Any] = [
            "k",
            state.scope,
            state.idempotency_key,
            state.payment_id,
            state.digest,
            state.ts,
        ]
    else:
        r = state.request
        v = [
            "p",
            [
                r.payment_id,
                r.user_id,
                r.type.value,
                r.from_acct,
                r.to_acct,
                r.amount,
                r.currency,
                r.payment_option.value,
            ],
            state.scope,
            state.idempotency_key,
            state.digest,
            state.created_at,
            state.status.value,
            state.reason,
            list(state.candidates),
            state.routing_reason,
            [_attempt_json(a) for a in state.attempts],
            state.ledger_updated,
            state.wallet_updated,
            [[s.value, ts] for s, ts in state.history],
            state.version,
            risk_json(state.risk),
        ]
    return json.dumps(v, separators=(",", ":")).encode()


def _attempt_json(a: pm.Attempt) -> list[Any]:
    return [
        a.n,
        a.psp,
        list(a.candidates),
        a.routing_reason,
        a.started_at,
        a.phase.value,
        a.token,
        a.outcome.value if a.outcome is not None else None,
        a.code,
        a.psp_reference,
        a.updated_at,
        a.version,
    ]


def decode_state(data: bytes) -> pm.State:
    v = json.loads(data)
    if v[0] == "k":
        return pm.KeyState(v[1], v[2], v[3], v[4], v[5])
    pid, user, ptype, frm, to, amount, cur, option = v[1]
    return pm.PaymentState(
        request=pm.PaymentRequest(
            pid, user, pm.PaymentType(ptype), frm, to, amount, cur, pm.PaymentOption(option)
        ),
        scope=v[2],
        idempotency_key=v[3],
        digest=v[4],
        created_at=v[5],
        status=pm.Status(v[6]),
        reason=v[7],
        candidates=tuple(v[8]),
        routing_reason=v[9],
        attempts=tuple(
            pm.Attempt(
                n,
                psp,
                tuple(cands),
                why,
                started,
                pm.Phase(phase),
                token,
                None if outcome is None else pm.PspStatus(outcome),
                code,
                ref,
                updated,
                version,
            )
            for n, psp, cands, why, started, phase, token, outcome, code, ref, updated, version in v[
                10
            ]
        ),
        ledger_updated=v[11],
        wallet_updated=v[12],
        history=tuple((pm.Status(s), ts) for s, ts in v[13]),
        version=v[14],
        risk=risk_of(v[15]) if len(v) > 15 else None,  # states written before the risk step
    )
