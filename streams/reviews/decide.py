"""decide(state, request) -> events, and evolve: the review queue's rules, pure."""

from __future__ import annotations

from dataclasses import replace

from .errors import InvariantViolation
from .model import (
    DECIDED_AS,
    OPEN,
    DecideItem,
    DecisionRefused,
    Event,
    Item,
    ItemDecided,
    ItemOpened,
    Message,
    OpenItem,
)


def decide(state: Item | None, msg: Message) -> list[Event]:
    match msg:
        case OpenItem():
            if state is not None:
                return []  # opened already (a redelivery)
            return [
                ItemOpened(
                    Item(
                        msg.item_id, msg.kind, msg.payment_id, msg.rules, msg.category,
                        msg.evidence, msg.actions, msg.ts,
                    )
                )
            ]  # fmt: skip
        case DecideItem():
            return _decided(state, msg)
    return []


def _decided(item: Item | None, msg: DecideItem) -> list[Event]:
    if item is None:
        return [DecisionRefused(msg, None, "no such item")]
    if item.request_id == msg.request_id:
        return []  # this very request, again: it was applied
    if item.status != OPEN:
        return [DecisionRefused(msg, item, f"already {item.status} by {item.reviewer}")]
    if msg.decision not in item.actions or msg.decision not in DECIDED_AS:
        return [DecisionRefused(msg, item, f"{msg.decision!r} is not one of {list(item.actions)}")]
    decided = replace(
        item,
        status=DECIDED_AS[msg.decision],
        decision=msg.decision,
        note=msg.note,
        reviewer=msg.reviewer,
        decided_at=msg.ts,
        request_id=msg.request_id,
        seq=item.seq + 1,
    )
    return [ItemDecided(decided)]


def evolve(state: Item | None, event: Event) -> Item | None:
    match event:
        case ItemOpened():
            if state is not None:
                raise InvariantViolation(f"item {state.item_id!r} opened twice")
            return event.item
        case ItemDecided():
            if state is None or state.status != OPEN:
                raise InvariantViolation(f"item {event.item.item_id!r} decided twice")
            return event.item
        case DecisionRefused():
            return state
    raise InvariantViolation(f"no evolve rule for {type(event).__name__}")


def evolve_all(state: Item | None, events: list[Event]) -> Item | None:
    for e in events:
        state = evolve(state, e)
    return state
