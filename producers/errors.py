"""Producer-side errors, each with a stable machine-readable ``code``.

The codes are printed by ``paystream send`` and stored in dead-letter records, so they are
part of the contract: add new ones, never rename.
"""

from __future__ import annotations

from typing import Final

INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
UNKNOWN_TYPE: Final = "unknown_type"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
UNKNOWN_FIELD: Final = "unknown_field"
TOO_LONG: Final = "too_long"
BAD_CHARACTERS: Final = "bad_characters"

CODES: Final = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    UNKNOWN_TYPE,
    MISSING_FIELD,
    WRONG_TYPE,
    UNKNOWN_FIELD,
    TOO_LONG,
    BAD_CHARACTERS,
)


class InvalidCommand(ValueError):
    """A command refused before it reaches Kafka. ``field`` names the culprit when known."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field


class ProducerQueueFull(BufferError):
    """The local producer queue stayed full for longer than the producer is willing to wait."""
