"""Deterministic simulation of the exactly-once processor running the ledger.

The real ``Processor``, the real ledger agent and real rocksdict state, over the in-memory
broker of ``tests/sim/fakekafka.py``. A seeded scheduler kills the process at a chosen call
of every kind — between each pair of the commit sequence's steps (1 consume, 2 begin,
3 produce, 4 changelog, 5 send offsets, 6 commit, and between 6 and 7: committed but the
local state not yet written) and in the middle of a restore — and a fresh process takes over
with the state the dead one left on disk. Phased workloads make the outcome independent of
how sagas interleave, so the end state must equal the sequential model (``paystream.oracle``)
whatever the crashes, with every ledger event and outcome exactly once.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from base.config import Limits, Settings
from base.topics import TopicNames
from paystream.oracle import Oracle
from producers.commands import parse_command
from schemas.codec import Codec
from streams.ledger import model as m
from streams.ledger_agent import LedgerAgent
from streams.partitioner import partition_for
from streams.processor import Clients, Processor
from tests.sim.fakekafka import Crash, FakeBroker, FakeConsumer, FakeProducer, Idle, Scheduler

PARTITIONS = 4
BATCH_RECORDS_MAX = 16
CODEC = Codec.default()
CRASH_KINDS = [
    "consume",
    "begin",
    "produce",
    "changelog",
    "send_offsets",
    "commit",
    "committed",
    "restore",
]


def _workload(seed: int) -> list[list[dict[str, Any]]]:
    """Phases of JSON commands whose outcomes do not depend on saga interleaving."""
    rng = random.Random(seed)
    accts = [(f"a{i}", "USD" if i % 3 else "JPY") for i in range(9)]
    opens = [
        {
            "type": "open_account",
            "command_id": f"o{i}",
            "account": a,
            "user": f"u{i}",
            "currency": c,
        }
        for i, (a, c) in enumerate(accts)
    ]
    opens.append(dict(opens[0]))  # an exact duplicate
    # A second account for a user comes in a later phase: which of two concurrent openings
    # wins the user is a race by design.
    second = {"type": "open_account", "command_id": "o-2nd", "account": "a99", "user": "u1"}
    deposits: list[dict[str, Any]] = [{**second, "currency": "USD"}]
    for i, (a, c) in enumerate(accts):
        amount = "1000" if c == "JPY" else "100.00"
        deposits.append({"type": "deposit", "command_id": f"d{i}", "account": a, "amount": amount})
    deposits.append(
        {"type": "deposit", "command_id": "d0", "account": "a0", "amount": "5.00"}
    )  # reused id
    deposits.append({"type": "deposit", "command_id": "d-bad", "account": "a1", "amount": "1.234"})
    deposits.append(
        {"type": "block_account", "command_id": "blk", "account": "a8", "reason": "test"}
    )
    transfers = []
    for n in range(60):
        (fa, fc), (ta, _) = rng.sample(accts, 2)
        # Small enough that no order of these can overdraw: every outcome is order-free.
        amount = str(rng.randint(1, 9)) if fc == "JPY" else f"{rng.randint(1, 99) / 100:.2f}"
        transfers.append(
            {"type": "transfer", "command_id": f"t{n}", "from": fa, "to": ta, "amount": amount}
        )
    transfers.append(
        {
            "type": "transfer",
            "command_id": "t-ghost",
            "from": "a1",
            "to": "nobody",
            "amount": "1.00",
        }
    )
    transfers.append(
        {"type": "transfer", "command_id": "t-rich", "from": "a2", "to": "a1", "amount": "900.00"}
    )
    withdrawals = [
        {
            "type": "withdraw",
            "command_id": f"w{i}",
            "account": a,
            "amount": "1" if c == "JPY" else "0.50",
        }
        for i, (a, c) in enumerate(accts)
    ]
    return [opens, deposits, transfers, withdrawals]


class Simulation:
    def __init__(self, tmp: Path, scheduler: Scheduler) -> None:
        # Small batches: many transactions, so a crash can land in any of them.
        limits = Limits(batch_records_max=BATCH_RECORDS_MAX, restore_batch_records_max=8)
        self.settings = Settings(home=tmp, bootstrap="sim:0", partitions=PARTITIONS, limits=limits)
        self.topics = TopicNames("")
        names = self.topics.all()
        self.broker = FakeBroker(list(names.values()), PARTITIONS, scheduler)
        self.scheduler = scheduler
        self.lifetimes = 0
        self.restored = 0

    def send(self, commands: list[dict[str, Any]]) -> None:
        for c in commands:
            cmd = parse_command(c)
            value = CODEC.encode(cmd.schema, dict(cmd.record))
            self.broker.produce_input(
                self.topics.commands, partition_for(cmd.key, PARTITIONS), cmd.key, value
            )

    def run_until_idle(self, lifetimes_max: int = 200) -> None:
        """Start processes until one finds nothing left to do; each may be killed."""
        for _ in range(lifetimes_max):
            self.lifetimes += 1
            group = "paystream-ledger"
            clients = Clients(
                FakeConsumer(self.broker, group),
                FakeProducer(self.broker, f"{group}-1"),
                FakeConsumer(self.broker, f"{group}-restore-1", eof=True),
            )
            proc = Processor(LedgerAgent(), self.settings, 1, clients=clients)
            try:
                proc.run()
            except Crash:
                continue
            except Idle:
                return
            finally:
                self.restored += proc.counters.restored
                proc.watchdog.stop()
                for store in proc.stores.values():
                    store.close()
        raise AssertionError("the simulation never settled")

    def decoded(self, topic: str) -> list[dict[str, Any]]:
        return [
            CODEC.decode(r.value)[1]
            for _, _, r in self.broker.records(topic)
            if r.value is not None
        ]

    def states(self) -> dict[str, m.State]:
        agent = LedgerAgent()
        out: dict[str, m.State] = {}
        for _, _, r in self.broker.records(self.topics.ledger_state):
            assert r.key is not None and r.value is not None
            out[r.key.decode()] = agent.decode_state(r.value)
        return out


def _run(
    tmp: Path, seed: int, scheduler: Scheduler
) -> tuple[Simulation, Oracle, list[list[dict[str, Any]]]]:
    sim = Simulation(tmp, scheduler)
    oracle = Oracle()
    phases = _workload(seed)
    for phase in phases:
        sim.send(phase)
        for c in phase:
            oracle.apply(c)
        sim.run_until_idle()
    return sim, oracle, phases


def _check_against_model(
    sim: Simulation, oracle: Oracle, phases: list[list[dict[str, Any]]]
) -> None:
    # Balances and statuses: the changelog's last word per account equals the model.
    got = {
        k: {"balance": s.balance, "status": s.status.value, "held": s.held}
        for k, s in sim.states().items()
        if isinstance(s, m.AccountState) and s.exists
    }
    want = oracle.balances()
    assert set(got) == set(want)
    for k, w in want.items():
        exp = 0 if w["currency"] == "JPY" else 2
        assert got[k]["balance"] == int(Decimal(w["balance"]) * 10**exp), k
        assert got[k]["status"] == w["status"] and got[k]["held"] == 0, k
    # Every ledger event once, every entry zero-sum.
    postings = sim.decoded(sim.topics.ledger)
    ids = Counter(p["event_id"] for p in postings)
    assert not [i for i, n in ids.items() if n > 1], "a ledger event was written twice"
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for p in postings:
        sums[p["entry_id"]] += Decimal(p["amount"])
    assert all(v == 0 for v in sums.values())
    # One outcome per command (by event id), equal to the model's.
    outcomes = sim.decoded(sim.topics.outcomes)
    assert not [i for i, n in Counter(o["event_id"] for o in outcomes).items() if n > 1]
    first: dict[str, str] = {}
    for o in outcomes:
        if "/reused/" not in o["event_id"]:
            first.setdefault(o["command_id"], o["reason"] or o["status"])
    for cid, want_outcome in oracle.outcomes.items():
        assert first.get(cid) == want_outcome, (cid, first.get(cid), want_outcome)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    sim, oracle, phases = _run(tmp_path_factory.mktemp("baseline"), 7, Scheduler())
    _check_against_model(sim, oracle, phases)
    return {"counts": dict(sim.scheduler.counts)}


def test_without_crashes_the_processor_equals_the_model(baseline: dict[str, Any]) -> None:
    # The workload exercises every step kind many times (so a scheduled crash can land);
    # a restore happens only after a crash left a store behind its changelog.
    for kind in CRASH_KINDS:
        if kind == "restore":
            continue
        assert baseline["counts"].get(kind, 0) >= 4, (kind, baseline["counts"])


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kind", CRASH_KINDS)
def test_a_kill_at_any_step_changes_nothing(
    tmp_path: Path, kind: str, seed: int, baseline: dict[str, Any]
) -> None:
    rng = random.Random(f"{kind}/{seed}")
    total = baseline["counts"].get(kind, 0)
    # Three crashes of this kind, spread over the run (counts grow with each redo, so a
    # crash late in the baseline's count still lands).
    if kind == "restore":
        # Restores follow kills between 6 and 7; kill some of those restores too.
        crash_at = {"committed": {3, 9, 15}, "restore": {1, 2}}
    else:
        crash_at = {kind: set(rng.sample(range(2, max(3, total)), min(3, total - 2)))}
    sched = Scheduler(crash_at=crash_at)
    sim, oracle, phases = _run(tmp_path, 7, sched)
    # Evidence: the crashes happened where scheduled, and processes restarted after them.
    assert any(c.startswith(kind + "#") for c in sched.crashes), sched.crashes
    assert sim.lifetimes >= len(phases) + len(sched.crashes)
    _check_against_model(sim, oracle, phases)
    if kind == "committed":
        # Killed between 6 and 7: the next process repaired its state from the changelog.
        assert sim.restored > 0


def test_random_kills_of_every_kind_and_failed_commits(
    tmp_path: Path, baseline: dict[str, Any]
) -> None:
    rng = random.Random(2026)
    crash_at = {
        k: set(rng.sample(range(2, baseline["counts"][k]), 2))
        for k in CRASH_KINDS
        if k != "restore"
    }
    crash_at["restore"] = {1}
    sched = Scheduler(crash_at=crash_at)
    sim, oracle, phases = _run(tmp_path, 11, sched)
    assert len(sched.crashes) >= len(CRASH_KINDS), sched.crashes
    _check_against_model(sim, oracle, phases)


def test_a_failed_commit_is_aborted_and_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retriable commit error (not a crash): the batch is aborted, rewound and redone."""
    failures = {"left": 3}
    real_commit = FakeProducer.commit_transaction

    def flaky_commit(self: FakeProducer, timeout: float = 0) -> None:
        if failures["left"] and self.txn is not None and self.txn.records:
            failures["left"] -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit timed out"))
        real_commit(self, timeout)

    monkeypatch.setattr(FakeProducer, "commit_transaction", flaky_commit)
    monkeypatch.setattr("time.sleep", lambda s: None)
    sim, oracle, phases = _run(tmp_path, 5, Scheduler())
    assert failures["left"] == 0
    _check_against_model(sim, oracle, phases)


def test_the_workload_is_what_the_model_says_it_is() -> None:
    o = Oracle()
    results = [o.apply(c) for phase in _workload(3) for c in phase]
    reasons = Counter(r for r in results if r)
    # Each refusal kind the workload plants shows up.
    for reason in (
        "user_has_account",
        "exists_with_different_payload",
        "amount_too_precise",
        "credit_account_not_found",
        "insufficient_funds",
        "account_blocked",
    ):
        assert reasons[reason] >= 1 or any(reason in json.dumps(r) for r in results), reason
