"""Errors of the scheduler process."""

from __future__ import annotations

from streams.errors import FatalProcessorError, InvariantViolation

__all__ = ["FatalProcessorError", "InvariantViolation", "SchedulerError"]


class SchedulerError(Exception):
    """Base class of the scheduler's own errors."""
