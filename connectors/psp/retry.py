"""Retries through the delay topics: when the next call of a request may start, in which
delay topic it waits, and when the retries are exhausted. Pure (the caller brings the clock
and the random draw).

* Backoff: ``retry_backoff_initial_s`` doubling per call up to ``retry_backoff_max_s``, each
  delay drawn within ``retry_jitter_ratio`` of it (so that requests that failed together do
  not come back together); a PSP's ``Retry-After`` is honoured when longer, up to
  ``retry_after_max_s``.
* Exhausted when ``retry_attempts_max`` calls were made, or when the next call would start
  more than ``retry_age_max_s`` after the first: then the request is dead-lettered
  (``paystream.psp-deadletter.v1``, with its history) and its failure is reported.
* A request waiting ``d`` seconds goes to the largest delay topic of at most ``d`` (the
  smallest when ``d`` is shorter): a delay topic's records are read in order, each no earlier
  than its ``not_before`` and at most the topic's delay after it was written, when it is
  either started or passed on to the topic that fits the time left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from connectors.psp.limits import ExecutorLimits

US_PER_S: Final = 1_000_000
# Delay topics (base.topics keys) and their delay, shortest first.
DELAY_TOPICS: Final[tuple[tuple[str, int], ...]] = (
    ("psp_retry_5s", 5),
    ("psp_retry_30s", 30),
    ("psp_retry_5m", 300),
    ("psp_retry_1h", 3_600),
)
DELAY_OF_TOPIC: Final = dict(DELAY_TOPICS)


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float
    not_before_us: int
    topic: str  # the delay topic's key


@dataclass(frozen=True, slots=True)
class Exhausted:
    reason: str


def topic_for(delay_s: float) -> str:
    """The delay topic a request waiting ``delay_s`` goes to."""
    fitting = [key for key, tier_s in DELAY_TOPICS if tier_s <= delay_s]
    return fitting[-1] if fitting else DELAY_TOPICS[0][0]


def backoff_s(tries: int, limits: ExecutorLimits, draw: float) -> float:
    """The wait after the ``tries``-th failed call (1-based); ``draw`` is uniform in [0, 1)."""
    base: float = min(
        limits.retry_backoff_max_s,
        limits.retry_backoff_initial_s * float(1 << min(max(tries - 1, 0), 30)),
    )
    spread = limits.retry_jitter_ratio * (2 * draw - 1)
    return max(0.0, base * (1 + spread))


def plan(
    *,
    tries: int,
    first_tried_at_us: int,
    now_us: int,
    retry_after_s: float | None,
    limits: ExecutorLimits,
    draw: float,
) -> Retry | Exhausted:
    """After the ``tries``-th call failed retryably: when to call again, or why not."""
    if tries >= limits.retry_attempts_max:
        return Exhausted(f"{tries} calls made (at most {limits.retry_attempts_max})")
    delay_s = backoff_s(tries, limits, draw)
    if retry_after_s is not None:
        delay_s = max(delay_s, min(retry_after_s, limits.retry_after_max_s))
    not_before_us = now_us + round(delay_s * US_PER_S)
    age_s = (not_before_us - first_tried_at_us) / US_PER_S
    if age_s > limits.retry_age_max_s:
        return Exhausted(
            f"the next call would start {age_s:.0f} s after the first "
            f"(at most {limits.retry_age_max_s:g} s)"
        )
    return Retry(delay_s, not_before_us, topic_for(delay_s))


def ready_at_us(topic: str, written_us: int, not_before_us: int | None) -> int:
    """When a record of a delay topic is taken up: at its ``not_before``, or after the
    topic's delay if that comes first (it then moves on to the topic for the time left)."""
    until = written_us + DELAY_OF_TOPIC[topic] * US_PER_S
    return until if not_before_us is None else min(until, not_before_us)
