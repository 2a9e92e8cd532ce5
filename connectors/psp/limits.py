"""Every bound of the PSP connectors and the executor, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ExecutorLimits:
    """Change them here, nowhere else. Names end with their unit."""

    # Requests being worked on at once (each an asyncio task); past it the input is paused.
    requests_in_flight_max: int = 256
    # Records taken from the consumer per loop turn (never more than the free room).
    consume_batch_records_max: int = 256
    # How long the loop sleeps when it found nothing to do (the consumer prefetches meanwhile):
    # short while requests are in flight (their results' acknowledgements are served by the
    # loop), longer when there are none (a new request waits at most that long).
    idle_sleep_ms: int = 5
    idle_sleep_empty_ms: int = 20
    # Committed offsets are sent at most this often (and at shutdown, and on a revoke).
    commit_interval_ms: int = 500

    # Retries go through the delay topics (connectors/psp/retry.py), never a sleep here: a
    # retryable failure of create_token on an order's last candidate PSP, and of execute when
    # the PSP answered that it did not process the call (5xx, 429, 503, lock_timeout) or the
    # call never reached it. Backoff from retry_backoff_initial_s doubling up to
    # retry_backoff_max_s, each delay within retry_jitter_ratio of that; a PSP's Retry-After
    # is honoured up to retry_after_max_s. At most retry_attempts_max calls, the first
    # included, all within retry_age_max_s of the first; then the dead-letter topic.
    retry_attempts_max: int = 8
    retry_age_max_s: float = 900.0
    retry_backoff_initial_s: float = 1.0
    retry_backoff_max_s: float = 100.0
    retry_jitter_ratio: float = 0.2
    retry_after_max_s: float = 300.0
    # Calls in a request's history kept in its record (the oldest are dropped past it).
    retry_history_max: int = 32

    # Circuit breakers (connectors/psp/breaker.py), one per PSP, shared by every executor
    # through paystream.psp-breakers.v1: open on a failure rate of breaker_failure_rate_max
    # over breaker_window_s with at least breaker_window_calls_min calls, or on
    # breaker_consecutive_failures_max failures in a row; half-open after breaker_cool_down_s,
    # with at most breaker_trial_calls trial calls at once (a probe of the PSP's capabilities
    # every breaker_probe_interval_s when no payment comes); closed after
    # breaker_trial_successes successful trials.
    breaker_window_s: int = 10
    breaker_window_calls_min: int = 10
    breaker_failure_rate_max: float = 0.5
    breaker_consecutive_failures_max: int = 5
    breaker_cool_down_s: float = 5.0
    breaker_trial_calls: int = 3
    breaker_trial_successes: int = 2
    breaker_probe_interval_s: float = 1.0
    # Each executor publishes its calls per PSP over the window this often (psp status).
    stats_interval_s: float = 1.0
    # Reading the breakers' topic to its end at start, before taking requests.
    breaker_log_catch_up_s: float = 30.0

    # HTTP, per PSP: calls (and connections) at once, spread over httpx clients of
    # http_connections_per_client connections each (connectors/psp/http.py says why); the
    # connect timeout (never above the PSP's own timeout_ms from psps.toml) and httpx's wait
    # for a free connection.
    http_connections_max: int = 64
    http_connections_per_client: int = 8
    http_connect_timeout_ms: int = 2_000
    http_pool_timeout_ms: int = 10_000
    # psps.toml: the largest timeout_ms accepted.
    psp_timeout_ms_max: int = 120_000

    # Texts we put in records and logs (a PSP's error message can be anything).
    detail_chars_max: int = 512
    # Dead letters keep at most this much of the bad record.
    dead_letter_payload_bytes_max: int = 64 * 1024

    # The producer of results: librdkafka's own delivery timeout, after which a result is
    # produced again (its request stays uncommitted meanwhile), and its linger.
    delivery_timeout_ms: int = 60_000
    producer_linger_ms: int = 5
    # SIGTERM: requests in flight get this long to finish; the rest are replayed at restart.
    shutdown_drain_s: float = 10.0
