"""The symbols a rule's ``when`` may use, and their types (a public contract: docs/risk.md).

A rule naming any other symbol is refused when its file is loaded: an unknown symbol is an
error, never a silent false.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """A symbol's type, as the rule grammar (the ``rule-engine`` package) knows it."""

    string = "STRING"
    number = "FLOAT"  # Decimal inside: amounts are compared exactly
    boolean = "BOOLEAN"


# The payment's own fields.
PAYMENT_SYMBOLS: dict[str, Kind] = {
    "type": Kind.string,  # pay_in | pay_out | transfer
    "amount": Kind.number,
    "currency": Kind.string,
    "payment_option": Kind.string,
    "from_acct": Kind.string,
    "to_acct": Kind.string,
    "user_id": Kind.string,
}

# The user's exact velocity over the log time before this payment, not counting it.
VELOCITY_SYMBOLS: dict[str, Kind] = {
    "user_payments_1h": Kind.number,
    "user_payments_24h": Kind.number,
    "user_amount_1h": Kind.number,
    "user_amount_24h": Kind.number,
    "user_declines_24h": Kind.number,
    "user_distinct_instruments_24h": Kind.number,
}

ACCOUNT_SYMBOLS: dict[str, Kind] = {
    "account_age_s": Kind.number,
    "account_blocked": Kind.boolean,
    "counterparty_related": Kind.boolean,
}

MODEL_SYMBOLS: dict[str, Kind] = {"model_score": Kind.number}

SYMBOLS: dict[str, Kind] = {
    **PAYMENT_SYMBOLS,
    **VELOCITY_SYMBOLS,
    **ACCOUNT_SYMBOLS,
    **MODEL_SYMBOLS,
}

# What a rule's trigger may name.
TRIGGERS = frozenset({"pay_in", "pay_out", "transfer"})
