"""decide(state, message, psps) -> events: the payments' rules, as a pure function.

The state is that of the message's key: a payment, or an idempotency key. ``psps`` is the
routing table (psps.toml); each attempt records the candidates it was chosen from, so a
decision can be explained from the log alone.
"""

from __future__ import annotations

from dataclasses import replace

from streams.ledger.errors import InvariantViolation

from .evolve import evolve_all
from .model import (
    NO_ELIGIBLE_PSP,
    PSP_UNAVAILABLE,
    RISK_BLOCKED,
    RISK_DECLINED,
    Attempt,
    AttemptChanged,
    AttemptStarted,
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
    Phase,
    PspReported,
    PspRequested,
    PspStatus,
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
from .routing import PspInfo, route
from .statuses import AT_PSP

# Statuses whose reaching the risk engine counts as a decline of the user's.
_DECLINES = (Status.failed, Status.rejected)

# Events after which the payment's public snapshot changed.
_VISIBLE = (PaymentCreated, StatusChanged, LedgerUpdated, LedgerRefused, RiskRecorded)


def decide(state: State | None, msg: Message, psps: tuple[PspInfo, ...]) -> list[Event]:
    match msg:
        case ReserveKey():
            return _reserve(_key(state), msg)
        case CreatePayment():
            events = _create(_payment_or_none(state), msg, psps)
        case LedgerReplied():
            p = _payment_or_none(state)
            # An answer for a payment this key never held (a stray record): nothing to do.
            events = [] if p is None else _ledger_replied(p, msg)
        case PspReported():
            p = _payment_or_none(state)
            events = [] if p is None else _psp_reported(p, msg)
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
    r = route(psps, req.payment_option.value, req.currency)
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


def _ledger_replied(p: PaymentState, msg: LedgerReplied) -> list[Event]:
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
        first = Attempt(1, p.candidates[0], p.candidates, p.routing_reason, ts, updated_at=ts)
        return [
            AttemptStarted(p.payment_id, first),
            PspRequested("create_token", first, p.request, ts),
            StatusChanged(Status.processing, None, ts),
        ]
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


# --- the PSP's answers ---


def _psp_reported(p: PaymentState, msg: PspReported) -> list[Event]:
    a = p.attempt
    if a is None or msg.attempt != a.n or msg.psp != a.psp or p.status not in AT_PSP:
        return []  # an old attempt, another PSP, or the order has moved on: never backwards
    ts = msg.ts
    if msg.kind == "token_created":
        if a.phase is not Phase.token_requested or not msg.token:
            return []
        # The token is now in the log (this state); only now may it be executed.
        executing = _changed(a, ts, phase=Phase.executing, token=msg.token)
        return [
            AttemptChanged(p.payment_id, executing),
            PspRequested("execute", executing, p.request, ts),
        ]
    if msg.kind == "token_failed":
        if a.phase is not Phase.token_requested:
            return []
        failed = _changed(a, ts, phase=Phase.token_failed, code=msg.code)
        # No token, so no money can have moved: the next PSP may take the order.
        tried = {t.psp for t in p.attempts}
        left = [c for c in p.candidates if c not in tried]
        if not left:
            return [AttemptChanged(p.payment_id, failed), *_fail(p, PSP_UNAVAILABLE, ts)]
        nxt = Attempt(
            a.n + 1,
            left[0],
            p.candidates,
            f"fallback: {a.psp} could not create a token ({msg.code or 'error'})",
            ts,
            updated_at=ts,
        )
        return [
            AttemptChanged(p.payment_id, failed),
            AttemptStarted(p.payment_id, nxt),
            PspRequested("create_token", nxt, p.request, ts),
        ]
    if msg.kind not in ("answered", "notified") or msg.status is None:
        return []
    if a.phase not in (Phase.executing, Phase.answered):
        return []  # nothing was executed: an answer cannot be about this attempt
    answered = _changed(
        a,
        ts,
        phase=Phase.answered,
        outcome=msg.status,
        code=msg.code,
        psp_reference=msg.psp_reference or a.psp_reference,
    )
    match msg.status:
        case PspStatus.succeeded:
            return [AttemptChanged(p.payment_id, answered), *_succeed(p, a.psp, ts)]
        case PspStatus.declined:
            return [
                AttemptChanged(p.payment_id, answered),
                *_fail(p, msg.code or PSP_UNAVAILABLE, ts),
            ]
        case PspStatus.pending:
            if p.status is Status.pending:
                return []
            return [AttemptChanged(p.payment_id, answered), StatusChanged(Status.pending, None, ts)]
        case PspStatus.unknown:
            if p.status is not Status.processing:
                return []  # pending stays pending: the PSP said it has the payment
            return [
                AttemptChanged(p.payment_id, answered),
                StatusChanged(Status.unknown, msg.code, ts),
            ]
    return []


def _changed(a: Attempt, ts: int, **fields: object) -> Attempt:
    return replace(a, updated_at=ts, version=a.version + 1, **fields)  # type: ignore[arg-type]


def _succeed(p: PaymentState, psp: str, ts: int) -> list[Event]:
    step = LedgerStep.settle if p.request.type is PaymentType.pay_in else LedgerStep.post
    return [
        LedgerCommandIssued(step, p.request, psp, None, ts),
        StatusChanged(Status.posting, None, ts),
    ]


def _fail(p: PaymentState, reason: str, ts: int) -> list[Event]:
    """No money moved at the PSP: drop a pay-in's reservation, give a pay-out's hold back."""
    if p.request.type is PaymentType.pay_in:
        return [
            LedgerCommandIssued(LedgerStep.cancel, p.request, None, reason, ts),
            StatusChanged(Status.failed, reason, ts),
        ]
    return [
        LedgerCommandIssued(LedgerStep.void, p.request, None, reason, ts),
        StatusChanged(Status.reversing, reason, ts),
    ]


# --- state types (keys are namespaced, so a mismatch is a routing bug) ---


def _key(state: State | None) -> KeyState | None:
    if isinstance(state, PaymentState):
        raise InvariantViolation(f"key step routed to payment {state.payment_id!r}")
    return state


def _payment_or_none(state: State | None) -> PaymentState | None:
    if isinstance(state, KeyState):
        raise InvariantViolation(f"payment step routed to key {state.idempotency_key!r}")
    return state
