"""Errors of the risk core."""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

__all__ = ["InvariantViolation", "RuleFileError"]


class RuleFileError(ValueError):
    """A rule file that cannot be used. ``rule`` and ``column`` locate it when they can
    (``column`` counts from 1 in the rule's ``when``); the message says it all in one line."""

    def __init__(
        self, message: str, rule: str | None = None, column: int | None = None, code: str = ""
    ) -> None:
        where = ""
        if rule is not None:
            where = f"rule {rule!r}" + (f", column {column}" if column is not None else "") + ": "
        super().__init__(where + message)
        self.rule = rule
        self.column = column
        self.code = code or "invalid_rules"
