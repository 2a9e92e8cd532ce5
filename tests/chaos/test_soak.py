"""The chaos soak as a test: ``tests.soak`` with its defaults (100k transfers, 24 kill -9,
one broker restart), or smaller through PAYSTREAM_SOAK_TRANSFERS / PAYSTREAM_SOAK_KILLS.

``make soak`` runs the same thing with the verdict on screen; ``make chaos`` runs ``make
soak`` and then the other chaos tests, so this file is deselected there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from base.config import kafka_libs_dir, load_settings
from tests.soak.plan import SoakConfig
from tests.soak.run import run_soak
from tests.soak.verdict import print_verdict

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(3600)]


def test_chaos_soak_loses_duplicates_and_misreports_nothing(tmp_path: Path) -> None:
    from ops.kafka import ensure_jars

    settings = load_settings()
    ensure_jars(kafka_libs_dir(settings))
    knobs = SoakConfig.from_env()  # PAYSTREAM_SOAK_SEED, _TRANSFERS, _KILLS
    cfg = SoakConfig(
        seed=knobs.seed,
        transfers=knobs.transfers,
        kills=knobs.kills,
        home=tmp_path / "home",
        json_path=tmp_path / "verdict.json",
    )
    verdict = run_soak(cfg, settings)
    print_verdict(verdict)
    failed = [c for c in verdict.data["checks"] if not c["ok"]]
    assert verdict.ok, (verdict.data["failure"], failed, verdict.path)
