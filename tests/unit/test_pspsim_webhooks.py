"""Webhook secrets and signatures round-trip through the standardwebhooks package."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from pspsim.clock import now
from pspsim.store import TokenRow
from pspsim.webhooks import event_body, load_or_create_secret, new_event_id, signed_headers

TOKEN = TokenRow(
    token="tok_1", psp="bankco", merchant_reference="po-1", direction="pay_in",
    amount_minor=1234, currency="EUR", payment_option="bank_account",
    instrument="bank_DE89370400440532013000", webhook_url=None, created_body="{}",
    status="succeeded", code=None, psp_reference="PSPREF", executions=1, charged=True,
    created_at="", executed_at=None, completed_at=None, complete_due=None,
)  # fmt: skip


def test_a_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "secrets", "bankco")
    path = tmp_path / "secrets" / "bankco"
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(tmp_path / "secrets", "bankco") == secret


def test_a_secret_that_is_not_whsec_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cardco").write_text("hunter2\n")
    with pytest.raises(ValueError, match="whsec_"):
        load_or_create_secret(tmp_path, "cardco")


def test_signature_round_trip(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path, "bankco")
    event_id = new_event_id()
    body = event_body("payment.succeeded", "2025-01-01T00:00:00.000Z", TOKEN)
    headers = signed_headers(secret, event_id, now(), body)
    assert headers["webhook-id"] == event_id and event_id.startswith("evt_")
    payload = Webhook(secret).verify(body, headers)
    assert payload == json.loads(body)
    assert payload["type"] == "payment.succeeded"
    assert payload["data"] == {
        "token": "tok_1", "merchant_reference": "po-1", "status": "succeeded", "code": None,
        "psp_reference": "PSPREF", "amount": "12.34", "currency": "EUR", "direction": "pay_in",
    }  # fmt: skip


def test_tampered_other_secret_and_changed_body_fail(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path, "bankco")
    other = load_or_create_secret(tmp_path, "cardco")
    body = event_body("payment.pending", "2025-01-01T00:00:00.000Z", TOKEN)
    tampered = signed_headers(secret, "evt_1", now(), body, tamper=True)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, signed_headers(secret, "evt_1", now(), body))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(
            body.replace("12.34", "99.99"), signed_headers(secret, "evt_1", now(), body)
        )
