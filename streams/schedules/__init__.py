"""Scheduled payments: the pure core (docs/schedules.md).

``decide(state, message, policy) -> events`` and ``evolve(state, events) -> state``, like the
ledger's and the payments' cores, plus the recurrence rules (``rules``: RFC 5545 through
python-dateutil) and the schedule's state machine (``statuses``). No Kafka, no HTTP, no clock:
every message brings its own time, so the same input always gives the same events.
"""

from __future__ import annotations

from .decide import decide
from .evolve import evolve, evolve_all

__all__ = ["decide", "evolve", "evolve_all"]
