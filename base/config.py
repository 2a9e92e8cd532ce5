"""Settings and limits, in one place.

Every queue, batch, retry and memory has its limit here, named with its unit last.
Settings come from environment variables (``PAYSTREAM_*``) so that the CLI, the workers
and the tests all see the same values; nothing is read at import time.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

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
    # Commit retries before the worker gives up on a batch and restarts itself.
    commit_retries_max: int = 5
    transaction_timeout_ms: int = 60_000
    # A commit, abort or close still unfinished after this long is a stuck client (they take
    # milliseconds, seconds under load): the worker restarts itself in place
    # (streams/watchdog.py), which is safe at any moment, as a kill -9 is.
    transaction_stall_s: float = 25.0
    # A process that fails restarts itself in place, with a growing pause (at most
    # restart_backoff_max_s); past restarts_max restarts within restart_window_s it exits.
    restarts_max: int = 10
    restart_window_s: float = 600.0
    restart_backoff_max_s: float = 30.0
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
    # HTTP: the biggest request body the read side's POST /commands reads (one command).
    http_body_bytes_max: int = 64 * 1024
    # How long POST /commands waits for the broker to acknowledge the command.
    http_produce_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every paystream Kafka client authenticates (``PAYSTREAM_KAFKA_*``; default none).

    ``protocol`` is Kafka's ``security.protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None  # SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_location: str | None = None  # CA bundle (PEM) that signed the brokers' certificates

    @property
    def sasl(self) -> bool:
        return self.protocol.upper().startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol.upper() in ("SSL", "SASL_SSL")

    def librdkafka(self) -> dict[str, str]:
        """The librdkafka (confluent-kafka) properties; empty for PLAINTEXT."""
        conf: dict[str, str] = {}
        if self.protocol.upper() != "PLAINTEXT":
            conf["security.protocol"] = self.protocol.upper()
        if self.sasl:
            conf["sasl.mechanism"] = self.sasl_mechanism or "SCRAM-SHA-512"
            if self.sasl_username is not None:
                conf["sasl.username"] = self.sasl_username
            if self.sasl_password is not None:
                conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> KafkaSecurity:
        env = dict(os.environ if env is None else env)
        return KafkaSecurity(
            protocol=env.get("PAYSTREAM_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
            sasl_mechanism=env.get("PAYSTREAM_KAFKA_SASL_MECHANISM") or None,
            sasl_username=env.get("PAYSTREAM_KAFKA_SASL_USERNAME") or None,
            sasl_password=env.get("PAYSTREAM_KAFKA_SASL_PASSWORD") or None,
            ssl_ca_location=env.get("PAYSTREAM_KAFKA_SSL_CA_LOCATION") or None,
        )


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
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # The bearer token of the state-changing HTTP endpoints; None: $PAYSTREAM_HOME/api-token.
    api_token: str | None = field(default=None, repr=False)
    # Tests only: processes honour faults armed under $PAYSTREAM_HOME/faults/ (never in prod).
    test_faults: bool = False

    @property
    def var(self) -> Path:
        return self.home

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _repo_root() -> Path:
    # base/config.py -> repo root; var/ lives beside the code in a checkout.
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
        kafka_security=KafkaSecurity.from_env(env),
        api_token=env.get("PAYSTREAM_API_TOKEN") or None,
        test_faults=env.get("PAYSTREAM_TEST_FAULTS", "") == "1",
    )


def kafka_client_config(settings: Settings, bootstrap: str | None = None) -> dict[str, Any]:
    """``bootstrap.servers`` and the security properties: the base of every client config."""
    return {
        "bootstrap.servers": bootstrap or settings.bootstrap or "",
        **settings.kafka_security.librdkafka(),
    }


API_TOKEN_FILE = "api-token"


def api_token(settings: Settings) -> str:
    """The HTTP API's bearer token: ``PAYSTREAM_API_TOKEN``, else ``$PAYSTREAM_HOME/api-token``.

    The file is created (mode 0600, 256 random bits) if it does not exist yet; concurrent
    callers all end up with the same token.
    """
    if settings.api_token:
        return settings.api_token
    path = settings.home / API_TOKEN_FILE
    token = _read_token(path)
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{API_TOKEN_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and never replaces a token someone already uses
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    token = _read_token(path)
    if not token:
        raise RuntimeError(f"{path} is empty; delete it to generate a new token")
    return token


def _read_token(path: Path) -> str:
    try:
        st = path.stat()
        token = path.read_text().strip()
    except FileNotFoundError:
        return ""
    if st.st_mode & 0o077:
        log.warning(
            "%s is readable by other users (mode %o); chmod 600 it", path, st.st_mode & 0o777
        )
    return token
