"""Reconciliation's automatic fix for an ``unknown`` order, through the real payments core and
the real records: the settlement's answer (a PspResult that reconciliation writes) turns the
order to ``posting`` with its ledger command ``<order>/settle``; the same answer again (the
file imported twice) changes nothing."""

from __future__ import annotations

from decimal import Decimal

from paystream.recon_settlement import settled_answer
from streams.payments import model as pm
from streams.recon.match import movement
from streams.recon.model import Action, Movement, Order, SettlementRow
from tests.unit.test_payments_core import CODEC, World, _only


def _unknown_order(w: World) -> None:
    w.request()
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    w.psp("p1", 1, "cardco", "answered", status="unknown", code="timeout")
    assert w.payment().status is pm.Status.unknown


def test_an_unknown_order_the_psp_settled_is_posted_once() -> None:
    w = World()
    _unknown_order(w)
    row = SettlementRow(
        2, "PSPREF1", "p1/1", "Settled", "USD", Decimal(0), Decimal("10.00"), "USD", Decimal(0),
        Decimal("9.70"), Decimal("0.30"), "2026-11-30 10:00:00", "20261130",
    )  # fmt: skip
    order = Order("p1/1", "p1", "pay_in", "unknown", Decimal("10.00"), "USD", "cardco", None, 1)
    m = movement("cardco", Movement(row, order))
    assert m is not None and m.action is Action.mark_succeeded
    key, record = settled_answer(m, "cardco", "cardco-abc", w.tick())
    assert key == "p1"
    CODEC.encode("PspResult", record)  # it fits its schema

    def deliver() -> list[object]:
        msg = w.agent.decode("payments", "PspResult", record, w.tick())
        return list(w.send(msg))

    outs = deliver()
    commands = _only(outs, "commands")  # type: ignore[arg-type]
    assert [c.record["command_id"] for c in commands] == ["p1/1/settle"]
    assert w.payment().status is pm.Status.posting
    assert w.payment().attempt is not None and w.payment().attempt.psp_reference == "PSPREF1"
    assert deliver() == []  # imported again: nothing new
    w.ledger("p1", "settle")
    assert w.payment().status is pm.Status.succeeded
    assert deliver() == []


def test_the_internal_checks_light_reading_of_a_state_equals_the_whole_decoding() -> None:
    from paystream.recon_internal import _live, live_order
    from streams.payments_state import decode_state, encode_state

    w = World()
    _unknown_order(w)
    w.request("p2", "k2")
    w.request("p3", "k3", risk=None)
    w.request("p4", "k4")
    w.ledger("p4", "authorize")
    w.psp("p4", 1, "cardco", "token_created", token="t4")
    w.psp("p4", 1, "cardco", "answered", status="succeeded", psp_reference="R4")
    w.ledger("p4", "settle")
    states = [s for s in w.states.values() if isinstance(s, pm.PaymentState)]
    assert {s.status for s in states} >= {pm.Status.unknown, pm.Status.succeeded}
    for s in states:
        data = encode_state(s)
        decoded = decode_state(data)
        assert isinstance(decoded, pm.PaymentState)
        assert live_order(data) == _live(decoded)
