"""Settings and limits, in one place.

Every queue, batch, retry and memory has its limit here, named with its unit last.
Settings come from environment variables (``PAYSTREAM_*``) so that the CLI, the workers
and the tests all see the same values; nothing is read at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

KAFKA_VERSION = "3.9.1"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on every batch, queue, memory and retry. Documented in README."""

    # Exactly-once processor: records consumed per transaction, and how long to fill a batch.
    batch_records_max: int = 10_000
    batch_wait_ms: int = 20
    # The worker's producer: the commit flushes each batch at once, so a long linger costs no
    # latency and gives fewer, bigger produce requests (and fewer thread wake-ups per record).
    transaction_linger_ms: int = 100
    # Commit retries before the worker gives up on a batch and exits (supervisor restarts it).
    commit_retries_max: int = 5
    transaction_timeout_ms: int = 60_000
    # The core's own limits (recent command ids per account: 32; messages waiting for an
    # opening account: 64) live in streams.ledger.model, since deciding depends on them.
    # Producer: librdkafka queue bound and linger.
    producer_queue_records_max: int = 500_000
    producer_linger_ms: int = 5
    producer_batch_records_max: int = 10_000
    # Inputs: the biggest command the producer accepts and the biggest id.
    command_bytes_max: int = 64 * 1024
    id_chars_max: int = 128
    reason_chars_max: int = 512
    # Warehouse sink: a batch is flushed at this many rows or after this long.
    sink_batch_rows_max: int = 50_000
    sink_batch_interval_ms: int = 500
    # Decoded account states kept in memory per partition (a state with its 32 remembered
    # commands is ~8 KB): 1,000 x 12 partitions stays near 100 MB per worker.
    state_cache_entries_max: int = 1_000
    # Restoring state from the changelog: records per poll.
    restore_batch_records_max: int = 10_000
    # Waiting for the stack.
    broker_start_timeout_s: float = 90.0
    process_start_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    bootstrap: str | None  # external Kafka; None means the embedded broker under ``home``
    topic_prefix: str = ""
    partitions: int = 12
    brokers: int = 1
    broker_port_base: int = 9092
    clickhouse_dsn: str | None = None
    # "exactly_once" always, but for the benchmark's at-least-once comparison.
    processing_guarantee: str = "exactly_once"
    limits: Limits = field(default_factory=Limits)

    @property
    def var(self) -> Path:
        return self.home

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _repo_root() -> Path:
    # paystream/config.py -> repo root; var/ lives beside the code in a checkout.
    return Path(__file__).resolve().parent.parent


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    home = Path(env.get("PAYSTREAM_HOME") or (_repo_root() / "var")).resolve()
    return Settings(
        home=home,
        bootstrap=env.get("PAYSTREAM_BOOTSTRAP") or None,
        topic_prefix=env.get("PAYSTREAM_TOPIC_PREFIX", ""),
        partitions=int(env.get("PAYSTREAM_PARTITIONS", "12")),
        brokers=int(env.get("PAYSTREAM_BROKERS", "1")),
        broker_port_base=int(env.get("PAYSTREAM_BROKER_PORT", "9092")),
        clickhouse_dsn=env.get("PAYSTREAM_CLICKHOUSE_DSN") or None,
        processing_guarantee=env.get("PAYSTREAM_PROCESSING_GUARANTEE", "exactly_once"),
    )
