"""Property: no sequence of PSP answers, webhooks, polls, redeliveries and reorderings charges
an order twice, loses a succeeded charge, or moves a terminal status; and nothing is asked of
the ledger or a PSP before the risk engine allowed the payment or a reviewer approved it.

The payments core runs against a deterministic simulation of everything around it: a network
that delivers records in any order, any number of times; PSPs that keep each token's truth
(executing a token twice charges once, as the two-phase protocol promises) and may refuse
tokens; a ledger that answers each command; a risk engine that allows, blocks or sends the
payment to review, and a reviewer who approves or declines. Hypothesis drives the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streams.agent import Out
from streams.payments import model as pm
from streams.payments.routing import PspInfo
from streams.payments.statuses import TERMINAL
from streams.payments_agent import PaymentsAgent, decode_state, encode_state, request_record

PSPS = (
    PspInfo("a", frozenset({"card"}), frozenset({"USD"}), 1, Decimal(1), 0),
    PspInfo("b", frozenset({"card"}), frozenset({"USD"}), 2, Decimal(1), 0),
    PspInfo("c", frozenset({"card"}), frozenset({"USD"}), 3, Decimal(1), 0),
)
TRUTHS = ("succeeded", "declined", "pending_then_succeeded", "pending_then_declined")
RISK_ACTIONS = ("allow", "review", "block")


@dataclass
class Psp:
    refuses_tokens: bool
    truth: str
    tokens: set[str] = field(default_factory=set)
    executed: set[str] = field(default_factory=set)

    def final(self) -> str:
        return self.truth.rsplit("_", 1)[-1]


class PaymentMachine(RuleBasedStateMachine):
    @initialize(
        pay_in=st.booleans(),
        ledger_accepts=st.booleans(),
        refusals=st.tuples(st.booleans(), st.booleans(), st.booleans()),
        truths=st.tuples(*(st.sampled_from(TRUTHS) for _ in PSPS)),
        risk=st.sampled_from(RISK_ACTIONS),
        approves=st.booleans(),
    )
    def start(
        self,
        pay_in: bool,
        ledger_accepts: bool,
        refusals: tuple[bool, ...],
        truths: tuple[str, ...],
        risk: str,
        approves: bool,
    ) -> None:
        self.risk_action = risk
        self.approves = approves
        self.risk_requests: list[str] = []  # kinds of the records to the risk engine
        self.agent = PaymentsAgent(PSPS)
        self.states: dict[str, Any] = {}
        self.network: list[tuple[str, Any]] = []  # (kind, payload) not yet delivered
        self.delivered: list[tuple[str, Any]] = []  # may be delivered again
        self.ledger_accepts = ledger_accepts
        self.psps = {p.name: Psp(r, t) for p, r, t in zip(PSPS, refusals, truths, strict=True)}
        self.ts = 1_000_000
        self.terminal: pm.Status | None = None
        self.ledger_steps: list[str] = []
        req = pm.PaymentRequest(
            "p1",
            "u1",
            pm.PaymentType.pay_in if pay_in else pm.PaymentType.pay_out,
            "card_1" if pay_in else "acct-1",
            "acct-1" if pay_in else "card_1",
            "5.00",
            "USD",
            pm.PaymentOption.card,
        )
        record = request_record("reserve", "service", "k", "d", req, 0)
        self._decide(self.agent.decode("payments", "RequestPayment", record, self._tick()))

    def _tick(self) -> int:
        self.ts += 1
        return self.ts

    def _decide(self, msg: pm.Message) -> None:
        work = [msg]
        while work:
            m = work.pop()
            state = self.states.get(m.key)
            events = self.agent.decide(state, m)
            new = self.agent.evolve(state, events)  # raises on a transition outside the table
            if new is not None:
                self.states[m.key] = decode_state(encode_state(new))
            for e in events:
                step = self.agent.direct_step(e)
                if step is not None:
                    work.append(step)
                for o in self.agent.records(e, step is not None):
                    self._route(o)

    def _route(self, o: Out) -> None:
        if o.topic == "risk_requests":
            self.risk_requests.append(o.record["kind"])
            if o.record["kind"] == "payment":
                self.network.append(("risk", o.record))
        elif o.topic == "reviews":
            self.network.append(("review", o.record))
        elif o.topic == "commands":
            self.ledger_steps.append(o.record["command_id"].rsplit("/", 1)[1])
            self.network.append(("ledger", o.record))
        elif o.topic == "psp_requests":
            self.network.append(("psp", o.record))

    # --- the world answers ---

    def _answer(self, kind: str, r: dict[str, Any]) -> list[pm.Message]:
        ts = self._tick()
        if kind == "risk":
            return [pm.RiskDecided("p1", self.risk_action, ("r",), "1", "v1", "{}", ts)]
        if kind == "review":
            item = r["item_id"]
            return [pm.ReviewDecided("p1", item, self.approves, "rev", "note", ts)]
        if kind == "ledger":
            step = r["command_id"].rsplit("/", 1)[1]
            ok = self.ledger_accepts or step not in ("authorize", "hold")
            return [pm.LedgerReplied("p1", r["command_id"], ok, None if ok else "no", ts)]
        psp = self.psps[r["psp"]]
        n = r["attempt"]

        def result(k: str, **kw: Any) -> pm.PspReported:
            status = kw.pop("status", None)
            return pm.PspReported(
                "p1", n, r["psp"], k, kw.pop("token", None),
                None if status is None else pm.PspStatus(status), None, None, True, "executor", ts,
            )  # fmt: skip

        if kind == "psp" and r["kind"] == "create_token":
            token = f"{r['psp']}-tok"
            if psp.refuses_tokens:
                return [result("token_failed")]
            psp.tokens.add(token)
            return [result("token_created", token=token)]
        token = r["token"]
        if token not in psp.tokens:
            raise AssertionError(f"executed a token the PSP never gave: {token}")
        psp.executed.add(token)  # the PSP charges a token once, however often it is executed
        if psp.truth.startswith("pending"):
            return [result("answered", status="pending"), result("notified", status=psp.final())]
        return [result("answered", status=psp.truth)]

    # --- rules: deliver in any order, again, or lose an answer (unknown) ---

    @precondition(lambda self: bool(self.network))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.network) - 1))
        kind, payload = self.network.pop(i)
        self.delivered.append((kind, payload))
        if kind == "answer":
            self._decide(payload)
        else:
            for m in self._answer(kind, payload):
                self.network.append(("answer", m))

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """A crash before a commit: any earlier record comes again (the executor redoes a call,
        a webhook is sent twice, the ledger's answer is read again)."""
        self.network.append(data.draw(st.sampled_from(self.delivered)))

    @precondition(lambda self: any(k == "psp" and p["kind"] == "execute" for k, p in self.network))
    @rule(data=st.data())
    def lose_an_execute_answer(self, data: st.DataObject) -> None:
        """The PSP charged but the answer was lost: the executor reports unknown."""
        execs = [(k, p) for k, p in self.network if k == "psp" and p["kind"] == "execute"]
        kind, r = data.draw(st.sampled_from(execs))
        self.network.remove((kind, r))
        self.delivered.append((kind, r))
        self._answer(kind, r)  # charged, answer dropped
        unknown = pm.PspReported(
            "p1", r["attempt"], r["psp"], "answered", r["token"], pm.PspStatus.unknown,
            "timeout", None, True, "executor", self._tick(),
        )  # fmt: skip
        self.network.append(("answer", unknown))

    @rule(name=st.sampled_from([p.name for p in PSPS]))
    def outage_starts_or_ends(self, name: str) -> None:
        """A PSP starts or stops refusing new tokens (tokens it gave stay valid)."""
        self.psps[name].refuses_tokens = not self.psps[name].refuses_tokens

    # --- invariants ---

    @invariant()
    def charged_at_most_once(self) -> None:
        charged = [name for name, p in self.psps.items() if p.executed]
        assert len(charged) <= 1, f"executed at {charged}"

    @invariant()
    def a_charge_is_never_lost(self) -> None:
        p = self.states.get("p1")
        if not isinstance(p, pm.PaymentState):
            return
        charged = [x for x in self.psps.values() if x.executed and x.final() == "succeeded"]
        if charged:
            assert p.status not in (pm.Status.failed, pm.Status.reversing, pm.Status.rejected)

    @invariant()
    def terminal_statuses_never_move(self) -> None:
        p = self.states.get("p1")
        if not isinstance(p, pm.PaymentState):
            return
        if self.terminal is not None:
            assert p.status is self.terminal
        elif p.status in TERMINAL:
            self.terminal = p.status

    @invariant()
    def nothing_moves_before_risk_lets_it(self) -> None:
        p = self.states.get("p1")
        let_through = (
            isinstance(p, pm.PaymentState)
            and p.risk is not None
            and (p.risk.action == "allow" or p.risk.review_decision == "approved")
        )
        if not let_through:
            assert not self.ledger_steps, self.ledger_steps
            assert not any(x.tokens or x.executed for x in self.psps.values())
        assert self.risk_requests.count("payment") == 1
        assert self.risk_requests.count("outcome") <= 1

    @invariant()
    def ledger_steps_are_consistent(self) -> None:
        steps = self.ledger_steps
        assert len(steps) == len(set(steps)), f"a ledger step issued twice: {steps}"
        assert not ({"settle", "cancel"} <= set(steps)) and not ({"post", "void"} <= set(steps))

    def teardown(self) -> None:
        # Deliver everything left: the payment ends terminal, or waits on its PSP (unknown).
        for _ in range(200):
            if not self.network:
                break
            kind, payload = self.network.pop(0)
            if kind == "answer":
                self._decide(payload)
            else:
                self.network += [("answer", m) for m in self._answer(kind, payload)]
        p = self.states.get("p1")
        assert isinstance(p, pm.PaymentState)
        assert p.status in TERMINAL or p.status is pm.Status.unknown, p.status
        stopped = {"block": pm.RISK_BLOCKED, "review": None if self.approves else pm.RISK_DECLINED}
        if stopped.get(self.risk_action):
            assert (p.status, p.reason) == (pm.Status.rejected, stopped[self.risk_action])
            assert not self.ledger_steps and self.risk_requests == ["payment", "outcome"]
        ended_badly = p.status in (pm.Status.failed, pm.Status.rejected)
        assert self.risk_requests.count("outcome") == (1 if ended_badly else 0)
        executed = [x for x in self.psps.values() if x.executed]
        if p.status is pm.Status.succeeded:
            assert executed and executed[0].final() == "succeeded" and p.ledger_updated
        if p.status is pm.Status.failed and executed:
            assert executed[0].final() == "declined"


TestPaymentMachine = PaymentMachine.TestCase
TestPaymentMachine.settings = settings(max_examples=500, stateful_step_count=40, deadline=None)
