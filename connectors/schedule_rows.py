"""Scheduled-payment records (paystream.schedule-events.v1) as warehouse rows
(ops/sql/0006_schedules.sql), like ``connectors/payment_rows.py``: a decoded record plus its
Kafka position in, a row in the table's column order out; anything ClickHouse would refuse for
the whole batch raises ``PoisonRecord`` instead (the sink dead-letters that one record)."""

from __future__ import annotations

from typing import Any

from connectors.errors import PoisonRecord
from connectors.payment_rows import money

SCHEDULE_TABLE = "scheduled_payments"
OCCURRENCE_TABLE = "schedule_occurrences"

SCHEDULE_COLUMNS = [
    "schedule_id", "version", "event_id", "user_id", "type", "from_acct", "to_acct", "amount",
    "currency", "payment_option", "rrule", "start_local", "timezone", "end_at", "status",
    "status_reason", "next_run_at", "last_run_at", "failures_in_row", "created_at", "ts",
    "kafka_partition", "kafka_offset",
]  # fmt: skip
OCCURRENCE_COLUMNS = [
    "event_id", "schedule_id", "occurrence_at", "payment_id", "status", "reason", "due_at",
    "submitted_at", "backfill", "skipped_through", "skipped_count", "version", "ts",
    "kafka_partition", "kafka_offset",
]  # fmt: skip

_UINT32_MAX = 2**32 - 1
_INT64_MAX = 2**63 - 1


def _count(r: dict[str, Any], name: str, low: int, high: int) -> int:
    v = r[name]
    if type(v) is not int or not low <= v <= high:
        raise PoisonRecord(f"{name} {v!r} is not in {low}..{high}")
    return v


def schedule_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    """A ScheduleChanged snapshot: one row of scheduled_payments."""
    return [
        r["schedule_id"], _count(r, "version", 1, _INT64_MAX), r["event_id"], r["user_id"],
        r["type"], r["from_acct"], r["to_acct"], money(r["amount"]), r["currency"],
        r["payment_option"], r["rrule"], r["start_local"], r["timezone"], r["end_at"],
        r["status"], r["status_reason"], r["next_run_at"], r["last_run_at"],
        _count(r, "failures_in_row", 0, _UINT32_MAX), r["created_at"], r["ts"], p, o,
    ]  # fmt: skip


def occurrence_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    """A ScheduleOccurrence: one row of schedule_occurrences."""
    if type(r["backfill"]) is not bool:
        raise PoisonRecord(f"backfill {r['backfill']!r} is not a boolean")
    return [
        r["event_id"], r["schedule_id"], r["occurrence_at"], r["payment_id"], r["status"],
        r["reason"], r["due_at"], r["submitted_at"], r["backfill"], r["skipped_through"],
        _count(r, "skipped_count", 1, _INT64_MAX), _count(r, "version", 1, 2), r["ts"], p, o,
    ]  # fmt: skip
