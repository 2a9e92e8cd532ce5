"""Errors of the pure ledger core."""

from __future__ import annotations


class InvariantViolation(Exception):
    """A ledger invariant does not hold. Never caught: the worker must crash loudly.

    Raised by explicit checks (not ``assert``, which ``python -O`` strips).
    """
