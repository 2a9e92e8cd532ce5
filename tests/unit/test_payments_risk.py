"""The risk step in the payments' flow: received -> risk_check -> authorizing | rejected
(risk_blocked) | review -> authorizing | rejected (risk_declined). Nothing is asked of the
ledger or a PSP before the risk engine allowed the payment (or a reviewer approved it)."""

from __future__ import annotations

import json

import pytest

from streams.agent import BadInput
from streams.payments import model as pm
from streams.payments.views import payment_view
from streams.payments_agent import PaymentsAgent
from tests.unit.test_payments_core import PSPS, World, _only


def test_a_payment_waits_for_the_risk_engine_before_the_ledger() -> None:
    w = World()
    outs = w.request(risk=None)
    assert _only(outs, "commands") == [] and _only(outs, "psp_requests") == []
    [req] = _only(outs, "risk_requests")
    assert (req.schema, req.key) == ("RiskRequest", "u1")
    assert req.record["kind"] == "payment" and req.record["payment_id"] == "p1"
    assert w.payment().status is pm.Status.risk_check
    outs = w.risk("p1", "allow", ("small",))
    assert [c.schema for c in _only(outs, "commands")] == ["AuthorizePayin"]
    p = w.payment()
    assert p.status is pm.Status.authorizing
    assert payment_view(p)["risk"]["action"] == "allow"
    assert payment_view(p)["risk"]["rules"] == ["small"]


def test_block_rejects_with_the_rules_and_tells_the_risk_engine() -> None:
    w = World()
    w.request(risk=None)
    outs = w.risk("p1", "block", ("velocity_block",))
    assert _only(outs, "commands") == [] and _only(outs, "psp_requests") == []
    p = w.payment()
    assert (p.status, p.reason) == (pm.Status.rejected, pm.RISK_BLOCKED)
    assert payment_view(p)["risk"]["rules"] == ["velocity_block"]
    [ended] = _only(outs, "risk_requests")
    assert ended.record["kind"] == "outcome" and ended.record["status"] == "rejected"
    assert w.risk("p1", "allow") == []  # the first decision stands


def test_review_opens_an_item_then_approve_goes_on() -> None:
    w = World()
    w.request(risk=None)
    outs = w.risk("p1", "review", ("new_account_large",))
    [item] = _only(outs, "reviews")
    assert (item.schema, item.key) == ("ReviewRequest", "risk:p1")
    assert item.record["op"] == "open" and item.record["kind"] == "risk"
    assert item.record["rules"] == ["new_account_large"]
    assert item.record["actions"] == ["approve", "decline"]
    assert json.loads(item.record["evidence"]) == {"score": "0"}
    assert w.payment().status is pm.Status.review
    assert w.review("p1", True, item="risk:other") == []  # not this payment's item
    outs = w.review("p1", True)
    assert [c.schema for c in _only(outs, "commands")] == ["AuthorizePayin"]
    risk = payment_view(w.payment())["risk"]
    assert risk["review_decision"] == "approved" and risk["reviewer"] == "alice"
    assert w.review("p1", False) == []  # exactly once: a later decision changes nothing


def test_review_decline_rejects() -> None:
    w = World()
    w.request(risk=None, type="pay_out", from_acct="acct-1", to_acct="card_4242424242424242")
    w.risk("p1", "review")
    outs = w.review("p1", False)
    assert _only(outs, "commands") == []
    p = w.payment()
    assert (p.status, p.reason) == (pm.Status.rejected, pm.RISK_DECLINED)
    assert [h[0] for h in p.history] == [
        pm.Status.received,
        pm.Status.risk_check,
        pm.Status.review,
        pm.Status.rejected,
    ]


def test_no_eligible_psp_fails_after_the_risk_step() -> None:
    w = World()
    outs = w.request(currency="JPY")
    assert _only(outs, "commands") == []
    p = w.payment()
    assert (p.status, p.reason) == (pm.Status.failed, pm.NO_ELIGIBLE_PSP)
    assert [o.record["kind"] for o in _only(outs, "risk_requests")] == ["payment", "outcome"]


def test_a_psp_decline_is_reported_to_the_risk_engine_once() -> None:
    w = World()
    w.request()
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    outs = w.psp("p1", 1, "cardco", "answered", status="declined", code="card_declined")
    [ended] = _only(outs, "risk_requests")
    assert (ended.record["status"], ended.record["reason"]) == ("failed", "card_declined")
    assert _only(w.ledger("p1", "cancel"), "risk_requests") == []


def test_decisions_decode_from_their_records() -> None:
    agent = PaymentsAgent(PSPS)
    record = {
        "decision_id": "p1/risk", "payment_id": "p1", "user_id": "u1", "type": "pay_in",
        "amount": "1.00", "currency": "USD", "mode": "live", "action": "review", "score": "70",
        "escalated": False, "rules_version": "v2", "rules_sha256": "ab", "matched": ["r1"],
        "features": '{"amount":"1.00"}', "model_version": None, "model_score": "0",
        "contributions": "[]", "ts": 5,
    }  # fmt: skip
    msg = agent.decode("payments", "RiskDecision", record, 9)
    assert isinstance(msg, pm.RiskDecided) and msg.rules == ("r1",) and msg.ts == 9
    assert json.loads(msg.evidence)["features"] == {"amount": "1.00"}
    with pytest.raises(BadInput):
        agent.decode("payments", "RiskDecision", {**record, "mode": "shadow"}, 9)
    with pytest.raises(BadInput):
        agent.decode("payments", "RiskDecision", {**record, "action": "maybe"}, 9)
    event = {
        "event_id": "risk:p1/2", "item_id": "risk:p1", "kind": "risk", "payment_id": "p1",
        "event": "declined", "status": "declined", "rules": [], "category": None,
        "evidence": "{}", "actions": [], "decision": "decline", "note": "n", "reviewer": "bob",
        "request_id": "r", "created_at": 1, "ts": 2,
    }  # fmt: skip
    got = agent.decode("payments", "ReviewEvent", event, 3)
    assert got == pm.ReviewDecided("p1", "risk:p1", False, "bob", "n", 3)
    with pytest.raises(BadInput):
        agent.decode("payments", "ReviewEvent", {**event, "event": "opened"}, 3)
