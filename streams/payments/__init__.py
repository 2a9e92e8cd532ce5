"""The pure payments core: ``decide(state, message, psps) -> events`` and ``evolve``.

Imports nothing from Kafka, RocksDB, faust or HTTP (tests/unit/test_purity.py fails if it
does). docs/payments.md describes the flows; ``statuses.py`` holds the state machine.
"""

from .decide import decide
from .evolve import evolve, evolve_all

__all__ = ["decide", "evolve", "evolve_all"]
