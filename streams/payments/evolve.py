"""evolve(state, event) -> state: how each event changes a payment or a key. Pure."""

from __future__ import annotations

from dataclasses import replace

from streams.ledger.errors import InvariantViolation

from .model import (
    AttemptChanged,
    AttemptStarted,
    Event,
    KeyReserved,
    LedgerCommandIssued,
    LedgerRefused,
    LedgerUpdated,
    OutcomeReported,
    PaymentCreated,
    PaymentState,
    PspRequested,
    ReviewOpened,
    ReviewRequested,
    RiskRecorded,
    RiskRequested,
    Snapshot,
    State,
    Status,
    StatusChanged,
)
from .statuses import check_transition


def evolve(state: State | None, event: Event) -> State | None:
    match event:
        case KeyReserved():
            return event.state
        case PaymentCreated():
            return event.state
        case (
            LedgerCommandIssued()
            | PspRequested()
            | ReviewRequested()
            | RiskRequested()
            | ReviewOpened()
            | OutcomeReported()
        ):
            return state
    p = _payment(state, event)
    match event:
        case StatusChanged():
            check_transition(p.payment_id, p.status, event.status)
            # An unknown order's reason is why it is unknown: gone once it is known.
            kept = None if p.status is Status.unknown else p.reason
            return replace(
                p,
                status=event.status,
                reason=event.reason if event.reason is not None else kept,
                history=(*p.history, (event.status, event.ts)),
            )
        case RiskRecorded():
            return replace(p, risk=event.summary)
        case LedgerUpdated():
            return replace(p, ledger_updated=True, wallet_updated=True)
        case LedgerRefused():
            return replace(p, reason=f"ledger_refused:{event.reason}")
        case AttemptStarted():
            if event.attempt.n != len(p.attempts) + 1:
                raise InvariantViolation(f"{p.payment_id}: attempt {event.attempt.n} out of order")
            return replace(p, attempts=(*p.attempts, event.attempt))
        case AttemptChanged():
            current = p.attempt
            if current is None or current.n != event.attempt.n:
                raise InvariantViolation(f"{p.payment_id}: change to a stale attempt")
            return replace(p, attempts=(*p.attempts[:-1], event.attempt))
        case Snapshot():
            return replace(p, version=event.state.version)
    raise InvariantViolation(f"no evolve rule for {type(event).__name__}")


def evolve_all(state: State | None, events: list[Event]) -> State | None:
    for event in events:
        state = evolve(state, event)
    return state


def _payment(state: State | None, event: Event) -> PaymentState:
    if not isinstance(state, PaymentState):
        raise InvariantViolation(f"{type(event).__name__} for a key that holds no payment")
    return state
