"""The public JSON shapes of a schedule (``/payments/scheduled-payment/v1``, the CLI). Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from . import rules
from .model import (
    US,
    Definition,
    Occurrence,
    OccurrenceStatus,
    ScheduleState,
    ScheduleStatus,
    payment_id,
)

# A payment's status by its id (the API's view of the payments), or None if unknown.
PaymentStatus = Callable[[str], str | None]


def iso(ts_us: int | None) -> str | None:
    """Microseconds since the epoch as ISO 8601 UTC, whole seconds when they are."""
    if ts_us is None:
        return None
    t = datetime.fromtimestamp(ts_us / US, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ" if ts_us % US == 0 else "%Y-%m-%dT%H:%M:%S.%fZ")


def definition_view(d: Definition) -> dict[str, Any]:
    return {
        "user_id": d.user_id,
        "type": d.type.value,
        "from_acct": d.from_acct,
        "to_acct": d.to_acct,
        "amount": d.amount,
        "currency": d.currency,
        "payment_option": d.payment_option.value,
        "rrule": d.rrule,
        "start_at": rules.start_iso(d),
        "end_at": iso(d.end_at),
        "timezone": d.timezone,
    }


def summary_view(s: ScheduleState) -> dict[str, Any]:
    """A schedule as the list shows it."""
    live = s.status is ScheduleStatus.active and s.next is not None
    return {
        "schedule_id": s.schedule_id,
        **definition_view(s.definition),
        "status": s.status.value,
        "status_reason": s.status_reason,
        "next_run_at": iso(s.next.at) if live and s.next else None,
        "next_due_at": iso(s.next.due_at) if live and s.next else None,
        "failures_in_row": s.failures_in_row,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
        "version": s.version,
    }


def occurrence_view(
    schedule_id: str, o: Occurrence, payments: PaymentStatus | None
) -> dict[str, Any]:
    pid = payment_id(schedule_id, o.at)
    paid = o.status not in (OccurrenceStatus.skipped, OccurrenceStatus.submit_failed)
    status = payments(pid) if payments is not None and paid else None
    if status is None and o.status in (
        OccurrenceStatus.succeeded,
        OccurrenceStatus.failed,
        OccurrenceStatus.rejected,
    ):
        status = o.status.value
    return {
        "occurrence_at": iso(o.at),
        "payment_id": pid if paid else None,
        "status": o.status.value,
        "payment_status": status,
        "reason": o.reason,
        "due_at": iso(o.due_at),
        "submitted_at": iso(o.submitted_at),
        "backfill": o.backfill,
        "skipped_through": iso(o.skipped_through),
        "skipped_count": o.skipped_count if o.status is OccurrenceStatus.skipped else None,
    }


def schedule_view(s: ScheduleState, payments: PaymentStatus | None = None) -> dict[str, Any]:
    """One schedule with its last occurrences (latest first) and their payments' statuses."""
    b = s.backfill
    return {
        **summary_view(s),
        "backfill": None
        if b is None
        else {"from": iso(b.from_at), "to": iso(b.to_at), "next": iso(b.cursor.at)},
        "occurrences": [occurrence_view(s.schedule_id, o, payments) for o in reversed(s.recent)],
    }


def admission_view(s: ScheduleState, definition: Definition) -> dict[str, Any]:
    """The schedule as it was created (the 201's body, and every replay of it), given the
    definition it was created with (the request's: same key, same body)."""
    created = ScheduleStatus.active if s.first_run_at is not None else ScheduleStatus.completed
    first = replace(
        s,
        definition=definition,
        status=created,
        status_reason=None,
        version=1,
        updated_at=s.created_at,
        failures_in_row=0,
        recent=(),
        backfill=None,
        next=None,
    )
    view = schedule_view(first)
    view["status_reason"] = None
    view["next_run_at"] = iso(s.first_run_at)
    view["next_due_at"] = None
    return view
