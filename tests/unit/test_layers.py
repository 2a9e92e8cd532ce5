"""The package layers hold (import-linter's contracts in pyproject.toml), so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return found


def test_every_import_contract_is_kept() -> None:
    out = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_a_forbidden_import_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts bite: a module of the ledger core that imports Kafka is caught."""
    for pkg in ("base", "ops", "schemas", "producers", "connectors", "streams", "paystream"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    # Empty stand-ins for every module of streams the contracts may name.
    real = ROOT / "streams"
    for sub in (d.name for d in real.iterdir() if (d / "__init__.py").exists()):
        (tmp_path / "streams" / sub).mkdir()
        (tmp_path / "streams" / sub / "__init__.py").write_text("")
    for mod in (f.stem for f in real.glob("*.py") if f.stem != "__init__"):
        (tmp_path / "streams" / f"{mod}.py").write_text("")
    (tmp_path / "streams" / "ledger" / "__init__.py").write_text("import confluent_kafka\n")
    config = (ROOT / "pyproject.toml").read_text().splitlines()
    kept = [ln for ln in config if not ln.startswith("ignore_imports")]  # they name real modules
    (tmp_path / "pyproject.toml").write_text("\n".join(kept) + "\n")
    out = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "streams.ledger -> confluent_kafka" in out.stdout
