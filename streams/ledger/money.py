"""Money: integer minor units inside, decimal strings on the wire."""

from __future__ import annotations

from .rejections import Rejection

# ISO 4217 minor units of the currencies the ledger accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "CAD": 2,
    "AUD": 2,
    "SEK": 2,
    "NOK": 2,
    "PLN": 2,
    "INR": 2,
    "CNY": 2,
    "BRL": 2,
    "RUB": 2,
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "KWD": 3,
    "BHD": 3,
    "JOD": 3,
}

# Fits in a signed 64-bit integer with room to sum many of them; ~9.2e16 in minor units.
AMOUNT_MINOR_MAX = 10**17
_DIGITS = frozenset("0123456789")
_POW10: tuple[int, ...] = tuple(10**i for i in range(19))


class AmountError(ValueError):
    def __init__(self, reason: Rejection) -> None:
        super().__init__(reason.value)
        self.reason = reason


def exponent(currency: str) -> int:
    return CURRENCY_EXPONENTS[currency]


def parse_amount(text: str, currency: str) -> int:
    """Parse a positive decimal string into minor units, or raise AmountError.

    Only plain decimals are money: no sign, exponent, spaces, NaN or thousands separators.
    """
    exp = CURRENCY_EXPONENTS[currency]
    if not text or len(text) > 40:
        raise AmountError(Rejection.amount_malformed)
    whole, dot, frac = text.partition(".")
    if not whole or not set(whole) <= _DIGITS or (dot and (not frac or not set(frac) <= _DIGITS)):
        raise AmountError(Rejection.amount_malformed)
    frac = frac.rstrip("0") if len(frac) > exp else frac
    if len(frac) > exp:
        raise AmountError(Rejection.amount_too_precise)
    minor = int(whole) * _POW10[exp] + (int(frac.ljust(exp, "0")) if exp else 0)
    if minor <= 0:
        raise AmountError(Rejection.amount_must_be_positive)
    if minor > AMOUNT_MINOR_MAX:
        raise AmountError(Rejection.amount_too_large)
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units to a signed decimal string with exactly the currency's decimals."""
    exp = CURRENCY_EXPONENTS.get(currency, 2)
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), _POW10[exp])
    return f"{sign}{whole}.{frac:0{exp}d}"


def parse_signed(text: str, currency: str) -> int:
    """Inverse of format_amount, for reading our own events (trusted, exact)."""
    exp = CURRENCY_EXPONENTS.get(currency, 2)
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    minor = int(whole) * _POW10[exp] + (int(frac.ljust(exp, "0")[:exp]) if exp else 0)
    return -minor if neg else minor
