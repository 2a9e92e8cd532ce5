"""decide(state, message, policy) -> events: every rule of a schedule, and nothing else.

Time is the message's: a command's log time (``ts``), or the scheduler clock's ``now`` in
``Due``. Nothing here reads a clock, so a decision is the same whenever it is made again.
"""

from __future__ import annotations

from dataclasses import replace

from . import rules
from .errors import RuleError, SearchBudgetExceeded
from .model import (
    APPLIED,
    FAILURES,
    REASON_CHARS_MAX,
    REFUSED_BACKFILL_RANGE,
    REFUSED_BACKFILL_RUNNING,
    REFUSED_BACKFILL_TOO_LARGE,
    REFUSED_DELETED,
    REFUSED_RULE,
    REFUSED_TRANSITION,
    SETTLED,
    SKIPPED_OUTSIDE_WINDOW,
    Backfill,
    BackfillChanged,
    BackfillDue,
    CommandRecorded,
    Create,
    Created,
    Cursor,
    CursorMoved,
    DefinitionChanged,
    Delete,
    Due,
    Event,
    Message,
    OccurrenceSettled,
    OccurrencesSkipped,
    OccurrenceSubmitted,
    Policy,
    RequestBackfill,
    ScheduleState,
    ScheduleStatus,
    Settled,
    StatusChanged,
    SubmitRequested,
    Submitted,
    Update,
    payment_id,
)
from .statuses import allowed

ST = ScheduleStatus
NO_MORE = "the rule has no further occurrence"


def decide(state: ScheduleState | None, m: Message, policy: Policy) -> list[Event]:
    if isinstance(m, Create):
        return _create(state, m, policy)
    if state is None:
        return []  # a command for a schedule that does not exist (the API checks first)
    if isinstance(m, Due):
        return _due(state, m.now, policy)
    if isinstance(m, Submitted):
        return _submitted(state, m, policy)
    if isinstance(m, Settled):
        return _settled(state, m, policy)
    if isinstance(m, BackfillDue):
        return _backfill_due(state, m.now)
    if state.command_result(m.command_id) is not None:
        return []  # this command was decided already
    if state.status is ST.deleted:
        return [CommandRecorded(m.command_id, REFUSED_DELETED, m.ts)]
    if isinstance(m, Update):
        return _update(state, m, policy)
    if isinstance(m, Delete):
        return [
            StatusChanged(ST.deleted, "deleted by the user", m.ts),
            CommandRecorded(m.command_id, APPLIED, m.ts),
        ]
    return _request_backfill(state, m, policy)


def _rule(state: ScheduleState) -> rules.Rule:
    return rules.compile_definition(state.definition)


def _create(state: ScheduleState | None, m: Create, policy: Policy) -> list[Event]:
    if state is not None:
        return []  # the API answers from the existing schedule (its creator's key and body)
    try:
        rule = rules.compile_definition(m.definition)
        first = rules.seek(m.schedule_id, rule, policy.jitter_max_us)
    except RuleError:
        return []  # the API refused it already: a request from elsewhere is dropped
    if first is None:
        return []
    created = ScheduleState(
        schedule_id=m.schedule_id,
        definition=m.definition,
        status=ST.active,
        status_reason=None,
        version=1,
        created_at=m.ts,
        updated_at=m.ts,
        scope=m.scope,
        idempotency_key=m.idempotency_key,
        digest=m.digest,
        first_run_at=first.at,
        next=first,
    )
    # A start in the past: its occurrences are caught up as after a downtime.
    events: list[Event] = [Created(created)]
    later = _catch_up(created, rule, m.ts, policy)
    if later:
        nxt = _next_after(later)
        events = [Created(replace(created, first_run_at=None if nxt is None else nxt.at)), *later]
    return events


def _next_after(events: list[Event]) -> Cursor | None:
    for e in reversed(events):
        if isinstance(e, OccurrencesSkipped | CursorMoved):
            return e.next
    return None


def _catch_up(state: ScheduleState, rule: rules.Rule, now: int, policy: Policy) -> list[Event]:
    """Occurrences older than the catch-up window are skipped (recorded, never paid)."""
    n = state.next
    if n is None or now - n.at <= policy.catchup_window_us:
        return []
    run = rules.pass_over(
        state.schedule_id, rule, policy.jitter_max_us, n, now - policy.catchup_window_us
    )
    if run.last is None or run.first_at is None:
        return []
    nxt = run.next if run.finished else run.last  # unfinished: go on from the last one later
    events: list[Event] = [
        OccurrencesSkipped(run.first_at, run.last.at, run.count, SKIPPED_OUTSIDE_WINDOW, nxt, now)
    ]
    if nxt is None and state.status is ST.active:
        events.append(StatusChanged(ST.completed, NO_MORE, now))
    return events


def _due(state: ScheduleState, now: int, policy: Policy) -> list[Event]:
    n = state.next
    if state.status is not ST.active or n is None:
        return []
    handled = state.last_at is not None and n.at <= state.last_at
    if handled or n.at < state.not_before:
        # Where a search stopped (its budget ran out), or before a resume or a new rule:
        # passed over unpaid, unrecorded.
        rule = _rule(state)
        nxt = rules.seek(
            state.schedule_id,
            rule,
            policy.jitter_max_us,
            anchor=n,
            after=state.last_at,
            not_before=state.not_before,
        )
        events: list[Event] = [CursorMoved(nxt, now)]
        if nxt is None:
            events.append(StatusChanged(ST.completed, NO_MORE, now))
        return events
    if now - n.at > policy.catchup_window_us:
        return _catch_up(state, _rule(state), now, policy)
    if now < n.due_at:
        return []  # not yet: never early
    return [SubmitRequested(n.at, n.due_at, backfill=False)]


def _backfill_due(state: ScheduleState, now: int) -> list[Event]:
    b = state.backfill
    if b is None:
        return []
    if state.status is ST.deleted or b.cursor.at > b.to_at:
        return [BackfillChanged(None, now)]
    return [SubmitRequested(b.cursor.at, b.cursor.at, backfill=True)]


def _failure_pause(
    state: ScheduleState, failures: int, at: int, what: str, now: int, policy: Policy
) -> list[Event]:
    """Paused after ``policy.failures_to_pause`` failed payments in a row, saying why."""
    if state.status is not ST.active or failures < policy.failures_to_pause:
        return []
    reason = (
        f"paused after {failures} failed payments in a row "
        f"(last: {payment_id(state.schedule_id, at)}: {what})"
    )
    return [StatusChanged(ST.paused, reason[:REASON_CHARS_MAX], now)]


def _submitted(state: ScheduleState, m: Submitted, policy: Policy) -> list[Event]:
    now = m.submitted_at
    failures = state.failures_in_row + (0 if m.ok else 1)
    if m.backfill:
        events: list[Event] = [
            OccurrenceSubmitted(m.at, m.ok, m.code, m.due_at, m.submitted_at, True, state.next, now)
        ]
        b = state.backfill
        if b is not None and b.cursor.at == m.at:
            nb = rules.advance(state.schedule_id, _rule(state), policy.jitter_max_us, b.cursor)
            more = nb is not None and nb.at <= b.to_at
            events.append(BackfillChanged(replace(b, cursor=nb) if more and nb else None, now))
        if not m.ok:
            events += _failure_pause(state, failures, m.at, f"refused: {m.code}", now, policy)
        return events
    if state.last_at is not None and m.at <= state.last_at:
        return []  # handled already (an answer for a redone submission)
    n = state.next
    nxt = n
    if n is not None and n.at <= m.at:
        nxt = rules.seek(
            state.schedule_id, _rule(state), policy.jitter_max_us, anchor=n, after=m.at
        )
    events = [OccurrenceSubmitted(m.at, m.ok, m.code, m.due_at, m.submitted_at, False, nxt, now)]
    if nxt is None and state.status is ST.active:
        events.append(StatusChanged(ST.completed, NO_MORE, now))
    elif not m.ok:
        events += _failure_pause(state, failures, m.at, f"refused: {m.code}", now, policy)
    return events


def _settled(state: ScheduleState, m: Settled, policy: Policy) -> list[Event]:
    if m.status not in SETTLED:
        return []
    for o in state.recent:
        if o.at == m.at and o.status in SETTLED:
            return []  # its terminal status is known: a repeated snapshot
    events: list[Event] = [OccurrenceSettled(m.at, m.status, m.reason, m.ts)]
    if m.status in FAILURES:
        what = m.status.value + (f" ({m.reason})" if m.reason else "")
        events += _failure_pause(state, state.failures_in_row + 1, m.at, what, m.ts, policy)
    return events


def _update(state: ScheduleState, m: Update, policy: Policy) -> list[Event]:
    now = m.ts
    target = m.status or state.status
    if target is not state.status and not allowed(state.status, target):
        return [CommandRecorded(m.command_id, REFUSED_TRANSITION, now)]
    if target not in (ST.active, ST.paused, state.status):
        return [CommandRecorded(m.command_id, REFUSED_TRANSITION, now)]
    d = state.definition
    nd = replace(
        d,
        amount=m.amount if m.amount is not None else d.amount,
        rrule=m.rrule if m.rrule is not None else d.rrule,
        start_local=m.start_local if m.start_local is not None else d.start_local,
        end_at=None if m.clear_end else (m.end_at if m.end_at is not None else d.end_at),
    )
    events: list[Event] = []
    nxt, not_before = state.next, state.not_before
    series_changed = (nd.rrule, nd.start_local, nd.end_at) != (d.rrule, d.start_local, d.end_at)
    try:
        rule = rules.compile_definition(nd)
        if m.reschedules:
            # A new series takes effect from now: none of its past occurrences is paid.
            not_before = now
            nxt = rules.seek(
                state.schedule_id,
                rule,
                policy.jitter_max_us,
                after=state.last_at,
                not_before=not_before,
            )
        elif series_changed:  # only the end moved: the same series, cut or lengthened
            nxt = rules.seek(
                state.schedule_id,
                rule,
                policy.jitter_max_us,
                anchor=state.next,
                after=state.last_at,
                not_before=not_before,
            )
    except RuleError:
        return [CommandRecorded(m.command_id, REFUSED_RULE, now)]
    if nd != d:
        events.append(DefinitionChanged(nd, nxt, not_before, now))
    if state.backfill is not None and (nd.rrule, nd.start_local) != (d.rrule, d.start_local):
        events.append(BackfillChanged(None, now))  # its occurrences were the old rule's
    resumed = target is ST.active and state.status is not ST.active
    if target is ST.paused and state.status is ST.active:
        events.append(StatusChanged(ST.paused, "paused by the user", now))
    elif resumed:
        if state.status is ST.paused:
            # The pause's occurrences are not paid: the series goes on from now.
            not_before = max(not_before, now)
            if nxt is not None and not rules.satisfies(nxt, state.last_at, not_before):
                nxt = rules.seek(
                    state.schedule_id,
                    rule,
                    policy.jitter_max_us,
                    anchor=nxt,
                    after=state.last_at,
                    not_before=not_before,
                )
        if nxt is None:
            return [CommandRecorded(m.command_id, REFUSED_TRANSITION, now)]
        events.append(StatusChanged(ST.active, None, now, nxt, not_before))
    elif state.status is ST.completed and nxt is not None and target is ST.completed:
        events.append(StatusChanged(ST.active, None, now, nxt, not_before))  # more to pay
    elif state.status is ST.active and nxt is None and target is ST.active:
        events.append(StatusChanged(ST.completed, NO_MORE, now))
    events.append(CommandRecorded(m.command_id, APPLIED, now))
    return events


def _request_backfill(state: ScheduleState, m: RequestBackfill, policy: Policy) -> list[Event]:
    now = m.ts
    if not m.from_at <= m.to_at <= now:
        return [CommandRecorded(m.command_id, REFUSED_BACKFILL_RANGE, now)]
    if state.backfill is not None:
        return [CommandRecorded(m.command_id, REFUSED_BACKFILL_RUNNING, now)]
    try:
        rule = _rule(state)
        n = rules.count_between(rule, m.from_at, m.to_at, policy.backfill_occurrences_max)
        first = rules.seek(state.schedule_id, rule, policy.jitter_max_us, not_before=m.from_at)
    except (RuleError, SearchBudgetExceeded):
        return [CommandRecorded(m.command_id, REFUSED_BACKFILL_TOO_LARGE, now)]
    if n > policy.backfill_occurrences_max:
        return [CommandRecorded(m.command_id, REFUSED_BACKFILL_TOO_LARGE, now)]
    events: list[Event] = []
    if n and first is not None and rules.satisfies(first, None, m.from_at):
        events.append(BackfillChanged(Backfill(m.command_id, m.from_at, m.to_at, first), now))
    events.append(CommandRecorded(m.command_id, APPLIED, now))
    return events


__all__ = ["decide"]
