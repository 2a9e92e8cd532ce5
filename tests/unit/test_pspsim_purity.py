"""pspsim is an external system: it imports the standard library, aiohttp and standardwebhooks
only, never paystream's packages."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pspsim

PACKAGE = Path(pspsim.__file__).parent
ALLOWED_THIRD_PARTY = {"aiohttp", "standardwebhooks"}


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_pspsim_imports_only_the_stdlib_aiohttp_and_standardwebhooks() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for name in _top_level_imports(path):
            ok = name in sys.stdlib_module_names or name in ALLOWED_THIRD_PARTY or name == "pspsim"
            assert ok, f"{path.name} imports {name}"
