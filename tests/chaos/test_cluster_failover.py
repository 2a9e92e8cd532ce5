"""A 3-broker KRaft cluster: kill one broker mid-run; nothing is lost and progress resumes."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from base.config import Settings
from base.topics import TopicNames
from ops.kafka import KafkaCluster
from ops.topics import ensure_topics, topic_drift
from paystream import queries
from paystream.oracle import Oracle
from paystream.workload import Workload
from tests.stack import LedgerStack

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture
def cluster3(tmp_path: Path, free_port_base, kafka_libs):  # type: ignore[no-untyped-def]
    c = KafkaCluster(tmp_path / "kafka3", brokers=3, port_base=free_port_base(6), libs=kafka_libs)
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
    seen: list[float] = []  # when each ledger record became visible (read_committed)
    watching = threading.Event()
    watching.set()

    def watch() -> None:
        c = Consumer(
            {
                "bootstrap.servers": cluster3.bootstrap,
                "group.id": f"watch-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "auto.offset.reset": "latest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
            }
        )
        c.subscribe([TopicNames("c3.").ledger])
        while watching.is_set():
            for m in c.consume(1000, timeout=0.2):
                if m.error() is None:
                    seen.append(time.monotonic())
        c.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        work = Workload(accounts=60, transfers=10_000, seed=9, prefix="c3")
        oracle = Oracle()
        for name, commands in work.phases:
            for c in commands:
                oracle.apply(c)
            if name == "transfers":
                # Kill a broker while the transfers flow, and time the gap in the output.
                sent: list[int] = []
                sender = threading.Thread(
                    target=lambda cmds=commands, out=sent: out.append(stack.send(cmds))
                )
                begun = time.monotonic()
                sender.start()
                while not seen or seen[-1] < begun:  # wait until the ledger is producing
                    assert time.monotonic() - begun < 120, "the transfers did not start"
                    time.sleep(0.05)
                killed_at = time.monotonic()
                cluster3.kill_node(2)
                sender.join()
                assert sent == [0]
                stack.wait(timeout_s=300)
                after = [t for t in seen if t >= killed_at]
                assert after, "no ledger output after the broker was killed"
                gaps = [b - a for a, b in zip([killed_at, *after], after, strict=False)]
                stalled_s = max(gaps)
                print(f"output stalled at most {stalled_s:.1f}s after the broker was killed")
                cluster3.start_node(2, timeout_s=180)
            else:
                assert stack.send(commands) == 0
                stack.wait(timeout_s=300)
        assert stack.balances() == oracle.balances()
        r = queries.replay(settings)
        assert r.problems == [] and r.duplicates == 0
        assert queries.verify(settings, r) == []
        # The controller fences a silent broker after broker.session.timeout.ms (9 s) and moves
        # its leaderships; clients then refresh metadata. Allow that plus a margin, not more.
        assert stalled_s < 45, f"progress stalled {stalled_s:.0f}s after losing a broker"
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
        watching.clear()
        stack.stop()
