"""Scheduled-payment records into warehouse rows: records the scheduler's wire mapping makes
from the core's events, through the codec as the sink reads them, into rows of
ops/sql/0006_schedules.sql's tables."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from connectors.errors import PoisonRecord
from connectors.schedule_rows import (
    OCCURRENCE_COLUMNS,
    OCCURRENCE_TABLE,
    SCHEDULE_COLUMNS,
    SCHEDULE_TABLE,
    occurrence_row,
    schedule_row,
)
from connectors.sink import COLUMNS
from connectors.warehouse import migration_files, statements
from schemas.codec import Codec
from streams.scheduler import wire
from streams.schedules import decide, evolve_all, rules
from streams.schedules import model as sm

CODEC = Codec.default()
T0 = 1_790_000_000 * sm.US


def _flow() -> tuple[sm.ScheduleState, list[sm.Event]]:
    d = sm.Definition(
        "u1", sm.PaymentType.pay_in, "card_4242424242424242", "acct-1", "10.50", "USD",
        sm.PaymentOption.card, "FREQ=HOURLY", rules.parse_start("2026-09-20T00:00:00Z", "UTC"),
        "UTC",
    )  # fmt: skip
    events = decide(None, sm.Create("s1", d, "service", "k", "dig", "c1", T0), sm.Policy())
    state = evolve_all(None, events)
    assert state is not None and state.next is not None
    at = state.next.at
    more = decide(state, sm.Submitted("s1", at, True, T0 + 5, state.next.due_at), sm.Policy())
    state = evolve_all(state, more)
    settle = decide(
        state, sm.Settled("s1", at, sm.OccurrenceStatus.succeeded, None, T0 + 9), sm.Policy()
    )
    state = evolve_all(state, settle)
    assert state is not None
    return state, [*events, *more, *settle]


def _wire(schema: str, record: dict[str, Any]) -> dict[str, Any]:
    name, out = CODEC.decode(CODEC.encode(schema, record))
    assert name == schema
    return out


def test_a_snapshot_becomes_a_row_of_scheduled_payments() -> None:
    state, _ = _flow()
    row = dict(
        zip(
            SCHEDULE_COLUMNS,
            schedule_row(_wire("ScheduleChanged", wire.changed_record(state)), 2, 7),
            strict=True,
        )
    )
    assert row["schedule_id"] == "s1" and row["version"] == state.version
    assert row["amount"] == Decimal("10.50") and row["status"] == "active"
    assert row["event_id"] == f"s1/v{state.version}"
    assert row["next_run_at"] == state.next.at  # type: ignore[union-attr]
    assert (row["kafka_partition"], row["kafka_offset"]) == (2, 7)


def test_occurrences_become_rows_skipped_run_submitted_settled() -> None:
    _, events = _flow()
    rows = [
        dict(
            zip(
                OCCURRENCE_COLUMNS,
                occurrence_row(_wire("ScheduleOccurrence", r), 0, i),
                strict=True,
            )
        )
        for i, r in enumerate(wire.occurrence_records("s1", events))
    ]
    assert [r["status"] for r in rows] == ["skipped", "submitted", "succeeded"]
    skipped, submitted, settled = rows
    assert skipped["skipped_count"] > 1 and skipped["reason"] == sm.SKIPPED_OUTSIDE_WINDOW
    assert skipped["skipped_through"] > skipped["occurrence_at"]
    assert submitted["payment_id"] == sm.payment_id("s1", submitted["occurrence_at"])
    assert (submitted["version"], settled["version"]) == (1, 2)
    assert submitted["due_at"] is not None and submitted["submitted_at"] is not None
    assert len({r["event_id"] for r in rows}) == 3


def test_the_sink_writes_the_columns_the_migration_creates() -> None:
    assert COLUMNS[SCHEDULE_TABLE] == SCHEDULE_COLUMNS
    assert COLUMNS[OCCURRENCE_TABLE] == OCCURRENCE_COLUMNS
    (sql,) = [text for _, name, text in migration_files() if name == "0006_schedules.sql"]
    created = {}
    for s in statements(sql):
        m = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*ENGINE", s, re.S)
        assert m, s
        cols = [ln.split()[0] for ln in m.group(2).strip().splitlines() if ln.strip()]
        created[m.group(1)] = cols
    assert created == {SCHEDULE_TABLE: SCHEDULE_COLUMNS, OCCURRENCE_TABLE: OCCURRENCE_COLUMNS}


@pytest.mark.parametrize(
    ("field", "value"), [("version", 0), ("failures_in_row", -1), ("amount", "1e99")]
)
def test_a_snapshot_clickhouse_would_refuse_is_poison(field: str, value: Any) -> None:
    state, _ = _flow()
    record = {**wire.changed_record(state), field: value}
    with pytest.raises(PoisonRecord):
        schedule_row(record, 0, 0)


@pytest.mark.parametrize(
    ("field", "value"), [("version", 3), ("skipped_count", 0), ("backfill", 1)]
)
def test_an_occurrence_clickhouse_would_refuse_is_poison(field: str, value: Any) -> None:
    _, events = _flow()
    record = {**wire.occurrence_records("s1", events)[0], field: value}
    with pytest.raises(PoisonRecord):
        occurrence_row(record, 0, 0)
