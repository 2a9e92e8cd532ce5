"""The review queue's core and wire: an item opens once and is decided once (the first
decision in its log wins; later ones are refused and recorded), and a risk item's decision
goes to its payment in the same step."""

from __future__ import annotations

import pytest

from schemas.codec import Codec
from streams.agent import BadInput
from streams.reviews import model as rv
from streams.reviews.decide import decide, evolve_all
from streams.reviews.views import item_view, queue_order
from streams.reviews_agent import ReviewsAgent, decide_record, decode_state, encode_state

CODEC = Codec.default()
T0 = 1_800_000_000_000_000


def _open(item: str = "risk:p1", ts: int = T0) -> rv.OpenItem:
    return rv.OpenItem(
        item,
        "risk",
        "p1",
        ("big",),
        None,
        '{"score":"50"}',
        ("approve", "decline"),
        f"{item}/open",
        ts,
    )


def _decide(decision: str, request: str, item: str = "risk:p1") -> rv.DecideItem:
    return rv.DecideItem(item, decision, "why", "ana", request, T0 + 5)


def test_first_decision_wins_and_later_ones_are_refused() -> None:
    s = evolve_all(None, decide(None, _open()))
    assert s is not None and s.status == rv.OPEN
    assert decide(s, _open()) == []  # opened once
    events = decide(s, _decide("approve", "r1"))
    s = evolve_all(s, events)
    assert s is not None and (s.status, s.reviewer, s.request_id, s.seq) == (
        "approved",
        "ana",
        "r1",
        2,
    )
    assert decide(s, _decide("approve", "r1")) == []  # the same request again: applied already
    [refused] = decide(s, _decide("decline", "r2"))
    assert isinstance(refused, rv.DecisionRefused) and "already approved" in refused.why
    assert evolve_all(s, [refused]) == s


def test_a_decision_the_item_does_not_allow_or_for_no_item_is_refused() -> None:
    s = evolve_all(None, decide(None, _open()))
    [e] = decide(s, _decide("resolve", "r1"))
    assert isinstance(e, rv.DecisionRefused) and "not one of" in e.why
    [e] = decide(None, _decide("approve", "r1", item="risk:nope"))
    assert isinstance(e, rv.DecisionRefused) and e.why == "no such item"


def test_records_and_state_through_the_wire() -> None:
    agent = ReviewsAgent()
    opened = agent.decode("reviews", "ReviewRequest", CODEC.decode(CODEC.encode("ReviewRequest", {
        "request_id": "risk:p1/open", "op": "open", "item_id": "risk:p1", "kind": "risk",
        "payment_id": "p1", "rules": ["big"], "category": None, "evidence": "{}",
        "actions": ["approve", "decline"], "decision": None, "note": None, "reviewer": None,
        "ts": T0,
    }))[1], T0)  # fmt: skip
    events = agent.decide(None, opened)
    s = agent.evolve(None, events)
    assert s is not None and decode_state(encode_state(s)) == s
    [out] = [o for e in events for o in agent.records(e, False)]
    assert (out.topic, out.record["event"], out.record["event_id"]) == (
        "review_events",
        "opened",
        "risk:p1/1",
    )
    msg = agent.decode(
        "reviews",
        "ReviewRequest",
        decide_record("risk:p1", "decline", "stolen", "bo", "r9", T0 + 1),
        T0,
    )
    events = agent.decide(s, msg)
    outs = [o for e in events for o in agent.records(e, False)]
    assert [(o.topic, o.key, o.record["event"]) for o in outs] == [
        ("review_events", "risk:p1", "declined"), ("payments", "p1", "declined"),
    ]  # fmt: skip
    for o in outs:
        CODEC.encode(o.schema, o.record)
    late = agent.decide(
        agent.evolve(s, events),
        agent.decode(
            "reviews",
            "ReviewRequest",
            decide_record("risk:p1", "approve", "", "cy", "r10", T0 + 2),
            T0,
        ),
    )
    [o] = [o for e in late for o in agent.records(e, False)]
    assert (o.topic, o.record["event"], o.record["event_id"], o.record["reviewer"]) == (
        "review_events",
        "refused",
        "risk:p1/refused/r10",
        "cy",
    )
    with pytest.raises(BadInput):
        agent.decode(
            "reviews",
            "ReviewRequest",
            {**decide_record("risk:p1", "x", "", "", "r", 1), "op": "delete"},
            1,
        )
    with pytest.raises(BadInput):  # an item's id names its kind
        agent.decode(
            "reviews",
            "ReviewRequest",
            {
                **CODEC.decode(
                    CODEC.encode(
                        "ReviewRequest",
                        {
                            **decide_record("recon:x", "x", "", "", "r", 1),
                            "op": "open",
                            "kind": "risk",
                        },
                    )
                )[1]
            },
            1,
        )


def test_the_queue_lists_overdue_items_first_then_oldest() -> None:
    now = T0 + 5 * 3600 * 1_000_000
    old = evolve_all(None, decide(None, _open("risk:old", T0)))
    new = evolve_all(None, decide(None, _open("risk:new", now - 60_000_000)))
    newer = evolve_all(None, decide(None, _open("risk:newer", now - 1_000_000)))
    assert old and new and newer
    order = sorted([newer, new, old], key=lambda i: queue_order(i, now))
    assert [i.item_id for i in order] == ["risk:old", "risk:new", "risk:newer"]
    v = item_view(old, now)
    assert v["overdue"] and v["age_s"] == 5 * 3600 and v["evidence"] == {"score": "50"}
    assert v["actions"] == ["approve", "decline"] and not item_view(new, now)["overdue"]
