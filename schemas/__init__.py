"""Avro schemas of every paystream record, and the codec that reads and writes them.

``schemas/<Name>.avsc`` is the current version of each record; older versions kept for
schema evolution live in ``schemas/history/<Name>.v<N>.avsc``. The files are the contract;
this module only loads them.
"""

from __future__ import annotations

import json
import time
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

Schema = dict[str, Any]

_SUFFIX = ".avsc"


def _root() -> Traversable:
    return resources.files(__name__)


def _load_dir(folder: Traversable) -> list[Schema]:
    if not folder.is_dir():
        return []
    files = sorted(
        (f for f in folder.iterdir() if f.is_file() and f.name.endswith(_SUFFIX)),
        key=lambda f: f.name,
    )
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


def full_name(schema: Schema) -> str:
    """``namespace.name`` of a named schema (a dotted name is already full)."""
    name: str = schema["name"]
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


@cache
def _current() -> tuple[Schema, ...]:
    return tuple(_load_dir(_root()))


def current_schemas() -> dict[str, Schema]:
    """Current schema of every record, by full name (fresh copies: safe to mutate)."""
    return {full_name(s): json.loads(json.dumps(s)) for s in _current()}


def history_schemas() -> list[Schema]:
    """Older writer versions kept so that old records stay readable."""
    return _load_dir(_root() / "history")


def load_schema(name: str) -> Schema:
    """Current schema by short (``Deposit``) or full (``paystream.commands.Deposit``) name."""
    for full, schema in current_schemas().items():
        if name in (full, schema["name"]):
            return schema
    raise KeyError(name)


def now_micros() -> int:
    """Current time in the unit of every ``ts`` field: microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


__all__ = [
    "Schema",
    "current_schemas",
    "full_name",
    "history_schemas",
    "load_schema",
    "now_micros",
]
