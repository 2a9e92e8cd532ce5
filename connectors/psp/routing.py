"""Which PSPs can take a payment order, best first. Pure: no I/O, no clock, no randomness,
so the payments workers can call it inside their decisions and get the same answer on a redo.

Ranked by priority (1 first), then cost (the commission for the amount), then name, so
equal PSPs always come in the same order.
"""

from __future__ import annotations

from collections.abc import Iterable

from connectors.psp.config import PspConfig

# The amount at which costs are compared when the caller gives none: 100.00 in a
# two-decimal currency, where percentages and fixed fees both weigh.
COST_REFERENCE_MINOR = 10_000


def eligible(
    psps: Iterable[PspConfig],
    payment_option: str,
    currency: str,
    amount_minor: int | None = None,
) -> list[str]:
    """Names of the PSPs taking ``payment_option`` in ``currency``, best first."""
    amount = COST_REFERENCE_MINOR if amount_minor is None else amount_minor
    candidates = [
        p for p in psps if payment_option in p.payment_options and currency in p.currencies
    ]
    candidates.sort(key=lambda p: (p.priority, p.commission_minor(amount), p.name))
    return [p.name for p in candidates]
