"""Errors of the scheduled-payments core."""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

__all__ = ["InvariantViolation", "RuleError", "SearchBudgetExceeded"]


class RuleError(ValueError):
    """A recurrence rule, start, end or time zone that cannot be used: ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class SearchBudgetExceeded(Exception):
    """A search through a rule's occurrences took more than ``rules.SEARCH_CALLS_MAX`` steps
    (a rule whose next occurrence is very far away, or that has none at all)."""
