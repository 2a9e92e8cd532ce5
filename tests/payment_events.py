"""Real payment events for the warehouse tests: the payments core driven through a few flows.

Each message goes through ``decide``/``evolve`` and ``streams.payments_agent.to_records``, as
in the workers, so the records are exactly what paystream.payment-events.v1 holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from streams.agent import Out
from streams.payments import model as pm
from streams.payments.routing import PspInfo
from streams.payments_agent import PaymentsAgent, to_payment_request, to_records

PSPS = (
    PspInfo("cardco", frozenset({"card"}), frozenset({"USD", "EUR"}), 1, Decimal("2.9"), 30),
    PspInfo("backupcard", frozenset({"card"}), frozenset({"USD"}), 2, Decimal("3.5"), 30),
)
T0_US = 1_700_000_000_000_000


@dataclass
class PaymentFlows:
    """Payments keyed by id, one worker owning them all; ``events`` is what it produced."""

    agent: PaymentsAgent = field(default_factory=lambda: PaymentsAgent(PSPS))
    states: dict[str, Any] = field(default_factory=dict)
    events: list[Out] = field(default_factory=list)
    ts_us: int = T0_US

    def send(self, msg: pm.Message) -> None:
        state = self.states.get(msg.key)
        events = self.agent.decide(state, msg)
        self.states[msg.key] = self.agent.evolve(state, events)
        for e in events:
            self.events += [o for o in to_records(e) if o.topic == "payment_events"]

    def tick(self) -> int:
        self.ts_us += 60_000_000  # a minute between messages: hours and minutes show in ts
        return self.ts_us

    def create(self, payment_id: str, **fields: str) -> None:
        req = {
            "payment_id": payment_id,
            "user_id": "u1",
            "type": "pay_in",
            "from_acct": "card_4242424242424242",
            "to_acct": "acct-1",
            "amount": "10.50",
            "currency": "USD",
            "payment_option": "card",
            **fields,
        }
        self.send(
            pm.CreatePayment("service", payment_id, "d", to_payment_request(req), self.tick())
        )
        # The risk engine allows it at once (in the same minute: the flows' times stay).
        self.send(pm.RiskDecided(payment_id, "allow", (), "0", "v1", "{}", self.ts_us))

    def ledger(self, payment_id: str, step: str, accepted: bool = True, reason: str = "") -> None:
        command_id = f"{payment_id}/1/{step}"
        self.send(pm.LedgerReplied(payment_id, command_id, accepted, reason or None, self.tick()))

    def psp(self, payment_id: str, attempt: int, psp: str, kind: str, **kw: str) -> None:
        status = kw.get("status")
        self.send(
            pm.PspReported(
                payment_id,
                attempt,
                psp,
                kind,
                kw.get("token"),
                None if status is None else pm.PspStatus(status),
                kw.get("code"),
                kw.get("psp_reference"),
                False,
                "executor",
                self.tick(),
            )
        )


def flows() -> PaymentFlows:
    """Four payments: a pay-in that falls back to a second PSP and succeeds, a declined pay-in,
    a pay-out the ledger rejects, and a pay-in left at its PSP (stuck in ``processing``)."""
    f = PaymentFlows()
    f.create("pi-ok")
    f.ledger("pi-ok", "authorize")
    f.psp("pi-ok", 1, "cardco", "token_failed", code="psp_unavailable")
    f.psp("pi-ok", 2, "backupcard", "token_created", token="tok-b")
    f.psp("pi-ok", 2, "backupcard", "answered", status="succeeded", psp_reference="ref-b")
    f.ledger("pi-ok", "settle")

    f.create("pi-declined", from_acct="card_4000000000000002", amount="7")
    f.ledger("pi-declined", "authorize")
    f.psp("pi-declined", 1, "cardco", "token_created", token="tok-d")
    f.psp("pi-declined", 1, "cardco", "answered", status="declined", code="card_declined")
    f.ledger("pi-declined", "cancel")

    f.create("po-rejected", type="pay_out", from_acct="acct-1", to_acct="card_x", amount="99")
    f.ledger("po-rejected", "hold", accepted=False, reason="insufficient_funds")

    f.create("pi-stuck", amount="1.25")
    f.ledger("pi-stuck", "authorize")
    return f
