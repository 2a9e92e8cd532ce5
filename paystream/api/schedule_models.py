"""Scheduled payments' wire types (pydantic): they validate the input's shape and generate
/openapi.json. The rule, the start, the end, the zone and the amount are judged by the route
(``paystream.api.schedule_service``) with the core's own rules, each refusal naming its field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from streams.schedules.model import RRULE_CHARS_MAX, TIMEZONE_CHARS_MAX

from .models import Amount, Currency, Id, PaymentOptionName, PaymentTypeName

SCHEDULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
TIME_CHARS_MAX = 64

ScheduleId = Annotated[str, StringConstraints(pattern=SCHEDULE_ID_PATTERN)]
RuleText = Annotated[str, StringConstraints(min_length=1, max_length=RRULE_CHARS_MAX)]
Time = Annotated[str, StringConstraints(min_length=1, max_length=TIME_CHARS_MAX)]
Zone = Annotated[str, StringConstraints(min_length=1, max_length=TIMEZONE_CHARS_MAX)]
ScheduleStatusName = Literal["active", "paused", "completed", "deleted"]
OccurrenceStatusName = Literal[
    "submitted", "submit_failed", "skipped", "succeeded", "failed", "rejected"
]


class ScheduleBody(BaseModel):
    """``POST /payments/scheduled-payment/v1``; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule_id: ScheduleId | None = Field(
        default=None,
        description="Chosen by the client; by default derived from the Idempotency-Key.",
    )
    user_id: Id
    type: PaymentTypeName
    from_acct: Id = Field(description="Pay-in: the external instrument; pay-out: the account.")
    to_acct: Id = Field(description="Pay-in: the user's account; pay-out: the instrument.")
    amount: Amount = Field(description="Each payment's amount, e.g. 10.50.")
    currency: Currency
    payment_option: PaymentOptionName
    rrule: RuleText = Field(
        description="An RFC 5545 RRULE, e.g. FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12 (MINUTELY at "
        "the finest; UNTIL in UTC)."
    )
    start_at: Time = Field(
        description="DTSTART, ISO 8601: with an offset, or a wall time in `timezone`."
    )
    end_at: Time | None = Field(default=None, description="No occurrence after it (ISO 8601).")
    timezone: Zone = Field(default="UTC", description="IANA time zone of the rule.")


class ScheduleUpdate(BaseModel):
    """``PUT /payments/scheduled-payment/v1/{id}``: the fields to change (``end_at`` null
    removes the end). Takes effect from the next occurrence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Amount | None = None
    rrule: RuleText | None = Field(
        default=None, description="A new rule: followed from now on (from `start_at`'s phase)."
    )
    start_at: Time | None = Field(default=None, description="A new DTSTART for the rule.")
    end_at: Time | None = None
    status: Literal["active", "paused"] | None = Field(
        default=None, description="paused, or active (resume: the pause's occurrences unpaid)."
    )


class BackfillBody(BaseModel):
    """``POST /payments/scheduled-payment/v1/{id}/backfill``: pay the occurrences of the range
    (ISO 8601, inclusive; not in the future), those skipped included."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Time = Field(alias="from")
    to: Time


class OccurrenceView(BaseModel):
    occurrence_at: str
    payment_id: str | None = Field(description="sched-<schedule_id>-<YYYYMMDDTHHMMSSZ>")
    status: OccurrenceStatusName
    payment_status: str | None = Field(description="The payment's status as it stands.")
    reason: str | None
    due_at: str | None
    submitted_at: str | None
    backfill: bool
    skipped_through: str | None = Field(description="A skipped run: its last occurrence.")
    skipped_count: int | None


class BackfillView(BaseModel):
    from_: str = Field(alias="from")
    to: str
    next: str


class ScheduleSummary(BaseModel):
    schedule_id: str
    user_id: str
    type: PaymentTypeName
    from_acct: str
    to_acct: str
    amount: str
    currency: str
    payment_option: PaymentOptionName
    rrule: str
    start_at: str
    end_at: str | None
    timezone: str
    status: ScheduleStatusName
    status_reason: str | None = Field(description="Why it is paused, completed or deleted.")
    next_run_at: str | None = Field(description="Its next occurrence (null unless active).")
    next_due_at: str | None = Field(description="When that one is submitted (plus jitter).")
    failures_in_row: int
    created_at: str
    updated_at: str
    version: int


class ScheduleView(ScheduleSummary):
    backfill: BackfillView | None
    occurrences: list[OccurrenceView] = Field(description="The last 20, latest first.")


class ScheduleList(BaseModel):
    schedules: list[ScheduleSummary]
    next_after: str | None = Field(description="Pass as `after` for the next page; null: last.")
