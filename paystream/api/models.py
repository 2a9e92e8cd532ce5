"""The API's wire types (pydantic): they validate the input and generate /openapi.json.

The field rules are the payments workers' own (``streams.payments_agent``), so a request the
API accepts is never dead-lettered by a worker.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from streams.payments import model as pm
from streams.payments_agent import AMOUNT_CHARS_MAX, ID_CHARS_MAX, IDEMPOTENCY_KEY_CHARS_MAX

# JSON-schema (ECMA) forms of the workers' rules; pydantic checks them with the same meaning.
PAYMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
# Digits, an optional fraction: the ledger judges precision and size, with its own reasons.
AMOUNT_PATTERN = r"^[0-9]{1,30}(\.[0-9]{1,18})?$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
# No C0 or C1 control characters (they would reach logs, the warehouse and the PSPs).
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x20-\x7e]+$"  # printable ASCII

PaymentId = Annotated[str, StringConstraints(pattern=PAYMENT_ID_PATTERN)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_CHARS_MAX, pattern=ID_PATTERN)]
Amount = Annotated[
    str, StringConstraints(min_length=1, max_length=AMOUNT_CHARS_MAX, pattern=AMOUNT_PATTERN)
]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
IdempotencyKey = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=IDEMPOTENCY_KEY_CHARS_MAX, pattern=IDEMPOTENCY_KEY_PATTERN
    ),
]

PaymentTypeName = Literal["pay_in", "pay_out"]
PaymentOptionName = Literal["card", "bank_account", "paypal", "apple_pay", "google_pay"]
StatusName = Literal[
    "received",
    "risk_check",
    "review",
    "authorizing",
    "processing",
    "pending",
    "unknown",
    "posting",
    "reversing",
    "succeeded",
    "failed",
    "rejected",
]

# What a client is told about each field when it is refused (never its value).
FIELD_RULES: dict[str, str] = {
    "payment_id": "payment_id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,99}",
    "user_id": f"user_id must be 1..{ID_CHARS_MAX} characters, no control characters",
    "type": "type must be pay_in or pay_out",
    "from_acct": f"from_acct must be 1..{ID_CHARS_MAX} characters, no control characters",
    "to_acct": f"to_acct must be 1..{ID_CHARS_MAX} characters, no control characters",
    "amount": (
        f"amount must be a decimal string like 10.50: digits, an optional fraction, "
        f"at most {AMOUNT_CHARS_MAX} characters"
    ),
    "currency": "currency must be three capital letters (ISO 4217)",
    "payment_option": "payment_option must be card, bank_account, paypal, apple_pay or google_pay",
    "Idempotency-Key": f"Idempotency-Key must be 1..{IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII characters",
}


class PaymentBody(BaseModel):
    """``POST /payments/payment/v1``: every field a string; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payment_id: PaymentId = Field(description="Chosen by the client; the payment's Kafka key.")
    user_id: Id
    type: PaymentTypeName
    from_acct: Id = Field(description="Pay-in: the external instrument; pay-out: the account.")
    to_acct: Id = Field(description="Pay-in: the user's account; pay-out: the instrument.")
    amount: Amount = Field(
        description="A decimal string, e.g. 10.50 (at most the currency's minor units)."
    )
    currency: Currency
    payment_option: PaymentOptionName

    def to_request(self) -> pm.PaymentRequest:
        return pm.PaymentRequest(
            payment_id=self.payment_id,
            user_id=self.user_id,
            type=pm.PaymentType(self.type),
            from_acct=self.from_acct,
            to_acct=self.to_acct,
            amount=self.amount,
            currency=self.currency,
            payment_option=pm.PaymentOption(self.payment_option),
        )


class ErrorBody(BaseModel):
    """Every answer that is not a success."""

    error: str = Field(description="A stable code, e.g. invalid_field, payment_exists.")
    message: str
    field: str | None = Field(default=None, description="The refused field, for invalid_field.")


class AttemptView(BaseModel):
    attempt: int
    psp: str
    phase: Literal["token_requested", "token_created", "token_failed", "executing", "answered"]
    token: str | None
    outcome: Literal["succeeded", "declined", "pending", "unknown"] | None
    code: str | None
    psp_reference: str | None
    candidates: list[str]
    routing_reason: str
    started_at: str
    updated_at: str


class OrderView(BaseModel):
    payment_order_id: str
    psp: str | None
    payment_order_status: StatusName
    psp_status: str | None
    ledger_updated: bool
    wallet_updated: bool
    attempts: list[AttemptView]


class HistoryEntry(BaseModel):
    status: StatusName
    at: str = Field(description="ISO 8601, UTC.")


class RiskView(BaseModel):
    """The risk engine's decision on the payment (docs/risk.md), and a reviewer's."""

    action: Literal["allow", "review", "block"]
    rules: list[str] = Field(description="The matching rules.")
    score: str
    version: str = Field(description="The rule set's version.")
    decided_at: str
    review_id: str | None = Field(description="The review item, when it went to review.")
    review_decision: Literal["approved", "declined"] | None
    reviewer: str | None
    note: str | None
    reviewed_at: str | None


class PaymentView(BaseModel):
    """A payment (``streams.payments.views.payment_view``); the 201 shows it as admitted."""

    payment_id: str
    user_id: str
    type: PaymentTypeName
    from_acct: str
    to_acct: str
    amount: str
    currency: str
    payment_option: PaymentOptionName
    status: StatusName
    reason: str | None = Field(description="Why it failed or was rejected.")
    is_complete: bool
    created_at: str
    orders: list[OrderView]
    history: list[HistoryEntry]
    risk: RiskView | None = Field(description="Null until the risk engine decided.")


class Health(BaseModel):
    status: Literal["ok", "failing"]
    partitions: int = Field(description="Changelog partitions the view follows.")
    records_applied: int = Field(description="Changelog records applied since start.")
    admissions_in_flight: int


class WebhookAnswer(BaseModel):
    """What the API tells a PSP about its webhook."""

    status: str = Field(
        description="received (in the payments log), duplicate (an event id already in the "
        "log) or ignored"
    )
    event_id: str | None = None
    reason: str | None = None
