"""The write side end to end: real broker, real worker processes, the CLI's JSON contract."""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from base.config import kafka_client_config
from base.kafka import reader
from base.topics import TopicNames
from paystream import queries
from paystream.oracle import Oracle
from paystream.stack import worker_name
from paystream.workload import Workload
from tests.stack import LedgerStack, cli

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(settings):  # type: ignore[no-untyped-def]
    s = LedgerStack(settings, workers=2)
    s.start()
    yield s
    s.stop()


def check_outcomes(stack: LedgerStack, oracle: Oracle) -> None:
    got: dict[str, list[str]] = {}
    for o in stack.outcomes():
        if o["reason"] == "exists_with_different_payload":
            continue
        got.setdefault(o["command_id"], []).append(o["reason"] or o["status"])
    doubles = {k: v for k, v in got.items() if len(v) != 1}
    assert not doubles, f"commands with more than one outcome: {list(doubles.items())[:5]}"
    flat = {k: v[0] for k, v in got.items()}
    assert flat == oracle.outcomes


def test_phased_workload_matches_the_sequential_model(stack: LedgerStack) -> None:
    work = Workload(accounts=60, transfers=600, seed=3, prefix="w")
    oracle = Oracle()
    for _, commands in work.phases:
        for c in commands:
            oracle.apply(c)
        assert stack.send(commands) == 0
        stack.wait()
    assert stack.balances() == oracle.balances()
    check_outcomes(stack, oracle)
    r = queries.replay(stack.settings)
    assert r.problems == []
    assert queries.verify(stack.settings, r) == []
    # The CLI contract, as checks outside the repo call it.
    out = cli(stack.settings, "balances", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["account"]: r for r in rows} == oracle.balances()
    assert set(rows[0]) == {"account", "user", "currency", "balance", "status"}
    assert cli(stack.settings, "replay", "--verify").returncode == 0


def test_open_then_use_in_one_file_and_single_sends(stack: LedgerStack) -> None:
    assert (
        stack.send(
            [
                {
                    "type": "open_account",
                    "command_id": "o1",
                    "account": "a1",
                    "user": "u1",
                    "currency": "USD",
                },
                {
                    "type": "open_account",
                    "command_id": "o2",
                    "account": "a2",
                    "user": "u2",
                    "currency": "JPY",
                },
                {"type": "deposit", "command_id": "d1", "account": "a1", "amount": "100.00"},
                {"type": "deposit", "command_id": "d2", "account": "a2", "amount": "500"},
            ]
        )
        == 0
    )
    stack.wait()
    # Commands for different accounts are not ordered (they may live in different partitions),
    # so the transfer between the two goes after both are open.
    transfer = {"type": "transfer", "command_id": "t1", "from": "a1", "to": "a2", "amount": "1.00"}
    assert stack.send([transfer]) == 0
    sent = cli(stack.settings, "send", "withdraw", "--account", "a1", "--amount", "10.50")
    assert sent.returncode == 0, sent.stderr
    command_id = sent.stdout.strip()
    stack.wait()
    out = json.loads(cli(stack.settings, "outcome", command_id, "--json").stdout)
    assert (out["status"], out["command_type"]) == ("accepted", "withdraw")
    t1 = json.loads(cli(stack.settings, "outcome", "t1", "--json").stdout)
    assert t1["reason"] == "currency_mismatch", t1
    bal = json.loads(cli(stack.settings, "balance", "a1", "--json").stdout)
    assert (bal["balance"], bal["held"]) == ("89.50", "0.00")


def _partitions(stack: LedgerStack, names: list[str]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in names for p in range(stack.settings.partitions)]


def _transactional_topics(stack: LedgerStack) -> list[str]:
    n = TopicNames(stack.settings.topic_prefix)
    return [n.ledger, n.outcomes, n.transfers, n.accounts, n.saga, n.ledger_state]


def open_transaction(admin: AdminClient, tps: list[TopicPartition]) -> bool:
    """Is a transaction open with records on the broker: a last stable offset below the end?"""
    spec = {tp: OffsetSpec.latest() for tp in tps}
    stable = admin.list_offsets(spec, isolation_level=IsolationLevel.READ_COMMITTED)
    end = admin.list_offsets(spec, isolation_level=IsolationLevel.READ_UNCOMMITTED)
    return any(stable[tp].result().offset < end[tp].result().offset for tp in tps)


def aborted_records(stack: LedgerStack) -> int:
    """Records of aborted transactions: seen by a read_uncommitted reader, not read_committed."""

    def count(isolation: str) -> int:
        c = reader(stack.settings, **{"isolation.level": isolation})
        tps = _partitions(stack, _transactional_topics(stack))
        c.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in tps])
        left, n = {(tp.topic, tp.partition) for tp in tps}, 0
        deadline = time.monotonic() + 120
        try:
            while left and time.monotonic() < deadline:
                for msg in c.consume(10_000, timeout=0.5):
                    if msg.error() is None:
                        n += 1
                    elif msg.error().code() == KafkaError._PARTITION_EOF:
                        left.discard((msg.topic(), msg.partition()))
        finally:
            c.close()
        assert not left, f"not read to the end: {left}"
        return n

    return count("read_uncommitted") - count("read_committed")


RESTORED = re.compile(r"restored \S+ partitions \[[^]]*\]: (\d+) records")


def test_kill_9_during_a_phase_applies_everything_once(stack: LedgerStack) -> None:
    work = Workload(accounts=80, transfers=4000, seed=11, prefix="k")
    oracle = Oracle()
    rng = random.Random(5)
    admin = AdminClient(kafka_client_config(stack.settings))
    tps = _partitions(stack, _transactional_topics(stack))
    logs = [stack.sup.log_path(worker_name(i)) for i in range(1, stack.workers + 1)]
    since: dict[Path, int] = {}
    targeted: list[bool] = []
    for name, commands in work.phases:
        for c in commands:
            oracle.apply(c)
        killer = None
        if "transfers" in name:

            def chaos() -> None:
                # Every worker, as soon as a transaction is open with records on the broker:
                # the kill hits a transaction in flight.
                for p in logs:
                    since.setdefault(p, p.stat().st_size)  # from the first kill on
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not open_transaction(admin, tps):
                    time.sleep(0.005)
                targeted.append(time.monotonic() < deadline)
                for i in range(1, stack.workers + 1):
                    stack.kill(i)
                stack.start()
                # Then one worker at a time, at random moments.
                for _ in range(2):
                    time.sleep(rng.uniform(0.3, 1.2))
                    victim = rng.randint(1, stack.workers)
                    stack.kill(victim)
                    time.sleep(0.2)
                    stack.start(victim)

            killer = threading.Thread(target=chaos)
            killer.start()
        assert stack.send(commands) == 0
        if killer:
            killer.join()
        stack.wait(timeout_s=180)
    assert stack.balances() == oracle.balances()
    check_outcomes(stack, oracle)
    r = queries.replay(stack.settings)
    assert r.problems == [] and r.duplicates == 0
    assert queries.verify(stack.settings, r) == []
    kinds = Counter(o["status"] for o in stack.outcomes())
    assert kinds["accepted"] > 3000
    # What the kills hit: transactions with records on the broker, aborted (none of their
    # records is visible, and the balances above are exact); and every worker that came back
    # restored its state from the changelog before it went on (a restart logs the restore,
    # with the records it had to apply: 0 when its local state was already at the end).
    assert targeted and all(targeted), "no transaction was open in a transfers phase"
    assert aborted_records(stack) > 0
    restored = [
        int(n) for p in logs for n in RESTORED.findall(p.read_text(errors="replace")[since[p] :])
    ]
    assert len(restored) >= stack.workers, restored
