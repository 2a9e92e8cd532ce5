"""The risk engine's pure core: rule files, exact velocity features, decisions (docs/risk.md).

No I/O: the wire mapping (``streams.risk_agent``) hands it messages, the rule sets and the
model's scorer; it answers with events. ``decide`` here is what the risk agent runs.
"""

from .decide import decide, evolve_all
from .rules import RuleSet, load_rules

__all__ = ["RuleSet", "decide", "evolve_all", "load_rules"]
