"""The review queue's vocabulary: requests in, items, events out. Pure data.

An item is keyed by its id (``<kind>:<subject>``, e.g. ``risk:<payment_id>``). It is opened
once, with the decisions it allows (``actions``), and decided once: the first decision in its
log wins; any later one is refused and recorded as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Items still open past this age are overdue: the queue lists them first (docs/risk.md).
OVERDUE_AFTER_S = 4 * 3600
NOTE_CHARS_MAX = 1_000
EVIDENCE_CHARS_MAX = 64 * 1024
REVIEWER_CHARS_MAX = 128

# A decision's status once taken (the item's status after it). Reconciliation adds its own.
DECIDED_AS: dict[str, str] = {"approve": "approved", "decline": "declined", "resolve": "resolved"}
OPEN = "open"


class Kind(StrEnum):
    risk = "risk"  # a payment the risk engine held (decisions: approve, decline)
    recon = "recon"  # a reconciliation mismatch (decisions: reconciliation's own)


@dataclass(frozen=True, slots=True)
class OpenItem:
    item_id: str
    kind: str
    payment_id: str | None
    rules: tuple[str, ...]
    category: str | None
    evidence: str  # JSON text
    actions: tuple[str, ...]
    request_id: str
    ts: int

    @property
    def key(self) -> str:
        return self.item_id


@dataclass(frozen=True, slots=True)
class DecideItem:
    item_id: str
    decision: str
    note: str
    reviewer: str
    request_id: str
    ts: int

    @property
    def key(self) -> str:
        return self.item_id


Message = OpenItem | DecideItem


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    kind: str
    payment_id: str | None
    rules: tuple[str, ...]
    category: str | None
    evidence: str
    actions: tuple[str, ...]
    created_at: int
    status: str = OPEN
    decision: str | None = None
    note: str | None = None
    reviewer: str | None = None
    decided_at: int | None = None
    request_id: str | None = None  # the request whose decision won
    seq: int = 1  # events of this item so far (its event ids: <item_id>/<seq>)


@dataclass(frozen=True, slots=True)
class ItemOpened:
    item: Item


@dataclass(frozen=True, slots=True)
class ItemDecided:
    item: Item  # as decided


@dataclass(frozen=True, slots=True)
class DecisionRefused:
    """A decision that came for an unknown item, an item already decided, or that the item
    does not allow: recorded (who tried what, when), never applied."""

    request: DecideItem
    item: Item | None
    why: str


Event = ItemOpened | ItemDecided | DecisionRefused
