"""Webhook secrets, event bodies and Standard Webhooks signatures (no I/O beyond the secret files)."""

from __future__ import annotations

import base64
import json
import os
import secrets
from datetime import datetime
from pathlib import Path

from standardwebhooks import Webhook

from pspsim.config import LIMITS
from pspsim.money import format_minor
from pspsim.store import TokenRow

SECRET_PREFIX = "whsec_"
EVENT_TYPES = ("payment.pending", "payment.succeeded", "payment.declined")


def load_or_create_secret(secret_dir: Path, psp: str) -> str:
    """`secret_dir/psp` holds `whsec_<base64>`; created (mode 0600) when missing."""
    secret_dir.mkdir(parents=True, exist_ok=True)
    path = secret_dir / psp
    fresh = (
        SECRET_PREFIX + base64.b64encode(secrets.token_bytes(LIMITS.webhook_secret_bytes)).decode()
    )
    try:
        # O_EXCL: two processes starting at once must not overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(fresh + "\n")
    text = path.read_text().strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"{path}: a webhook secret must start with {SECRET_PREFIX!r}")
    Webhook(text)  # refuses a secret that is not base64
    return text


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def event_data(t: TokenRow) -> dict[str, object]:
    return {
        "token": t.token,
        "merchant_reference": t.merchant_reference,
        "status": t.status,
        "code": t.code,
        "psp_reference": t.psp_reference,
        "amount": format_minor(t.amount_minor, t.currency),
        "currency": t.currency,
        "direction": t.direction,
    }


def event_body(event_type: str, timestamp: str, t: TokenRow) -> str:
    """The exact bytes we send (and sign), stored so every retry sends the same body."""
    assert event_type in EVENT_TYPES
    doc = {"type": event_type, "timestamp": timestamp, "data": event_data(t)}
    return json.dumps(doc, separators=(",", ":"))


def signed_headers(
    secret: str, event_id: str, at: datetime, body: str, *, tamper: bool = False
) -> dict[str, str]:
    """The three Standard Webhooks headers; `tamper` gives a well-formed but wrong signature."""
    at = at.replace(microsecond=0)
    signature = Webhook(secret).sign(event_id, at, body)
    if tamper:
        version, b64 = signature.split(",", 1)
        raw = bytearray(base64.b64decode(b64))
        raw[0] ^= 0xFF
        signature = f"{version},{base64.b64encode(bytes(raw)).decode()}"
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
