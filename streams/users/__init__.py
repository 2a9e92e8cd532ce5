"""The pure users core (docs/wallet.md): ``decide(state, message) -> events`` and ``evolve``.

Imports nothing from Kafka, RocksDB, faust, HTTP or any hashing library
(tests/unit/test_purity.py fails if it does).
"""

from .decide import decide
from .evolve import evolve, evolve_all

__all__ = ["decide", "evolve", "evolve_all"]
