"""The circuit breaker's state machine (connectors/psp/breaker.py): the table, the rules that
open and close it, and a hypothesis stateful test against a model of its promises; the
board's shared-log rule (two executors end up agreeing) and the call statistics."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from connectors.psp.board import BreakerBoard, transition_record
from connectors.psp.breaker import (
    TRANSITIONS,
    Breaker,
    BreakerConfig,
    BreakerError,
    BreakerState,
    Transition,
)
from connectors.psp.limits import ExecutorLimits
from connectors.psp.stats import BOUNDS_US, BUCKETS, CallStats, add, bucket_of, percentile_us

S = BreakerState
CFG = BreakerConfig(
    window_s=10,
    window_calls_min=10,
    failure_rate_max=0.5,
    consecutive_failures_max=5,
    cool_down_s=5,
    trial_calls=3,
    trial_successes=2,
)
SEC = 1_000_000


def test_the_table_is_the_documented_cycle() -> None:
    assert set(TRANSITIONS) == set(S)
    assert TRANSITIONS[S.closed] == {S.open}
    assert TRANSITIONS[S.open] == {S.half_open}
    assert TRANSITIONS[S.half_open] == {S.closed, S.open}


def test_consecutive_failures_open_it_then_cool_down_trials_close_it() -> None:
    b = Breaker("cardco", CFG)
    t = 0
    for _ in range(4):
        t += 1000
        assert b.record(t, ok=False) is None
    opened = b.record(t + 1000, ok=False)
    assert opened is not None and (opened.previous, opened.state, opened.seq) == (
        S.closed,
        S.open,
        1,
    )
    assert "5 failures in a row" in opened.reason
    permit, moved = b.allow(t + 2 * SEC)
    assert permit is None and moved is None  # still cooling down
    permit, moved = b.allow(opened.since_us + 5 * SEC)
    assert permit is not None and permit.trial and moved is not None
    assert moved.state is S.half_open and moved.seq == 2
    # At most three trials at once; the rest are refused.
    assert b.allow(opened.since_us + 5 * SEC)[0] is not None
    assert b.allow(opened.since_us + 5 * SEC)[0] is not None
    assert b.allow(opened.since_us + 5 * SEC)[0] is None
    now = opened.since_us + 6 * SEC
    assert b.record(now, ok=True, trial=True) is None
    closed = b.record(now, ok=True, trial=True)
    assert closed is not None and closed.state is S.closed and closed.seq == 3
    assert b.window(now) == (0, 0)  # a fresh start
    assert b.allow(now)[0] == b.allow(now)[0] is not None


def test_a_failure_rate_opens_it_and_a_failed_trial_opens_it_again() -> None:
    b = Breaker("cardco", CFG)
    t = 0
    for i in range(20):  # alternate: never 5 in a row, but half of 20 calls
        t += 100_000
        moved = b.record(t, ok=i % 2 == 0)
        if moved is not None:
            break
    assert moved is not None and "of" in moved.reason and b.state is S.open
    assert b.tick(t + 5 * SEC) is not None and b.state is S.half_open
    assert b.begin_trial()
    again = b.record(t + 5 * SEC + 1, ok=False, trial=True)
    assert again is not None and again.state is S.open and again.since_us == t + 5 * SEC + 1


def test_old_calls_leave_the_window() -> None:
    b = Breaker("cardco", CFG)
    for i in range(9):
        b.record(i * 1000, ok=False) if i % 2 else b.record(i * 1000, ok=True)
    assert b.window(9000) == (5, 4)
    assert b.window(20 * SEC) == (0, 0)


def test_a_transition_outside_the_table_raises() -> None:
    b = Breaker("cardco", CFG)
    with pytest.raises(BreakerError):
        b._move(S.half_open, 1, "no")


def test_adopt_follows_the_log() -> None:
    b = Breaker("cardco", CFG)
    assert b.adopt(3, S.open, 100)
    assert (b.state, b.seq, b.since_us) == (S.open, 3, 100)
    assert not b.adopt(2, S.closed, 200)  # stale
    assert b.adopt(3, S.half_open, 300)  # equal seq: the later record in the log wins
    assert b.state is S.half_open


def test_two_executors_share_a_breaker_through_the_log() -> None:
    """A opens it; B adopts it and refuses tokens without having seen a failure."""
    log: list[dict[str, Any]] = []
    clock = [1_000 * SEC]
    lim = ExecutorLimits(breaker_consecutive_failures_max=3)

    def board(name: str) -> BreakerBoard:
        return BreakerBoard(
            ["cardco"],
            lim,
            name,
            lambda t: log.append(transition_record(t, name)),
            lambda: clock[0],
        )

    a, b = board("psp-executor-1"), board("psp-executor-2")
    for _ in range(3):
        a.ended("cardco", ok=False, latency_us=1000)
    assert a.state("cardco")[0] is S.open and len(log) == 1
    for record in log:
        b.adopt(record)
    assert b.allow("cardco") is None
    assert b.stats_records()[0]["rejected"] == 1
    clock[0] += 6 * SEC
    probes = b.tick()  # B's cool-down is over too: half-open, and a probe
    assert probes == ["cardco"] and b.state("cardco")[0] is S.half_open
    b.ended("cardco", ok=True, latency_us=500, trial=True)
    assert b.state("cardco")[0] is S.half_open  # one trial is not enough
    assert b.allow("cardco") is not None
    b.ended("cardco", ok=True, latency_us=500, trial=True)
    assert b.state("cardco")[0] is S.closed
    for record in log:
        a.adopt(record)
    assert a.state("cardco")[0] is S.closed and a.allow("cardco") is not None


# --- stateful: any sequence of calls, trials, time and adopted records -----------------------


class BreakerMachine(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.b = Breaker("p", CFG)
        self.now = 0
        self.transitions: list[Transition] = []
        self.trials = 0  # trial permits held by the "caller"
        self.last_seq = 0
        self.open_since = 0

    def _note(self, t: Transition | None) -> None:
        if t is not None:
            assert t.state in TRANSITIONS[t.previous]
            assert t.seq == self.last_seq + 1, (t, self.last_seq)
            if t.previous is S.open:  # the cool-down is served in full
                assert t.since_us - self.open_since >= CFG.cool_down_s * SEC
            if t.state is S.open:
                self.open_since = t.since_us
            self.transitions.append(t)
        self.last_seq = self.b.seq

    @rule(dt=st.integers(0, 3 * SEC))
    def time_passes(self, dt: int) -> None:
        self.now += dt
        self._note(self.b.tick(self.now))

    @rule()
    def ask(self) -> None:
        was = self.b.state
        permit, moved = self.b.allow(self.now)
        self._note(moved)
        if was is S.closed:
            assert permit is not None and not permit.trial
        if permit is not None and permit.trial:
            self.trials += 1
        if self.b.state is S.open:
            assert permit is None  # open never lets a token request through

    @rule(ok=st.booleans())
    def a_call_ends(self, ok: bool) -> None:
        trial = self.trials > 0 and self.b.state is S.half_open
        if trial:
            self.trials -= 1
        was = self.b.state
        moved = self.b.record(self.now, ok, trial)
        self._note(moved)
        if was is S.half_open and trial and not ok:
            assert self.b.state is S.open and self.b.since_us == self.now

    @rule(seq_ahead=st.integers(0, 2), state=st.sampled_from(list(S)))
    def another_executor_publishes(self, seq_ahead: int, state: BreakerState) -> None:
        self.b.adopt(self.b.seq + seq_ahead, state, self.now)
        self.trials = 0 if self.b.state is not S.half_open else self.trials
        self.last_seq = self.b.seq
        if self.b.state is S.open:
            self.open_since = self.b.since_us

    @invariant()
    def within_bounds(self) -> None:
        b = self.b
        assert b.trials_in_flight <= CFG.trial_calls
        assert b.consecutive_failures >= 0
        successes, failures = b.window(self.now)
        assert successes >= 0 and failures >= 0
        if b.state is S.closed:
            # Closed never holds the condition that opens it (it would have opened).
            assert b.consecutive_failures < CFG.consecutive_failures_max


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


# --- statistics -------------------------------------------------------------------------------


def test_latency_buckets_and_percentiles() -> None:
    assert bucket_of(0) == 0 and bucket_of(BOUNDS_US[0]) == 0 and bucket_of(BOUNDS_US[0] + 1) == 1
    assert bucket_of(10**12) == BUCKETS - 1
    stats = CallStats(window_s=10)
    for i in range(98):
        stats.record(SEC + i, True, 1_000)
    stats.record(SEC + 99, False, 50_000)
    stats.record(SEC + 100, True, 90_000)
    snap = stats.snapshot(2 * SEC)
    assert (snap.successes, snap.failures) == (99, 1)
    p50, p99 = percentile_us(snap.buckets, 0.5), percentile_us(snap.buckets, 0.99)
    assert p50 is not None and 1_000 <= p50 <= 1_250
    assert p99 is not None and 50_000 <= p99 <= 62_500
    assert percentile_us(add(snap.buckets, snap.buckets), 0.5) == p50
    assert stats.snapshot(20 * SEC).buckets == (0,) * BUCKETS
    assert percentile_us([0] * BUCKETS, 0.5) is None
