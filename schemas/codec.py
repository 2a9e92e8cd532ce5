"""Avro single-object encoding of paystream records.

Wire format (Avro spec, "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the Parsing Canonical Form | body

The fingerprint names the *writer* schema; the reader resolves the body to its own current
schema of the same full name, so producers and consumers can be upgraded independently as
long as every change is backward compatible (new fields carry defaults).

In Python every ``timestamp-micros`` field is a plain ``int`` (microseconds since the epoch):
the codec strips ``logicalType`` before handing schemas to fastavro, which would otherwise
build a ``datetime`` per record. The ``.avsc`` files keep the logical type for other readers
(ClickHouse, Java); it does not take part in the fingerprint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint as _fingerprint_hex
from fastavro.schema import to_parsing_canonical_form

from schemas import Schema, current_schemas, full_name, history_schemas
from schemas._flat import Decoder, Encoder, make_decoder, make_encoder
from schemas.errors import (
    BAD_MAGIC,
    INVALID_RECORD,
    MALFORMED,
    TRUNCATED,
    UNKNOWN_SCHEMA,
    DecodeError,
    EncodeError,
)

log = logging.getLogger(__name__)

MAGIC = b"\xc3\x01"
FINGERPRINT_BYTES = 8
HEADER_BYTES = len(MAGIC) + FINGERPRINT_BYTES

# Exceptions fastavro raises for a record that does not fit the schema.
_ENCODE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError)
# ... and for a body that does not fit the writer schema (EOFError/IndexError handled apart).
_DECODE_ERRORS = (ValueError, TypeError, KeyError, OverflowError, AttributeError)


def fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO fingerprint of the Parsing Canonical Form, in wire (little-endian) order."""
    # fastavro returns the little-endian bytes as hex, which is what the header carries.
    return bytes.fromhex(_fingerprint_hex(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


def _parse(schema: Schema) -> Schema:
    # A fresh named-schema table per schema: two versions of one record must not clash.
    return cast(Schema, parse_schema(_without_logical_types(schema), {}))


@dataclass(frozen=True, slots=True)
class _Writer:
    """Everything encode needs for the current version of one record."""

    full_name: str
    short_name: str
    header: bytes
    parsed: Schema
    fast: Encoder | None  # hand-rolled encoder for flat records; fastavro otherwise


@dataclass(frozen=True, slots=True)
class _Reading:
    """Everything decode needs for one writer fingerprint."""

    short_name: str
    writer: Schema
    reader: Schema | None  # None: the writer is the current schema, no resolution needed
    fast: Decoder | None  # only when no resolution is needed


class Codec:
    """Encodes and decodes every paystream record; schemas are parsed once, at construction.

    Thread-safe: lookups are single dict reads; ``register`` swaps in new tables under a lock.
    """

    __slots__ = ("_by_fingerprint", "_by_name", "_lock", "_raw")

    def __init__(
        self, current: Iterable[Schema] | None = None, history: Iterable[Schema] | None = None
    ) -> None:
        """Build from explicit schemas; with no arguments, from the ``schemas`` package."""
        if current is None:
            current = current_schemas().values()
            history = history_schemas() if history is None else history
        self._lock = threading.Lock()
        self._by_name: dict[str, _Writer] = {}
        self._by_fingerprint: dict[bytes, _Reading] = {}
        self._raw: dict[str, Schema] = {}
        for schema in current:
            self._add_current(schema)
        for schema in history or ():
            self.register(schema)

    # -- construction ------------------------------------------------------------------------

    def _add_current(self, schema: Schema) -> None:
        name = full_name(schema)
        short = name.rsplit(".", 1)[-1]
        if name in self._by_name:
            raise ValueError(f"two current schemas named {name}")
        if short in self._by_name:
            # Short names are accepted by encode, so they must be unique across namespaces.
            raise ValueError(f"short name {short} is ambiguous ({name})")
        fp = fingerprint(schema)
        if fp in self._by_fingerprint:
            raise ValueError(f"{name} has the same canonical form as another schema")
        parsed = _parse(schema)
        writer = _Writer(name, short, MAGIC + fp, parsed, make_encoder(schema))
        self._by_name[name] = writer
        self._by_name[short] = writer
        self._by_fingerprint[fp] = _Reading(short, parsed, None, make_decoder(schema))
        self._raw[name] = schema

    def register(self, schema: Schema) -> bytes:
        """Make records written with ``schema`` decodable; returns its fingerprint.

        Records are resolved to the current schema of the same full name. A schema whose name
        has no current version becomes the current one (it can then be encoded as well).
        """
        fp = fingerprint(schema)
        with self._lock:
            if fp in self._by_fingerprint:
                return fp
            name = full_name(schema)
            current = self._by_name.get(name)
            if current is None:
                self._add_current(schema)
                return fp
            table = dict(self._by_fingerprint)
            table[fp] = _Reading(current.short_name, _parse(schema), current.parsed, None)
            self._by_fingerprint = table  # readers see the old or the new table, never half
        log.info("registered writer schema %s fingerprint %s", name, fp.hex())
        return fp

    @classmethod
    def default(cls) -> Codec:
        """The process-wide codec built from the package's schemas (built on first use)."""
        global _DEFAULT
        if _DEFAULT is None:
            with _DEFAULT_LOCK:
                if _DEFAULT is None:
                    _DEFAULT = cls()
        return _DEFAULT

    # -- introspection -----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Full names of the current schemas."""
        return sorted(self._raw)

    def schema(self, name: str) -> Schema:
        """The current schema (as loaded, with docs and logical types) by short or full name."""
        return self._raw[self._writer(name).full_name]

    def fingerprint_of(self, name: str) -> bytes:
        return self._writer(name).header[len(MAGIC) :]

    def _writer(self, name: str) -> _Writer:
        try:
            return self._by_name[name]
        except KeyError:
            raise EncodeError(UNKNOWN_SCHEMA, f"no schema named {name!r}") from None

    # -- hot path ----------------------------------------------------------------------------

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Single-object encoding of ``record`` with the current schema ``name``.

        The record must have exactly the schema's fields, except fields with a default, which
        may be left out: a misspelt optional field is an error, not a silent null.
        """
        writer = self._by_name.get(name)
        if writer is None:
            raise EncodeError(UNKNOWN_SCHEMA, f"no schema named {name!r}")
        if writer.fast is not None:
            data = writer.fast(record, writer.header)
            if data is not None:
                return data
        # Not a plain flat record: fastavro encodes it, or says what is wrong with it.
        buf = BytesIO()
        buf.write(writer.header)
        try:
            schemaless_writer(buf, writer.parsed, record, strict_allow_default=True)
        except _ENCODE_ERRORS as exc:
            raise EncodeError(INVALID_RECORD, f"{writer.full_name}: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """Returns ``(short name, record)``, the record in the reader's current schema."""
        if type(data) is not bytes:
            data = bytes(data)
        if data[:2] != MAGIC:
            if len(data) < 2 and MAGIC.startswith(data):
                raise DecodeError(TRUNCATED, f"{len(data)} bytes, shorter than the header")
            raise DecodeError(BAD_MAGIC, f"header {data[:2].hex() or 'empty'}, expected c301")
        if len(data) < HEADER_BYTES:
            raise DecodeError(TRUNCATED, f"{len(data)} bytes, shorter than the header")
        reading = self._by_fingerprint.get(data[2:HEADER_BYTES])
        if reading is None:
            raise DecodeError(UNKNOWN_SCHEMA, f"no schema with fingerprint {data[2:10].hex()}")
        if reading.fast is not None:
            fast = reading.fast(data, HEADER_BYTES)
            if fast is not None:
                return reading.short_name, fast
        # Resolution between versions, or something off in the body: fastavro reads it, or
        # raises the error we classify below.
        fo = BytesIO(data)
        fo.seek(HEADER_BYTES)
        try:
            record = cast(dict[str, Any], schemaless_reader(fo, reading.writer, reading.reader))
        except EOFError as exc:
            raise DecodeError(TRUNCATED, f"{reading.short_name}: body ends early") from exc
        except IndexError as exc:
            # fastavro raises IndexError when a varint runs past the end; a varint cut short
            # ends with its continuation bit set. Otherwise it was a bad union branch.
            if fo.tell() >= len(data) and data[-1] & 0x80:
                raise DecodeError(TRUNCATED, f"{reading.short_name}: body ends early") from exc
            raise DecodeError(MALFORMED, f"{reading.short_name}: {exc}") from exc
        except SchemaResolutionError as exc:
            raise DecodeError(
                UNKNOWN_SCHEMA, f"{reading.short_name}: writer cannot be read as current: {exc}"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise DecodeError(MALFORMED, f"{reading.short_name}: {exc}") from exc
        if fo.tell() != len(data):
            raise DecodeError(
                MALFORMED, f"{reading.short_name}: {len(data) - fo.tell()} bytes after the record"
            )
        return reading.short_name, record


_DEFAULT: Codec | None = None
_DEFAULT_LOCK = threading.Lock()

__all__ = ["FINGERPRINT_BYTES", "HEADER_BYTES", "MAGIC", "Codec", "fingerprint"]
