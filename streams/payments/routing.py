"""Which PSPs may take a payment, in the order to try them, and which one an attempt goes to.
Pure.

The rules, in order: the payment option, the currency, the amount (a PSP's optional
``amount_min``/``amount_max``), then the PSP's live health (its circuit breaker, as the
payments worker last read it from ``paystream.psp-breakers.v1``). Eligible PSPs are ranked by
priority (1 first), then cost (the commission at a reference amount), then name, so equal
PSPs always come in the same order. Health does not remove a PSP: an attempt goes to the
first untried candidate whose breaker is not open, and to the first untried one only when
every breaker is open (the executor then retries it until it can). Each attempt records the
candidates, the one chosen and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# Costs are compared at 100.00 of a two-decimal currency, where percentages and fixed fees
# both weigh (the core does not turn a payment's amount into minor units: the ledger does).
COST_REFERENCE_MINOR = 10_000

# Breaker states as the executors publish them (connectors.psp.breaker.BreakerState).
OPEN = "open"


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
    # In the payment's currency (major units), inclusive; None: no bound.
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None

    def commission_minor(self, amount_minor: int) -> int:
        """The PSP's fee for moving ``amount_minor``, in the same minor units."""
        percent = (Decimal(amount_minor) * self.commission_percent / 100).quantize(
            Decimal(1), rounding=ROUND_HALF_EVEN
        )
        fee = int(percent) + self.commission_fixed_minor
        return fee if self.commission_max_minor is None else min(fee, self.commission_max_minor)

    def takes_amount(self, amount: Decimal | None) -> bool:
        if amount is None:
            return True
        if self.amount_min is not None and amount < self.amount_min:
            return False
        return self.amount_max is None or amount <= self.amount_max


@dataclass(frozen=True, slots=True)
class PspHealth:
    """A PSP's circuit breaker as last published: ``closed``, ``open`` or ``half_open``."""

    state: str
    since_us: int


Health = Mapping[str, PspHealth]


@dataclass(frozen=True, slots=True)
class Route:
    candidates: tuple[str, ...]  # eligible PSPs, best first
    reason: str  # why the first one


@dataclass(frozen=True, slots=True)
class Choice:
    """Where the next attempt goes: the PSP, why, and whether another untried candidate
    would be left if it cannot create a token (then the executor reports at once)."""

    psp: str
    reason: str
    fallback: bool


def parse_amount(amount: str | None) -> Decimal | None:
    """The amount as a Decimal, or None if it is not a finite positive number (the ledger
    refuses those; routing then ignores the amount rules)."""
    if amount is None:
        return None
    try:
        d = Decimal(amount)
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() and d > 0 else None


def eligible(
    psps: Iterable[PspInfo],
    payment_option: str,
    currency: str,
    amount_minor: int | None = None,
    amount: Decimal | None = None,
) -> list[PspInfo]:
    """The PSPs taking ``payment_option`` in ``currency`` (and ``amount``), best first."""
    reference = COST_REFERENCE_MINOR if amount_minor is None else amount_minor
    found = [
        p
        for p in psps
        if payment_option in p.payment_options
        and currency in p.currencies
        and p.takes_amount(amount)
    ]
    found.sort(key=lambda p: (p.priority, p.commission_minor(reference), p.name))
    return found


def route(
    psps: Iterable[PspInfo], payment_option: str, currency: str, amount: str | None = None
) -> Route:
    """The static part: the candidates of a new payment, best first."""
    ranked = eligible(psps, payment_option, currency, amount=parse_amount(amount))
    if not ranked:
        where = f" for {amount}" if amount is not None else ""
        return Route((), f"no PSP takes {payment_option} in {currency}{where}")
    return Route(tuple(p.name for p in ranked), _why(ranked[0], payment_option, currency))


def choose(
    psps: Iterable[PspInfo],
    candidates: tuple[str, ...],
    tried: Iterable[str],
    health: Health,
    cause: str = "",
) -> Choice | None:
    """The next attempt's PSP: the first untried candidate whose breaker is not open, else
    the first untried one; None when every candidate was tried. ``cause`` (a fallback's)
    starts the reason."""
    done = set(tried)
    left = [c for c in candidates if c not in done]
    if not left:
        return None
    info = {p.name: p for p in psps}
    healthy = [c for c in left if _state(health, c) != OPEN]
    chosen = healthy[0] if healthy else left[0]
    parts = [cause] if cause else []
    skipped = left[: left.index(chosen)]
    for s in skipped:
        parts.append(f"{s} skipped: breaker open since {_iso(health[s].since_us)}")
    if not healthy:
        parts.append("every breaker is open: the first untried candidate")
    p = info.get(chosen)
    parts.append(f"{chosen}: {_rank(p)}" if p is not None else f"{chosen}: no longer configured")
    return Choice(chosen, "; ".join(parts), fallback=len(left) > 1)


def _state(health: Health, psp: str) -> str:
    h = health.get(psp)
    return h.state if h is not None else "closed"


def _why(best: PspInfo, payment_option: str, currency: str) -> str:
    return f"{payment_option} in {currency}: {best.name} {_rank(best)}"


def _rank(p: PspInfo | None) -> str:
    if p is None:
        return "unknown PSP"
    return (
        f"priority {p.priority}, commission {p.commission_minor(COST_REFERENCE_MINOR)} "
        f"per {COST_REFERENCE_MINOR}"
    )


def _iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
