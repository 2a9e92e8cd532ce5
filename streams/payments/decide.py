"""decide(state, message, psps, health) -> events: the payments' rules, as a pure function.

The state is that of the message's key: a payment, or an idempotency key. ``psps`` is the
routing table (psps.toml); each attempt records the candidates it was chosen from, so a
decision can be explained from the log alone.
"""

from __future__ import annotations

from dataclasses import replace

from streams.ledger.errors import InvariantViolation

from .answers import first_attempt, psp_reported
from .evolve import evolve_all
from .model import (
    NO_ELIGIBLE_PSP,
    RISK_BLOCKED,
    RISK_DECLINED,
    CreatePayment,
    Event,
    KeyReserved,
    KeyState,
    LedgerCommandIssued,
    LedgerRefused,
    LedgerReplied,
    LedgerStep,
    LedgerUpdated,
    Message,
    OutcomeReported,
    PaymentCreated,
    PaymentState,
    PaymentType,
    PspReported,
    ReserveKey,
    ReviewDecided,
    ReviewOpened,
    RiskDecided,
    RiskRecorded,
    RiskRequested,
    RiskSummary,
    Snapshot,
    State,
    Status,
    StatusChanged,
    order_id_of,
    review_id_of,
)
from .routing import Health, PspInfo, route

# Statuses whose reaching the risk engine counts as a decline of the user's.
_DECLINES = (Status.failed, Status.rejected)

# Events after which the payment's public snapshot changed.
_VISIBLE = (PaymentCreated, StatusChanged, LedgerUpdated, LedgerRefused, RiskRecorded)


def decide(
    state: State | None,
    msg: Message,
    psps: tuple[PspInfo, ...],
    health: Health | None = None,
) -> list[Event]:
    """``health``: the PSPs' circuit breakers as last read (routing skips open ones)."""
    health = health or {}
    match msg:
        case ReserveKey():
            return _reserve(_key(state), msg)
        case CreatePayment():
            events = _create(_payment_or_none(state), msg, psps)
        case LedgerReplied():
            p = _payment_or_none(state)
            # An answer for a payment this key never held (a stray record): nothing to do.
            events = [] if p is None else _ledger_replied(p, msg, psps, health)
        case PspReported():
            p = _payment_or_none(state)
            events = [] if p is None else psp_reported(p, msg, psps, health)
        case RiskDecided():
            p = _payment_or_none(state)
            events = [] if p is None else _risk_decided(p, msg)
        case ReviewDecided():
            p = _payment_or_none(state)
            events = [] if p is None else _review_decided(p, msg)
    return _with_snapshot(state, _with_outcome(state, events))


def _with_outcome(state: State | None, events: list[Event]) -> list[Event]:
    """Tell the risk engine when the payment ends failed or rejected (it counts declines).
    A payment is created in risk_check, so it ends in a later decision, on its state."""
    if not isinstance(state, PaymentState):
        return events
    for e in events:
        if isinstance(e, StatusChanged) and e.status in _DECLINES:
            return [*events, OutcomeReported(state.request, e.status, e.reason, e.ts)]
    return events


def _with_snapshot(state: State | None, events: list[Event]) -> list[Event]:
    """Insert the payment's snapshot after each status it reaches (one warehouse row per
    status change), and once more if a flag changed after the last one."""
    visible = [i for i, e in enumerate(events) if isinstance(e, _VISIBLE)]
    if not visible:
        return events
    points = [i for i in visible if isinstance(events[i], PaymentCreated | StatusChanged)]
    if not points or visible[-1] > points[-1]:
        points.append(visible[-1])
    out: list[Event] = []
    current = state
    start = 0
    for i in points:
        chunk = events[start : i + 1]
        current = evolve_all(current, chunk)
        if not isinstance(current, PaymentState):
            raise InvariantViolation("a visible payment change left no payment")
        snap = Snapshot(replace(current, version=current.version + 1))
        current = replace(current, version=current.version + 1)
        out += [*chunk, snap]
        start = i + 1
    return [*out, *events[start:]]


# --- admission ---


def _reserve(state: KeyState | None, msg: ReserveKey) -> list[Event]:
    if state is not None:
        # The key is taken: by this request (a retry) or another body (the API answers 422).
        return []
    key = KeyState(msg.scope, msg.idempotency_key, msg.request.payment_id, msg.digest, msg.ts)
    return [KeyReserved(key, msg.request)]


def _create(
    state: PaymentState | None, msg: CreatePayment, psps: tuple[PspInfo, ...]
) -> list[Event]:
    if state is not None:
        # Created already: by this key (a redo) or by another (the API answers 409).
        return []
    req = msg.request
    r = route(psps, req.payment_option.value, req.currency, req.amount)
    p = PaymentState(
        request=req,
        scope=msg.scope,
        idempotency_key=msg.idempotency_key,
        digest=msg.digest,
        created_at=msg.ts,
        candidates=r.candidates,
        routing_reason=r.reason,
        history=((Status.received, msg.ts),),
    )
    # The risk engine decides before the ledger or any PSP is asked (docs/risk.md).
    return [
        PaymentCreated(p),
        RiskRequested(req, msg.ts),
        StatusChanged(Status.risk_check, None, msg.ts),
    ]


def _go_on(p: PaymentState, ts: int) -> list[Event]:
    """Risk allowed it (or a reviewer approved): fail it if no PSP can take it, else ask the
    ledger (a pay-in's account check, a pay-out's hold)."""
    if not p.candidates:
        return [StatusChanged(Status.failed, NO_ELIGIBLE_PSP, ts)]
    req = p.request
    step = LedgerStep.authorize if req.type is PaymentType.pay_in else LedgerStep.hold
    return [
        LedgerCommandIssued(step, req, None, None, ts),
        StatusChanged(Status.authorizing, None, ts),
    ]


# --- the risk engine's and the reviewers' answers ---


def _risk_decided(p: PaymentState, msg: RiskDecided) -> list[Event]:
    if p.status is not Status.risk_check:
        return []  # a repeated decision: the first one stands
    ts = msg.ts
    summary = RiskSummary(msg.action, msg.rules, msg.score, msg.version, ts)
    if msg.action == "allow":
        return [RiskRecorded(summary), *_go_on(p, ts)]
    if msg.action == "block":
        return [RiskRecorded(summary), StatusChanged(Status.rejected, RISK_BLOCKED, ts)]
    if msg.action != "review":
        raise InvariantViolation(f"payment {p.payment_id!r}: risk action {msg.action!r}")
    item = review_id_of(p.payment_id)
    return [
        RiskRecorded(replace(summary, review_id=item)),
        ReviewOpened(item, p.request, msg.rules, msg.evidence, ts),
        StatusChanged(Status.review, None, ts),
    ]


def _review_decided(p: PaymentState, msg: ReviewDecided) -> list[Event]:
    risk = p.risk
    if p.status is not Status.review or risk is None or msg.item_id != risk.review_id:
        return []  # not waiting for this review (a repeated or stray decision)
    ts = msg.ts
    reviewed = replace(
        risk,
        review_decision="approved" if msg.approved else "declined",
        reviewer=msg.reviewer,
        note=msg.note,
        reviewed_at=ts,
    )
    if msg.approved:
        return [RiskRecorded(reviewed), *_go_on(p, ts)]
    return [RiskRecorded(reviewed), StatusChanged(Status.rejected, RISK_DECLINED, ts)]


# --- the ledger's answers ---


def _ledger_replied(
    p: PaymentState, msg: LedgerReplied, psps: tuple[PspInfo, ...], health: Health
) -> list[Event]:
    prefix = order_id_of(p.payment_id) + "/"
    if not msg.command_id.startswith(prefix):
        return []
    try:
        step = LedgerStep(msg.command_id[len(prefix) :])
    except ValueError:
        return []
    ts = msg.ts
    if step in (LedgerStep.authorize, LedgerStep.hold):
        if p.status is not Status.authorizing:
            return []  # a repeated answer
        if not msg.accepted:
            return [StatusChanged(Status.rejected, msg.reason, ts)]
        return [*first_attempt(p, psps, health, ts), StatusChanged(Status.processing, None, ts)]
    if p.ledger_updated:
        return []  # a repeated answer to the last step
    if not msg.accepted:
        # settle, cancel, post and void hold no rule that may refuse them: reconciliation.
        return [LedgerRefused(msg.command_id, msg.reason, ts)]
    if step in (LedgerStep.settle, LedgerStep.post) and p.status is Status.posting:
        return [LedgerUpdated(ts), StatusChanged(Status.succeeded, None, ts)]
    if step is LedgerStep.void and p.status is Status.reversing:
        return [LedgerUpdated(ts), StatusChanged(Status.failed, None, ts)]
    if step is LedgerStep.cancel and p.status is Status.failed:
        return [LedgerUpdated(ts)]
    return []


# --- state types (keys are namespaced, so a mismatch is a routing bug) ---


def _key(state: State | None) -> KeyState | None:
    if isinstance(state, PaymentState):
        raise InvariantViolation(f"key step routed to payment {state.payment_id!r}")
    return state


def _payment_or_none(state: State | None) -> PaymentState | None:
    if isinstance(state, KeyState):
        raise InvariantViolation(f"payment step routed to key {state.idempotency_key!r}")
    return state
