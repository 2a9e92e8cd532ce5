"""Settings and limits, in one place.

Every queue, batch, retry and memory has its limit here, named with its unit last.
Settings come from environment variables (``PAYSTREAM_*``), read once by
:func:`load_settings` at a process's entry point and passed down from there; nothing is read
at import time. :func:`settings_env` is the inverse: the environment that makes a child
process load the same settings.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

KAFKA_VERSION = "3.9.1"
DEFAULT_WAREHOUSE_PORT = 8123
DEFAULT_READSIDE_PORT = 6066
DEFAULT_API_PORT = 8080
# The embedded PSP simulator: cardco, bankco, walletco, backupcard on this port and the next.
DEFAULT_PSP_SIM_PORT = 8091
DEFAULT_DETECTOR_MAX_HOPS = 4
DEFAULT_DETECTOR_WINDOW_S = 7 * 86_400.0
# Scheduled payments (docs/schedules.md): occurrences missed by up to this long are paid
# late; older ones are recorded skipped. N failed payments in a row pause a schedule.
# HOURLY and coarser occurrences are spread over [T, T + jitter].
DEFAULT_SCHEDULE_CATCHUP_WINDOW_S = 86_400.0
DEFAULT_SCHEDULE_FAILURES_TO_PAUSE = 3
DEFAULT_SCHEDULE_JITTER_S = 300.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on every batch, queue, memory and retry. Documented in README."""

    # Exactly-once processor: records consumed per transaction, and how long to fill a batch.
    # (Taking only what is there, without the wait, was tried: at 500 transfers/s the next
    # transaction then meets the broker still completing the last one, and commits took
    # 33 -> 46 ms; no gain. docs/speed.md.)
    batch_records_max: int = 10_000
    batch_wait_ms: int = 20
    # The worker's producer. A transaction's first request after the previous commit meets a
    # coordinator still completing it (CONCURRENT_TRANSACTIONS, retriable): librdkafka retries
    # after retry.backoff.ms, 100 ms by default, which was most of every commit (measured:
    # 150 -> 45 ms per transaction of 200 records; debug=eos shows "Retrying AddOffsetsToTxn
    # in 100ms"). The backoff still grows exponentially, up to the max, when the broker is down.
    transaction_retry_backoff_ms: int = 5
    transaction_retry_backoff_max_ms: int = 1000
    # A long linger only delays the commit's flush (38 ms of commit at 100 ms linger).
    transaction_linger_ms: int = 5
    # Commit retries before the worker gives up on a batch and restarts itself.
    commit_retries_max: int = 5
    transaction_timeout_ms: int = 60_000
    # A commit, abort or close still unfinished after this long is a stuck client (they take
    # milliseconds, seconds under load): the worker restarts itself in place
    # (streams/watchdog.py), which is safe at any moment, as a kill -9 is.
    transaction_stall_s: float = 25.0
    # A worker logs its batches, records and ms per batch (build, send_offsets, commit) this
    # often, when it did work (INFO).
    worker_stats_interval_s: float = 10.0
    # A process that fails restarts itself in place, with a growing pause (at most
    # restart_backoff_max_s); past restarts_max restarts within restart_window_s it exits.
    restarts_max: int = 10
    restart_window_s: float = 600.0
    restart_backoff_max_s: float = 30.0
    # The core's own limits (recent command ids per account: 32; messages waiting for an
    # opening account: 64; pay-ins and pay-outs in flight per account: 64 each) live in
    # streams.ledger.model, since deciding depends on them.
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
    # How long POST /commands (and the payment API) waits for the broker to acknowledge a record.
    http_produce_timeout_s: float = 10.0
    # Payment API (paystream/api/): how long POST /payments/payment/v1 waits for the payments
    # workers to admit its request (its view shows the key and the payment) before it answers
    # 503; the request stays in the log and a retry with the same key gets the answer.
    api_admission_timeout_s: float = 10.0
    # Admissions one API process waits for at once; past it, 503 (bounds waiters and memory).
    api_admissions_in_flight_max: int = 10_000
    # The API's producer: a short linger batches concurrent admissions at little latency cost.
    api_producer_linger_ms: int = 2
    # Scheduled payments (docs/schedules.md; the core's own limits, 20 recent occurrences per
    # schedule, the rule search budget, live in streams.schedules). Payments the scheduler
    # has submitted to the payment API and not yet had an answer for; past it, due
    # occurrences wait their turn, in due order.
    scheduler_submits_in_flight_max: int = 256
    # A submission the API could not take (503, connection lost) is retried with the same
    # Idempotency-Key after a pause that doubles up to this; one answer waits at most this.
    scheduler_submit_backoff_max_s: float = 5.0
    scheduler_submit_timeout_s: float = 20.0
    # How often an idle scheduler looks at its clock and its answers (the due-time precision).
    scheduler_tick_ms: int = 50
    # Occurrences one explicit backfill may submit.
    schedule_backfill_occurrences_max: int = 1_000
    # GET /payments/scheduled-payment/v1: schedules per page (default, and at most).
    schedule_page_default: int = 50
    schedule_page_max: int = 500
    # Wallet (paystream/api/wallet/, docs/wallet.md). A session token (JWT) lives this long.
    wallet_session_ttl_s: int = 3600
    # Log-in lock-out: past this many failures within the window, for one username or one
    # client address, further tries get 429 until the oldest failure leaves the window.
    wallet_login_failures_max: int = 5
    wallet_login_window_s: float = 900.0
    # Usernames and addresses whose failures one API process remembers (oldest dropped first).
    wallet_login_keys_max: int = 100_000
    # Passwords: at least this long (and not a common one); at most this long (hashing cost).
    wallet_password_chars_min: int = 12
    wallet_password_chars_max: int = 1024
    # argon2id hashes computed at once per API process (each takes 64 MiB for ~50 ms).
    wallet_hashes_in_flight_max: int = 4
    # GET /v1/account: the last transactions shown, and how long the read side may take.
    wallet_transactions_max: int = 20
    wallet_readside_timeout_s: float = 5.0
    # Webhook event ids one API process remembers (the latest), to answer a duplicate at once
    # without writing it again; the payments worker ignores any duplicate that gets through
    # (it applies a webhook only when it moves the order forward).
    api_webhook_event_ids_max: int = 100_000
    # Risk engine (docs/risk.md; the core's own limits are in streams.risk.limits): how long
    # a risk agent waits for a published version's content to show on its topic.
    risk_library_wait_s: float = 30.0
    # How long POST /payments/review/v1/{id} waits for the queue to apply its decision.
    review_decision_timeout_s: float = 10.0


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
    def from_env(env: Mapping[str, str]) -> KafkaSecurity:
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
    # The embedded warehouse's ClickHouse HTTP port and the read side's web port (127.0.0.1).
    warehouse_port: int = DEFAULT_WAREHOUSE_PORT
    readside_port: int = DEFAULT_READSIDE_PORT
    # The related-transfer detector's search bounds (checked by streams.detector.graph).
    detector_max_hops: int = DEFAULT_DETECTOR_MAX_HOPS
    detector_window_s: float = DEFAULT_DETECTOR_WINDOW_S
    # The read side's table writer: "bulk" (batched) or "plain" (faust's own, for benchmarks).
    readside_writer: str = "bulk"
    log_level: str = "INFO"
    # Tests set it so that a process whose parent died (an aborted test run) ends too.
    exit_with_parent: bool = False
    # Where the Kafka jars are (fetched by `make kafka`); None: var/kafka/libs in the checkout.
    kafka_libs: Path | None = None
    # The payment API's port on 127.0.0.1 (PAYSTREAM_API_PORT).
    api_port: int = DEFAULT_API_PORT
    # The embedded PSP simulator's first port (PAYSTREAM_PSP_SIM_PORT; its PSPs take 4).
    psp_sim_port: int = DEFAULT_PSP_SIM_PORT
    # Tests only: processes honour faults armed under $PAYSTREAM_HOME/faults/ (never in prod).
    test_faults: bool = False
    # Scheduled payments' policy (PAYSTREAM_SCHEDULE_*; docs/schedules.md).
    schedule_catchup_window_s: float = DEFAULT_SCHEDULE_CATCHUP_WINDOW_S
    schedule_failures_to_pause: int = DEFAULT_SCHEDULE_FAILURES_TO_PAUSE
    schedule_jitter_s: float = DEFAULT_SCHEDULE_JITTER_S
    # The API's CORS: origins allowed to call it from a browser (PAYSTREAM_API_CORS_ORIGINS,
    # comma-separated); none by default, so no other origin may read an answer.
    api_cors_origins: tuple[str, ...] = ()
    # The session cookie's Secure flag (PAYSTREAM_API_COOKIE_SECURE): None sets it unless the
    # request came over plain HTTP to a loopback address; True always; False never.
    api_cookie_secure: bool | None = None

    @property
    def var(self) -> Path:
        return self.home

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _repo_root() -> Path:
    # base/config.py -> repo root; var/ lives beside the code in a checkout.
    return Path(__file__).resolve().parent.parent


DEFAULT_KAFKA_LIBS = _repo_root() / "var" / "kafka" / "libs"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process: ``env`` (default: the process's environment) read once."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("PAYSTREAM_HOME") or (_repo_root() / "var")).resolve()
    libs = env.get("PAYSTREAM_KAFKA_LIBS")
    return Settings(
        home=home,
        bootstrap=env.get("PAYSTREAM_BOOTSTRAP") or None,
        topic_prefix=env.get("PAYSTREAM_TOPIC_PREFIX", ""),
        partitions=int(env.get("PAYSTREAM_PARTITIONS") or 12),
        brokers=int(env.get("PAYSTREAM_BROKERS") or 1),
        broker_port_base=int(env.get("PAYSTREAM_BROKER_PORT") or 9092),
        clickhouse_dsn=env.get("PAYSTREAM_CLICKHOUSE_DSN") or None,
        processing_guarantee=env.get("PAYSTREAM_PROCESSING_GUARANTEE") or "exactly_once",
        kafka_security=KafkaSecurity.from_env(env),
        api_token=env.get("PAYSTREAM_API_TOKEN") or None,
        warehouse_port=int(env.get("PAYSTREAM_WAREHOUSE_PORT") or DEFAULT_WAREHOUSE_PORT),
        readside_port=int(env.get("PAYSTREAM_READSIDE_PORT") or DEFAULT_READSIDE_PORT),
        detector_max_hops=int(env.get("PAYSTREAM_DETECTOR_MAX_HOPS") or DEFAULT_DETECTOR_MAX_HOPS),
        detector_window_s=float(
            env.get("PAYSTREAM_DETECTOR_WINDOW_S") or DEFAULT_DETECTOR_WINDOW_S
        ),
        readside_writer=env.get("PAYSTREAM_READSIDE_WRITER") or "bulk",
        log_level=(env.get("PAYSTREAM_LOG_LEVEL") or "INFO").upper(),
        exit_with_parent=env.get("PAYSTREAM_EXIT_WITH_PARENT", "") not in ("", "0"),
        kafka_libs=Path(libs).expanduser().resolve() if libs else None,
        api_port=int(env.get("PAYSTREAM_API_PORT") or DEFAULT_API_PORT),
        psp_sim_port=int(env.get("PAYSTREAM_PSP_SIM_PORT") or DEFAULT_PSP_SIM_PORT),
        test_faults=env.get("PAYSTREAM_TEST_FAULTS", "") not in ("", "0"),
        schedule_catchup_window_s=float(
            env.get("PAYSTREAM_SCHEDULE_CATCHUP_WINDOW_S") or DEFAULT_SCHEDULE_CATCHUP_WINDOW_S
        ),
        schedule_failures_to_pause=int(
            env.get("PAYSTREAM_SCHEDULE_FAILURES_TO_PAUSE") or DEFAULT_SCHEDULE_FAILURES_TO_PAUSE
        ),
        schedule_jitter_s=float(
            env.get("PAYSTREAM_SCHEDULE_JITTER_S") or DEFAULT_SCHEDULE_JITTER_S
        ),
        api_cors_origins=tuple(
            o.strip() for o in env.get("PAYSTREAM_API_CORS_ORIGINS", "").split(",") if o.strip()
        ),
        api_cookie_secure=_tristate(env.get("PAYSTREAM_API_COOKIE_SECURE", "")),
    )


def _tristate(value: str) -> bool | None:
    """ "" (unset): None; "1"/"true"/"yes": True; "0"/"false"/"no": False."""
    v = value.strip().lower()
    if not v:
        return None
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    raise ValueError(f"expected 1 or 0, not {value!r}")


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``PAYSTREAM_*`` environment from which :func:`load_settings` reads ``settings``
    back: what a child process is given. Every variable is set, an empty one for "none", so
    nothing the parent happened to inherit leaks into the child's settings."""
    sec = settings.kafka_security
    return {
        "PAYSTREAM_HOME": str(settings.home),
        "PAYSTREAM_BOOTSTRAP": settings.bootstrap or "",
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_BROKERS": str(settings.brokers),
        "PAYSTREAM_BROKER_PORT": str(settings.broker_port_base),
        "PAYSTREAM_CLICKHOUSE_DSN": settings.clickhouse_dsn or "",
        "PAYSTREAM_PROCESSING_GUARANTEE": settings.processing_guarantee,
        "PAYSTREAM_KAFKA_SECURITY_PROTOCOL": sec.protocol,
        "PAYSTREAM_KAFKA_SASL_MECHANISM": sec.sasl_mechanism or "",
        "PAYSTREAM_KAFKA_SASL_USERNAME": sec.sasl_username or "",
        "PAYSTREAM_KAFKA_SASL_PASSWORD": sec.sasl_password or "",
        "PAYSTREAM_KAFKA_SSL_CA_LOCATION": sec.ssl_ca_location or "",
        "PAYSTREAM_API_TOKEN": settings.api_token or "",
        "PAYSTREAM_WAREHOUSE_PORT": str(settings.warehouse_port),
        "PAYSTREAM_READSIDE_PORT": str(settings.readside_port),
        "PAYSTREAM_API_PORT": str(settings.api_port),
        "PAYSTREAM_PSP_SIM_PORT": str(settings.psp_sim_port),
        "PAYSTREAM_TEST_FAULTS": "1" if settings.test_faults else "",
        "PAYSTREAM_DETECTOR_MAX_HOPS": str(settings.detector_max_hops),
        "PAYSTREAM_DETECTOR_WINDOW_S": repr(settings.detector_window_s),
        "PAYSTREAM_READSIDE_WRITER": settings.readside_writer,
        "PAYSTREAM_LOG_LEVEL": settings.log_level,
        "PAYSTREAM_EXIT_WITH_PARENT": "1" if settings.exit_with_parent else "",
        "PAYSTREAM_KAFKA_LIBS": str(settings.kafka_libs or ""),
        "PAYSTREAM_SCHEDULE_CATCHUP_WINDOW_S": repr(settings.schedule_catchup_window_s),
        "PAYSTREAM_SCHEDULE_FAILURES_TO_PAUSE": str(settings.schedule_failures_to_pause),
        "PAYSTREAM_SCHEDULE_JITTER_S": repr(settings.schedule_jitter_s),
        "PAYSTREAM_API_CORS_ORIGINS": ",".join(settings.api_cors_origins),
        "PAYSTREAM_API_COOKIE_SECURE": ""
        if settings.api_cookie_secure is None
        else str(int(settings.api_cookie_secure)),
    }


def kafka_libs_dir(settings: Settings) -> Path:
    """Where the Kafka jars are: ``PAYSTREAM_KAFKA_LIBS``, else var/kafka/libs in the checkout."""
    return settings.kafka_libs or DEFAULT_KAFKA_LIBS


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
