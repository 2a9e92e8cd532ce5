"""Wall-clock time, ISO 8601 UTC: the stored times must mean the same after a restart."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """2025-01-31T12:34:56.789Z"""
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def iso_from_epoch(epoch_s: float) -> str:
    return iso(datetime.fromtimestamp(epoch_s, UTC))
