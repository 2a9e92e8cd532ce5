"""The scheduler's main loop in a deterministic simulation (tests/scheduler_sim.py): hours of
schedules in seconds, with crashes at every kind of transaction call and a 26-hour downtime.

Every expected occurrence is a payment exactly once, none early; occurrences older than the
catch-up window are skipped and recorded, never paid; paused, deleted and completed schedules
pay nothing more; N failures in a row pause a schedule with the reason; a PUT takes effect from
the next occurrence; an explicit backfill pays what was skipped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from base.config import Settings
from streams.scheduler import wire
from streams.schedules import model as sm
from streams.schedules import rules
from streams.schedules.model import US
from tests.scheduler_sim import DECLINED, OK, REFUSED_INSTRUMENT, Sim

T0 = int(datetime(2026, 3, 28, 20, 0, tzinfo=UTC).timestamp()) * US
MIN = 60 * US
HOUR = 3600 * US


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, bootstrap="unused:9092", topic_prefix="sim.", partitions=4)


def _definition(
    rrule: str, start: str, frm: str = OK, tz: str = "UTC", amount: str = "1.00"
) -> sm.Definition:
    return sm.Definition(
        "user-1", sm.PaymentType.pay_in, frm, "acct-1", amount, "USD", sm.PaymentOption.card,
        rrule, rules.parse_start(start, tz), tz,
    )  # fmt: skip


def _create(sim: Sim, sid: str, d: sm.Definition) -> None:
    sim.send(wire.create_command(sid, f"c-{sid}", "service", f"k-{sid}", f"d-{sid}", d))


def _iso(at: int) -> str:
    return datetime.fromtimestamp(at / US, UTC).isoformat()


def _paid(sim: Sim, sid: str) -> dict[int, int]:
    """Occurrence -> when its payment was created, for a schedule's payments."""
    out = {}
    for pid, c in sim.api.payments.items():
        parsed = sm.parse_payment_id(pid)
        assert parsed is not None
        if parsed[0] == sid:
            out[parsed[1]] = c.at_us
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_occurrence_is_paid_exactly_once_through_crashes_and_downtime(
    tmp_path: Path, seed: int
) -> None:
    crash_at = {
        "commit": set(range(5 + seed, 4000, 61)),
        "committed": set(range(11 + seed, 4000, 67)),
        "begin": set(range(17 + seed, 4000, 113)),
        "produce": set(range(23 + seed, 40000, 997)),
        "send_offsets": set(range(29 + seed, 4000, 131)),
        "restore": {3 + seed, 40 + seed},
    }
    sim = Sim(_settings(tmp_path), T0, crash_at)
    start = datetime.fromtimestamp(T0 / US, UTC)

    def at(delta: timedelta) -> str:
        return (start + delta).isoformat()

    _create(sim, "minutely", _definition("FREQ=MINUTELY", at(timedelta(seconds=30))))
    _create(sim, "hourly-past", _definition("FREQ=HOURLY", at(-timedelta(hours=30, minutes=-10))))
    _create(
        sim,
        "berlin",
        _definition("FREQ=DAILY;COUNT=4", "2026-03-27T02:30:00", tz="Europe/Berlin"),
    )
    _create(sim, "failing", _definition("FREQ=MINUTELY", at(timedelta(seconds=40)), DECLINED))
    _create(
        sim, "refused", _definition("FREQ=MINUTELY", at(timedelta(seconds=45)), REFUSED_INSTRUMENT)
    )
    _create(sim, "paused", _definition("FREQ=MINUTELY", at(timedelta(seconds=10))))
    _create(sim, "deleted", _definition("FREQ=MINUTELY", at(timedelta(seconds=15))))
    _create(sim, "count", _definition("FREQ=MINUTELY;COUNT=5", at(timedelta(seconds=20))))
    _create(sim, "amount", _definition("FREQ=MINUTELY", at(timedelta(seconds=25))))
    _create(sim, "backfill", _definition("FREQ=HOURLY", at(-timedelta(hours=40, minutes=-5))))

    # Phase 1: half an hour of normal running, with the users' changes along the way.
    events = {
        5 * 60 + 20: lambda: sim.send(wire.update_command("amount", "u1", amount="2.50")),
        10 * 60 + 20: lambda: sim.send(
            wire.update_command("paused", "u2", status=sm.ScheduleStatus.paused)
        ),
        15 * 60 + 20: lambda: sim.send(wire.delete_command("deleted", "u3")),
        20 * 60 + 20: lambda: sim.send(
            wire.update_command("paused", "u4", status=sm.ScheduleStatus.active)
        ),
        22 * 60 + 20: lambda: sim.send(
            wire.backfill_command("backfill", "b1", T0 - 40 * HOUR, T0 - 30 * HOUR)
        ),
    }
    changed: dict[str, int] = {}
    for second in range(0, 30 * 60, 5):
        if second in events:
            events[second]()
            changed[str(second)] = sim.clock.now
        sim.cycles(3)
        sim.clock.advance(5 * US)
    phase1_end = sim.clock.now
    # Downtime: the scheduler is not running for 26 hours, then catches up at once.
    sim.restart()
    sim.clock.advance(26 * HOUR + 10 * US)
    restarted = sim.clock.now
    sim.cycles(6000)
    sim.run(10 * 60)
    end = sim.clock.now

    assert sim.restarts > 10, "crashes landed"
    assert len(sim.calls.crashes) > 10
    assert {c.split("#")[0] for c in sim.calls.crashes} >= {"commit", "committed", "begin"}

    window_start = restarted - 24 * HOUR

    def check_minutely(sid: str, first: int, paid_until: int, gaps: list[tuple[int, int]]) -> None:
        """Paid: each minute from ``first`` through the end, except before the catch-up
        window of the downtime and inside ``gaps`` [from, to)."""
        got = _paid(sim, sid)
        want = set()
        t = first
        while t <= paid_until:
            in_gap = any(a <= t < b for a, b in gaps)
            skipped = phase1_end < t < window_start
            if not in_gap and not skipped:
                want.add(t)
            t += MIN
        settled = end - MIN  # later ones may still be in flight at the end: either way
        assert {t for t in got if t <= settled} == {t for t in want if t <= settled}, sid
        for t, created in got.items():
            assert created >= t, f"{sid}: {_iso(t)} paid early at {_iso(created)}"

    check_minutely("minutely", T0 + 30 * US, end, [])
    # Paused from 10:20 to 20:20 into the run: nothing due in between is paid.
    check_minutely(
        "paused",
        T0 + 10 * US,
        end,
        [(changed[str(10 * 60 + 20)], changed[str(20 * 60 + 20)])],
    )
    deleted = _paid(sim, "deleted")
    assert deleted and max(deleted) < changed[str(15 * 60 + 20)]
    assert sim.state("deleted").status is sm.ScheduleStatus.deleted  # type: ignore[union-attr]

    count = _paid(sim, "count")
    assert sorted(count) == [T0 + 20 * US + i * MIN for i in range(5)]
    assert sim.state("count").status is sm.ScheduleStatus.completed  # type: ignore[union-attr]

    amounts = {
        t: sim.api.payments[sm.payment_id("amount", t)].body["amount"] for t in _paid(sim, "amount")
    }
    put_at = changed[str(5 * 60 + 20)]
    assert {a for t, a in amounts.items() if t < put_at - 10 * US} == {"1.00"}
    assert {a for t, a in amounts.items() if t > put_at} == {"2.50"}

    failing = sim.state("failing")
    assert failing is not None and failing.status is sm.ScheduleStatus.paused
    assert "3 failed payments in a row" in (failing.status_reason or "")
    assert len(_paid(sim, "failing")) == 3
    refused = sim.state("refused")
    assert refused is not None and refused.status is sm.ScheduleStatus.paused
    assert not _paid(sim, "refused")
    assert [o.status for o in refused.recent] == [sm.OccurrenceStatus.submit_failed] * 3

    # Created 30 h after its start: the 6 oldest occurrences are skipped, the 24 within the
    # window paid at once; then every hour through phase 1, and again after the downtime.
    hourly = _paid(sim, "hourly-past")
    first = T0 - 30 * HOUR + 10 * MIN
    assert min(hourly) == first + 6 * HOUR
    assert all(created >= t for t, created in hourly.items())
    expected_after = {t for t in range(first, end, HOUR) if t >= window_start}
    assert expected_after <= set(hourly)
    assert not {t for t in hourly if phase1_end < t < window_start}

    # Berlin, 02:30 local daily, 4 times from 2026-03-27: the first is older than the window
    # when created (skipped); 02:30 on the 29th does not exist (01:30Z, fold=0); the last,
    # 02:30 CEST on the 30th, is still ahead.
    berlin = sorted(_paid(sim, "berlin"))
    assert [_iso(t) for t in berlin] == ["2026-03-28T01:30:00+00:00", "2026-03-29T01:30:00+00:00"]
    nxt = sim.state("berlin").next  # type: ignore[union-attr]
    assert nxt is not None and _iso(nxt.at) == "2026-03-30T00:30:00+00:00" and nxt.index == 4

    # Skipped occurrences are recorded (a run per record), with the reason; never paid but
    # by the explicit backfill.
    skipped = [o for o in sim.occurrences() if o["status"] == "skipped"]
    assert skipped and all(o["reason"] == sm.SKIPPED_OUTSIDE_WINDOW for o in skipped)
    runs = {o["schedule_id"]: 0 for o in skipped}
    for o in skipped:
        if o["schedule_id"] == "backfill":
            continue
        paid = _paid(sim, o["schedule_id"])
        assert not [t for t in paid if o["occurrence_at"] <= t <= o["skipped_through"]], o
        runs[o["schedule_id"]] += o["skipped_count"]
    assert runs["hourly-past"] == 6 + 2  # older than 24 h: at its creation, after the downtime
    assert runs["minutely"] == (window_start - phase1_end) // MIN

    # The backfill paid the range it was asked for, skipped ones included.
    backfill = _paid(sim, "backfill")
    bf_first = T0 - 40 * HOUR + 5 * MIN
    assert {bf_first + i * HOUR for i in range(10)} <= set(backfill)
    flagged = {
        o["occurrence_at"]
        for o in sim.occurrences()
        if o["schedule_id"] == "backfill" and o["backfill"]
    }
    assert flagged == {bf_first + i * HOUR for i in range(10)}
