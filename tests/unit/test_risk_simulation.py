"""Deterministic simulation of the exactly-once processor running the risk agent: the real
``Processor`` and ``RiskAgent`` over the in-memory broker (tests/sim/fakekafka.py), killed at
every step of the commit sequence, must decide every payment exactly as a run without crashes
does (each decision once, same features, same version), with a published version switching
at its position in each partition; and the risk requests' log alone, replayed partition by
partition, decides them all the same again."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from base.config import Limits, Settings
from base.topics import TopicNames
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.processor import Clients, Processor
from streams.risk import model as rm
from streams.risk.rules import sha256_of
from streams.risk_agent import RiskAgent, context_key, decision_record
from streams.risk_library import DictLibrary
from tests.sim.fakekafka import Crash, FakeBroker, FakeConsumer, FakeProducer, Idle, Scheduler
from tests.unit.test_processor_simulation import CRASH_KINDS

PARTITIONS = 4
CODEC = Codec.default()
V1 = b'version = "s1"\n[[rule]]\nname = "burst"\ntrigger = ["pay_in"]\nwhen = "user_payments_1h >= 3"\naction = "review"\nscore = 30\n'
V2 = b'version = "s2"\n[[rule]]\nname = "young"\ntrigger = ["pay_in"]\nwhen = "account_age_s < 600 and user_payments_24h >= 1"\naction = "block"\nscore = 70\n'
USERS = [f"u{i}" for i in range(6)]


def _library() -> DictLibrary:
    lib = DictLibrary()
    lib.put("rules", sha256_of(V1), V1)
    lib.put("rules", sha256_of(V2), V2)
    return lib


class Sim:
    def __init__(self, tmp: Path, scheduler: Scheduler) -> None:
        limits = Limits(batch_records_max=8, restore_batch_records_max=8)
        self.settings = Settings(home=tmp, bootstrap="sim:0", partitions=PARTITIONS, limits=limits)
        self.topics = TopicNames("")
        self.broker = FakeBroker(list(self.topics.all().values()), PARTITIONS, scheduler)
        self.lifetimes = 0

    def put(
        self,
        topic: str,
        key: str,
        schema: str,
        record: dict[str, Any],
        partition: int | None = None,
    ) -> None:
        p = partition_for(key, PARTITIONS) if partition is None else partition
        self.broker.produce_input(topic, p, key, CODEC.encode(schema, record))

    def activate(self, text: bytes, version: str) -> None:
        for p in range(PARTITIONS):
            ck = context_key(p, PARTITIONS)
            self.put(self.topics.risk_requests, ck, "RiskActivation", {
                "activation_id": version, "key": ck, "kind": "rules", "version": version,
                "sha256": sha256_of(text), "published_by": "sim", "ts": 0,
            }, p)  # fmt: skip

    def run_until_idle(self) -> None:
        for _ in range(200):
            self.lifetimes += 1
            g = "paystream-risk"
            clients = Clients(
                FakeConsumer(self.broker, g), FakeProducer(self.broker, f"{g}-1"),
                FakeConsumer(self.broker, f"{g}-restore-1", eof=True),
            )  # fmt: skip
            proc = Processor(RiskAgent(_library()), self.settings, 1, clients=clients)
            try:
                proc.run()
            except Crash:
                continue
            except Idle:
                return
            finally:
                proc.watchdog.stop()
                for store in proc.stores.values():
                    store.close()
        raise AssertionError("the simulation never settled")

    def decisions(self) -> list[dict[str, Any]]:
        return [
            CODEC.decode(r.value)[1]
            for _, _, r in self.broker.records(self.topics.risk_decisions)
            if r.value
        ]


def _workload(sim: Sim, seed: int) -> None:
    rng = random.Random(seed)
    # Phase 1: the accounts open (the ledger's events); the agent hands the facts to users.
    for u in USERS:
        sim.put(sim.topics.accounts, f"{u}-acct", "AccountEvent", {
            "event_id": f"{u}-open", "command_id": f"{u}-open", "account": f"{u}-acct",
            "kind": "opened", "user": u, "currency": "USD", "related": None,
            "relation_kind": None, "reason": None, "ts": 1_700_000_000_000_000,
        })  # fmt: skip
    sim.run_until_idle()
    # Phase 2: v1 everywhere, then bursts; v2 in the middle of them; declines reported.
    sim.activate(V1, "s1")
    for step in range(30):
        n = step
        if step == 18:
            sim.activate(V2, "s2")
        u = rng.choice(USERS)
        ts = 1_700_000_000_000_000 + step * 20_000_000
        sim.put(sim.topics.risk_requests, u, "RiskRequest", {
            "kind": "payment", "payment_id": f"p{n}", "user_id": u, "type": "pay_in",
            "from_acct": f"card_{rng.randrange(3)}", "to_acct": f"{u}-acct", "amount": "10.00",
            "currency": "USD", "payment_option": "card", "status": None, "reason": None, "ts": ts,
        })  # fmt: skip
        if rng.random() < 0.3:
            sim.put(sim.topics.risk_requests, u, "RiskRequest", {
                "kind": "outcome", "payment_id": f"p{n}", "user_id": u, "type": "pay_in",
                "from_acct": "card_0", "to_acct": f"{u}-acct", "amount": "10.00",
                "currency": "USD", "payment_option": "card", "status": "failed",
                "reason": "card_declined", "ts": ts + 1,
            })  # fmt: skip
    sim.run_until_idle()


def _comparable(ds: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    ids = Counter(d["decision_id"] for d in ds)
    assert not [i for i, c in ids.items() if c > 1], "a decision was written twice"
    return {
        d["decision_id"]: (d["action"], d["rules_version"], d["features"], d["score"], d["ts"])
        for d in ds
    }


def _replayed(sim: Sim) -> dict[str, tuple[Any, ...]]:
    """The risk requests' log alone, partition by partition, through a fresh agent."""
    agent = RiskAgent(_library())
    states: dict[str, Any] = {}
    out = []
    for p in range(PARTITIONS):
        ck = context_key(p, PARTITIONS)
        for r in sim.broker.logs[sim.topics.risk_requests][p]:
            schema, record = CODEC.decode(r.value or b"")
            m = agent.decode("risk_requests", schema, record, r.ts_ms * 1000)
            events = agent.decide_in(
                states.get(m.key), m, states.get(ck) if m.key != ck else states.get(m.key)
            )
            states[m.key] = agent.evolve(states.get(m.key), events)
            out += [decision_record(e.decision) for e in events if isinstance(e, rm.Decided)]
    return _comparable(out)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sched = Scheduler()
    sim = Sim(tmp_path_factory.mktemp("risk-baseline"), sched)
    _workload(sim, 3)
    got = _comparable(sim.decisions())
    assert len(got) == 30 and _replayed(sim) == got
    versions = Counter(v[1] for v in got.values())
    assert versions["s1"] >= 10 and versions["s2"] >= 8, versions  # the switch came mid-run
    actions = Counter(v[0] for v in got.values())
    assert actions["review"] and actions["block"], actions
    return {"decisions": got, "counts": dict(sched.counts)}


@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_a_kill_at_any_step_decides_every_payment_the_same(
    tmp_path: Path, kind: str, baseline: dict[str, Any]
) -> None:
    total = baseline["counts"].get(kind, 0)
    if kind == "restore":
        crash_at = {"committed": {2, 5}, "restore": {1}}
    else:
        rng = random.Random(kind)
        crash_at = {kind: set(rng.sample(range(2, max(3, total)), min(3, max(0, total - 2))))}
    sched = Scheduler(crash_at=crash_at)
    sim = Sim(tmp_path, sched)
    _workload(sim, 3)
    assert sched.crashes, (kind, baseline["counts"])
    got = _comparable(sim.decisions())
    assert got == baseline["decisions"]
    assert _replayed(sim) == got
