"""The payments core, flow by flow: what each message decides and what records come out.

A fake of nothing: the pure core and its wire mapping, driven like the processor drives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from schemas.codec import Codec
from streams.agent import BadInput, Out
from streams.ledger.errors import InvariantViolation
from streams.payments import model as pm
from streams.payments.routing import PspInfo
from streams.payments.statuses import TERMINAL, TRANSITIONS
from streams.payments.views import admission_view, payment_view
from streams.payments_agent import PaymentsAgent, request_record
from streams.payments_state import decode_state, encode_state

PSPS = (
    PspInfo(
        "cardco", frozenset({"card", "apple_pay"}), frozenset({"USD", "EUR"}), 1, Decimal("2.9"), 30
    ),
    PspInfo("backupcard", frozenset({"card"}), frozenset({"USD"}), 2, Decimal("3.5"), 30),
    PspInfo("bankco", frozenset({"bank_account"}), frozenset({"USD"}), 1, Decimal("0.8"), 0),
)
CODEC = Codec.default()


@dataclass
class World:
    """Keyed states and everything produced, as one worker owning every partition sees it."""

    agent: PaymentsAgent = field(default_factory=lambda: PaymentsAgent(PSPS))
    states: dict[str, Any] = field(default_factory=dict)
    out: list[Out] = field(default_factory=list)
    ts: int = 1_700_000_000_000_000

    def send(self, msg: pm.Message) -> list[Out]:
        produced: list[Out] = []
        work: list[pm.Message] = [msg]
        while work:
            m = work.pop()
            state = self.states.get(m.key)
            events = self.agent.decide(state, m)
            new = self.agent.evolve(state, events)
            if new is not None:
                # Every state goes through its changelog encoding, as it does in the worker.
                self.states[m.key] = decode_state(encode_state(new))
            for e in events:
                step = self.agent.direct_step(e)
                if step is not None:
                    work.append(step)
                for o in self.agent.records(e, step is not None):
                    CODEC.encode(o.schema, o.record)  # every record fits its schema
                    produced.append(o)
        self.out += produced
        return produced

    def tick(self) -> int:
        self.ts += 1000
        return self.ts

    def request(
        self, payment_id: str = "p1", key: str = "k1", risk: str | None = "allow", **kw: str
    ) -> list[Out]:
        """A payment request; the risk engine then decides it (``risk``; None: not yet)."""
        req = {
            "payment_id": payment_id,
            "user_id": "u1",
            "type": "pay_in",
            "from_acct": "card_4242424242424242",
            "to_acct": "acct-1",
            "amount": "10.00",
            "currency": "USD",
            "payment_option": "card",
            **kw,
        }
        record = {
            "stage": "reserve",
            "scope": "service",
            "idempotency_key": key,
            "digest": _digest(req),
            **req,
            "ts": 0,
        }
        outs = self.send(self.agent.decode("payments", "RequestPayment", record, self.tick()))
        if risk is not None and _only(outs, "risk_requests"):
            outs += self.risk(payment_id, risk)
        return outs

    def risk(self, payment_id: str, action: str, rules: tuple[str, ...] = ()) -> list[Out]:
        return self.send(
            pm.RiskDecided(payment_id, action, rules, "0", "v1", '{"score":"0"}', self.tick())
        )

    def review(self, payment_id: str, approved: bool, item: str | None = None) -> list[Out]:
        item_id = item or pm.review_id_of(payment_id)
        return self.send(
            pm.ReviewDecided(payment_id, item_id, approved, "alice", "checked", self.tick())
        )

    def ledger(
        self, payment_id: str, step: str, accepted: bool = True, reason: str | None = None
    ) -> list[Out]:
        return self.send(
            pm.LedgerReplied(payment_id, f"{payment_id}/1/{step}", accepted, reason, self.tick())
        )

    def psp(self, payment_id: str, attempt: int, psp: str, kind: str, **kw: Any) -> list[Out]:
        status = kw.pop("status", None)
        return self.send(
            pm.PspReported(
                payment_id,
                attempt,
                psp,
                kind,
                kw.pop("token", None),
                None if status is None else pm.PspStatus(status),
                kw.pop("code", None),
                kw.pop("psp_reference", None),
                kw.pop("retryable", False),
                kw.pop("source", "executor"),
                self.tick(),
                kw.pop("check", 0),
            )
        )

    def payment(self, payment_id: str = "p1") -> pm.PaymentState:
        p = self.states[payment_id]
        assert isinstance(p, pm.PaymentState)
        return p


def _digest(req: dict[str, str]) -> str:
    import hashlib

    return hashlib.blake2b(repr(sorted(req.items())).encode(), digest_size=8).hexdigest()


def _only(outs: list[Out], topic: str) -> list[Out]:
    return [o for o in outs if o.topic == topic]


def test_pay_in_succeeds_through_token_then_execute_then_settle() -> None:
    w = World()
    outs = w.request()
    cmds = _only(outs, "commands")
    assert [(c.schema, c.key, c.record["command_id"]) for c in cmds] == [
        ("AuthorizePayin", "acct-1", "p1/1/authorize")
    ]
    assert cmds[0].record["reply_to"] == "p1" and cmds[0].record["amount"] == "10.00"
    assert w.payment().status is pm.Status.authorizing
    assert w.states["@idem/service/k1"].payment_id == "p1"

    reqs = _only(w.ledger("p1", "authorize"), "psp_requests")
    assert [(r.record["kind"], r.record["psp"], r.record["token"]) for r in reqs] == [
        ("create_token", "cardco", None)
    ]
    assert reqs[0].key == "p1/1" and reqs[0].record["instrument"] == "card_4242424242424242"
    assert w.payment().status is pm.Status.processing

    reqs = _only(w.psp("p1", 1, "cardco", "token_created", token="tok_1"), "psp_requests")
    assert [(r.record["kind"], r.record["token"]) for r in reqs] == [("execute", "tok_1")]

    cmds = _only(
        w.psp("p1", 1, "cardco", "answered", status="succeeded", psp_reference="ref1"), "commands"
    )
    assert [(c.schema, c.record["psp"]) for c in cmds] == [("SettlePayin", "cardco")]
    assert w.payment().status is pm.Status.posting

    w.ledger("p1", "settle")
    p = w.payment()
    assert p.status is pm.Status.succeeded and p.ledger_updated and p.wallet_updated
    view = payment_view(p)
    assert view["is_complete"] and view["orders"][0]["psp"] == "cardco"
    assert view["orders"][0]["attempts"][0]["psp_reference"] == "ref1"
    assert [h["status"] for h in view["history"]] == [
        "received",
        "risk_check",
        "authorizing",
        "processing",
        "posting",
        "succeeded",
    ]
    # One snapshot per visible change, versions 1.. without gaps.
    versions = [o.record["version"] for o in w.out if o.schema == "PaymentStatusChanged"]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) == 6


def test_the_admission_body_is_the_first_snapshot_whatever_happened_since() -> None:
    w = World()
    w.request()
    first = admission_view(w.payment())
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    assert admission_view(w.payment()) == first
    assert first["status"] == "received" and first["orders"][0]["attempts"] == []


def test_declined_pay_in_cancels_the_reservation_and_fails() -> None:
    w = World()
    w.request()
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    cmds = _only(
        w.psp("p1", 1, "cardco", "answered", status="declined", code="card_declined"), "commands"
    )
    assert [(c.schema, c.record["reason"]) for c in cmds] == [("CancelPayin", "card_declined")]
    p = w.payment()
    assert p.status is pm.Status.failed and p.reason == "card_declined" and not p.ledger_updated
    w.ledger("p1", "cancel")
    assert w.payment().ledger_updated


def test_pay_out_holds_then_posts_or_voids() -> None:
    for answer, final, step in (("succeeded", "succeeded", "post"), ("declined", "failed", "void")):
        w = World()
        outs = w.request(type="pay_out", from_acct="acct-1", to_acct="card_4000000000000002")
        assert [c.schema for c in _only(outs, "commands")] == ["HoldPayout"]
        req = _only(w.ledger("p1", "hold"), "psp_requests")[0]
        assert (
            req.record["direction"] == "pay_out"
            and req.record["instrument"] == "card_4000000000000002"
        )
        w.psp("p1", 1, "cardco", "token_created", token="t")
        cmds = _only(w.psp("p1", 1, "cardco", "answered", status=answer, code="x"), "commands")
        assert [c.schema for c in cmds] == ["PostPayout" if step == "post" else "VoidPayout"]
        assert w.payment().status is (pm.Status.posting if step == "post" else pm.Status.reversing)
        w.ledger("p1", step)
        assert w.payment().status.value == final


def test_a_ledger_rejection_rejects_before_any_psp_is_asked() -> None:
    w = World()
    w.request()
    outs = w.ledger("p1", "authorize", accepted=False, reason="account_not_found")
    assert _only(outs, "psp_requests") == []
    p = w.payment()
    assert p.status is pm.Status.rejected and p.reason == "account_not_found"


def test_no_eligible_psp_fails_without_asking_the_ledger() -> None:
    w = World()
    outs = w.request(currency="JPY")
    assert _only(outs, "commands") == []
    assert w.payment().status is pm.Status.failed and w.payment().reason == pm.NO_ELIGIBLE_PSP


def test_a_failed_token_falls_back_to_the_next_psp_and_records_why() -> None:
    w = World()
    w.request()
    w.ledger("p1", "authorize")
    outs = w.psp("p1", 1, "cardco", "token_failed", code="psp_unavailable", retryable=True)
    reqs = _only(outs, "psp_requests")
    assert [(r.record["attempt"], r.record["psp"], r.record["kind"]) for r in reqs] == [
        (2, "backupcard", "create_token")
    ]
    a2 = w.payment().attempts[-1]
    assert a2.candidates == ("cardco", "backupcard") and "cardco" in a2.routing_reason
    # The second PSP also fails: nothing left, the reservation is dropped.
    outs = w.psp("p1", 2, "backupcard", "token_failed", code="psp_unavailable", retryable=True)
    assert [c.schema for c in _only(outs, "commands")] == ["CancelPayin"]
    assert w.payment().reason == pm.PSP_UNAVAILABLE


def test_after_execute_no_answer_moves_the_order_to_another_psp() -> None:
    w = World()
    w.request()
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "cardco", "token_created", token="t")
    # A token failure report for the executing attempt (a confused executor) changes nothing.
    assert w.psp("p1", 1, "cardco", "token_failed", code="x") == []
    outs = w.psp("p1", 1, "cardco", "answered", status="unknown", code="timeout")
    # Issue 13: the only request is the janitor's first check, at the same PSP with the same
    # token, 10 s later; never a token at another PSP.
    (check,) = (o.record for o in _only(outs, "psp_requests"))
    assert (check["kind"], check["psp"], check["token"], check["check"]) == (
        "resolve",
        "cardco",
        "t",
        1,
    )
    assert check["not_before"] == w.ts + 10_000_000
    assert w.payment().status is pm.Status.unknown
    # The janitor's later answer settles it on the same PSP.
    w.psp("p1", 1, "cardco", "answered", status="succeeded")
    assert w.payment().status is pm.Status.posting


def test_asynchronous_psp_pending_then_notified() -> None:
    w = World()
    w.request(from_acct="bank_DE89370400440532013000", payment_option="bank_account")
    w.ledger("p1", "authorize")
    w.psp("p1", 1, "bankco", "token_created", token="t")
    w.psp("p1", 1, "bankco", "answered", status="pending")
    assert w.payment().status is pm.Status.pending
    assert w.psp("p1", 1, "bankco", "notified", status="pending") == []  # a duplicate
    w.psp("p1", 1, "bankco", "notified", status="succeeded")
    assert w.payment().status is pm.Status.posting
    # A late pending (out of order) never moves it back.
    assert w.psp("p1", 1, "bankco", "notified", status="pending") == []
    assert w.psp("p1", 1, "bankco", "notified", status="declined") == []
    assert w.payment().status is pm.Status.posting


def test_the_same_key_replays_and_a_reused_key_or_payment_changes_nothing() -> None:
    w = World()
    w.request()
    before = dict(w.states)
    assert w.request() == []  # the same request again
    assert w.request(amount="11.00") == []  # the same key, another body: the API says 422
    assert w.states == before
    assert w.request(key="k2") == []  # another key for the same payment: the API says 409
    assert w.states["@idem/service/k2"].payment_id == "p1"
    assert w.payment().idempotency_key == "k1"


def test_stale_and_stray_answers_are_ignored() -> None:
    w = World()
    w.request()
    assert w.psp("p1", 1, "cardco", "token_created", token="t") == []  # still authorizing
    w.ledger("p1", "authorize")
    assert w.psp("p1", 2, "cardco", "token_created", token="t") == []  # no attempt 2
    assert w.psp("p1", 1, "walletco", "token_created", token="t") == []  # not its PSP
    assert w.ledger("p1", "authorize") == []  # a repeated answer
    assert w.ledger("zz", "settle") == []  # a payment that does not exist
    assert w.ledger("p1", "bogus") == []


def test_every_status_has_its_row_and_terminal_ones_none() -> None:
    assert set(TRANSITIONS) == set(pm.Status)
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_a_transition_outside_the_table_stops_the_worker() -> None:
    w = World()
    w.request()
    with pytest.raises(InvariantViolation):
        w.agent.evolve(w.payment(), [pm.StatusChanged(pm.Status.succeeded, None, 1)])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_id", "has/slash"),
        ("payment_id", "@idem"),
        ("type", "refund"),
        ("payment_option", "cash"),
        ("currency", "usd"),
        ("amount", ""),
        ("user_id", None),
        ("stage", "later"),
        ("idempotency_key", "x" * 256),
        ("ts", -1),
    ],
)
def test_bad_requests_are_refused_with_a_code(field: str, value: Any) -> None:
    req = pm.PaymentRequest(
        "p1",
        "u1",
        pm.PaymentType.pay_in,
        "card_4242424242424242",
        "a",
        "1.00",
        "USD",
        pm.PaymentOption.card,
    )
    record = request_record("reserve", "service", "k", "d", req, 0)
    record[field] = value
    with pytest.raises(BadInput):
        PaymentsAgent(PSPS).decode("payments", "RequestPayment", record, 1)


def test_a_ledger_outcome_without_reply_to_is_refused() -> None:
    record = {
        "event_id": "e",
        "command_id": "c",
        "command_type": "deposit",
        "account": "a",
        "status": "accepted",
        "reason": None,
        "digest": "d",
        "reply_to": None,
        "ts": 1,
    }
    with pytest.raises(BadInput):
        PaymentsAgent(PSPS).decode("payments", "CommandOutcome", record, 1)
    record["reply_to"] = "p1"
    msg = PaymentsAgent(PSPS).decode("payments", "CommandOutcome", record, 5)
    assert msg == pm.LedgerReplied("p1", "c", True, None, 5)
