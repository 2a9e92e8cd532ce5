"""The wallet's wire types (pydantic): they validate the input and generate /openapi.json.

Shapes only; the rules that need more than a pattern (a common password, a known currency)
are checked by the routes with their own 400 messages.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from paystream.api.models import AMOUNT_PATTERN, IDEMPOTENCY_KEY_PATTERN

# A username: 3..32 of [a-z0-9_.-], starting with a letter or digit (case-insensitive: stored
# in lower case). An email: one @, a dotted domain, at most 254 characters.
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$"
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$"
EMAIL_CHARS_MAX = 254
PASSWORD_CHARS_MAX = 1024  # Limits.wallet_password_chars_max is the rule; this bounds the body
CURRENCY_PATTERN = r"^[A-Z]{3}$"
TRANSFER_ID_PATTERN = r"^wt_[0-9a-f]{32}$"

Username = Annotated[str, StringConstraints(pattern=USERNAME_PATTERN)]
Email = Annotated[str, StringConstraints(max_length=EMAIL_CHARS_MAX, pattern=EMAIL_PATTERN)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_CHARS_MAX)]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
Amount = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=AMOUNT_PATTERN)]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN)
]

TransferStatus = Literal["pending", "posted", "voided", "rejected"]
AccountStatus = Literal["opening", "open", "blocked"]

# What a client is told about each field when it is refused (never its value).
FIELD_RULES: dict[str, str] = {
    "username": "username must be 3..32 characters: letters, digits, _ . - (case-insensitive)",
    "email": "email must be an address like name@example.com",
    "password": "password must be a string",
    "currency": "currency must be three capital letters (ISO 4217)",
    "amount": "amount must be a decimal string like 10.50",
}


class SignUpBody(BaseModel):
    """``POST /v1/user``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    email: Email
    username: Username
    password: Password = Field(description="At least 12 characters, not a common password.")
    currency: Currency = Field(default="USD", description="The account's currency.")


class SignedUp(BaseModel):
    user_id: str
    username: str
    account: str = Field(description="The user's one ledger account.")


class LogInBody(BaseModel):
    """``POST /v1/session``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Password


class Session(BaseModel):
    token: str = Field(description="A JWT: Authorization: Bearer <token> (also set as a cookie).")
    csrf_token: str = Field(description="X-CSRF-Token for writes made with the cookie.")
    expires_at: str = Field(description="ISO 8601, UTC.")


class Transaction(BaseModel):
    at: str = Field(description="ISO 8601, UTC.")
    kind: str = Field(description="The ledger posting's kind: payin, transfer_hold, ...")
    amount: str = Field(description="Signed: negative when money left the account.")
    counterparty: str | None = Field(
        description="The other user's username, or the ledger account (e.g. @psp/cardco/USD)."
    )
    transfer_id: str | None
    status: str = Field(description="pending, posted or voided for a transfer; else posted.")


class AccountView(BaseModel):
    user_id: str
    username: str
    account: str
    currency: str
    balance: str = Field(
        description="The ledger balance (money held for transfers and pay-outs in flight already taken off)."
    )
    available: str = Field(
        description="What may be spent now: the balance while the account is open, else 0."
    )
    status: AccountStatus
    last_transactions: list[Transaction] = Field(description="The last 20 postings, newest first.")


class TransferBody(BaseModel):
    """``POST /v1/transfer``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: Username = Field(description="Who receives the money.")
    amount: Amount = Field(description="A decimal string, e.g. 10.50.")


class TransferAdmitted(BaseModel):
    transfer_id: str
    status: Literal["pending"]


class TransferView(BaseModel):
    transfer_id: str
    status: TransferStatus
    reason: str | None = Field(description="The ledger's reason, for rejected and voided.")
    from_username: str | None
    to_username: str | None
    amount: str
    currency: str
    created_at: str = Field(description="ISO 8601, UTC.")
