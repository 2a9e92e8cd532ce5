"""The chaos soak as a test: ``paystream.soak`` with its defaults (100k transfers, 24 kill -9,
one broker restart), or smaller through PAYSTREAM_SOAK_TRANSFERS / PAYSTREAM_SOAK_KILLS.

``make soak`` runs the same thing with the verdict on screen; ``make chaos`` runs ``make
soak`` and then the other chaos tests, so this file is deselected there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from paystream.soak import DEFAULT_SEED, DEFAULT_TRANSFERS, SoakConfig, print_verdict, run_soak

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(3600)]


def test_chaos_soak_loses_duplicates_and_misreports_nothing(tmp_path: Path) -> None:
    from ops.kafka import ensure_jars

    ensure_jars()
    cfg = SoakConfig(
        seed=int(os.environ.get("PAYSTREAM_SOAK_SEED", DEFAULT_SEED)),
        transfers=int(os.environ.get("PAYSTREAM_SOAK_TRANSFERS", DEFAULT_TRANSFERS)),
        kills=int(os.environ.get("PAYSTREAM_SOAK_KILLS", "24")),
        home=tmp_path / "home",
        json_path=tmp_path / "verdict.json",
    )
    verdict = run_soak(cfg)
    print_verdict(verdict)
    failed = [c for c in verdict.data["checks"] if not c["ok"]]
    assert verdict.ok, (verdict.data["failure"], failed, verdict.path)
