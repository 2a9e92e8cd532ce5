"""Amounts and commissions: minor units per currency, half-even rounding, bankco's cap."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pspsim.config import LIMITS
from pspsim.money import MINOR_UNITS, AmountError, format_minor, parse_amount, percent_of
from pspsim.psps import DEFAULT_PSPS, Commission


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [("12.34", "USD", 1234), ("12.3", "USD", 1230), ("12", "EUR", 1200), ("0.01", "GBP", 1),
     ("100", "JPY", 100), ("1.234", "KWD", 1234)],
)  # fmt: skip
def test_parse_amount(text: str, currency: str, minor: int) -> None:
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("12.345", "USD"), ("100.0", "JPY"), ("0", "USD"), ("0.00", "USD"), ("-1", "USD"),
     ("+1", "USD"), ("1e3", "USD"), ("01.00", "USD"), (".5", "USD"), ("5.", "USD"),
     (" 5", "USD"), ("", "USD"), ("١٢", "USD"), (12.34, "USD"), (12, "JPY"), (None, "USD"),
     (True, "USD"), ("9" * 40, "USD"), ("10000000000000.01", "USD")],
)  # fmt: skip
def test_refused_amounts(amount: object, currency: str) -> None:
    with pytest.raises(AmountError):
        parse_amount(amount, currency)


def test_format_minor() -> None:
    assert format_minor(1234, "USD") == "12.34"
    assert format_minor(5, "USD") == "0.05"
    assert format_minor(-5, "EUR") == "-0.05"
    assert format_minor(0, "USD") == "0.00"
    assert format_minor(100, "JPY") == "100"
    assert format_minor(1, "KWD") == "0.001"


@given(st.sampled_from(sorted(MINOR_UNITS)), st.integers(1, LIMITS.amount_max_minor))
def test_format_then_parse_is_the_identity(currency: str, minor: int) -> None:
    assert parse_amount(format_minor(minor, currency), currency) == minor


def test_percent_rounds_half_even() -> None:
    # 2.9% of 5.00 = 14.5 minor: to even (14); of 15.00 = 43.5: to even (44).
    assert percent_of(500, Decimal("2.9")) == 14
    assert percent_of(1500, Decimal("2.9")) == 44
    assert percent_of(1234, Decimal("2.9")) == 36  # 35.786
    assert percent_of(1, Decimal("0.8")) == 0


def test_the_default_commissions() -> None:
    fee = {name: spec.commission.of for name, spec in DEFAULT_PSPS.items()}
    assert fee["cardco"](1234) == 36 + 30
    assert fee["cardco"](10_000) == 290 + 30  # JPY 10000: same rule, in yen
    assert fee["walletco"](10_000) == 340 + 35
    assert fee["backupcard"](10_000) == 350 + 30
    assert fee["bankco"](10_000) == 80
    assert fee["bankco"](62_500) == 500  # exactly the cap
    assert fee["bankco"](10_000_000) == 500  # capped (0.8% would be 80,000)
    assert fee["bankco"](1) == 0


def test_commission_json() -> None:
    assert Commission(Decimal("0.8"), 0, 500).as_json() == {
        "percent": "0.8",
        "fixed_minor": 0,
        "max_minor": 500,
    }
