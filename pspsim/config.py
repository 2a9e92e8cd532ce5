"""Every limit of the simulator in one place, and the run-time configuration of one process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Limits:
    """Bounds and fixed numbers. Change them here, nowhere else."""

    # Request bodies above this answer 413 before they are parsed.
    body_max_bytes: int = 64 * 1024
    merchant_reference_max_chars: int = 128
    instrument_max_chars: int = 256
    webhook_url_max_chars: int = 2048
    # direction, currency, payment_option: checked against their sets; this bounds the echo.
    enum_field_max_chars: int = 32
    # Error texts we store or send back (exception messages can be long).
    error_text_max_chars: int = 500
    # 10^15 minor units: far above any real payment, far below sqlite's 2^63.
    amount_max_minor: int = 10**15
    amount_max_chars: int = 32
    # Admin knobs.
    latency_max_ms: int = 60_000
    outage_max_s: float = 7 * 24 * 3600.0
    redeliver_delay_max_ms: int = 600_000
    # Asynchronous PSPs complete this long after execute (uniform, seeded by --seed).
    async_delay_min_s: float = 2.0
    async_delay_max_s: float = 5.0
    # How often the completion and delivery loops look for due work when idle.
    poll_interval_s: float = 0.1
    # Webhook delivery: attempt n (1-based) failing schedules the next 2^(n-1) s later.
    webhook_max_attempts: int = 8
    webhook_backoff_base_s: float = 1.0
    webhook_timeout_s: float = 5.0
    webhook_concurrency: int = 16
    # 24 is the Standard Webhooks minimum; 32 is what we generate.
    webhook_secret_bytes: int = 32
    # Settlement: the daily account fee per currency with any movement that day.
    daily_fee_minor: int = 100
    # The 0119 instrument answers 500 on this many executions before it charges.
    flaky_failures: int = 2
    # A held (0341) or in-flight response delays a clean shutdown at most this long.
    shutdown_timeout_s: float = 1.0


LIMITS = Limits()

DEFAULT_HANG_S = 30.0
DEFAULT_LATENCY_MS = 0


@dataclass(frozen=True)
class SimConfig:
    """What one `python -m pspsim` process serves, from its command line."""

    state_dir: Path
    # PSP name -> port (0 = pick a free one), in command-line order.
    ports: dict[str, int]
    webhook_urls: dict[str, str] = field(default_factory=dict)
    webhook_secret_dir: Path | None = None
    latency_ms: int = DEFAULT_LATENCY_MS
    hang_s: float = DEFAULT_HANG_S
    seed: int | None = None
    json_logs: bool = False
    access_log: bool = False
    limits: Limits = LIMITS

    @property
    def secret_dir(self) -> Path:
        return self.webhook_secret_dir or self.state_dir / "webhook-secrets"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "pspsim.sqlite3"

    @property
    def ports_path(self) -> Path:
        return self.state_dir / "ports.json"
