"""Scheduled payments' vocabulary: state, messages in, events out (docs/schedules.md).

Pure data: no I/O, no clock. Times are microseconds since the epoch (UTC) in ``int``s, as in
every paystream record. The core's own limits live here, as the ledger's live in its model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from streams.payments.model import PaymentOption, PaymentType

# --- the core's limits ---

# A schedule id: like a payment id, short enough that "sched-<id>-<YYYYMMDDTHHMMSSZ>" is one.
SCHEDULE_ID_CHARS_MAX = 64
SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
# The occurrences a schedule keeps in its state (GET shows them): the last 20 by time.
RECENT_OCCURRENCES_MAX = 20
# The outcomes of the last commands a schedule keeps, so an API process finds its own.
RECENT_COMMANDS_MAX = 16
RRULE_CHARS_MAX = 512
TIMEZONE_CHARS_MAX = 64
REASON_CHARS_MAX = 256

US = 1_000_000
PAYMENT_ID_PREFIX = "sched-"
_PAYMENT_TIME = "%Y%m%dT%H%M%SZ"
_PAYMENT_ID = re.compile(r"sched-([A-Za-z0-9][A-Za-z0-9_.:-]{0,63})-(\d{8}T\d{6}Z)\Z")


def payment_id(schedule_id: str, at_us: int) -> str:
    """The payment of occurrence ``at_us`` of a schedule: ``sched-<S>-<YYYYMMDDTHHMMSSZ>``."""
    t = datetime.fromtimestamp(at_us // US, UTC)
    return f"{PAYMENT_ID_PREFIX}{schedule_id}-{t.strftime(_PAYMENT_TIME)}"


def parse_payment_id(pid: str) -> tuple[str, int] | None:
    """(schedule id, occurrence time) of a scheduled payment's id; None for any other id."""
    m = _PAYMENT_ID.match(pid)
    if m is None:
        return None
    try:
        t = datetime.strptime(m.group(2), _PAYMENT_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None
    return m.group(1), int(t.timestamp()) * US


class ScheduleStatus(StrEnum):
    """A schedule's status; the transitions are ``statuses.TRANSITIONS``."""

    active = "active"  # its occurrences are paid when due
    paused = "paused"  # by the user, or after N failed payments in a row; nothing is paid
    completed = "completed"  # the rule has no further occurrence (COUNT, UNTIL, end_at)
    deleted = "deleted"  # nothing more is ever paid; the history stays


class OccurrenceStatus(StrEnum):
    """What became of one occurrence."""

    submitted = "submitted"  # the payment API admitted its payment
    submit_failed = "submit_failed"  # the payment API refused it (never paid)
    skipped = "skipped"  # never paid: outside the catch-up window (reason)
    succeeded = "succeeded"  # its payment's terminal status
    failed = "failed"
    rejected = "rejected"


SETTLED: frozenset[OccurrenceStatus] = frozenset(
    {OccurrenceStatus.succeeded, OccurrenceStatus.failed, OccurrenceStatus.rejected}
)
# An occurrence that counts against the schedule (N of them in a row pause it).
FAILURES: frozenset[OccurrenceStatus] = frozenset(
    {OccurrenceStatus.failed, OccurrenceStatus.rejected, OccurrenceStatus.submit_failed}
)

SKIPPED_OUTSIDE_WINDOW = "outside_catchup_window"


@dataclass(frozen=True, slots=True)
class Policy:
    """The scheduler's settings (base.config), handed to the core."""

    catchup_window_us: int = 24 * 3600 * US
    failures_to_pause: int = 3
    # HOURLY and coarser occurrences are submitted at T + jitter, jitter in [0, this].
    jitter_max_us: int = 300 * US
    backfill_occurrences_max: int = 1000


@dataclass(frozen=True, slots=True)
class Definition:
    """What a schedule pays, and when. The API validated every field."""

    user_id: str
    type: PaymentType
    from_acct: str
    to_acct: str
    amount: str
    currency: str
    payment_option: PaymentOption
    rrule: str  # RFC 5545 RRULE value, e.g. FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12
    start_local: str  # DTSTART: wall time in ``timezone``, YYYY-MM-DDTHH:MM:SS
    timezone: str  # IANA name
    end_at: int | None = None  # no occurrence after it (µs)


@dataclass(frozen=True, slots=True)
class Cursor:
    """One occurrence of a rule: where the scheduler stands in its series."""

    at: int  # its instant (µs, UTC): the T of its payment id
    local: str  # its wall time in the schedule's zone: the anchor to go on from
    index: int  # its 1-based place in the rule's series (COUNT counts from DTSTART)
    due_at: int  # when it is submitted: ``at`` plus the schedule's jitter


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One entry of a schedule's recent occurrences (a skipped run is one entry)."""

    at: int
    status: OccurrenceStatus
    reason: str | None = None
    due_at: int | None = None
    submitted_at: int | None = None  # when the payment API admitted (or refused) it
    backfill: bool = False
    skipped_through: int | None = None  # a run of skipped occurrences: the last of them
    skipped_count: int = 1


@dataclass(frozen=True, slots=True)
class Backfill:
    """An explicit backfill in progress: occurrences from ``cursor`` through ``to_at``."""

    command_id: str
    from_at: int
    to_at: int
    cursor: Cursor


@dataclass(frozen=True, slots=True)
class ScheduleState:
    schedule_id: str
    definition: Definition
    status: ScheduleStatus
    status_reason: str | None
    version: int  # +1 per change: the warehouse keeps the highest
    created_at: int
    updated_at: int
    scope: str  # who created it, and with which Idempotency-Key and body digest
    idempotency_key: str
    digest: str
    first_run_at: int | None  # the next occurrence when it was created (the POST's answer)
    next: Cursor | None  # the next occurrence to pay; None: the rule has no more
    not_before: int = 0  # occurrences before it are passed over unpaid (paused, rule changed)
    last_at: int | None = None  # the latest occurrence handled (submitted, refused, skipped)
    failures_in_row: int = 0
    recent: tuple[Occurrence, ...] = ()  # by time, oldest first, at most RECENT_OCCURRENCES_MAX
    backfill: Backfill | None = None
    commands: tuple[tuple[str, str], ...] = ()  # (command id, result), the latest last

    @property
    def key(self) -> str:
        return self.schedule_id

    def command_result(self, command_id: str) -> str | None:
        for cid, result in self.commands:
            if cid == command_id:
                return result
        return None


# --- messages in (each keyed by its schedule id) ---


@dataclass(frozen=True, slots=True)
class Create:
    schedule_id: str
    definition: Definition
    scope: str
    idempotency_key: str
    digest: str
    command_id: str
    ts: int  # its log time: "now" for this decision

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class Update:
    """PUT: each field None is left as it is (``clear_end`` removes ``end_at``)."""

    schedule_id: str
    command_id: str
    ts: int
    amount: str | None = None
    rrule: str | None = None
    start_local: str | None = None
    end_at: int | None = None
    clear_end: bool = False
    status: ScheduleStatus | None = None  # paused or active

    @property
    def key(self) -> str:
        return self.schedule_id

    @property
    def reschedules(self) -> bool:
        """Changes the series itself: it is then followed from this command's time on."""
        return self.rrule is not None or self.start_local is not None


@dataclass(frozen=True, slots=True)
class Delete:
    schedule_id: str
    command_id: str
    ts: int

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class RequestBackfill:
    schedule_id: str
    command_id: str
    ts: int
    from_at: int
    to_at: int

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class Due:
    """The scheduler's clock reached the schedule's next due time (or looks again)."""

    schedule_id: str
    now: int

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class BackfillDue:
    schedule_id: str
    now: int

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class Submitted:
    """The payment API's answer for an occurrence: admitted (``ok``), or refused for good."""

    schedule_id: str
    at: int
    ok: bool
    submitted_at: int
    due_at: int
    backfill: bool = False
    code: str | None = None  # the API's error code when refused

    @property
    def key(self) -> str:
        return self.schedule_id


@dataclass(frozen=True, slots=True)
class Settled:
    """An occurrence's payment reached a terminal status (from paystream.payment-events.v1)."""

    schedule_id: str
    at: int
    status: OccurrenceStatus  # succeeded, failed or rejected
    reason: str | None
    ts: int

    @property
    def key(self) -> str:
        return self.schedule_id


Message = Create | Update | Delete | RequestBackfill | Due | BackfillDue | Submitted | Settled

# --- events out ---


@dataclass(frozen=True, slots=True)
class Created:
    state: ScheduleState


@dataclass(frozen=True, slots=True)
class CommandRecorded:
    command_id: str
    result: str  # "applied", or why it was refused
    ts: int


@dataclass(frozen=True, slots=True)
class DefinitionChanged:
    definition: Definition
    next: Cursor | None
    not_before: int
    ts: int


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: ScheduleStatus
    reason: str | None
    ts: int
    # Resuming: where the series goes on from (occurrences before ``not_before`` unpaid).
    next: Cursor | None = None
    not_before: int | None = None


@dataclass(frozen=True, slots=True)
class CursorMoved:
    """Occurrences before ``not_before`` passed over, unpaid and unrecorded."""

    next: Cursor | None
    ts: int


@dataclass(frozen=True, slots=True)
class OccurrencesSkipped:
    first_at: int
    last_at: int
    count: int
    reason: str
    next: Cursor | None
    ts: int


@dataclass(frozen=True, slots=True)
class SubmitRequested:
    """An occurrence is due: the scheduler submits its payment (no state change)."""

    at: int
    due_at: int
    backfill: bool


@dataclass(frozen=True, slots=True)
class OccurrenceSubmitted:
    at: int
    ok: bool
    code: str | None
    due_at: int
    submitted_at: int
    backfill: bool
    next: Cursor | None  # the schedule's next occurrence after this one
    ts: int


@dataclass(frozen=True, slots=True)
class OccurrenceSettled:
    at: int
    status: OccurrenceStatus
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class BackfillChanged:
    backfill: Backfill | None  # None: finished or cancelled
    ts: int


Event = (
    Created
    | CommandRecorded
    | DefinitionChanged
    | StatusChanged
    | CursorMoved
    | OccurrencesSkipped
    | SubmitRequested
    | OccurrenceSubmitted
    | OccurrenceSettled
    | BackfillChanged
)

# Results of a command, besides "applied".
APPLIED = "applied"
REFUSED_NOT_FOUND = "schedule_not_found"
REFUSED_DELETED = "schedule_deleted"
REFUSED_EXISTS = "schedule_exists"
REFUSED_TRANSITION = "invalid_transition"
REFUSED_RULE = "invalid_rule"
REFUSED_BACKFILL_RANGE = "invalid_backfill_range"
REFUSED_BACKFILL_TOO_LARGE = "backfill_too_large"
REFUSED_BACKFILL_RUNNING = "backfill_in_progress"


@dataclass(frozen=True, slots=True)
class Decision:
    """Convenience for tests: the events of one message and the state they lead to."""

    events: list[Event] = field(default_factory=list)
    state: ScheduleState | None = None
