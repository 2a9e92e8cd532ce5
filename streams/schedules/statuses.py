"""A schedule's state machine: which status may follow which (docs/schedules.md).

``evolve`` checks every change against this table and raises InvariantViolation on any other;
``tests/unit/test_schedule_statuses.py`` drives random sequences of messages through the core
and holds every change it makes to the table.
"""

from __future__ import annotations

from .errors import InvariantViolation
from .model import ScheduleStatus

S = ScheduleStatus

TRANSITIONS: dict[ScheduleStatus, frozenset[ScheduleStatus]] = {
    # Paused by the user or after N failures in a row; completed when the rule runs out.
    S.active: frozenset({S.paused, S.completed, S.deleted}),
    # Resumed (occurrences of the pause are not paid), or deleted.
    S.paused: frozenset({S.active, S.deleted}),
    # A PUT that gives the rule (or the end) more occurrences makes it active again.
    S.completed: frozenset({S.active, S.deleted}),
    # Nothing follows: a deleted schedule pays nothing, ever; its history stays.
    S.deleted: frozenset(),
}

# Statuses in which no occurrence is paid.
IDLE: frozenset[ScheduleStatus] = frozenset({S.paused, S.completed, S.deleted})


def allowed(old: ScheduleStatus, new: ScheduleStatus) -> bool:
    return new in TRANSITIONS[old]


def check_transition(schedule_id: str, old: ScheduleStatus, new: ScheduleStatus) -> None:
    if not allowed(old, new):
        raise InvariantViolation(f"schedule {schedule_id!r}: {old.value} -> {new.value}")
