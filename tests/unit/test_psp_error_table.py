"""Each connector's table: which PSP error codes are retryable and which are final."""

from __future__ import annotations

import pytest

from connectors.psp.base import ErrorTable
from connectors.psp.simulator import SIMULATOR_ERRORS

FINAL = ["card_declined", "insufficient_funds", "invalid_instrument", "account_closed",
         "payment_declined", "invalid_amount", "idempotency_mismatch", "token_not_found"]  # fmt: skip
RETRYABLE = ["psp_unavailable", "internal_error", "rate_limited", "lock_timeout",
             "connection_refused", "connection_reset", "connection_dropped", "timeout"]  # fmt: skip


@pytest.mark.parametrize("code", FINAL)
def test_final(code: str) -> None:
    assert not SIMULATOR_ERRORS.is_retryable(code)
    assert not SIMULATOR_ERRORS.is_retryable(code, 503)  # the code wins over the status


@pytest.mark.parametrize("code", RETRYABLE)
def test_retryable(code: str) -> None:
    assert SIMULATOR_ERRORS.is_retryable(code)
    assert SIMULATOR_ERRORS.is_retryable(code, 400)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(None, True), (500, True), (502, True), (503, True), (429, True), (408, True),
     (400, False), (401, False), (404, False), (409, False), (422, False)],
)  # fmt: skip
def test_unknown_codes_go_by_status(status: int | None, retryable: bool) -> None:
    assert SIMULATOR_ERRORS.is_retryable("something_new", status) is retryable


def test_every_documented_simulator_code_is_classed() -> None:
    # docs/psp-simulator.md, "HTTP API": the error codes, and the declines.
    documented = {"invalid_json", "invalid_body", "missing_field", "invalid_field",
                  "invalid_amount", "unsupported_currency", "unsupported_payment_option",
                  "token_not_found", "event_not_found", "not_found", "method_not_allowed",
                  "idempotency_mismatch", "no_webhook_url", "body_too_large", "psp_unavailable",
                  "internal_error", "card_declined", "insufficient_funds", "invalid_instrument",
                  "account_closed", "payment_declined"}  # fmt: skip
    assert documented <= SIMULATOR_ERRORS.retryable | SIMULATOR_ERRORS.final


def test_a_code_cannot_be_both() -> None:
    with pytest.raises(ValueError, match="both"):
        ErrorTable(retryable=frozenset({"x"}), final=frozenset({"x"}))
