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

    # Execute retries on the same PSP with the same token (tenacity): exponential backoff
    # from retry_backoff_initial_s, doubling up to retry_backoff_max_s, plus up to
    # retry_jitter_s of jitter; a PSP's Retry-After is honoured up to retry_after_max_s.
    # Bounded by both the attempts and the total time; then the answer is "unknown".
    execute_attempts_max: int = 6
    # create_token: a transient failure (a PSP restarting, a refused connection) is retried
    # briefly on the same PSP (no money moves, the reference makes it idempotent) before the
    # worker is told and falls back: long enough to ride out a restart, short for fallback.
    token_attempts_max: int = 8
    token_retry_total_s: float = 10.0
    execute_retry_total_s: float = 30.0
    retry_backoff_initial_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    retry_jitter_s: float = 0.2
    retry_after_max_s: float = 30.0

    # An execute answered "pending" (asynchronous PSP): its token is polled from
    # pending_poll_initial_s, doubling up to pending_poll_interval_max_s, for at most
    # pending_poll_total_s; still pending then, the poller and webhooks of the payments side
    # take over.
    pending_poll_initial_s: float = 0.5
    pending_poll_interval_max_s: float = 2.0
    pending_poll_total_s: float = 60.0

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
