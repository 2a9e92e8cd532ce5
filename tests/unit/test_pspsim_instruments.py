"""The test-instrument table and the shapes of other instruments (a public contract)."""

from __future__ import annotations

import pytest

from pspsim.instruments import Behavior, Outcome, card_shaped, classify, iban_shaped, luhn_ok

D = Behavior.DECLINE


@pytest.mark.parametrize(
    ("instrument", "option", "behavior", "code"),
    [
        ("card_4242424242424242", "card", Behavior.SUCCEED, None),
        ("card_4242424242424242", "apple_pay", Behavior.SUCCEED, None),
        ("card_4242424242424242", "google_pay", Behavior.SUCCEED, None),
        ("bank_DE89370400440532013000", "bank_account", Behavior.SUCCEED, None),
        ("paypal_ok@example.com", "paypal", Behavior.SUCCEED, None),
        ("card_4000000000000002", "card", D, "card_declined"),
        ("card_4000000000009995", "card", D, "insufficient_funds"),
        ("card_4000000000000119", "card", Behavior.FLAKY, None),
        ("card_4000000000000259", "card", Behavior.DROP, None),
        ("card_4000000000000341", "card", Behavior.HANG, None),
        ("bank_DE62370400440532013001", "bank_account", D, "account_closed"),
        ("paypal_declined@example.com", "paypal", D, "payment_declined"),
    ],
)
def test_the_special_instruments(
    instrument: str, option: str, behavior: Behavior, code: str | None
) -> None:
    outcome = classify(instrument, option)
    assert (outcome.behavior, outcome.code) == (behavior, code)


def test_the_closed_account_declines_at_completion_the_others_at_once() -> None:
    assert classify("bank_DE62370400440532013001", "bank_account").at_completion
    assert not classify("card_4000000000000002", "card").at_completion


@pytest.mark.parametrize(
    ("instrument", "option"),
    [
        ("card_4111111111111111", "card"),  # Visa test number, Luhn-valid, 16 digits
        ("card_378282246310005", "apple_pay"),  # Amex, 15 digits
        ("card_424242424242", "card"),  # 12 digits, Luhn-valid
        ("bank_GB29NWBK60161331926819", "bank_account"),
        ("bank_FR1420041010050500013M02606", "bank_account"),
        ("paypal_someone@shop.example", "paypal"),
    ],
)
def test_well_shaped_instruments_succeed(instrument: str, option: str) -> None:
    assert classify(instrument, option) == Outcome(Behavior.SUCCEED)


@pytest.mark.parametrize(
    ("instrument", "option"),
    [
        ("card_4242424242424241", "card"),  # Luhn fails
        ("card_42424242421", "card"),  # 11 digits
        ("card_42424242424242424242", "card"),  # 20 digits
        ("card_4242 4242 4242 4242", "card"),
        ("bank_DE8937040044", "bank_account"),  # 8 characters after the check digits
        ("bank_de89370400440532013000", "bank_account"),  # country in lower case
        ("bank_DE89-3704-0044-0532-0130-00", "bank_account"),
        ("paypal_nobody", "paypal"),
        ("paypal_a@b@c", "paypal"),
        ("paypal_@example.com", "paypal"),
        # Right shape, wrong prefix for the payment option.
        ("card_4242424242424242", "bank_account"),
        ("card_4242424242424242", "paypal"),
        ("bank_DE89370400440532013000", "card"),
        ("paypal_ok@example.com", "google_pay"),
        ("visa_4242424242424242", "card"),
        ("", "card"),
        ("card_4242424242424242", "crypto"),
    ],
)
def test_everything_else_is_an_invalid_instrument(instrument: str, option: str) -> None:
    assert classify(instrument, option) == Outcome(D, "invalid_instrument")


def test_luhn() -> None:
    assert luhn_ok("4242424242424242")
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert card_shaped("4000000000000002") is True
    assert not card_shaped("4242x24242424242")


def test_iban_shape_bounds() -> None:
    assert iban_shaped("DE89" + "1" * 10)
    assert iban_shaped("DE89" + "A" * 30)
    assert not iban_shaped("DE89" + "1" * 9)
    assert not iban_shaped("DE89" + "1" * 31)
    assert not iban_shaped("D189" + "1" * 12)
