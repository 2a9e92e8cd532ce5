"""Recurrence rules: RFC 5545 RRULEs through python-dateutil, their occurrences as instants.

A schedule's series is dateutil's ``rrule`` with DTSTART = ``start_local`` in the schedule's
IANA zone: dateutil steps through wall-clock times, so a daily 09:00 stays 09:00 across DST.
Each wall time becomes an instant with zoneinfo (``fold=0``, RFC 5545 §3.3.5: a time in a
DST gap takes the offset before the gap, an ambiguous one the first). An occurrence whose
instant is not after the previous occurrence's (the gap's wall times map onto the hour after
it) is dropped: the series of instants is strictly increasing, each instant paid once.

Searches go on from an anchor, an occurrence of the series, by re-basing DTSTART on it (and
COUNT on what is left of it), so the next occurrence of a schedule started years ago costs
what the next of a new one does; ``tests/unit/test_schedule_rules.py`` holds the re-based
series to dateutil's own from DTSTART. Every search is bounded (``SEARCH_CALLS_MAX`` calls
inside dateutil): a rule with no occurrence left would otherwise make dateutil walk every
day up to the year 9999.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType, TracebackType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import HOURLY, MINUTELY, rrule, rrulestr

from .errors import InvariantViolation, RuleError, SearchBudgetExceeded
from .model import RRULE_CHARS_MAX, TIMEZONE_CHARS_MAX, US, Cursor, Definition

# Function calls inside dateutil one search may take (~0.2 s on one core; ~80,000 of its
# steps: a day, an hour or a minute of the series). Past it the search gives up.
SEARCH_CALLS_MAX = 200_000
# The finest frequency allowed (RFC 5545 goes down to SECONDLY).
FINEST = MINUTELY
START_YEAR_MIN = 2000
START_YEAR_MAX = 9000
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"
_TEXT = re.compile(r"[A-Z0-9=;,+\-]+\Z")
_FREQ_NAMES = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY", "SECONDLY")


class Budget:
    """Counts the calls made inside a search (a per-thread trace function, calls only) and
    raises SearchBudgetExceeded past ``calls_max``. Re-entered around each step of a search;
    the count goes on across them."""

    __slots__ = ("_old", "calls", "calls_max")

    def __init__(self, calls_max: int = SEARCH_CALLS_MAX) -> None:
        self.calls = 0
        self.calls_max = calls_max
        self._old: Any = None

    def _trace(self, frame: FrameType, event: str, arg: Any) -> None:
        self.calls += 1
        if self.calls > self.calls_max:
            raise SearchBudgetExceeded(f"more than {self.calls_max} steps")

    def __enter__(self) -> Budget:
        self._old = sys.gettrace()
        sys.settrace(self._trace)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sys.settrace(self._old)


@dataclass(frozen=True, slots=True)
class Rule:
    """A schedule's compiled series."""

    text: str  # the RRULE value, normalised (upper case, no "RRULE:")
    zone: ZoneInfo
    start: datetime  # DTSTART, aware, in ``zone``
    freq: int  # dateutil's: YEARLY 0 .. MINUTELY 5
    count: int | None
    end_at: int | None  # µs: no occurrence after it
    base: rrule

    @property
    def freq_name(self) -> str:
        return _FREQ_NAMES[self.freq]

    @property
    def jittered(self) -> bool:
        """HOURLY and coarser: spread over the jitter bound (docs/schedules.md)."""
        return bool(self.freq <= HOURLY)


def zone_of(name: str) -> ZoneInfo:
    if not name or len(name) > TIMEZONE_CHARS_MAX or name.startswith("/") or ".." in name:
        raise RuleError("timezone", "timezone must be an IANA time zone name, e.g. Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise RuleError("timezone", f"unknown time zone {name[:64]!r}") from None


def _parse_time(text: str, field: str, zone: ZoneInfo) -> datetime:
    """ISO 8601, with an offset (converted to ``zone``) or without (a wall time in ``zone``);
    whole seconds (a fraction is dropped)."""
    try:
        t = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise RuleError(field, f"{field} must be ISO 8601, e.g. 2026-01-01T09:00:00") from None
    if not START_YEAR_MIN <= t.year <= START_YEAR_MAX:
        raise RuleError(field, f"{field} must be in the years {START_YEAR_MIN}..{START_YEAR_MAX}")
    if t.tzinfo is not None:
        t = t.astimezone(zone)
    return t.replace(microsecond=0, tzinfo=zone, fold=0)


def parse_start(text: str, timezone: str) -> str:
    """``start_at`` (ISO 8601) as the schedule's DTSTART: a wall time in ``timezone``."""
    return _parse_time(text, "start_at", zone_of(timezone)).strftime(LOCAL_FORMAT)


def parse_end(text: str, timezone: str) -> int:
    """``end_at`` (ISO 8601) as an instant (µs)."""
    return to_us(_parse_time(text, "end_at", zone_of(timezone)))


def normalise(text: str) -> str:
    t = text.strip().upper()
    if t.startswith("RRULE:"):
        t = t[len("RRULE:") :]
    if not t or len(t) > RRULE_CHARS_MAX or not _TEXT.match(t):
        raise RuleError(
            "rrule",
            f"rrule must be one RFC 5545 RRULE value of at most {RRULE_CHARS_MAX} characters, "
            "e.g. FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12",
        )
    return t


def compile_rule(text: str, start_local: str, timezone: str, end_at: int | None = None) -> Rule:
    """The series of a rule; RuleError (naming the field) for one that cannot be used."""
    zone = zone_of(timezone)
    norm = normalise(text)
    try:
        start = datetime.strptime(start_local, LOCAL_FORMAT).replace(tzinfo=zone)
    except (ValueError, TypeError):
        raise RuleError("start_at", "start_at must be ISO 8601") from None
    try:
        parsed = rrulestr(norm, dtstart=start)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise RuleError("rrule", f"rrule is not a valid RFC 5545 RRULE: {exc}"[:200]) from None
    if not isinstance(parsed, rrule):
        raise RuleError("rrule", "rrule must be a single RRULE")
    raw: Any = parsed  # dateutil keeps the parsed parts in private attributes
    freq: int = raw._freq
    if freq > FINEST:
        raise RuleError("rrule", "the finest frequency allowed is MINUTELY")
    bysecond = raw._bysecond or ()
    if len(bysecond) > 1:
        raise RuleError("rrule", "BYSECOND may have one value (at most one occurrence a minute)")
    if raw._interval < 1:
        raise RuleError("rrule", "INTERVAL must be at least 1")
    count: int | None = raw._count
    if count is not None and count < 1:
        raise RuleError("rrule", "COUNT must be at least 1")
    if end_at is not None and end_at < to_us(start):
        raise RuleError("end_at", "end_at must not be before start_at")
    return Rule(norm, zone, start, freq, count, end_at, parsed)


def compile_definition(d: Definition) -> Rule:
    return compile_rule(d.rrule, d.start_local, d.timezone, d.end_at)


def to_us(t: datetime) -> int:
    return int(t.timestamp()) * US


def local_of(t: datetime) -> str:
    return t.strftime(LOCAL_FORMAT)


def due_time(schedule_id: str, rule: Rule, at: int, jitter_max_us: int) -> int:
    """When occurrence ``at`` is submitted: ``at``, plus for HOURLY and coarser rules a jitter
    in [0, jitter_max_us] (whole milliseconds) fixed by the schedule id and the occurrence."""
    if not rule.jittered or jitter_max_us <= 0:
        return at
    h = hashlib.blake2b(f"{schedule_id}/{at}".encode(), digest_size=8).digest()
    return at + int.from_bytes(h, "big") % (jitter_max_us // 1000 + 1) * 1000


def _series(rule: Rule, anchor: Cursor | None) -> Iterator[tuple[datetime, int]]:
    """dateutil's series from DTSTART, or re-based on ``anchor`` (its first element)."""
    if anchor is None:
        yield from ((t, i) for i, t in enumerate(rule.base, start=1))
        return
    local = datetime.strptime(anchor.local, LOCAL_FORMAT).replace(tzinfo=rule.zone)
    count = None if rule.count is None else rule.count - anchor.index + 1
    if count is not None and count < 1:
        raise InvariantViolation(f"anchor {anchor} is past COUNT={rule.count}")
    series = iter(rule.base.replace(dtstart=local, count=count))
    first = next(series, None)
    if first is None or local_of(first) != anchor.local:
        raise InvariantViolation(f"anchor {anchor.local} is not an occurrence of {rule.text}")
    yield first, anchor.index
    yield from ((t, i) for i, t in enumerate(series, start=anchor.index + 1))


def kept(rule: Rule, anchor: Cursor | None, budget: Budget) -> Iterator[tuple[int, str, int]]:
    """(instant, wall time, index) of each occurrence from ``anchor`` (itself included) or
    DTSTART, instants strictly increasing, none after ``end_at``; the search is bounded by
    ``budget`` (SearchBudgetExceeded)."""
    series = _series(rule, anchor)
    last = -1
    while True:
        try:
            with budget:
                got = next(series, None)
        except RuleError:
            raise
        except (ValueError, OverflowError) as exc:  # dateutil finds some rules empty only now
            raise RuleError("rrule", f"rrule has no usable occurrence: {exc}"[:200]) from None
        if got is None:
            return
        t, index = got
        at = to_us(t)
        if rule.end_at is not None and at > rule.end_at:
            return
        if at > last:
            last = at
            yield at, local_of(t), index


def cursor(schedule_id: str, rule: Rule, jitter_max_us: int, got: tuple[int, str, int]) -> Cursor:
    at, local, index = got
    return Cursor(at, local, index, due_time(schedule_id, rule, at, jitter_max_us))


def seek(
    schedule_id: str,
    rule: Rule,
    jitter_max_us: int,
    *,
    anchor: Cursor | None = None,
    after: int | None = None,
    not_before: int = 0,
) -> Cursor | None:
    """The first occurrence from ``anchor`` (or DTSTART) after ``after`` and not before
    ``not_before``; None if the rule has none.

    A search that runs out of budget returns the last occurrence it went through (a partial
    answer: it does not meet the conditions; search again from it), or None if it made no
    progress at all past ``anchor``."""
    last: Cursor | None = None
    try:
        for got in kept(rule, anchor, Budget()):
            c = cursor(schedule_id, rule, jitter_max_us, got)
            if (after is None or c.at > after) and c.at >= not_before:
                return c
            last = c
    except SearchBudgetExceeded:
        if last is None or (anchor is not None and last.at <= anchor.at):
            return None
        return last
    return None


def satisfies(c: Cursor, after: int | None, not_before: int) -> bool:
    """Whether ``c`` is a full answer of ``seek`` (not where a search ran out of budget)."""
    return (after is None or c.at > after) and c.at >= not_before


def advance(schedule_id: str, rule: Rule, jitter_max_us: int, c: Cursor) -> Cursor | None:
    """The occurrence after ``c`` (partial if the budget runs out; None if there is none)."""
    return seek(schedule_id, rule, jitter_max_us, anchor=c, after=c.at)


@dataclass(frozen=True, slots=True)
class Run:
    """Occurrences passed over by ``pass_over``: how many, the first and last, what follows."""

    count: int
    first_at: int | None
    last: Cursor | None  # the last passed over
    next: Cursor | None  # the first not passed over; None: no more, or the budget ran out
    finished: bool  # False: the budget ran out (go on later from ``last``)


def pass_over(schedule_id: str, rule: Rule, jitter_max_us: int, start: Cursor, before: int) -> Run:
    """Pass over the occurrences from ``start`` (included) that are before ``before``."""
    count, first_at, last = 0, None, None
    try:
        for got in kept(rule, start, Budget()):
            c = cursor(schedule_id, rule, jitter_max_us, got)
            if c.at >= before:
                return Run(count, first_at, last, c, True)
            count += 1
            first_at = c.at if first_at is None else first_at
            last = c
    except SearchBudgetExceeded:
        return Run(count, first_at, last, None, False)
    return Run(count, first_at, last, None, True)


def count_between(rule: Rule, from_at: int, to_at: int, limit: int) -> int:
    """Occurrences in [from_at, to_at], counting at most ``limit + 1`` (from DTSTART)."""
    n = 0
    for at, _, _ in kept(rule, None, Budget()):
        if at > to_at:
            break
        if at >= from_at:
            n += 1
            if n > limit:
                break
    return n


def start_iso(d: Definition) -> str:
    """DTSTART as ISO 8601 with its offset, e.g. 2026-03-01T09:00:00+01:00."""
    zone = zone_of(d.timezone)
    return datetime.strptime(d.start_local, LOCAL_FORMAT).replace(tzinfo=zone).isoformat()


def iso_utc(at: int) -> str:
    return datetime.fromtimestamp(at / US, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
