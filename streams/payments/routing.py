"""Which PSPs may take a payment, in the order to try them: static rules, pure.

The executor adds what this cannot know (a PSP's live health); the worker records the
candidates and the reason on each attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class PspInfo:
    """What routing needs of one PSP (from psps.toml)."""

    name: str
    payment_options: frozenset[str]
    currencies: frozenset[str]
    priority: int  # 1 first
    commission_percent: Decimal
    commission_fixed_minor: int


@dataclass(frozen=True, slots=True)
class Route:
    candidates: tuple[str, ...]  # eligible PSPs, best first
    reason: str  # why the first one


def route(psps: tuple[PspInfo, ...], payment_option: str, currency: str) -> Route:
    """Eligible PSPs for the option and currency, by priority, then cost, then name."""
    eligible = sorted(
        (p for p in psps if payment_option in p.payment_options and currency in p.currencies),
        key=lambda p: (p.priority, p.commission_percent, p.commission_fixed_minor, p.name),
    )
    if not eligible:
        return Route((), f"no PSP takes {payment_option} in {currency}")
    best = eligible[0]
    return Route(
        tuple(p.name for p in eligible),
        f"{payment_option} in {currency}: priority {best.priority}, "
        f"commission {best.commission_percent}% + {best.commission_fixed_minor}",
    )
