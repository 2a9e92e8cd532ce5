"""Errors of reconciliation's core."""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

__all__ = ["InvariantViolation"]
