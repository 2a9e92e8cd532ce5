"""The pure cores (ledger, payments) import nothing from Kafka, RocksDB, faust, HTTP or any
other adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streams.ledger
import streams.payments
import streams.reviews
import streams.risk
import streams.schedules
import streams.users

CORE = Path(streams.ledger.__file__).parent
PAYMENTS_CORE = Path(streams.payments.__file__).parent
USERS_CORE = Path(streams.users.__file__).parent
ALLOWED_TOP_LEVEL = {"__future__", "dataclasses", "enum", "typing", "collections", "functools"}
# The payments core may also use the ledger's pure error type and stdlib dates and decimals.
PAYMENTS_ALLOWED = {*ALLOWED_TOP_LEVEL, "datetime", "decimal", "streams.ledger.errors"}
SCHEDULES_CORE = Path(streams.schedules.__file__).parent
# The schedules core: dates and zones (dateutil's rules, zoneinfo), hashing for the jitter,
# sys for the search budget's call counter; the ledger's error type, the payments' vocabulary.
SCHEDULES_ALLOWED = {
    *ALLOWED_TOP_LEVEL, "datetime", "zoneinfo", "dateutil", "hashlib", "re", "sys", "types",
    "streams.ledger.errors", "streams.payments.model",
}  # fmt: skip
# The risk core also parses TOML (tomllib) and rule expressions (rule_engine: a parser, no
# I/O), and hashes rule files; the review queue's core reads JSON evidence.
RISK_CORE = Path(streams.risk.__file__).parent
REVIEWS_CORE = Path(streams.reviews.__file__).parent
RISK_ALLOWED = {*PAYMENTS_ALLOWED, "tomllib", "hashlib", "re", "rule_engine", "json"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_imports_only_the_standard_library_it_needs() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for name in _imports(path):
            assert name.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path.name} imports {name}"


def test_payments_core_imports_only_pure_modules() -> None:
    files = sorted(PAYMENTS_CORE.glob("*.py"))
    assert len(files) >= 7
    for path in files:
        for name in _imports(path):
            allowed = name in PAYMENTS_ALLOWED or name.split(".")[0] in PAYMENTS_ALLOWED
            assert allowed, f"payments/{path.name} imports {name}"


def test_schedules_core_imports_only_pure_modules() -> None:
    files = sorted(SCHEDULES_CORE.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        for name in _imports(path):
            allowed = name in SCHEDULES_ALLOWED or name.split(".")[0] in SCHEDULES_ALLOWED
            assert allowed, f"schedules/{path.name} imports {name}"


def test_users_core_imports_only_pure_modules() -> None:
    files = sorted(USERS_CORE.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        for name in _imports(path):
            allowed = name in PAYMENTS_ALLOWED or name.split(".")[0] in PAYMENTS_ALLOWED
            assert allowed and not name.startswith(("argon2", "jwt")), (
                f"users/{path.name} imports {name}"
            )


@pytest.mark.parametrize("core", [RISK_CORE, REVIEWS_CORE])
def test_risk_and_review_cores_import_only_pure_modules(core: Path) -> None:
    files = sorted(core.glob("*.py"))
    assert len(files) >= 5
    for path in files:
        for name in _imports(path):
            allowed = name in RISK_ALLOWED or name.split(".")[0] in RISK_ALLOWED
            assert allowed, f"{core.name}/{path.name} imports {name}"


@pytest.mark.parametrize("module", ["fastapi", "httpx", "confluent_kafka.admin", "lightgbm"])
def test_payments_check_refuses_adapters(module: str) -> None:
    assert module not in PAYMENTS_ALLOWED and module.split(".")[0] not in PAYMENTS_ALLOWED
    assert module not in RISK_ALLOWED and module.split(".")[0] not in RISK_ALLOWED
    assert module not in SCHEDULES_ALLOWED and module.split(".")[0] not in SCHEDULES_ALLOWED


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import confluent_kafka\nfrom rocksdict import Rdict\n")
    assert _imports(bad) == {"confluent_kafka", "rocksdict"}


# Reconciliation's core also reads CSV text and checks dates and patterns (docs/recon.md).
RECON_ALLOWED = {*PAYMENTS_ALLOWED, "csv", "re"}


def test_recon_core_imports_only_pure_modules() -> None:
    import streams.recon

    files = sorted(Path(streams.recon.__file__).parent.glob("*.py"))
    assert len(files) >= 6
    for path in files:
        for name in _imports(path):
            allowed = name in RECON_ALLOWED or name.split(".")[0] in RECON_ALLOWED
            assert allowed, f"recon/{path.name} imports {name}"
