"""evolve(state, event) -> state: apply what ``decide`` decided, checking the invariants.

An invariant that does not hold raises InvariantViolation (never caught: the scheduler stops
loudly); every status change is checked against ``statuses.TRANSITIONS``.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import InvariantViolation
from .model import (
    FAILURES,
    RECENT_COMMANDS_MAX,
    RECENT_OCCURRENCES_MAX,
    SETTLED,
    BackfillChanged,
    CommandRecorded,
    Created,
    CursorMoved,
    DefinitionChanged,
    Event,
    Occurrence,
    OccurrenceSettled,
    OccurrencesSkipped,
    OccurrenceStatus,
    OccurrenceSubmitted,
    ScheduleState,
    ScheduleStatus,
    StatusChanged,
    SubmitRequested,
)
from .statuses import check_transition


def evolve_all(state: ScheduleState | None, events: list[Event]) -> ScheduleState | None:
    for e in events:
        state = evolve(state, e)
    return state


def evolve(state: ScheduleState | None, e: Event) -> ScheduleState | None:
    if isinstance(e, Created):
        if state is not None:
            raise InvariantViolation(f"schedule {e.state.schedule_id!r} created twice")
        return _checked(e.state)
    if isinstance(e, SubmitRequested):
        return state  # an instruction to the scheduler, not a change
    if state is None:
        raise InvariantViolation(f"{type(e).__name__} for a schedule that does not exist")
    return _checked(_apply(state, e))


def _apply(s: ScheduleState, e: Event) -> ScheduleState:
    ts = getattr(e, "ts", s.updated_at)
    s = replace(s, version=s.version + 1, updated_at=max(s.updated_at, ts))
    if isinstance(e, CommandRecorded):
        commands = (*s.commands, (e.command_id, e.result))[-RECENT_COMMANDS_MAX:]
        return replace(s, commands=commands)
    if isinstance(e, DefinitionChanged):
        return replace(s, definition=e.definition, next=e.next, not_before=e.not_before)
    if isinstance(e, StatusChanged):
        check_transition(s.schedule_id, s.status, e.status)
        s = replace(s, status=e.status, status_reason=e.reason)
        if e.next is not None:
            s = replace(s, next=e.next)
        if e.not_before is not None:
            s = replace(s, not_before=e.not_before)
        if e.status is ScheduleStatus.active:
            s = replace(s, failures_in_row=0)
        if e.status is ScheduleStatus.deleted:
            s = replace(s, backfill=None)
        return s
    if isinstance(e, CursorMoved):
        return replace(s, next=e.next)
    if isinstance(e, OccurrencesSkipped):
        o = Occurrence(
            e.first_at,
            OccurrenceStatus.skipped,
            e.reason,
            skipped_through=e.last_at,
            skipped_count=e.count,
        )
        return replace(
            s, next=e.next, last_at=_latest(s.last_at, e.last_at), recent=_record(s.recent, o)
        )
    if isinstance(e, OccurrenceSubmitted):
        status = OccurrenceStatus.submitted if e.ok else OccurrenceStatus.submit_failed
        o = Occurrence(e.at, status, e.code, e.due_at, e.submitted_at, e.backfill)
        s = replace(
            s,
            recent=_record(s.recent, o),
            failures_in_row=s.failures_in_row + (0 if e.ok else 1),
        )
        if e.backfill:
            return s
        return replace(s, next=e.next, last_at=_latest(s.last_at, e.at))
    if isinstance(e, OccurrenceSettled):
        o = Occurrence(e.at, e.status, e.reason)
        failures = s.failures_in_row + 1 if e.status in FAILURES else 0
        return replace(s, recent=_record(s.recent, o), failures_in_row=failures)
    if isinstance(e, BackfillChanged):
        return replace(s, backfill=e.backfill)
    raise InvariantViolation(f"unknown event {e!r}")


def _latest(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _record(recent: tuple[Occurrence, ...], o: Occurrence) -> tuple[Occurrence, ...]:
    """``recent`` with ``o`` in its place (by time), merged with what is known of it."""
    out = [x for x in recent if x.at != o.at]
    old = next((x for x in recent if x.at == o.at), None)
    if old is not None:
        if o.status in SETTLED:  # the payment's outcome: keep when it was due and submitted
            o = replace(o, due_at=old.due_at, submitted_at=old.submitted_at, backfill=old.backfill)
        elif old.status in SETTLED:  # an answer that arrives after the outcome it led to
            o = replace(old, due_at=o.due_at, submitted_at=o.submitted_at)
    out.append(o)
    out.sort(key=lambda x: x.at)
    return tuple(out[-RECENT_OCCURRENCES_MAX:])


def _checked(s: ScheduleState) -> ScheduleState:
    if len(s.recent) > RECENT_OCCURRENCES_MAX or len(s.commands) > RECENT_COMMANDS_MAX:
        raise InvariantViolation(f"schedule {s.schedule_id!r} keeps too much history")
    if s.failures_in_row < 0 or s.version < 1:
        raise InvariantViolation(f"schedule {s.schedule_id!r}: {s.failures_in_row=} {s.version=}")
    if s.backfill is not None and s.backfill.cursor.at > s.backfill.to_at:
        raise InvariantViolation(f"schedule {s.schedule_id!r}: backfill past its end")
    if s.status is ScheduleStatus.deleted and s.backfill is not None:
        raise InvariantViolation(f"schedule {s.schedule_id!r}: deleted with a backfill running")
    return s
