"""An item's public JSON shape (``GET /payments/review/v1``, ``paystream review``). Pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .model import OPEN, OVERDUE_AFTER_S, Item


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def item_view(item: Item, now_us: int) -> dict[str, Any]:
    age_s = max(0, now_us - item.created_at) // 1_000_000
    try:
        evidence = json.loads(item.evidence)
    except ValueError:
        evidence = item.evidence
    return {
        "id": item.item_id,
        "kind": item.kind,
        "payment_id": item.payment_id,
        "status": item.status,
        "rules": list(item.rules),
        "category": item.category,
        "evidence": evidence,
        "created_at": iso(item.created_at),
        "age_s": age_s,
        "overdue": item.status == OPEN and age_s >= OVERDUE_AFTER_S,
        "actions": list(item.actions) if item.status == OPEN else [],
        "decision": item.decision,
        "note": item.note,
        "reviewer": item.reviewer,
        "decided_at": iso(item.decided_at) if item.decided_at is not None else None,
    }


def queue_order(item: Item, now_us: int) -> tuple[int, int, str]:
    """Overdue open items first, then by age (oldest first)."""
    overdue = item.status == OPEN and now_us - item.created_at >= OVERDUE_AFTER_S * 1_000_000
    return (0 if overdue else 1, item.created_at, item.item_id)
