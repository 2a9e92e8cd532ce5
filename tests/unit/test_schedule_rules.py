"""Occurrence generation (streams/schedules/rules.py) against python-dateutil itself.

Property: for any rule (every frequency down to MINUTELY, intervals, BYxxx parts, COUNT,
UNTIL, an end), any IANA zone (DST zones, a 30-minute DST, no DST) and any DTSTART near a DST
change or a month end, the scheduler's incremental series (the first occurrence, then
``advance`` from each, re-basing DTSTART on it) is exactly dateutil's series from DTSTART
mapped to instants (fold=0), with the instants that do not increase dropped; and ``seek``
finds the first occurrence after any instant.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.schedules import rules
from streams.schedules.errors import RuleError, SearchBudgetExceeded
from streams.schedules.model import US, Cursor

ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # DST of 30 minutes
    "America/Santiago",
    "Pacific/Chatham",
    "Asia/Kolkata",
    "Europe/London",
)
# DST changes and month ends of 2026-2028 (a leap February among them).
DAYS = (
    "2026-03-08",  # US spring forward
    "2026-03-29",  # EU spring forward
    "2026-04-05",  # Lord Howe, Santiago, Chatham fall back
    "2026-09-06",  # Santiago spring forward
    "2026-09-27",  # Chatham spring forward
    "2026-10-04",  # Lord Howe spring forward
    "2026-10-25",  # EU fall back
    "2026-11-01",  # US fall back
    "2026-01-31",
    "2026-02-28",
    "2028-02-29",
    "2026-04-30",
    "2026-12-31",
)
N = 40
FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY")
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


@st.composite
def rule_texts(draw: st.DrawFn, start: datetime) -> str:
    freq = draw(st.sampled_from(FREQS))
    parts = [f"FREQ={freq}"]
    interval = draw(st.integers(1, 4))
    if interval > 1:
        parts.append(f"INTERVAL={interval}")
    if freq in ("YEARLY", "MONTHLY") and draw(st.booleans()):
        days = draw(st.lists(st.sampled_from([1, 15, 28, 29, 30, 31, -1]), min_size=1, max_size=2))
        parts.append("BYMONTHDAY=" + ",".join(map(str, sorted(set(days)))))
    elif freq in ("YEARLY", "MONTHLY") and draw(st.booleans()):
        n = draw(st.sampled_from(["1", "2", "-1", ""]))
        wd = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=3, unique=True))
        parts.append("BYDAY=" + ",".join(n + d for d in wd))
        if not n and len(wd) > 1 and draw(st.booleans()):
            parts.append("BYSETPOS=" + draw(st.sampled_from(["1", "-1"])))
    elif freq in ("WEEKLY", "DAILY") and draw(st.booleans()):
        wd = draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=3, unique=True))
        parts.append("BYDAY=" + ",".join(wd))
    if freq == "YEARLY" and draw(st.booleans()):
        parts.append("BYMONTH=" + str(draw(st.sampled_from([2, 3, 10, 11, 12]))))
    if freq in ("YEARLY", "MONTHLY", "WEEKLY", "DAILY") and draw(st.booleans()):
        # Hours around the DST changes (1-3 am local), minutes that hit the gap.
        hours = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True))
        parts.append("BYHOUR=" + ",".join(map(str, sorted(hours))))
        if draw(st.booleans()):
            parts.append("BYMINUTE=" + ",".join(map(str, sorted({0, draw(st.integers(1, 59))}))))
    if freq == "HOURLY" and draw(st.booleans()):
        parts.append("BYMINUTE=" + ",".join(map(str, sorted({0, draw(st.integers(1, 59))}))))
    if freq == "MINUTELY" and interval == 1 and draw(st.booleans()):
        parts[0] = "FREQ=MINUTELY;INTERVAL=" + str(draw(st.sampled_from([7, 15, 30, 45])))
    end = draw(st.sampled_from(["", "COUNT", "UNTIL"]))
    if end == "COUNT":
        parts.append(f"COUNT={draw(st.integers(1, N + 10))}")
    elif end == "UNTIL":
        span = {"MINUTELY": 3, "HOURLY": 48, "DAILY": 24 * 40}.get(freq, 24 * 800)
        until = start.astimezone(UTC) + timedelta(hours=draw(st.integers(0, span)))
        parts.append("UNTIL=" + until.strftime("%Y%m%dT%H%M%SZ"))
    return ";".join(parts)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[rules.Rule, list[int]]:
    zone = draw(st.sampled_from(ZONES))
    day = datetime.fromisoformat(draw(st.sampled_from(DAYS)))
    start = day + timedelta(
        days=draw(st.integers(-1, 0)),
        hours=draw(st.integers(0, 23)),
        minutes=draw(st.sampled_from([0, 0, 15, 30, 59])),
    )
    start = start.replace(tzinfo=ZoneInfo(zone))
    text = draw(rule_texts(start))
    end_at = None
    if draw(st.integers(0, 4)) == 0:
        end_at = rules.to_us(start) + draw(st.integers(0, 40 * 86_400)) * US
    try:
        rule = rules.compile_rule(text, start.strftime(rules.LOCAL_FORMAT), zone, end_at)
        expected = _dateutil(rule)
    except (RuleError, SearchBudgetExceeded):
        assume(False)
        raise AssertionError("unreachable") from None
    return rule, expected


def _dateutil(rule: rules.Rule) -> list[int]:
    """dateutil's own series from DTSTART: its first N instants, increasing, within the end."""
    out: list[int] = []
    with rules.Budget():
        for t in itertools.islice(rule.base, 4 * N):
            at = rules.to_us(t)
            if rule.end_at is not None and at > rule.end_at:
                break
            if not out or at > out[-1]:
                out.append(at)
            if len(out) == N:
                break
    return out


def _incremental(rule: rules.Rule) -> list[Cursor]:
    got: list[Cursor] = []
    c = rules.seek("s", rule, 0)
    while c is not None and len(got) < N:
        got.append(c)
        c = rules.advance("s", rule, 0, c)
    return got


@settings(max_examples=400)
@given(schedules())
def test_the_incremental_series_is_dateutils(case: tuple[rules.Rule, list[int]]) -> None:
    rule, expected = case
    got = _incremental(rule)
    assert [c.at for c in got] == expected, rule.text
    assert [c.index for c in got] == sorted({c.index for c in got})  # COUNT's positions
    for c in got:  # each wall time is the instant's (fold=0) in the zone
        local = datetime.strptime(c.local, rules.LOCAL_FORMAT).replace(tzinfo=rule.zone)
        assert rules.to_us(local) == c.at
        assert c.at % US == 0


@settings(max_examples=200)
@given(schedules(), st.integers(-2 * 86_400, 60 * 86_400), st.booleans())
def test_seek_finds_the_first_occurrence_after_an_instant(
    case: tuple[rules.Rule, list[int]], offset_s: int, from_anchor: bool
) -> None:
    rule, expected = case
    assume(expected)
    after = expected[0] + offset_s * US
    want = next((at for at in expected if at > after), None)
    assume(want is not None or len(expected) < N)  # beyond the N checked: unknown
    anchor = rules.seek("s", rule, 0) if from_anchor else None
    c = rules.seek("s", rule, 0, anchor=anchor, after=after)
    assert (c.at if c is not None else None) == want


def test_a_dst_gap_hour_is_one_occurrence() -> None:
    # Europe/Berlin 2026-03-29: 02:00 does not exist; 02:00 (fold=0, +01:00) is 01:00Z, as is
    # 03:00 +02:00: one instant, one payment.
    rule = rules.compile_rule("FREQ=HOURLY;COUNT=5", "2026-03-29T00:00:00", "Europe/Berlin")
    got = [rules.iso_utc(c.at) for c in _incremental(rule)]
    assert got == [
        "2026-03-28T23:00:00Z",
        "2026-03-29T00:00:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-29T02:00:00Z",
    ]


def test_daily_keeps_its_wall_time_across_dst() -> None:
    rule = rules.compile_rule("FREQ=DAILY;COUNT=3", "2026-10-24T09:00:00", "Europe/Berlin")
    got = [rules.iso_utc(c.at) for c in _incremental(rule)]
    assert got == ["2026-10-24T07:00:00Z", "2026-10-25T08:00:00Z", "2026-10-26T08:00:00Z"]


def test_monthly_on_the_31st_skips_short_months() -> None:
    rule = rules.compile_rule("FREQ=MONTHLY;COUNT=4", "2026-01-31T10:00:00", "UTC")
    got = [rules.iso_utc(c.at)[:10] for c in _incremental(rule)]
    assert got == ["2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31"]


def test_a_rule_with_no_occurrence_is_bounded_not_endless() -> None:
    rule = rules.compile_rule("FREQ=MINUTELY;BYMONTH=2;BYMONTHDAY=30", "2026-01-01T00:00:00", "UTC")
    assert rules.seek("s", rule, 0) is None  # the budget ran out: no occurrence found


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("FREQ=SECONDLY", "rrule"),
        ("FREQ=MINUTELY;BYSECOND=0,30", "rrule"),
        ("FREQ=DAILY;BYHOUR=25", "rrule"),
        ("FREQ=WEEKLY;UNTIL=20260101T000000", "rrule"),  # UNTIL must be UTC
        ("DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY", "rrule"),
        ("FREQ=DAILY;FOO=1", "rrule"),
        ("", "rrule"),
        ("FREQ=DAILY;COUNT=0", "rrule"),
    ],
)
def test_bad_rules_name_the_field(text: str, field: str) -> None:
    with pytest.raises(RuleError) as err:
        rule = rules.compile_rule(text, "2026-01-01T00:00:00", "UTC")
        rules.seek("s", rule, 0)
    assert err.value.field == field


def test_start_and_zone_are_checked() -> None:
    with pytest.raises(RuleError) as err:
        rules.parse_start("tomorrow", "UTC")
    assert err.value.field == "start_at"
    with pytest.raises(RuleError) as err:
        rules.zone_of("Mars/Olympus_Mons")
    assert err.value.field == "timezone"
    assert rules.parse_start("2026-03-01T09:00:00+00:00", "Europe/Berlin") == "2026-03-01T10:00:00"
    assert rules.parse_start("2026-03-01T09:00:00.7", "UTC") == "2026-03-01T09:00:00"


def test_jitter_is_bounded_deterministic_and_only_for_hourly_and_coarser() -> None:
    hourly = rules.compile_rule("FREQ=HOURLY", "2026-01-01T00:00:00", "UTC")
    minutely = rules.compile_rule("FREQ=MINUTELY", "2026-01-01T00:00:00", "UTC")
    at = rules.to_us(hourly.start)
    bound = 60 * US
    dues = [rules.due_time(f"s{i}", hourly, at, bound) - at for i in range(2000)]
    assert all(0 <= d <= bound for d in dues)
    assert max(dues) > bound * 0.9 and min(dues) < bound * 0.1  # spread over the bound
    assert rules.due_time("s1", hourly, at, bound) == rules.due_time("s1", hourly, at, bound)
    assert rules.due_time("s1", minutely, at, bound) == at
