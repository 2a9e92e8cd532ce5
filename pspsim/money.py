"""Amounts: decimal strings outside, integer minor units inside (ISO 4217 exponents)."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal

from pspsim.config import LIMITS

# Our own table (the simulator depends on nothing of paystream's). Currencies not listed are
# unknown to every PSP.
MINOR_UNITS: dict[str, int] = {
    "AUD": 2,
    "BHD": 3,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "ISK": 0,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "TND": 3,
    "USD": 2,
    "VND": 0,
}

_AMOUNT = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")


class AmountError(ValueError):
    """The amount is not a positive decimal string within the currency's minor units."""


def exponent(currency: str) -> int:
    return MINOR_UNITS[currency]


def parse_amount(text: object, currency: str) -> int:
    """'12.34' in USD -> 1234. Refuses non-strings, signs, exponents, too many decimals, 0."""
    if not isinstance(text, str):
        raise AmountError('amount must be a decimal string, e.g. "12.34"')
    if len(text) > LIMITS.amount_max_chars:
        raise AmountError("amount is too long")
    m = _AMOUNT.fullmatch(text)
    if m is None:
        raise AmountError(f"amount is not a plain decimal: {text!r}")
    whole, frac = m.group(1), m.group(2) or ""
    exp = exponent(currency)
    if len(frac) > exp:
        raise AmountError(f"{currency} has {exp} minor units; {text!r} has {len(frac)}")
    minor = int(whole + frac.ljust(exp, "0"))
    if minor <= 0:
        raise AmountError("amount must be greater than 0")
    if minor > LIMITS.amount_max_minor:
        raise AmountError("amount is too large")
    return minor


def format_minor(minor: int, currency: str) -> str:
    """1234 in USD -> '12.34'; -5 -> '-0.05'; 100 in JPY -> '100'."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def percent_of(minor: int, percent: Decimal) -> int:
    """percent% of an amount, rounded half-even to whole minor units (banker's rounding)."""
    exact = Decimal(minor) * percent / Decimal(100)
    rounded: Decimal = exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(rounded)
