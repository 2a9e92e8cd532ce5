"""The simulated PSPs: what each accepts and what it charges (a public contract)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pspsim.money import percent_of

# Which instrument prefix each payment option takes.
OPTION_PREFIX: dict[str, str] = {
    "card": "card_",
    "apple_pay": "card_",
    "google_pay": "card_",
    "bank_account": "bank_",
    "paypal": "paypal_",
}


@dataclass(frozen=True)
class Commission:
    percent: Decimal
    fixed_minor: int = 0
    max_minor: int | None = None

    def of(self, amount_minor: int) -> int:
        """The fee for one movement, in the movement's minor units."""
        fee = percent_of(amount_minor, self.percent) + self.fixed_minor
        return fee if self.max_minor is None else min(fee, self.max_minor)

    def as_json(self) -> dict[str, object]:
        return {
            "percent": str(self.percent),
            "fixed_minor": self.fixed_minor,
            "max_minor": self.max_minor,
        }


@dataclass(frozen=True)
class PspSpec:
    name: str
    payment_options: tuple[str, ...]
    currencies: tuple[str, ...]
    asynchronous: bool
    # 1 is preferred; a router tries higher numbers when lower ones fail.
    priority: int
    commission: Commission

    def capabilities(self) -> dict[str, object]:
        return {
            "psp": self.name,
            "payment_options": list(self.payment_options),
            "currencies": list(self.currencies),
            "asynchronous": self.asynchronous,
            "priority": self.priority,
            "commission": self.commission.as_json(),
        }


DEFAULT_PSPS: dict[str, PspSpec] = {
    p.name: p
    for p in (
        PspSpec(
            "cardco",
            ("card", "apple_pay", "google_pay"),
            ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"),
            asynchronous=False,
            priority=1,
            commission=Commission(Decimal("2.9"), 30),
        ),
        PspSpec(
            "bankco",
            ("bank_account",),
            ("USD", "EUR", "GBP"),
            asynchronous=True,
            priority=1,
            commission=Commission(Decimal("0.8"), 0, max_minor=500),
        ),
        PspSpec(
            "walletco",
            ("paypal",),
            ("USD", "EUR", "GBP"),
            asynchronous=False,
            priority=1,
            commission=Commission(Decimal("3.4"), 35),
        ),
        PspSpec(
            "backupcard",
            ("card",),
            ("USD", "EUR", "GBP", "JPY"),
            asynchronous=False,
            priority=2,
            commission=Commission(Decimal("3.5"), 30),
        ),
    )
}

DEFAULT_PORTS: dict[str, int] = {
    "cardco": 8091,
    "bankco": 8092,
    "walletco": 8093,
    "backupcard": 8094,
}
