"""What happens to a payment, decided by its instrument alone (the test-instrument table)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pspsim.psps import OPTION_PREFIX


class Behavior(Enum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    # HTTP 500 on the first executions of the token, then it charges.
    FLAKY = "flaky"
    # Charge, then drop the connection without a response.
    DROP = "drop"
    # Charge, then hold the response for hang_s.
    HANG = "hang"


@dataclass(frozen=True)
class Outcome:
    behavior: Behavior
    code: str | None = None
    # A decline an asynchronous PSP reports at completion (after `pending`), not at execute.
    at_completion: bool = False


SUCCEED = Outcome(Behavior.SUCCEED)
INVALID = Outcome(Behavior.DECLINE, "invalid_instrument")

SPECIAL: dict[str, Outcome] = {
    "card_4242424242424242": SUCCEED,
    "bank_DE89370400440532013000": SUCCEED,
    "paypal_ok@example.com": SUCCEED,
    "card_4000000000000002": Outcome(Behavior.DECLINE, "card_declined"),
    "card_4000000000009995": Outcome(Behavior.DECLINE, "insufficient_funds"),
    "card_4000000000000119": Outcome(Behavior.FLAKY),
    "card_4000000000000259": Outcome(Behavior.DROP),
    "card_4000000000000341": Outcome(Behavior.HANG),
    "bank_DE62370400440532013001": Outcome(Behavior.DECLINE, "account_closed", at_completion=True),
    "paypal_declined@example.com": Outcome(Behavior.DECLINE, "payment_declined"),
}

_CARD = re.compile(r"[0-9]{12,19}")
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Za-z0-9]{10,30}")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_shaped(number: str) -> bool:
    return _CARD.fullmatch(number) is not None and luhn_ok(number)


def iban_shaped(iban: str) -> bool:
    # Shape only (no mod-97 check): the simulator accepts made-up test IBANs.
    return _IBAN.fullmatch(iban) is not None


def paypal_shaped(email: str) -> bool:
    local, at, domain = email.partition("@")
    return (
        bool(at and local and domain) and "@" not in domain and not any(c.isspace() for c in email)
    )


def classify(instrument: str, payment_option: str) -> Outcome:
    """The outcome of executing a payment with this instrument and payment option."""
    prefix = OPTION_PREFIX.get(payment_option)
    if prefix is None or not instrument.startswith(prefix):
        return INVALID
    special = SPECIAL.get(instrument)
    if special is not None:
        return special
    rest = instrument[len(prefix) :]
    shaped = {"card_": card_shaped, "bank_": iban_shaped, "paypal_": paypal_shaped}[prefix]
    return SUCCEED if shaped(rest) else INVALID
