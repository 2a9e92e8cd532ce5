"""The risk core and its wire mapping: exact velocity windows (against a brute-force count),
decisions (severity, score, thresholds, the model's share), shadow versions, account facts,
activations, and the agent's records and state."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.risk import model as rm
from streams.risk.decide import Env, decide, evolve_all
from streams.risk.limits import DAY_US, HOUR_US
from streams.risk.rules import load_rules, sha256_of
from streams.risk_agent import RiskAgent, context_key, decode_state, encode_state
from streams.risk_library import DictLibrary

CODEC = Codec.default()
T0 = 1_800_000_000_000_000
RULES = load_rules(
    """
version = "t1"
[thresholds]
review = 70
block = 200
[model]
weight = 100
[[rule]]
name = "burst"
trigger = ["pay_in", "pay_out"]
when = "user_payments_1h >= 3"
action = "review"
score = 40
[[rule]]
name = "big"
trigger = ["pay_in"]
when = "amount >= 1000"
action = "block"
score = 10
[[rule]]
name = "fresh"
trigger = ["pay_in", "pay_out"]
when = "account_age_s < 60"
action = "allow"
score = 35
"""
)


def req(
    pid: str, ts: int, amount: str = "10.00", user: str = "u1", card: str = "card_1", **kw: str
) -> rm.RiskRequest:
    fields = {"type": "pay_in", "currency": "USD", "payment_option": "card", **kw}
    return rm.RiskRequest(
        user,
        pid,
        fields["type"],
        amount,
        fields["currency"],
        fields["payment_option"],
        card,
        "acct-1",
        ts,
    )


def run(msgs: list[rm.Message], env: Env) -> tuple[dict[str, Any], list[rm.Decision]]:
    states: dict[str, Any] = {}
    decided: list[rm.Decision] = []
    for m in msgs:
        events = decide(states.get(m.key), m, env)
        new = evolve_all(states.get(m.key), events)
        if new is not None:
            states[m.key] = decode_state(encode_state(new))  # as the changelog keeps it
        decided += [e.decision for e in events if isinstance(e, rm.Decided)]
    return states, decided


@settings(max_examples=200)
@given(
    gaps=st.lists(st.integers(-30 * 60, 3 * 3600), min_size=1, max_size=25),
    amounts=st.lists(st.sampled_from(["1.00", "5.50", "120.00"]), min_size=25, max_size=25),
    cards=st.lists(st.sampled_from(["c1", "c2", "c3"]), min_size=25, max_size=25),
    currencies=st.lists(st.sampled_from(["USD", "EUR"]), min_size=25, max_size=25),
    declined=st.lists(st.booleans(), min_size=25, max_size=25),
)
def test_velocity_is_exact_over_the_users_log_time(
    gaps: list[int],
    amounts: list[str],
    cards: list[str],
    currencies: list[str],
    declined: list[bool],
) -> None:
    """Every count against a brute force over the messages seen before, on a clock that never
    goes back (a message stamped earlier than one seen counts at the latest time seen)."""
    msgs: list[rm.Message] = []
    ts = T0
    for i, gap in enumerate(gaps):
        ts += gap * 1_000_000  # gaps may be negative: log times out of order
        msgs.append(req(f"p{i}", ts, amounts[i], card=cards[i], currency=currencies[i]))
        if declined[i]:
            msgs.append(rm.PaymentEnded("u1", f"p{i}", "failed", "card_declined", ts + 1))
    _, decisions = run(msgs, Env(RULES))
    clock, seen, declines = 0, [], []
    by_id = {d.payment_id: dict(d.features) for d in decisions}
    for m in msgs:
        clock = max(clock, m.ts)
        if isinstance(m, rm.PaymentEnded):
            declines.append(clock)
            continue
        assert isinstance(m, rm.RiskRequest)
        f = by_id[m.payment_id]
        in_1h = [s for s in seen if clock - s[0] < HOUR_US]
        in_24h = [s for s in seen if clock - s[0] < DAY_US]
        assert f["user_payments_1h"] == len(in_1h)
        assert f["user_payments_24h"] == len(in_24h)
        same = [s for s in in_1h if s[2] == m.currency]
        assert Decimal(str(f["user_amount_1h"])) == sum((Decimal(s[1]) for s in same), Decimal(0))
        same24 = [s for s in in_24h if s[2] == m.currency]
        assert Decimal(str(f["user_amount_24h"])) == sum(
            (Decimal(s[1]) for s in same24), Decimal(0)
        )
        assert f["user_distinct_instruments_24h"] == len({s[3] for s in in_24h})
        assert f["user_declines_24h"] == sum(1 for d in declines if clock - d < DAY_US)
        seen.append((clock, m.amount, m.currency, m.instrument))


def test_the_window_edges_are_exact() -> None:
    msgs: list[rm.Message] = [
        req("a", T0),
        req("b", T0 + HOUR_US - 1),  # a in its hour
        req("c", T0 + HOUR_US),  # a just out of the hour, b in
        req("d", T0 + DAY_US),  # a out of the day
    ]
    _, ds = run(msgs, Env(RULES))
    got = [
        (dict(d.features)["user_payments_1h"], dict(d.features)["user_payments_24h"]) for d in ds
    ]
    assert got == [(0, 0), (1, 1), (1, 2), (0, 2)]


def test_decision_severity_score_thresholds_and_shadow() -> None:
    shadow = load_rules(
        'version = "s1"\n[[rule]]\nname = "all"\ntrigger = ["pay_in"]\nwhen = "amount > 0"\naction = "block"\nscore = 1\n'
    )
    msgs: list[rm.Message] = [req(f"p{i}", T0 + i) for i in range(3)]
    msgs += [req("p3", T0 + 10, amount="1500")]
    _, ds = run(msgs, Env(RULES, shadow))
    live = [d for d in ds if d.mode is rm.Mode.live]
    shadows = [d for d in ds if d.mode is rm.Mode.shadow]
    assert [d.action.value for d in shadows] == ["block"] * 4 and len(live) == 4
    assert shadows[0].decision_id == f"p0/risk/shadow/{shadow.sha256[:12]}"
    # p0..p2: only "fresh" (an account never seen opened is new): score 35, allow.
    assert [(d.action.value, d.score, d.matched) for d in live[:3]] == [
        ("allow", "35", ("fresh",))
    ] * 3
    # p3: burst (review, 40) + big (block, 10) + fresh (35) = 85: block wins; 85 >= 70.
    d = live[3]
    assert (d.action.value, d.score, d.matched, d.escalated) == (
        "block",
        "85",
        ("burst", "big", "fresh"),
        False,
    )
    assert d.rules_version == "t1" and d.rules_sha256 == RULES.sha256
    assert dict(d.features)["amount"] == 1500 and dict(d.features)["user_payments_1h"] == 3


class FixedScorer:
    version = "m1"

    def __init__(self, p: float) -> None:
        self.p = p

    def score(self, values: list[float]) -> tuple[float, list[tuple[str, float]]]:
        return self.p, [
            ("amount", 0.5),
            ("user_payments_1h", -1.25),
            ("pay_out", 0.0),
            ("account_age_s", 0.1),
        ]


def test_the_model_adds_weight_times_its_score_and_a_threshold_escalates() -> None:
    _, ds = run([req("p0", T0)], Env(RULES, None, FixedScorer(0.42)))
    d = ds[0]
    # fresh 35 + 100 x 0.42 = 77 >= review threshold 70: allow escalated to review.
    assert (d.action.value, d.score, d.escalated) == ("review", "77", True)
    assert (d.model_version, d.model_score) == ("m1", "0.42")
    assert d.contributions == (
        ("user_payments_1h", "-1.250000"),
        ("amount", "0.500000"),
        ("account_age_s", "0.100000"),
    )
    assert dict(d.features)["model_score"] == "0.42"


def test_account_facts_reach_the_user_and_make_its_age() -> None:
    msgs: list[rm.Message] = [rm.AccountSeen("acct-1", "opened", "u1", T0)]
    states, _ = run(msgs, Env(RULES))
    events = decide(None, msgs[0], Env(RULES))
    [fact] = [e.fact for e in events if isinstance(e, rm.FactForwarded)]
    assert fact == rm.AccountFact("u1", "acct-1", "opened", T0)
    assert states["acct-1"].link == rm.AccountLink("u1", T0)
    blocked = decide(
        states["acct-1"], rm.AccountSeen("acct-1", "blocked", None, T0 + 5), Env(RULES)
    )
    assert [e.fact.kind for e in blocked if isinstance(e, rm.FactForwarded)] == ["blocked"]
    flow: list[rm.Message] = [
        fact,
        req("p0", T0 + 90 * 1_000_000),
        rm.AccountFact("u1", "acct-1", "blocked", T0 + 91_000_000),
        req("p1", T0 + 92_000_000),
    ]
    _, ds = run(flow, Env(RULES))
    assert [
        (dict(d.features)["account_age_s"], dict(d.features)["account_blocked"]) for d in ds
    ] == [(90, False), (92, True)]
    assert ds[0].matched == ()  # 90 s old: not fresh


def test_a_redelivered_request_is_decided_and_counted_once() -> None:
    _, ds = run([req("p0", T0), req("p0", T0), req("p1", T0 + 1)], Env(RULES))
    assert [d.payment_id for d in ds] == ["p0", "p1"]
    assert dict(ds[1].features)["user_payments_1h"] == 1


def test_activations_change_the_context() -> None:
    a = rm.Activate("@risk/context/0", rm.ActivationKind.rules, "v2", "ab", T0)
    s = evolve_all(None, decide(None, a, Env(RULES)))
    assert s is not None and s.context == rm.RiskContext(rm.Ref("v2", "ab"), None, None, 1, T0)
    sh = rm.Activate("@risk/context/0", rm.ActivationKind.shadow, "v3", "cd", T0 + 1)
    s = evolve_all(s, decide(s, sh, Env(RULES)))
    assert s is not None and s.context is not None and s.context.shadow == rm.Ref("v3", "cd")
    promote = rm.Activate("@risk/context/0", rm.ActivationKind.rules, "v3", "cd", T0 + 2)
    s = evolve_all(s, decide(s, promote, Env(RULES)))
    assert s is not None and s.context is not None
    assert (s.context.rules, s.context.shadow, s.context.activations) == (
        rm.Ref("v3", "cd"),
        None,
        3,
    )


# --- the wire ---


def test_context_keys_hash_to_their_partition() -> None:
    for n in (1, 4, 12, 24):
        keys = [context_key(p, n) for p in range(n)]
        assert [partition_for(k, n) for k in keys] == list(range(n))


def _activation(kind: str, version: str, sha: str, key: str = "@risk/context/0") -> dict[str, Any]:
    return {
        "activation_id": "a1",
        "key": key,
        "kind": kind,
        "version": version,
        "sha256": sha,
        "published_by": "t",
        "ts": T0,
    }


def test_the_agent_decides_in_its_partitions_context_and_writes_its_records() -> None:
    lib = DictLibrary()
    text = b'version = "lib-1"\n[[rule]]\nname = "any"\ntrigger = ["pay_in"]\nwhen = "amount > 5"\naction = "review"\nscore = 3\n'
    lib.put("rules", sha256_of(text), text)
    agent = RiskAgent(lib)
    good = agent.decode(
        "risk_requests", "RiskActivation", _activation("rules", "lib-1", sha256_of(text)), T0
    )
    ctx = evolve_all(None, agent.decide_in(None, good, None))
    assert ctx is not None and ctx.context is not None and ctx.context.rules is not None
    # An activation whose content is absent (or broken) is ignored: the live version stays.
    missing = agent.decode(
        "risk_requests", "RiskActivation", _activation("rules", "x", "00" * 32), T0
    )
    assert agent.decide_in(ctx, missing, ctx) == []
    record = {
        "kind": "payment",
        "payment_id": "p1",
        "user_id": "u1",
        "type": "pay_in",
        "from_acct": "card_1",
        "to_acct": "acct-1",
        "amount": "9.00",
        "currency": "USD",
        "payment_option": "card",
        "status": None,
        "reason": None,
        "ts": T0 + 1,
    }
    msg = agent.decode(
        "risk_requests", "RiskRequest", CODEC.decode(CODEC.encode("RiskRequest", record))[1], T0
    )
    events = agent.decide_in(None, msg, ctx)
    outs = [o for e in events for o in agent.records(e, False)]
    assert [(o.topic, o.schema, o.key) for o in outs] == [
        ("risk_decisions", "RiskDecision", "p1"),
        ("payments", "RiskDecision", "p1"),
    ]
    r = CODEC.decode(CODEC.encode("RiskDecision", outs[0].record))[1]
    assert (r["action"], r["rules_version"], r["matched"], r["score"]) == (
        "review",
        "lib-1",
        ["any"],
        "3",
    )
    assert json.loads(r["features"])["amount"] == "9.00"
    state = evolve_all(None, events)
    assert state is not None and decode_state(encode_state(state)) == state
    # Facts never go through memory: always a record on the user's risk partition.
    fact_events = agent.decide(
        None,
        agent.decode(
            "accounts",
            "AccountEvent",
            {
                "event_id": "e",
                "command_id": "c",
                "account": "acct-1",
                "kind": "opened",
                "user": "u1",
                "currency": "USD",
                "related": None,
                "relation_kind": None,
                "reason": None,
                "ts": T0,
            },
            T0,
        ),
    )
    assert all(agent.direct_step(e) is None for e in fact_events)
    facts = [o for e in fact_events for o in agent.records(e, False)]
    assert [(o.topic, o.schema, o.key) for o in facts] == [
        ("risk_requests", "RiskAccountFact", "u1")
    ]
    CODEC.encode("RiskAccountFact", facts[0].record)
