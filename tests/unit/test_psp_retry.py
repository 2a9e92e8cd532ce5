"""Retries through the delay topics (connectors/psp/retry.py): backoff with jitter,
Retry-After, the bounds, which delay topic, and that a request is never started early
(whatever the hops between delay topics)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from connectors.psp.limits import ExecutorLimits
from connectors.psp.retry import (
    DELAY_OF_TOPIC,
    DELAY_TOPICS,
    Exhausted,
    Retry,
    backoff_s,
    plan,
    ready_at_us,
    topic_for,
)

LIM = ExecutorLimits()
SEC = 1_000_000


def test_backoff_doubles_to_its_cap_within_the_jitter() -> None:
    mid = [backoff_s(n, LIM, 0.5) for n in range(1, 10)]
    assert mid == [1, 2, 4, 8, 16, 32, 64, 100, 100]
    for n in range(1, 10):
        low, high = backoff_s(n, LIM, 0.0), backoff_s(n, LIM, 0.999999)
        assert 0.8 * mid[n - 1] <= low <= high <= 1.2 * mid[n - 1]


def test_retry_after_is_honoured_when_longer_up_to_its_cap() -> None:
    p = plan(tries=1, first_tried_at_us=0, now_us=0, retry_after_s=30, limits=LIM, draw=0.5)
    assert isinstance(p, Retry) and p.delay_s == 30 and p.topic == "psp_retry_30s"
    p = plan(tries=1, first_tried_at_us=0, now_us=0, retry_after_s=0.1, limits=LIM, draw=0.5)
    assert isinstance(p, Retry) and p.delay_s == 1
    p = plan(tries=1, first_tried_at_us=0, now_us=0, retry_after_s=10_000, limits=LIM, draw=0.5)
    assert isinstance(p, Retry) and p.delay_s == LIM.retry_after_max_s


def test_exhausted_by_calls_or_by_age() -> None:
    p = plan(tries=8, first_tried_at_us=0, now_us=0, retry_after_s=None, limits=LIM, draw=0.5)
    assert isinstance(p, Exhausted) and "8 calls" in p.reason
    late = int((LIM.retry_age_max_s - 1) * SEC)
    p = plan(tries=3, first_tried_at_us=0, now_us=late, retry_after_s=None, limits=LIM, draw=0.5)
    assert isinstance(p, Exhausted) and "after the first" in p.reason


def test_the_schedule_fits_the_documented_bounds() -> None:
    """Every call the defaults allow, with the longest jitter: within the age bound."""
    t, tries = 0, 1
    while True:
        p = plan(
            tries=tries, first_tried_at_us=0, now_us=t, retry_after_s=None, limits=LIM, draw=0.999
        )
        if isinstance(p, Exhausted):
            break
        t, tries = p.not_before_us, tries + 1
    assert tries == LIM.retry_attempts_max
    assert t <= LIM.retry_age_max_s * SEC


def test_delay_topics() -> None:
    assert [k for k, _ in DELAY_TOPICS] == [
        "psp_retry_5s",
        "psp_retry_30s",
        "psp_retry_5m",
        "psp_retry_1h",
    ]
    assert topic_for(0.2) == topic_for(5) == topic_for(29.9) == "psp_retry_5s"
    assert topic_for(30) == "psp_retry_30s" and topic_for(600) == "psp_retry_5m"
    assert topic_for(86_400) == "psp_retry_1h"
    assert ready_at_us("psp_retry_5s", 0, None) == 5 * SEC
    assert ready_at_us("psp_retry_5s", 0, 2 * SEC) == 2 * SEC
    assert ready_at_us("psp_retry_1h", 0, 86_400 * SEC) == 3_600 * SEC


@given(
    delay_us=st.integers(0, 2 * 86_400 * SEC),
    lag_us=st.lists(st.integers(0, 3 * SEC), min_size=40, max_size=40),
)
def test_never_started_early_whatever_the_hops(delay_us: int, lag_us: list[int]) -> None:
    """A request produced at 0 with not_before = delay goes through delay topics as the
    executor moves it (each hop read when ready, plus some lag); it starts no earlier than
    its not_before and, past it, within one hop's lag."""
    not_before = delay_us
    now = 0
    hops = 0
    topic = topic_for(delay_us / SEC)
    written = now
    while True:
        ready = ready_at_us(topic, written, not_before)
        now = max(now, ready) + lag_us[hops % len(lag_us)]
        hops += 1
        if now >= not_before:
            break
        topic = topic_for((not_before - now) / SEC)  # forwarded for the time left
        written = now
        assert hops < 200
    assert now >= not_before
    assert now - not_before <= 3 * SEC
    # Hops are bounded: one per hour of a long wait, and a few per shorter topic (each topic
    # is at most ten times the one below it).
    assert hops <= delay_us // (DELAY_OF_TOPIC["psp_retry_1h"] * SEC) + 30
