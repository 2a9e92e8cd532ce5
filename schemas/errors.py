"""Errors raised by the Avro codec, each with a stable machine-readable ``code``.

The codes end up in dead-letter records and metrics, so they are part of the contract:
add new ones, never rename.
"""

from __future__ import annotations

from typing import Final

# Decode codes.
BAD_MAGIC: Final = "bad_magic"
UNKNOWN_SCHEMA: Final = "unknown_schema"
TRUNCATED: Final = "truncated"
MALFORMED: Final = "malformed"
# Encode codes.
INVALID_RECORD: Final = "invalid_record"


class SchemaError(Exception):
    """Base class: ``code`` is stable, ``message`` is for humans."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class DecodeError(SchemaError):
    """Bytes that are not a paystream Avro single-object message we can read."""


class EncodeError(SchemaError):
    """A record that does not fit its schema, or a schema name we do not know."""
