"""Property: no sequence of PSP answers, webhooks, polls, janitor checks, breaker changes,
delayed and duplicated retries, crashes and redeliveries charges an order twice, loses a
succeeded charge, or moves a terminal status; and nothing is asked of the ledger or a PSP
before the risk engine allowed the payment or a reviewer approved it.

The payments core runs against a deterministic simulation of everything around it: a clock;
a network that delivers records in any order, any number of times, never before their
``not_before``; an executor that behaves as connectors/psp/handler.py does (an open breaker
refuses a token at once, or retries it on the order's last PSP; an execute the PSP refused
is retried later with the same token, then reported unknown; an ambiguous one is unknown at
once; a janitor's resolve executes a token that never was); PSPs that keep each token's truth
(executing a token twice charges once, as the two-phase protocol promises), go down and come
back, complete asynchronous payments later and send webhooks; circuit breakers that the
worker's routing reads; a ledger that answers each command; a risk engine that allows, blocks
or sends the payment to review, and a reviewer who approves or declines. Hypothesis drives it
all.
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
from streams.payments.routing import PspHealth, PspInfo
from streams.payments.statuses import TERMINAL
from streams.payments_agent import PaymentsAgent, request_record
from streams.payments_state import decode_state, encode_state

PSPS = (
    PspInfo("a", frozenset({"card"}), frozenset({"USD"}), 1, Decimal(1), 0),
    PspInfo("b", frozenset({"card"}), frozenset({"USD"}), 2, Decimal(1), 0),
    PspInfo("c", frozenset({"card"}), frozenset({"USD"}), 3, Decimal(1), 0),
)
TRUTHS = ("succeeded", "declined", "pending_then_succeeded", "pending_then_declined")
SEC = 1_000_000
RETRY_TRIES_MAX = 2  # the simulated executor's retries through its delay topics
RISK_ACTIONS = ("allow", "review", "block")


@dataclass
class Psp:
    down: bool  # refuses every call (an outage): nothing happens at the PSP
    truth: str
    tokens: set[str] = field(default_factory=set)
    executed: set[str] = field(default_factory=set)
    completed: bool = False  # an asynchronous payment has completed

    def final(self) -> str:
        return self.truth.rsplit("_", 1)[-1]

    def status(self, token: str) -> str:
        if token not in self.executed:
            return "created"
        if self.truth.startswith("pending") and not self.completed:
            return "pending"
        return self.final()


@dataclass
class Item:
    kind: str  # risk | review | ledger | psp | answer
    payload: Any
    not_before: int = 0


class PaymentMachine(RuleBasedStateMachine):
    @initialize(
        pay_in=st.booleans(),
        ledger_accepts=st.booleans(),
        downs=st.tuples(st.booleans(), st.booleans(), st.booleans()),
        truths=st.tuples(*(st.sampled_from(TRUTHS) for _ in PSPS)),
        breakers=st.tuples(*(st.sampled_from(["closed", "open", "half_open"]) for _ in PSPS)),
        risk=st.sampled_from(RISK_ACTIONS),
        approves=st.booleans(),
    )
    def start(
        self,
        pay_in: bool,
        ledger_accepts: bool,
        downs: tuple[bool, ...],
        truths: tuple[str, ...],
        breakers: tuple[str, ...],
        risk: str,
        approves: bool,
    ) -> None:
        self.risk_action = risk
        self.approves = approves
        self.risk_requests: list[str] = []  # kinds of the records to the risk engine
        self.breakers = {p.name: b for p, b in zip(PSPS, breakers, strict=True)}
        self.agent = PaymentsAgent(PSPS, self._health)
        self.states: dict[str, Any] = {}
        self.network: list[Item] = []  # not delivered yet
        self.delivered: list[Item] = []  # may be delivered again
        self.ledger_accepts = ledger_accepts
        self.psps = {p.name: Psp(d, t) for p, d, t in zip(PSPS, downs, truths, strict=True)}
        self.now = 1_000 * SEC
        self.terminal: pm.Status | None = None
        self.ledger_steps: list[str] = []
        self.executed_early = 0
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

    def _health(self) -> dict[str, PspHealth]:
        return {name: PspHealth(state, 0) for name, state in self.breakers.items()}

    def _tick(self) -> int:
        self.now += 1000
        return self.now

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
                self.network.append(Item("risk", o.record))
        elif o.topic == "reviews" and o.record["kind"] == pm.REVIEW_KIND:
            self.network.append(Item("review", o.record))
        elif o.topic == "commands":
            self.ledger_steps.append(o.record["command_id"].rsplit("/", 1)[1])
            self.network.append(Item("ledger", o.record))
        elif o.topic == "psp_requests":
            self.network.append(Item("psp", o.record, o.record["not_before"] or 0))

    # --- the world answers ---

    def _answer(self, item: Item) -> list[Item]:
        """What comes back for a delivered request: answers, or the request again (retried
        by the executor through a delay topic)."""
        ts = self._tick()
        r = item.payload
        if item.kind == "risk":
            decided = pm.RiskDecided("p1", self.risk_action, ("r",), "1", "v1", "{}", ts)
            return [Item("answer", decided)]
        if item.kind == "review":
            reviewed = pm.ReviewDecided("p1", r["item_id"], self.approves, "rev", "note", ts)
            return [Item("answer", reviewed)]
        if item.kind == "ledger":
            step = r["command_id"].rsplit("/", 1)[1]
            ok = self.ledger_accepts or step not in ("authorize", "hold")
            return [Item("answer", pm.LedgerReplied("p1", r["command_id"], ok, None if ok else "no", ts))]  # fmt: skip
        if r["not_before"] and self.now < r["not_before"]:
            self.executed_early += 1
        psp = self.psps[r["psp"]]
        kind = r["kind"]

        def result(k: str, status: str | None = None, **kw: Any) -> Item:
            source = {"status": "poll", "resolve": "janitor"}.get(kind, "executor")
            return Item("answer", pm.PspReported(
                "p1", r["attempt"], r["psp"], k, kw.get("token", r["token"]),
                None if status is None else pm.PspStatus(status), kw.get("code"), None, True,
                source, ts, r["check"],
            ))  # fmt: skip

        def retry_or(final: Item) -> list[Item]:
            tries = r["tries"] + 1
            if tries >= RETRY_TRIES_MAX:
                return [final]  # exhausted: dead letter, and the failure reported
            again = {**r, "tries": tries, "not_before": self.now + tries * 5 * SEC}
            return [Item("psp", again, again["not_before"])]

        if kind == "create_token":
            if self.breakers[r["psp"]] == "open" or psp.down:
                failed = result("token_failed", code="circuit_open" if not psp.down else "psp_unavailable")  # fmt: skip
                return [failed] if r["fallback"] else retry_or(failed)
            token = f"{r['psp']}-tok"
            psp.tokens.add(token)
            return [result("token_created", token=token)]
        token = r["token"]
        if token not in psp.tokens:
            raise AssertionError(f"executed a token the PSP never gave: {token}")
        if psp.down:  # refused: nothing happened at the PSP
            unknown = result("answered", "unknown", code="psp_unavailable")
            retried = kind == "resolve" or (kind == "execute" and not r["check"])
            return retry_or(unknown) if retried else [unknown]
        if kind == "status":
            return [self._status_answer(psp, token, result)]
        if kind == "resolve" and psp.status(token) != "created":
            return [self._status_answer(psp, token, result)]
        # execute, or a resolve of a token never executed: the PSP charges it (once).
        psp.executed.add(token)
        out = [self._status_answer(psp, token, result)]
        if psp.truth.startswith("pending"):
            out.append(result("notified", psp.status(token)))  # its webhook
        return out

    def _status_answer(self, psp: Psp, token: str, result: Any) -> Item:
        status = psp.status(token)
        if status == "created":
            return result("answered", "unknown", code="not_executed")  # type: ignore[no-any-return]
        return result("answered", status)  # type: ignore[no-any-return]

    def _due(self) -> list[int]:
        return [i for i, it in enumerate(self.network) if it.not_before <= self.now]

    # --- rules: deliver in any order, again, lose, delay, break ---

    @precondition(lambda self: bool(self._due()))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from(self._due()))
        item = self.network.pop(i)
        self.delivered.append(item)
        if item.kind == "answer":
            self._decide(item.payload)
        else:
            self.network += self._answer(item)

    @precondition(lambda self: bool(self.network))
    @rule(dt=st.sampled_from([1, 5, 60, 600, 3600, 86_400]))
    def time_passes(self, dt: int) -> None:
        self.now += dt * SEC
        for name, psp in self.psps.items():
            pending = psp.executed and psp.truth.startswith("pending") and not psp.completed
            if pending and dt >= 5:
                psp.completed = True  # and its webhook is sent
                token = next(iter(psp.executed))
                done = pm.PspReported("p1", self._attempt_of(name), name, "notified", token,
                                      pm.PspStatus(psp.final()), None, None, False, "webhook",
                                      self._tick())  # fmt: skip
                self.network.append(Item("answer", done))

    def _attempt_of(self, psp: str) -> int:
        p = self.states.get("p1")
        if isinstance(p, pm.PaymentState):
            for a in p.attempts:
                if a.psp == psp:
                    return a.n
        return 1

    @precondition(lambda self: bool(self.delivered))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """A crash before a commit: any earlier record comes again (the executor redoes a
        call or a retry, a webhook is sent twice, the ledger's answer is read again)."""
        again = data.draw(st.sampled_from(self.delivered))
        self.network.append(Item(again.kind, again.payload, again.not_before))

    @precondition(
        lambda self: any(
            it.kind == "psp" and it.payload["kind"] == "execute" and it.not_before <= self.now
            for it in self.network
        )
    )
    @rule(data=st.data())
    def lose_an_execute_answer(self, data: st.DataObject) -> None:
        """The PSP charged but the answer was lost (a dropped connection, a timeout): the
        executor reports unknown at once (it never executes again by itself)."""
        execs = [
            it
            for it in self.network
            if it.kind == "psp" and it.payload["kind"] == "execute" and it.not_before <= self.now
        ]
        item = data.draw(st.sampled_from(execs))
        self.network.remove(item)
        self.delivered.append(item)
        r = item.payload
        if self.psps[r["psp"]].down:  # refused: the executor retries or reports as usual
            self.network += self._answer(item)
            return
        self._answer(item)  # charged, answer dropped
        unknown = pm.PspReported(
            "p1", r["attempt"], r["psp"], "answered", r["token"], pm.PspStatus.unknown,
            "connection_dropped", None, True, "executor", self._tick(), r["check"],
        )  # fmt: skip
        self.network.append(Item("answer", unknown))

    @rule(name=st.sampled_from([p.name for p in PSPS]))
    def outage_starts_or_ends(self, name: str) -> None:
        """A PSP goes down (refuses every call; tokens it gave stay valid) or comes back."""
        self.psps[name].down = not self.psps[name].down

    @rule(name=st.sampled_from([p.name for p in PSPS]), state=st.sampled_from(["closed", "open", "half_open"]))  # fmt: skip
    def a_breaker_changes(self, name: str, state: str) -> None:
        self.breakers[name] = state

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

    @invariant()
    def never_another_psp_after_execute(self) -> None:
        """Every attempt but the last ended without a token (so nothing was executed): no
        fallback once a token was recorded."""
        p = self.states.get("p1")
        if isinstance(p, pm.PaymentState):
            for a in p.attempts[:-1]:
                assert a.phase is pm.Phase.token_failed and a.token is None, p.attempts

    @invariant()
    def nothing_started_early(self) -> None:
        assert self.executed_early == 0

    @invariant()
    def requests_only_for_the_current_attempt_and_psp(self) -> None:
        """Polls and checks, executes: only at the PSP of an attempt that has a token."""
        p = self.states.get("p1")
        if not isinstance(p, pm.PaymentState):
            return
        for it in self.network:
            if it.kind == "psp" and it.payload["kind"] in ("status", "resolve"):
                a = p.attempts[it.payload["attempt"] - 1]
                assert a.token == it.payload["token"] and a.psp == it.payload["psp"]

    def teardown(self) -> None:
        if not hasattr(self, "psps"):
            return
        # The world heals (PSPs up, breakers closed, payments complete); deliver everything
        # left, in order, letting time run to each next record: every order ends terminal
        # unless its poller or janitor gave up during the run (review).
        for psp in self.psps.values():
            psp.down = False
            psp.completed = True
        for name in self.breakers:
            self.breakers[name] = "closed"
        for _ in range(2000):
            if not self.network:
                break
            due = self._due()
            if not due:
                self.now = min(it.not_before for it in self.network)
                continue
            item = self.network.pop(due[0])
            if item.kind == "answer":
                self._decide(item.payload)
            else:
                self.network += self._answer(item)
        assert not self.network, "the world never quietened"
        p = self.states.get("p1")
        assert isinstance(p, pm.PaymentState)
        reviewed = p.attempt is not None and p.attempt.review
        assert p.status in TERMINAL or reviewed, (p.status, p.attempt)
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
        if executed and executed[0].final() == "succeeded" and not reviewed:
            assert p.status is pm.Status.succeeded, "a charge was lost"


TestPaymentMachine = PaymentMachine.TestCase
TestPaymentMachine.settings = settings(max_examples=500, stateful_step_count=60, deadline=None)
