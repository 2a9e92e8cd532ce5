"""The command types, read from the Avro command schemas: the one catalogue of them.

Every record of namespace ``paystream.commands`` (``schemas/*.avsc``) is a command type. Its
JSON ``type`` is the snake_case of its Avro name (``OpenAccount`` -> ``open_account``), its
fields are the record's fields in schema order, a ``["null", "string"]`` field is optional,
and two attributes of our own say the rest: ``"paystream.kind"`` (``id``, ``text`` or
``amount``: how the producer checks it) and ``"paystream.key": true`` on the field whose value
is the Kafka key (the account that owns the command); the record's ``"paystream.order"`` is
its place in listings (the README's, the CLI's help, the read side's OpenAPI enum). Avro's
Parsing Canonical Form leaves such attributes out, so they change no fingerprint.

The producer's JSON format, the worker's record mapping, the CLI's ``send`` flags and the test
models all read their tables from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from schemas import current_schemas

NAMESPACE: Final = "paystream.commands"
ID: Final = "id"  # an identifier: no control characters, at most id_chars_max
TEXT: Final = "text"  # free text: at most reason_chars_max
AMOUNT: Final = "amount"  # a decimal string, judged by the ledger
_KINDS: Final = frozenset({ID, TEXT, AMOUNT})
_OPTIONAL_STRING: Final = ["null", "string"]


@dataclass(frozen=True, slots=True)
class CommandType:
    """One command type: its JSON and Avro names, its fields and which of them is the key."""

    type: str  # JSON type, e.g. "open_account"
    schema: str  # Avro short name, namespace paystream.commands, e.g. "OpenAccount"
    required: tuple[str, ...]
    optional: tuple[str, ...]  # may be null (or absent in JSON)
    key_field: str  # the field whose value is the Kafka key
    kinds: Mapping[str, str]  # field -> ID | TEXT | AMOUNT
    doc: str
    internal: bool = False  # written by paystream's workers only, not in the JSON format

    @property
    def fields(self) -> tuple[str, ...]:
        """Every field, in schema order (optional fields come last in every schema)."""
        return self.required + self.optional


def json_type(avro_name: str) -> str:
    """``OpenAccount`` -> ``open_account``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", avro_name).lower()


def _command_type(schema: dict[str, Any]) -> CommandType:
    name = schema["name"]
    required: list[str] = []
    optional: list[str] = []
    kinds: dict[str, str] = {}
    keys: list[str] = []
    for f in schema["fields"]:
        kind = f.get("paystream.kind")
        if kind not in _KINDS:
            raise ValueError(f"{name}.{f['name']}: paystream.kind must be one of {_KINDS}")
        kinds[f["name"]] = kind
        if f["type"] == "string":
            if optional:
                raise ValueError(f"{name}.{f['name']}: a required field after an optional one")
            required.append(f["name"])
        elif f["type"] == _OPTIONAL_STRING:
            optional.append(f["name"])
        else:
            raise ValueError(f"{name}.{f['name']}: a command field is a string or null|string")
        if f.get("paystream.key") is True:
            keys.append(f["name"])
    if len(keys) != 1 or keys[0] not in required:
        raise ValueError(f"{name}: exactly one required field must be the key, not {keys}")
    return CommandType(
        json_type(name),
        name,
        tuple(required),
        tuple(optional),
        keys[0],
        MappingProxyType(kinds),
        schema.get("doc", ""),
        schema.get("paystream.internal") is True,
    )


@cache
def command_types() -> Mapping[str, CommandType]:
    """Every command type of the JSON command format, by JSON type, in ``paystream.order``."""
    return MappingProxyType({k: t for k, t in all_command_types().items() if not t.internal})


@cache
def all_command_types() -> Mapping[str, CommandType]:
    """The JSON format's command types and the internal ones (``"paystream.internal": true``:
    written only by paystream's own workers, e.g. the payments' ledger commands), which the
    ledger reads but no producer of the JSON format accepts."""
    found = sorted(
        (
            (schema.get("paystream.order", 1 << 30), _command_type(schema))
            for full, schema in current_schemas().items()
            if full.startswith(NAMESPACE + ".")
        ),
        key=lambda pair: (pair[1].internal, pair[0], pair[1].type),
    )
    return MappingProxyType({t.type: t for _, t in found})


def by_schema() -> dict[str, CommandType]:
    """Every command type by Avro short name, the internal ones included."""
    return {t.schema: t for t in all_command_types().values()}


def fields_of_kind(kind: str, internal: bool = False) -> frozenset[str]:
    """Every field name that has ``kind`` in some command type (of the JSON format, or all)."""
    types = all_command_types() if internal else command_types()
    return frozenset(f for t in types.values() for f, k in t.kinds.items() if k == kind)


def all_fields(internal: bool = False) -> tuple[str, ...]:
    """Every field name of some command type, each once, in catalogue order."""
    types = all_command_types() if internal else command_types()
    return tuple(dict.fromkeys(f for t in types.values() for f in t.fields))


__all__ = [
    "AMOUNT",
    "ID",
    "NAMESPACE",
    "TEXT",
    "CommandType",
    "all_fields",
    "by_schema",
    "command_types",
    "fields_of_kind",
    "json_type",
]
