"""The payments core's resilience rules (issue 13): routing by live health and amount, the
fallback flag, the janitor's and the poller's chains on their schedules, the hand-off to
review, and what late, repeated and stray answers do (nothing)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from schemas.codec import Codec
from streams.agent import Out
from streams.payments import model as pm
from streams.payments.routing import PspHealth, PspInfo, choose, route
from streams.payments.schedule import (
    JANITOR_SCHEDULE_S,
    POLLS_MAX,
    janitor_delay_us,
    poll_delay_us,
)
from streams.payments_agent import PaymentsAgent
from streams.reviews_agent import ReviewsAgent, decide_record, to_message
from tests.unit.test_payments_core import PSPS, World, _only

SEC = 1_000_000


def requests(outs: list[Out]) -> list[dict[str, Any]]:
    return [o.record for o in _only(outs, "psp_requests")]


def to_unknown(w: World, instrument: str = "card_4000000000000259") -> None:
    w.request(from_acct=instrument)
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    w.psp("p1", 1, "cardco", "answered", status="unknown", code="connection_dropped")
    assert w.payment().status is pm.Status.unknown


def test_the_schedules_are_as_documented() -> None:
    assert (10, 60, 600, 3600, *(86_400,) * 7) == JANITOR_SCHEDULE_S
    assert [janitor_delay_us(n) for n in (1, 2, 3, 4, 5, 11)] == [
        10 * SEC, 60 * SEC, 600 * SEC, 3600 * SEC, 86_400 * SEC, 86_400 * SEC
    ]  # fmt: skip
    assert janitor_delay_us(12) is None and janitor_delay_us(0) is None
    assert [poll_delay_us(n) for n in range(1, 10)] == [
        s * SEC for s in (1, 2, 4, 8, 16, 32, 64, 100, 100)
    ]
    assert poll_delay_us(POLLS_MAX) == 100 * SEC and poll_delay_us(POLLS_MAX + 1) is None


def test_the_janitor_asks_the_same_psp_on_its_schedule_then_settles() -> None:
    w = World()
    to_unknown(w)
    first = w.out[-3:]
    (check,) = requests(first) or requests(w.out)[-1:]
    assert (check["kind"], check["psp"], check["token"], check["check"]) == (
        "resolve",
        "cardco",
        "t",
        1,
    )
    # Still no definitive answer (the PSP is down): the next check, a minute later.
    outs = w.psp("p1", 1, "cardco", "answered", status="unknown", code="timeout", check=1, source="janitor")  # fmt: skip
    (nxt,) = requests(outs)
    assert nxt["check"] == 2 and nxt["not_before"] == w.ts + 60 * SEC
    # A repeated answer to check 1 asks nothing more.
    assert requests(w.psp("p1", 1, "cardco", "answered", status="unknown", check=1, source="janitor")) == []  # fmt: skip
    outs = w.psp("p1", 1, "cardco", "answered", status="succeeded", psp_reference="R", check=2, source="janitor")  # fmt: skip
    assert [c.schema for c in _only(outs, "commands")] == ["SettlePayin"]
    assert w.payment().status is pm.Status.posting
    w.ledger("p1", "settle")
    p = w.payment()
    assert p.status is pm.Status.succeeded and p.attempt is not None
    assert (p.attempt.psp, p.attempt.checks, p.attempt.psp_reference) == ("cardco", 2, "R")
    assert len(p.attempts) == 1  # never another PSP


def test_the_janitor_settles_a_decline_as_failed() -> None:
    w = World()
    to_unknown(w)
    outs = w.psp("p1", 1, "cardco", "answered", status="declined", code="card_declined", check=1, source="janitor")  # fmt: skip
    assert [c.schema for c in _only(outs, "commands")] == ["CancelPayin"]
    assert (w.payment().status, w.payment().reason) == (pm.Status.failed, "card_declined")


def test_unknown_after_the_last_check_goes_to_review_and_stays_unknown() -> None:
    w = World()
    to_unknown(w)
    for n in range(1, len(JANITOR_SCHEDULE_S) + 1):
        outs = w.psp("p1", 1, "cardco", "answered", status="unknown", code="timeout", check=n, source="janitor")  # fmt: skip
        if n < len(JANITOR_SCHEDULE_S):
            assert requests(outs)[0]["check"] == n + 1
    (review,) = [o for o in outs if o.topic == "reviews"]
    item = f"recon:psp/p1/1/1/{len(JANITOR_SCHEDULE_S)}"
    assert (review.schema, review.key, review.record["item_id"]) == ("ReviewRequest", item, item)
    assert (review.record["kind"], review.record["category"], review.record["op"]) == (
        "recon",
        "psp_unresolved",
        "open",
    )
    assert (review.record["payment_id"], review.record["actions"]) == ("p1", ["resolve"])
    evidence = json.loads(review.record["evidence"])
    assert (evidence["status"], evidence["checks"], evidence["psp"]) == (
        "unknown",
        len(JANITOR_SCHEDULE_S),
        "cardco",
    )
    assert "janitor" in evidence["reason"] and requests(outs) == []
    p = w.payment()
    assert p.status is pm.Status.unknown and p.attempt is not None and p.attempt.review
    # Still, a definitive answer that comes later (an operator's replay, a webhook) settles it.
    w.psp("p1", 1, "cardco", "notified", status="succeeded")
    assert w.payment().status is pm.Status.posting


def test_the_janitor_finding_it_pending_hands_it_to_the_poller() -> None:
    w = World()
    w.request(from_acct="bank_DE89370400440532013000", payment_option="bank_account")
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "bankco", "token_created", token="t")
    w.psp("p1", 1, "bankco", "answered", status="unknown", code="timeout")
    outs = w.psp("p1", 1, "bankco", "answered", status="pending", check=1, source="janitor")
    (poll,) = requests(outs)
    assert (poll["kind"], poll["check"], poll["not_before"]) == ("status", 2, w.ts + 1 * SEC)
    assert w.payment().status is pm.Status.pending
    # The janitor's late duplicate is stale: the chain moved on.
    assert requests(w.psp("p1", 1, "bankco", "answered", status="pending", check=1, source="janitor")) == []  # fmt: skip


def test_the_poller_polls_a_pending_order_with_backoff_one_at_a_time() -> None:
    w = World()
    w.request(from_acct="bank_DE89370400440532013000", payment_option="bank_account")
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "bankco", "token_created", token="t")
    outs = w.psp("p1", 1, "bankco", "answered", status="pending")
    (poll,) = requests(outs)
    assert (poll["kind"], poll["check"], poll["not_before"]) == ("status", 1, w.ts + SEC)
    # A webhook saying pending, or the execute's answer again, asks nothing more.
    assert requests(w.psp("p1", 1, "bankco", "notified", status="pending")) == []
    assert requests(w.psp("p1", 1, "bankco", "answered", status="pending")) == []
    outs = w.psp("p1", 1, "bankco", "answered", status="pending", check=1, source="poll")
    assert [(r["check"], r["not_before"] - w.ts) for r in requests(outs)] == [(2, 2 * SEC)]
    # A poll whose call failed: the next poll all the same (it stays pending).
    outs = w.psp("p1", 1, "bankco", "answered", status="unknown", code="timeout", check=2, source="poll")  # fmt: skip
    assert [(r["check"], r["not_before"] - w.ts) for r in requests(outs)] == [(3, 4 * SEC)]
    assert w.payment().status is pm.Status.pending
    w.psp("p1", 1, "bankco", "answered", status="succeeded", check=3, source="poll")
    assert w.payment().status is pm.Status.posting


def test_a_pending_order_goes_to_review_after_the_last_poll() -> None:
    w = World()
    w.request(from_acct="bank_DE89370400440532013000", payment_option="bank_account")
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "bankco", "token_created", token="t")
    w.psp("p1", 1, "bankco", "answered", status="pending")
    for n in range(1, POLLS_MAX + 1):
        outs = w.psp("p1", 1, "bankco", "answered", status="pending", check=n, source="poll")
    reviews = [json.loads(o.record["evidence"]) for o in outs if o.topic == "reviews"]
    assert [r["status"] for r in reviews] == ["pending"]
    assert w.payment().status is pm.Status.pending


def test_routing_skips_a_psp_whose_breaker_is_open_and_records_why() -> None:
    health = {"cardco": PspHealth("open", 1_700_000_000 * SEC)}
    w = World(agent=PaymentsAgent(PSPS, lambda: health))
    w.request()
    outs = w.ledger("p1", "authorize")
    (req,) = requests(outs)
    assert (req["psp"], req["kind"], req["fallback"]) == ("backupcard", "create_token", True)
    a = w.payment().attempts[0]
    assert a.candidates == ("cardco", "backupcard")
    assert "cardco skipped: breaker open since 2023-11-14T22:13:20Z" in a.routing_reason
    assert "backupcard: priority 2" in a.routing_reason
    # backupcard fails to create a token: cardco is still untried, so it gets the order.
    outs = w.psp("p1", 1, "backupcard", "token_failed", code="psp_unavailable", retryable=True)
    (req,) = requests(outs)
    assert (req["psp"], req["attempt"], req["fallback"]) == ("cardco", 2, False)
    assert "every breaker is open" in w.payment().attempts[1].routing_reason


def test_a_half_open_breaker_gets_its_trials_from_routing() -> None:
    w = World(agent=PaymentsAgent(PSPS, lambda: {"cardco": PspHealth("half_open", 0)}))
    w.request()
    (req,) = requests(w.ledger("p1", "authorize"))
    assert req["psp"] == "cardco" and req["fallback"] is True


def test_a_circuit_open_token_failure_falls_back_at_once() -> None:
    w = World()
    w.request()
    w.ledger("p1", "authorize")
    outs = w.psp("p1", 1, "cardco", "token_failed", code="circuit_open", retryable=True)
    (req,) = requests(outs)
    assert (req["psp"], req["fallback"]) == ("backupcard", False)
    assert w.payment().attempts[0].code == "circuit_open"
    assert (
        "cardco could not create a token (circuit_open)" in w.payment().attempts[1].routing_reason
    )


def test_amount_rules() -> None:
    small = PspInfo("small", frozenset({"card"}), frozenset({"USD"}), 1, Decimal(1), 0,
                    amount_max=Decimal("100.00"))  # fmt: skip
    big = PspInfo("big", frozenset({"card"}), frozenset({"USD"}), 2, Decimal(2), 0,
                  amount_min=Decimal("50"))  # fmt: skip
    assert route([small, big], "card", "USD", "10.00").candidates == ("small",)
    assert route([small, big], "card", "USD", "75.00").candidates == ("small", "big")
    assert route([small, big], "card", "USD", "100.01").candidates == ("big",)
    assert route([small, big], "card", "USD", "nonsense").candidates == ("small", "big")
    assert "for 1e9" in route([small], "card", "USD", "1e9").reason
    assert choose([small, big], ("small", "big"), ("small", "big"), {}) is None


def test_the_review_queue_takes_the_janitors_hand_off_and_resolving_it_leaves_the_order() -> None:
    """The recon item the payments open is one the review queue accepts (through the Avro
    codec), with resolve as its only decision, and no decision of it reaches the payments."""
    w = World()
    to_unknown(w)
    for n in range(1, len(JANITOR_SCHEDULE_S) + 1):
        outs = w.psp("p1", 1, "cardco", "answered", status="unknown", code="timeout", check=n, source="janitor")  # fmt: skip
    (review,) = [o for o in outs if o.topic == "reviews"]
    codec = Codec.default()
    name, record = codec.decode(codec.encode(review.schema, review.record))
    queue = ReviewsAgent()
    msg = queue.decode("reviews", name, record, w.ts)
    item = queue.evolve(None, queue.decide(None, msg))
    assert item is not None and (item.kind, item.category, item.actions) == (
        "recon",
        "psp_unresolved",
        ("resolve",),
    )
    decided = queue.decide(item, to_message(decide_record(item.item_id, "resolve", "charged", "ops", "r1", w.ts), w.ts))  # fmt: skip
    assert not [o for e in decided for o in queue.records(e, False) if o.topic == "payments"]
    assert queue.evolve(item, decided).status == "resolved"  # type: ignore[union-attr]
