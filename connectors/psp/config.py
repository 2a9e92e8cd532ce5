"""``$PAYSTREAM_HOME/psps.toml``: which PSPs exist, how to reach them, what they take and cost.

One ``[[psp]]`` table per PSP::

    [[psp]]
    name = "cardco"                      # [a-z][a-z0-9_-]*, unique
    connector = "simulator"              # an entry point of paystream.psp_connectors
    base_url = "http://127.0.0.1:8091"   # http(s)
    priority = 1                         # 1 is preferred; higher numbers are fallbacks
    commission_percent = "2.9"           # of the amount, rounded half-even to minor units
    commission_fixed_minor = 30          # added per movement
    commission_max_minor = 500           # optional cap
    payment_options = ["card", "apple_pay", "google_pay"]
    currencies = ["USD", "EUR"]
    asynchronous = false                 # answers "pending" and completes later
    webhook_secret_file = "pspsim/webhook-secrets/cardco"   # optional; relative to this file
    timeout_ms = 10000                   # per HTTP call
    amount_min = "1.00"                  # optional routing rule: smallest amount it takes
    amount_max = "10000.00"              # optional: largest (in the payment's currency)

The file is validated whole on load; an error names the file, the PSP and the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from connectors.psp.errors import PspConfigError
from connectors.psp.limits import ExecutorLimits
from streams.payments.routing import PspInfo

PSPS_FILE = "psps.toml"
DEFAULT_TIMEOUT_MS = 10_000

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_OPTION = re.compile(r"[a-z][a-z0-9_]{0,31}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_REQUIRED = (
    "name",
    "connector",
    "base_url",
    "priority",
    "commission_percent",
    "commission_fixed_minor",
    "payment_options",
    "currencies",
    "asynchronous",
    "timeout_ms",
)
_OPTIONAL = ("commission_max_minor", "webhook_secret_file", "amount_min", "amount_max")


@dataclass(frozen=True, slots=True)
class PspConfig:
    name: str
    connector: str
    base_url: str
    priority: int
    commission_percent: Decimal
    commission_fixed_minor: int
    payment_options: tuple[str, ...]
    currencies: tuple[str, ...]
    asynchronous: bool
    timeout_ms: int
    webhook_secret_file: Path | None = None
    commission_max_minor: int | None = None
    # Routing rules on the amount (in the payment's currency, inclusive); None: no bound.
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None

    def info(self) -> PspInfo:
        """What the payments workers' routing needs of this PSP."""
        return PspInfo(
            self.name,
            frozenset(self.payment_options),
            frozenset(self.currencies),
            self.priority,
            self.commission_percent,
            self.commission_fixed_minor,
            self.commission_max_minor,
            self.amount_min,
            self.amount_max,
        )

    def commission_minor(self, amount_minor: int) -> int:
        """The PSP's fee for moving ``amount_minor``, in the same minor units."""
        return self.info().commission_minor(amount_minor)


def psps_path(home: Path) -> Path:
    return home / PSPS_FILE


def load_psps(path: Path, limits: ExecutorLimits | None = None) -> tuple[PspConfig, ...]:
    """Read and validate ``path``; ``PspConfigError`` says what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PspConfigError(f"{path}: no such file (paystream up writes the default)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PspConfigError(f"{path}: cannot read: {exc}") from None
    return parse_psps(text, str(path), path.parent, limits)


def parse_psps(
    text: str, source: str, base_dir: Path, limits: ExecutorLimits | None = None
) -> tuple[PspConfig, ...]:
    """Parse and validate a psps.toml's text; relative paths are taken from ``base_dir``."""
    limits = limits or ExecutorLimits()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PspConfigError(f"{source}: not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"psp"})
    if extra:
        raise PspConfigError(f"{source}: unknown top-level key {extra[0]!r} (only [[psp]] tables)")
    tables = doc.get("psp")
    if not isinstance(tables, list) or not tables:
        raise PspConfigError(f"{source}: no [[psp]] table")
    psps: list[PspConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            raise PspConfigError(f"{source}: [[psp]] #{i}: not a table")
        psp = _psp(table, _Where(source, i, table), base_dir, limits)
        if psp.name in seen:
            raise PspConfigError(f'{source}: psp "{psp.name}" (#{i}): name: defined twice')
        seen.add(psp.name)
        psps.append(psp)
    return tuple(psps)


class _Where:
    """Builds the errors of one table: file, PSP (or its position), field."""

    def __init__(self, source: str, index: int, table: Mapping[str, Any]) -> None:
        name = table.get("name")
        label = f'psp "{name}" (#{index})' if isinstance(name, str) and name else f"psp #{index}"
        self.prefix = f"{source}: {label}"

    def error(self, field: str, problem: str) -> PspConfigError:
        return PspConfigError(f"{self.prefix}: {field}: {problem}")


def _psp(
    table: Mapping[str, Any], where: _Where, base_dir: Path, limits: ExecutorLimits
) -> PspConfig:
    unknown = sorted(set(table) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise where.error(unknown[0], "unknown field")
    for field in _REQUIRED:
        if field not in table:
            raise where.error(field, "missing")
    name = _matching(table, "name", _NAME, where)
    connector = _matching(table, "connector", _NAME, where)
    base_url = _string(table, "base_url", where)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise where.error("base_url", f"must be an http(s) URL, got {base_url!r}")
    max_minor = table.get("commission_max_minor")
    secret = table.get("webhook_secret_file")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise where.error("webhook_secret_file", "must be a non-empty string (a path)")
    return PspConfig(
        name=name,
        connector=connector,
        base_url=base_url.rstrip("/"),
        priority=_int(table, "priority", where, 0, 1_000),
        commission_percent=_percent(table, where),
        commission_fixed_minor=_int(table, "commission_fixed_minor", where, 0, 10**12),
        payment_options=_list(table, "payment_options", _OPTION, where),
        currencies=_list(table, "currencies", _CURRENCY, where),
        asynchronous=_bool(table, "asynchronous", where),
        timeout_ms=_int(table, "timeout_ms", where, 1, limits.psp_timeout_ms_max),
        webhook_secret_file=None if secret is None else base_dir / Path(secret).expanduser(),
        commission_max_minor=None
        if max_minor is None
        else _int(table, "commission_max_minor", where, 0, 10**12),
        amount_min=_amount(table, "amount_min", where),
        amount_max=_amount(table, "amount_max", where),
    )


def _amount(table: Mapping[str, Any], field: str, where: _Where) -> Decimal | None:
    value = table.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(field, f"must be a decimal string, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise where.error(field, f"not a decimal: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise where.error(field, f"must be a decimal of 0 or more, got {value!r}")
    return amount


def _string(table: Mapping[str, Any], field: str, where: _Where) -> str:
    value = table[field]
    if not isinstance(value, str) or not value:
        raise where.error(field, f"must be a non-empty string, got {value!r}")
    return value


def _matching(table: Mapping[str, Any], field: str, pattern: re.Pattern[str], where: _Where) -> str:
    value = _string(table, field, where)
    if not pattern.fullmatch(value):
        raise where.error(field, f"{value!r} does not match {pattern.pattern}")
    return value


def _int(table: Mapping[str, Any], field: str, where: _Where, low: int, high: int) -> int:
    value = table[field]
    # bool is an int in Python, not in TOML: refuse it.
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(field, f"must be an integer, got {value!r}")
    if not low <= value <= high:
        raise where.error(field, f"must be in {low}..{high}, got {value}")
    return value


def _bool(table: Mapping[str, Any], field: str, where: _Where) -> bool:
    value = table[field]
    if not isinstance(value, bool):
        raise where.error(field, f"must be true or false, got {value!r}")
    return value


def _percent(table: Mapping[str, Any], where: _Where) -> Decimal:
    value = table["commission_percent"]
    # A string keeps the decimal exact; a TOML float is taken by its shortest repr.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise where.error("commission_percent", f"must be a decimal string, got {value!r}")
    try:
        percent = Decimal(str(value))
    except InvalidOperation:
        raise where.error("commission_percent", f"not a decimal: {value!r}") from None
    if not percent.is_finite() or not Decimal(0) <= percent <= Decimal(100):
        raise where.error("commission_percent", f"must be in 0..100, got {value!r}")
    return percent


def _list(
    table: Mapping[str, Any], field: str, pattern: re.Pattern[str], where: _Where
) -> tuple[str, ...]:
    value = table[field]
    if not isinstance(value, list) or not value:
        raise where.error(field, f"must be a non-empty list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise where.error(field, f"{item!r} does not match {pattern.pattern}")
    if len(set(value)) != len(value):
        raise where.error(field, "has duplicates")
    return tuple(value)


# --- the embedded simulator's default configuration ------------------------------------------


@dataclass(frozen=True, slots=True)
class _SimulatedPsp:
    payment_options: tuple[str, ...]
    currencies: tuple[str, ...]
    asynchronous: bool
    priority: int
    commission_percent: str
    commission_fixed_minor: int
    commission_max_minor: int | None = None


# The public contract of docs/psp-simulator.md, "The PSPs" (a test holds pspsim to it).
SIMULATED_PSPS: dict[str, _SimulatedPsp] = {
    "cardco": _SimulatedPsp(
        ("card", "apple_pay", "google_pay"),
        ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"),
        asynchronous=False,
        priority=1,
        commission_percent="2.9",
        commission_fixed_minor=30,
    ),
    "bankco": _SimulatedPsp(
        ("bank_account",),
        ("USD", "EUR", "GBP"),
        asynchronous=True,
        priority=1,
        commission_percent="0.8",
        commission_fixed_minor=0,
        commission_max_minor=500,
    ),
    "walletco": _SimulatedPsp(
        ("paypal",),
        ("USD", "EUR", "GBP"),
        asynchronous=False,
        priority=1,
        commission_percent="3.4",
        commission_fixed_minor=35,
    ),
    "backupcard": _SimulatedPsp(
        ("card",),
        ("USD", "EUR", "GBP", "JPY"),
        asynchronous=False,
        priority=2,
        commission_percent="3.5",
        commission_fixed_minor=30,
    ),
}


def embedded_psps_toml(
    ports: Mapping[str, int],
    secrets_dir: Path,
    *,
    timeout_ms: int | Mapping[str, int] = DEFAULT_TIMEOUT_MS,
    host: str = "127.0.0.1",
) -> str:
    """The psps.toml of the embedded simulator: one table per PSP in ``ports`` (a name of
    the simulator's four), served on ``host:port``, its webhook secret in ``secrets_dir/NAME``
    (the simulator's ``--webhook-secret-dir``). ``timeout_ms``: one for all, or per PSP."""
    unknown = sorted(set(ports) - set(SIMULATED_PSPS))
    if unknown:
        raise PspConfigError(f"the simulator has no PSP named {unknown[0]!r}")
    blocks = ["# PSPs of the embedded simulator (python -m pspsim); written by paystream.\n"]
    for name, port in ports.items():
        spec = SIMULATED_PSPS[name]
        timeout = timeout_ms if isinstance(timeout_ms, int) else timeout_ms.get(name)
        lines = [
            "[[psp]]",
            f"name = {_toml_str(name)}",
            'connector = "simulator"',
            f"base_url = {_toml_str(f'http://{host}:{int(port)}')}",
            f"priority = {spec.priority}",
            f"commission_percent = {_toml_str(spec.commission_percent)}",
            f"commission_fixed_minor = {spec.commission_fixed_minor}",
        ]
        if spec.commission_max_minor is not None:
            lines.append(f"commission_max_minor = {spec.commission_max_minor}")
        lines += [
            f"payment_options = [{', '.join(_toml_str(o) for o in spec.payment_options)}]",
            f"currencies = [{', '.join(_toml_str(c) for c in spec.currencies)}]",
            f"asynchronous = {'true' if spec.asynchronous else 'false'}",
            f"webhook_secret_file = {_toml_str(str(secrets_dir / name))}",
            f"timeout_ms = {DEFAULT_TIMEOUT_MS if timeout is None else int(timeout)}",
        ]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _toml_str(value: str) -> str:
    # JSON's escapes (\\, \", \n, \uXXXX) are valid in a TOML basic string; TOML also wants
    # DEL escaped, and non-ASCII raw (JSON's surrogate pairs are not TOML).
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
