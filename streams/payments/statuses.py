"""The payment order state machine: which status may follow which (docs/payments.md).

``evolve`` checks every change against this table and raises InvariantViolation on any other:
a decision that breaks it is a bug that must stop the worker loudly, not a payment to bend.
"""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

from .model import Status

S = Status

TERMINAL: frozenset[Status] = frozenset({S.succeeded, S.failed, S.rejected})

# Statuses in which the PSP may still move money for the order (its answer is awaited).
AT_PSP: frozenset[Status] = frozenset({S.processing, S.pending, S.unknown})

TRANSITIONS: dict[Status, frozenset[Status]] = {
    # Every payment is decided by the risk engine first (docs/risk.md).
    S.received: frozenset({S.risk_check}),
    # Allowed: the ledger is asked, or no PSP can take it. Blocked: rejected. Else review.
    S.risk_check: frozenset({S.authorizing, S.failed, S.rejected, S.review}),
    # A reviewer approves (as allowed) or declines (rejected).
    S.review: frozenset({S.authorizing, S.failed, S.rejected}),
    # The ledger refuses (rejected) or accepts: a PSP is asked.
    S.authorizing: frozenset({S.processing, S.rejected}),
    # Fallback to another PSP stays in processing (a new attempt, not a new status).
    S.processing: frozenset({S.pending, S.unknown, S.posting, S.reversing, S.failed}),
    S.pending: frozenset({S.unknown, S.posting, S.reversing, S.failed}),
    S.unknown: frozenset({S.pending, S.posting, S.reversing, S.failed}),
    S.posting: frozenset({S.succeeded}),
    S.reversing: frozenset({S.failed}),
    S.succeeded: frozenset(),
    S.failed: frozenset(),
    S.rejected: frozenset(),
}


def check_transition(payment_id: str, old: Status, new: Status) -> None:
    if new not in TRANSITIONS[old]:
        raise InvariantViolation(f"payment {payment_id!r}: {old.value} -> {new.value}")
