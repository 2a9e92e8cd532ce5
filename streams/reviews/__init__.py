"""The review queue's pure core: items opened by the risk engine (and, later, by
reconciliation), decided once by a reviewer (docs/risk.md, "The review queue")."""

from .decide import decide, evolve_all

__all__ = ["decide", "evolve_all"]
