"""Errors of the stream processors."""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

__all__ = ["FatalProcessorError", "InvariantViolation", "StreamsError"]


class StreamsError(Exception):
    """Base class for stream-processing errors."""


class FatalProcessorError(StreamsError):
    """The processor cannot go on (fenced, or commits keep failing); restart the process."""
