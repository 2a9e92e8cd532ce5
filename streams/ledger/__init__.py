"""The pure ledger core: ``decide(state, message) -> events`` and ``evolve(state, event)``.

Imports nothing from Kafka, RocksDB or faust (tests/unit/test_purity.py fails if it does).
"""

from .decide import decide
from .evolve import evolve, evolve_all

__all__ = ["decide", "evolve", "evolve_all"]
