"""The pure ranking of eligible PSPs (streams/payments/routing.py): priority, then cost for the
amount, then name; psps.toml's PSPs become its PspInfo."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.psp.config import PspConfig, embedded_psps_toml, parse_psps
from streams.payments.routing import COST_REFERENCE_MINOR, PspInfo, route
from streams.payments.routing import eligible as _eligible

PSPS = parse_psps(
    embedded_psps_toml({"cardco": 1, "bankco": 2, "walletco": 3, "backupcard": 4}, Path("/s")),
    "psps.toml",
    Path("/"),
)
BY_NAME = {p.name: p for p in PSPS}


def eligible(
    psps: object, option: str, currency: str, amount_minor: int | None = None
) -> list[str]:
    infos = [p.info() if isinstance(p, PspConfig) else p for p in psps]  # type: ignore[attr-defined]
    return [p.name for p in _eligible(infos, option, currency, amount_minor)]


@pytest.mark.parametrize(
    ("option", "currency", "expected"),
    [
        ("card", "USD", ["cardco", "backupcard"]),
        ("card", "JPY", ["cardco", "backupcard"]),
        ("card", "CHF", ["cardco"]),
        ("apple_pay", "EUR", ["cardco"]),
        ("bank_account", "GBP", ["bankco"]),
        ("bank_account", "JPY", []),
        ("paypal", "USD", ["walletco"]),
        ("sepa", "EUR", []),
    ],
)
def test_simulator_psps(option: str, currency: str, expected: list[str]) -> None:
    assert eligible(PSPS, option, currency) == expected
    assert eligible(reversed(PSPS), option, currency) == expected


def cheap(name: str, percent: str, fixed: int, cap: int | None = None) -> PspConfig:
    return replace(
        BY_NAME["cardco"],
        name=name,
        commission_percent=Decimal(percent),
        commission_fixed_minor=fixed,
        commission_max_minor=cap,
    )


def test_priority_before_cost_then_cost_then_name() -> None:
    expensive_first = replace(cheap("zeta", "9", 100), priority=0)
    psps = [BY_NAME["backupcard"], BY_NAME["cardco"], cheap("alpha", "2.9", 30),
            cheap("beta", "1.0", 0), expensive_first]  # fmt: skip
    assert eligible(psps, "card", "USD") == ["zeta", "beta", "alpha", "cardco", "backupcard"]


def test_the_amount_decides_between_percent_and_fixed_fees() -> None:
    percent = cheap("percent", "2.0", 0)  # 2 % of everything
    fixed = cheap("fixed", "0", 150)  # 1.50 whatever the amount
    capped = cheap("capped", "5.0", 0, cap=120)
    psps = [percent, fixed, capped]
    assert eligible(psps, "card", "USD", amount_minor=1_000) == ["percent", "capped", "fixed"]
    assert eligible(psps, "card", "USD", amount_minor=100_000) == ["capped", "fixed", "percent"]
    # Without an amount, costs compare at the reference amount (100.00).
    assert COST_REFERENCE_MINOR == 10_000
    assert eligible(psps, "card", "USD") == ["capped", "fixed", "percent"]


def test_commissions_as_documented() -> None:
    # docs/psp-simulator.md: cardco USD 12.34 -> 0.66, 5.00 -> 0.44; bankco 1,000.00 -> 5.00.
    assert BY_NAME["cardco"].commission_minor(1234) == 66
    assert BY_NAME["cardco"].commission_minor(500) == 44
    assert BY_NAME["bankco"].commission_minor(100_000) == 500


def test_route_names_the_candidates_and_why() -> None:
    r = route([p.info() for p in PSPS], "card", "USD")
    assert r.candidates == ("cardco", "backupcard") and "priority 1" in r.reason
    assert route([p.info() for p in PSPS], "card", "SEK").candidates == ()


def test_a_psp_config_is_a_psp_info() -> None:
    assert isinstance(BY_NAME["cardco"].info(), PspInfo)
