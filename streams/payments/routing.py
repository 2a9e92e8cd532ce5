"""Which PSPs may take a payment, in the order to try them: static rules, pure.

Ranked by priority (1 first), then cost (the commission at a reference amount), then name,
so equal PSPs always come in the same order and a redo decides the same. The executor adds
what this cannot know (a PSP's live health); each attempt records the candidates and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

# Costs are compared at 100.00 of a two-decimal currency, where percentages and fixed fees
# both weigh (the core does not turn a payment's amount into minor units: the ledger does).
COST_REFERENCE_MINOR = 10_000


@dataclass(frozen=True, slots=True)
class PspInfo:
    """What routing needs of one PSP (from psps.toml: connectors.psp.config.PspConfig.info)."""

    name: str
    payment_options: frozenset[str]
    currencies: frozenset[str]
    priority: int  # 1 first
    commission_percent: Decimal
    commission_fixed_minor: int
    commission_max_minor: int | None = None

    def commission_minor(self, amount_minor: int) -> int:
        """The PSP's fee for moving ``amount_minor``, in the same minor units."""
        percent = (Decimal(amount_minor) * self.commission_percent / 100).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
        fee = int(percent) + self.commission_fixed_minor
        return fee if self.commission_max_minor is None else min(fee, self.commission_max_minor)


@dataclass(frozen=True, slots=True)
class Route:
    candidates: tuple[str, ...]  # eligible PSPs, best first
    reason: str  # why the first one


def eligible(
    psps: Iterable[PspInfo], payment_option: str, currency: str, amount_minor: int | None = None
) -> list[PspInfo]:
    """The PSPs taking ``payment_option`` in ``currency``, best first."""
    amount = COST_REFERENCE_MINOR if amount_minor is None else amount_minor
    found = [p for p in psps if payment_option in p.payment_options and currency in p.currencies]
    found.sort(key=lambda p: (p.priority, p.commission_minor(amount), p.name))
    return found


def route(psps: Iterable[PspInfo], payment_option: str, currency: str) -> Route:
    ranked = eligible(psps, payment_option, currency)
    if not ranked:
        return Route((), f"no PSP takes {payment_option} in {currency}")
    best = ranked[0]
    return Route(
        tuple(p.name for p in ranked),
        f"{payment_option} in {currency}: priority {best.priority}, "
        f"commission {best.commission_minor(COST_REFERENCE_MINOR)} per {COST_REFERENCE_MINOR}",
    )
