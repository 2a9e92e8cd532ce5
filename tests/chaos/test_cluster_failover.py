"""A 3-broker KRaft cluster: kill one broker mid-run; nothing is lost and progress resumes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from ops.kafka import KafkaCluster
from ops.topics import ensure_topics, topic_drift
from paystream import queries
from paystream.config import Settings
from paystream.oracle import Oracle
from paystream.workload import Workload
from tests.stack import LedgerStack

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture
def cluster3(tmp_path: Path, free_port_base):  # type: ignore[no-untyped-def]
    c = KafkaCluster(tmp_path / "kafka3", brokers=3, port_base=free_port_base(6))
    c.start(timeout_s=180)
    yield c
    c.stop()


def test_one_broker_down_mid_run_loses_nothing(cluster3: KafkaCluster, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home",
        bootstrap=cluster3.bootstrap,
        topic_prefix="c3.",
        partitions=6,
        brokers=3,
    )
    ensure_topics(cluster3.bootstrap, "c3.", partitions=6, brokers=3)
    assert topic_drift(cluster3.bootstrap, "c3.", partitions=6, brokers=3) == []
    md = AdminClient({"bootstrap.servers": cluster3.bootstrap}).list_topics(timeout=30)
    assert all(
        len(p.replicas) == 3 for p in md.topics["c3.paystream.ledger.v1"].partitions.values()
    )

    stack = LedgerStack(settings, workers=2)
    stack.start()
    try:
        work = Workload(accounts=60, transfers=3000, seed=9, prefix="c3")
        oracle = Oracle()
        for name, commands in work.phases:
            for c in commands:
                oracle.apply(c)
            assert stack.send(commands) == 0
            if name == "transfers":
                killed_at = time.monotonic()
                cluster3.kill_node(2)
                stack.wait(timeout_s=300)
                stalled_s = time.monotonic() - killed_at
                cluster3.start_node(2, timeout_s=180)
            else:
                stack.wait(timeout_s=300)
        assert stack.balances() == oracle.balances()
        r = queries.replay(settings)
        assert r.problems == [] and r.duplicates == 0
        assert queries.verify(settings, r) == []
        assert stalled_s < 120, f"progress stalled {stalled_s:.0f}s after losing a broker"
        # The restarted broker catches up: every partition back to 3 in-sync replicas.
        admin = AdminClient({"bootstrap.servers": cluster3.bootstrap})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=30)
            if all(len(p.isrs) == 3 for t in md.topics.values() for p in t.partitions.values()):
                break
            time.sleep(1)
        else:
            pytest.fail("broker 2 did not rejoin the in-sync replicas")
    finally:
        stack.stop()
