"""What the PSP's answers decide: tokens, fallback, execution, and the poller's and the
janitor's chains (docs/payments.md, docs/psp-resilience.md). Pure.

The fence, restated: an order's token is executed only after the log holds it; an order moves
to another PSP only while no money can have moved (its token creation failed); after
``execute`` was sent, only the same PSP with the same token is asked again, until a
definitive answer (succeeded or declined) settles the order.
"""

from __future__ import annotations

from dataclasses import replace

from streams.ledger.errors import InvariantViolation

from .model import (
    PSP_UNAVAILABLE,
    Attempt,
    AttemptChanged,
    AttemptStarted,
    Event,
    LedgerCommandIssued,
    LedgerStep,
    PaymentState,
    PaymentType,
    Phase,
    PspReported,
    PspRequested,
    PspRequestKind,
    PspStatus,
    ReviewRequested,
    Status,
    StatusChanged,
)
from .routing import Health, PspInfo, choose
from .schedule import janitor_delay_us, poll_delay_us
from .statuses import AT_PSP

K = PspRequestKind


def first_attempt(
    p: PaymentState, psps: tuple[PspInfo, ...], health: Health, ts: int
) -> list[Event]:
    """The ledger accepted the payment: its first attempt asks for a token."""
    r = p.request
    choice = choose(psps, p.candidates, (), health, f"{r.payment_option.value} in {r.currency}")
    if choice is None:  # pragma: no cover - a payment without candidates failed after risk
        raise InvariantViolation(f"{p.payment_id}: no candidate PSP")
    first = Attempt(1, choice.psp, p.candidates, choice.reason, ts, updated_at=ts)
    return [
        AttemptStarted(p.payment_id, first),
        PspRequested(K.create_token, first, r, ts, fallback=choice.fallback),
    ]


def psp_reported(
    p: PaymentState, msg: PspReported, psps: tuple[PspInfo, ...], health: Health
) -> list[Event]:
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
            PspRequested(K.execute, executing, p.request, ts),
        ]
    if msg.kind == "token_failed":
        if a.phase is not Phase.token_requested:
            return []
        return _fall_back(p, a, msg, psps, health)
    if msg.kind not in ("answered", "notified") or msg.status is None:
        return []
    if a.phase not in (Phase.executing, Phase.answered):
        return []  # nothing was executed: an answer cannot be about this attempt
    match msg.status:
        case PspStatus.succeeded:
            return [AttemptChanged(p.payment_id, _answered(a, msg)), *_succeed(p, a.psp, ts)]
        case PspStatus.declined:
            return [
                AttemptChanged(p.payment_id, _answered(a, msg)),
                *_fail(p, msg.code or PSP_UNAVAILABLE, ts),
            ]
        case PspStatus.pending:
            return _pending(p, a, msg)
        case PspStatus.unknown:
            return _unknown(p, a, msg)
    return []


def _fall_back(
    p: PaymentState, a: Attempt, msg: PspReported, psps: tuple[PspInfo, ...], health: Health
) -> list[Event]:
    """No token, so no money can have moved: the next PSP may take the order."""
    ts = msg.ts
    failed = _changed(a, ts, phase=Phase.token_failed, code=msg.code)
    cause = f"fallback: {a.psp} could not create a token ({msg.code or 'error'})"
    choice = choose(psps, p.candidates, (t.psp for t in p.attempts), health, cause)
    if choice is None:
        return [AttemptChanged(p.payment_id, failed), *_fail(p, PSP_UNAVAILABLE, ts)]
    nxt = Attempt(a.n + 1, choice.psp, p.candidates, choice.reason, ts, updated_at=ts)
    return [
        AttemptChanged(p.payment_id, failed),
        AttemptStarted(p.payment_id, nxt),
        PspRequested(K.create_token, nxt, p.request, ts, fallback=choice.fallback),
    ]


def _pending(p: PaymentState, a: Attempt, msg: PspReported) -> list[Event]:
    """The PSP has the payment and completes it later: poll it until it is definitive."""
    if p.status is Status.pending:
        # Still pending: only the answer to the current poll asks for the next one.
        return _next_check(p, _noted(a, msg), msg.ts, janitor=False) if _current(a, msg) else []
    # processing (the execute's answer, or a webhook first) or unknown (the janitor found it
    # pending): a poll chain starts.
    answered = _answered(a, msg, chain_from=a.checks)
    return [
        *_next_check(p, answered, msg.ts, janitor=False),
        StatusChanged(Status.pending, None, msg.ts),
    ]


def _unknown(p: PaymentState, a: Attempt, msg: PspReported) -> list[Event]:
    """No definitive answer: from execute, the order becomes unknown and the janitor takes it
    up; from a poll or a check, the chain goes on."""
    if p.status is Status.processing:
        if msg.check:
            return []
        answered = _answered(a, msg, chain_from=a.checks)
        return [
            *_next_check(p, answered, msg.ts, janitor=True),
            StatusChanged(Status.unknown, msg.code, msg.ts),
        ]
    if not _current(a, msg):
        return []  # a late or repeated answer: its chain has moved on
    # The call failed, or the PSP has nothing definitive yet (a status poll may even find the
    # token never executed: it is live, so never a reason to fail the order): ask again later.
    return _next_check(p, _noted(a, msg), msg.ts, janitor=p.status is Status.unknown)


def _next_check(p: PaymentState, a: Attempt, ts: int, *, janitor: bool) -> list[Event]:
    """The next request of the order's chain (a poll while pending, a janitor check while
    unknown), or the hand-off to review when the schedule is spent."""
    n = a.checks - a.chain_from + 1
    delay_us = janitor_delay_us(n) if janitor else poll_delay_us(n)
    if delay_us is None:
        reviewed = _changed(a, ts, review=True)
        who = "janitor" if janitor else "poller"
        why = f"{who}: no definitive answer after {n - 1} {'checks' if janitor else 'polls'}"
        return [
            AttemptChanged(p.payment_id, reviewed),
            ReviewRequested(p, reviewed, why, ts),
        ]
    asked = _changed(a, ts, checks=a.checks + 1)
    kind = K.resolve if janitor else K.status
    return [
        AttemptChanged(p.payment_id, asked),
        PspRequested(kind, asked, p.request, ts, check=asked.checks, delay_us=delay_us),
    ]


def _current(a: Attempt, msg: PspReported) -> bool:
    """Is ``msg`` the answer to the chain's outstanding request?"""
    return msg.check > 0 and msg.check == a.checks and not a.review


def _answered(a: Attempt, msg: PspReported, **fields: object) -> Attempt:
    assert msg.status is not None
    return _changed(
        a,
        msg.ts,
        phase=Phase.answered,
        outcome=msg.status,
        code=msg.code,
        psp_reference=msg.psp_reference or a.psp_reference,
        **fields,
    )


def _noted(a: Attempt, msg: PspReported) -> Attempt:
    """A non-definitive answer to a poll or a check: its code is the attempt's latest."""
    return replace(a, code=msg.code) if msg.code else a


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
