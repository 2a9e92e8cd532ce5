"""The review queue as an agent of the exactly-once processor: records <-> the pure core.

Input ``paystream.reviews.v1`` (keyed by item id): ``ReviewRequest`` to open an item (from the
payments workers; reconciliation later) or decide one (from the API). Out, in the same
transaction: ``ReviewEvent`` on ``paystream.review-events.v1`` for everything that happened
(the warehouse keeps them), and a risk item's decision on ``paystream.payments.v1`` keyed by
its payment: exactly once, since the item is decided once and the processor commits once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from streams.agent import TS_MAX, BadInput, Out
from streams.payments_fields import ID_CHARS_MAX, opt_str, req_str
from streams.reviews import decide, evolve_all
from streams.reviews import model as rv

ITEM_ID_CHARS_MAX = ID_CHARS_MAX + 16  # <kind>:<subject>
LIST_ITEMS_MAX = 200
_KINDS = frozenset(k.value for k in rv.Kind)


class ReviewsAgent:
    name = "reviews"
    input_topics: tuple[str, ...] = ("reviews",)
    step_topic = "reviews"
    changelog_topic = "reviews_state"

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> rv.Message:
        if schema != "ReviewRequest":
            raise BadInput("not_a_review_request", f"{schema} is not a review request")
        return to_message(record, ts_us)

    def decode_step(self, record: dict[str, Any]) -> rv.Message:
        return to_message(record, 0)

    def decide(self, state: rv.Item | None, message: rv.Message) -> list[rv.Event]:
        return decide(state, message)

    def evolve(self, state: rv.Item | None, events: list[rv.Event]) -> rv.Item | None:
        return evolve_all(state, events)

    def direct_step(self, event: rv.Event) -> rv.Message | None:
        return None

    def records(self, event: rv.Event, direct: bool) -> Iterable[Out]:
        return to_records(event)

    def encode_state(self, state: rv.Item) -> bytes:
        return encode_state(state)

    def decode_state(self, data: bytes) -> rv.Item:
        return decode_state(data)


# --- records in ---


def _ts(v: Any, fallback: int) -> int:
    if type(v) is not int or not 0 <= v <= TS_MAX:
        raise BadInput("bad_timestamp", f"ts {v!r} is out of range")
    return v or fallback


def _names(r: dict[str, Any], name: str) -> tuple[str, ...]:
    v = r.get(name) or []
    if not isinstance(v, list) or len(v) > LIST_ITEMS_MAX:
        raise BadInput("bad_field", f"{name} must be a list of at most {LIST_ITEMS_MAX}")
    return tuple(str(x)[:ID_CHARS_MAX] for x in v)


def _text(r: dict[str, Any], name: str, chars_max: int) -> str:
    v = r.get(name)
    if v is None:
        return ""
    if not isinstance(v, str) or len(v) > chars_max:
        raise BadInput("bad_field", f"{name} must be a string of at most {chars_max} characters")
    return v


def to_message(r: dict[str, Any], log_ts: int) -> rv.Message:
    item_id = req_str(r, "item_id", ITEM_ID_CHARS_MAX)
    request_id = req_str(r, "request_id", ITEM_ID_CHARS_MAX + 64)
    ts = _ts(r.get("ts", 0), log_ts)
    op = r.get("op")
    if op == "open":
        kind = req_str(r, "kind")
        if kind not in _KINDS or not item_id.startswith(kind + ":"):
            raise BadInput("bad_field", f"item {item_id[:48]!r} of kind {kind[:16]!r}")
        evidence = _text(r, "evidence", rv.EVIDENCE_CHARS_MAX) or "{}"
        return rv.OpenItem(
            item_id, kind, opt_str(r, "payment_id"), _names(r, "rules"), opt_str(r, "category"),
            evidence, _names(r, "actions"), request_id, ts,
        )  # fmt: skip
    if op == "decide":
        return rv.DecideItem(
            item_id,
            req_str(r, "decision"),
            _text(r, "note", rv.NOTE_CHARS_MAX),
            _text(r, "reviewer", rv.REVIEWER_CHARS_MAX) or "unknown",
            request_id,
            ts,
        )
    raise BadInput("bad_field", f"op {str(op)[:16]!r} is neither open nor decide")


def decide_record(
    item_id: str, decision: str, note: str, reviewer: str, request_id: str, ts: int
) -> dict[str, Any]:
    """A decide request (the API and the CLI write it)."""
    return {
        "request_id": request_id,
        "op": "decide",
        "item_id": item_id,
        "kind": item_id.split(":", 1)[0],
        "payment_id": None,
        "rules": [],
        "category": None,
        "evidence": "{}",
        "actions": [],
        "decision": decision,
        "note": note,
        "reviewer": reviewer,
        "ts": ts,
    }


# --- records out ---


def event_record(
    item: rv.Item, event: str, request_id: str, ts: int, **over: Any
) -> dict[str, Any]:
    return {
        "event_id": f"{item.item_id}/{item.seq}",
        "item_id": item.item_id,
        "kind": item.kind,
        "payment_id": item.payment_id,
        "event": event,
        "status": item.status,
        "rules": list(item.rules),
        "category": item.category,
        "evidence": item.evidence,
        "actions": list(item.actions),
        "decision": item.decision,
        "note": item.note,
        "reviewer": item.reviewer,
        "request_id": request_id,
        "created_at": item.created_at,
        "ts": ts,
        **over,
    }


def to_records(event: rv.Event) -> Iterator[Out]:
    match event:
        case rv.ItemOpened():
            i = event.item
            yield Out(
                "review_events", "ReviewEvent", i.item_id,
                event_record(i, "opened", f"{i.item_id}/open", i.created_at),
            )  # fmt: skip
        case rv.ItemDecided():
            i = event.item
            ts = i.decided_at or 0
            record = event_record(i, i.status, i.request_id or "", ts)
            yield Out("review_events", "ReviewEvent", i.item_id, record)
            if i.kind == rv.Kind.risk and i.payment_id:
                yield Out("payments", "ReviewEvent", i.payment_id, record)
        case rv.DecisionRefused():
            q = event.request
            base = event.item or rv.Item(
                q.item_id, q.item_id.split(":", 1)[0], None, (), None, "{}", (), q.ts
            )
            yield Out(
                "review_events",
                "ReviewEvent",
                q.item_id,
                event_record(
                    base, "refused", q.request_id, q.ts,
                    event_id=f"{q.item_id}/refused/{q.request_id}", decision=q.decision,
                    note=f"{event.why}; note: {q.note}"[: rv.NOTE_CHARS_MAX], reviewer=q.reviewer,
                ),
            )  # fmt: skip


# --- state <-> changelog bytes ---


def encode_state(i: rv.Item) -> bytes:
    return json.dumps(
        [
            i.item_id, i.kind, i.payment_id, list(i.rules), i.category, i.evidence,
            list(i.actions), i.created_at, i.status, i.decision, i.note, i.reviewer,
            i.decided_at, i.request_id, i.seq,
        ],
        separators=(",", ":"),
    ).encode()  # fmt: skip


def decode_state(data: bytes) -> rv.Item:
    v = json.loads(data)
    return rv.Item(
        v[0], v[1], v[2], tuple(v[3]), v[4], v[5], tuple(v[6]), v[7], v[8], v[9], v[10],
        v[11], v[12], v[13], v[14],
    )  # fmt: skip
