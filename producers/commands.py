"""The JSON command format: a public contract, one JSON object per line.

::

    {"type":"deposit","command_id":"c2","account":"acct-1","amount":"100.00"}

Every field is a JSON string (amounts too: ``"100.00"``, never ``100.00``, so no float ever
touches money). The producer refuses only what can never become a valid Avro command:
malformed JSON, unknown types or fields, missing fields, non-string values, oversized values
and control characters in ids. Business rules (is the amount positive? does the account
exist?) belong to the ledger, which answers every command with an outcome; a producer that
judged amounts would make the two disagree.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from base.config import Limits
from producers.errors import (
    BAD_CHARACTERS,
    INVALID_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    TOO_LONG,
    UNKNOWN_FIELD,
    UNKNOWN_TYPE,
    WRONG_TYPE,
    InvalidCommand,
)
from schemas.catalogue import ID, TEXT, CommandType, command_types, fields_of_kind

DEFAULT_LIMITS: Final = Limits()


# The command types and their fields come from the Avro schemas (schemas/catalogue.py).
COMMAND_TYPES: Final[Mapping[str, CommandType]] = command_types()
# Identifiers end up in keys, state stores and system account names ("@world/USD"): no
# control characters. Free text may hold them (a newline in a reason is harmless).
ID_FIELDS: Final = fields_of_kind(ID)
# Free text: longer limit.
TEXT_FIELDS: Final = fields_of_kind(TEXT)
# Lone surrogates (possible via JSON "\ud800" escapes) cannot be encoded as UTF-8 at all.
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
_BAD_TEXT_CHARS = re.compile("[\ud800-\udfff]")
_PREVIEW_CHARS = 40


@dataclass(frozen=True, slots=True)
class Command:
    """A command that passed the producer's checks, ready to be Avro-encoded."""

    type: str  # JSON type, e.g. "transfer"
    schema: str  # Avro short name, e.g. "Transfer"
    key: str  # Kafka key: the owning account
    record: Mapping[str, str | None]  # exactly the Avro record's fields, in schema order

    @property
    def command_id(self) -> str:
        return self.record["command_id"] or ""

    def to_json(self) -> str:
        """The command as one contract line (without newline); optional nulls are left out."""
        obj = {"type": self.type, **{k: v for k, v in self.record.items() if v is not None}}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def parse_line(line: str | bytes, limits: Limits = DEFAULT_LIMITS) -> Command:
    """Parse and check one line of the JSON command format (a trailing newline is fine)."""
    raw = line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
    size = len(raw.rstrip(b"\r\n"))
    if size > limits.command_bytes_max:
        raise InvalidCommand(
            TOO_LONG, f"line has {size} bytes, at most {limits.command_bytes_max} allowed"
        )
    if isinstance(line, bytes):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidCommand(INVALID_JSON, f"not UTF-8 (byte {exc.start})") from None
    else:
        text = line
    try:
        obj = _DECODER.decode(text)
    except RecursionError:
        raise InvalidCommand(INVALID_JSON, "nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, over-long integers
        raise InvalidCommand(INVALID_JSON, str(exc)) from None
    return parse_command(obj, limits)


def parse_command(obj: object, limits: Limits = DEFAULT_LIMITS) -> Command:
    """Check a decoded JSON value against the command format."""
    if not isinstance(obj, dict):
        raise InvalidCommand(NOT_AN_OBJECT, f"expected a JSON object, got {_kind(obj)}")
    if "type" not in obj:
        raise InvalidCommand(MISSING_FIELD, "missing field 'type'", "type")
    ctype = obj["type"]
    if not isinstance(ctype, str):
        raise InvalidCommand(WRONG_TYPE, f"'type' must be a string, got {_kind(ctype)}", "type")
    spec = COMMAND_TYPES.get(ctype)
    if spec is None:
        raise InvalidCommand(
            UNKNOWN_TYPE,
            f"unknown command type {_preview(ctype)}; expected one of {', '.join(COMMAND_TYPES)}",
            "type",
        )
    fields = spec.fields
    for name in obj:
        if name != "type" and name not in fields:
            raise InvalidCommand(
                UNKNOWN_FIELD, f"{ctype} has no field {_preview(name)}", str(name)[:64]
            )
    record: dict[str, str | None] = {}
    for name in spec.required:
        if name not in obj:
            raise InvalidCommand(MISSING_FIELD, f"{ctype} needs field '{name}'", name)
        record[name] = _check(name, obj[name], limits)
    for name in spec.optional:
        value = obj.get(name)
        # null is how JSON says "absent" for an optional field.
        record[name] = None if value is None else _check(name, value, limits)
    key = record[spec.key_field]
    if key is None:  # the catalogue makes every key field a required one
        raise ValueError(f"{ctype}: key field {spec.key_field} is not required")
    return Command(ctype, spec.schema, key, record)


def with_command_id(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` with a fresh UUID4 ``command_id`` if it has none.

    Only for single interactive sends: a bulk file must carry its own ids so that sending it
    twice is a harmless duplicate rather than a double payment.
    """
    out = dict(obj)
    if "command_id" not in out:
        out["command_id"] = str(uuid.uuid4())
    return out


def _check(name: str, value: object, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InvalidCommand(
            WRONG_TYPE, f"'{name}' must be a JSON string, got {_kind(value)}", name
        )
    most = limits.reason_chars_max if name in TEXT_FIELDS else limits.id_chars_max
    if len(value) > most:
        raise InvalidCommand(
            TOO_LONG, f"'{name}' has {len(value)} characters, at most {most} allowed", name
        )
    bad = (_BAD_ID_CHARS if name in ID_FIELDS else _BAD_TEXT_CHARS).search(value)
    if bad is not None:
        raise InvalidCommand(
            BAD_CHARACTERS,
            f"'{name}' contains U+{ord(bad.group()):04X} at position {bad.start()}",
            name,
        )
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"amount":"1","amount":"1000"} is ambiguous, and json would silently keep the last.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_preview(key)}")
            seen.add(key)
    return obj


# Built once: json.loads with a hook would build a new decoder per line.
_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


__all__ = [
    "COMMAND_TYPES",
    "DEFAULT_LIMITS",
    "ID_FIELDS",
    "TEXT_FIELDS",
    "Command",
    "CommandType",
    "parse_command",
    "parse_line",
    "with_command_id",
]
