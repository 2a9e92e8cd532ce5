"""The embedded Kafka broker: version, transactions, topic declarations, restarts."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from base.config import KAFKA_VERSION, Settings
from base.topics import TopicNames
from ops.kafka import KafkaCluster
from ops.topics import Drift, ensure_topics, topic_drift

pytestmark = pytest.mark.integration


def _read_values(
    bootstrap: str, topic: str, isolation: str, until: bytes, timeout_s: float = 20.0
) -> list[bytes]:
    """Values of partition 0 from the start, up to and including the first ``until``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{topic}-{isolation}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            values.append(value)
            if value == until:
                return values
        raise AssertionError(f"{until!r} not read from {topic} in {timeout_s}s; got {values}")
    finally:
        consumer.close()


def test_broker_is_up_and_reports_version(kafka_cluster: KafkaCluster) -> None:
    assert kafka_cluster.version().startswith("3.9.")
    assert kafka_cluster.version() == KAFKA_VERSION
    assert kafka_cluster.running()
    [node] = kafka_cluster.nodes_status()
    assert node["name"] == "kafka-1" and node["role"] == "broker" and node["alive"]
    md = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap}).list_topics(timeout=10)
    assert set(md.brokers) == {1}


def test_transactions_read_committed(settings: Settings, topics: TopicNames) -> None:
    assert settings.bootstrap is not None
    topic = topics.commands
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": f"{settings.topic_prefix}test-tx",
            "transaction.timeout.ms": 60_000,
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"acct-1", value=b"aborted", partition=0)
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"acct-1", value=b"committed", partition=0)
    producer.commit_transaction(30)
    producer.close()

    assert _read_values(settings.bootstrap, topic, "read_committed", b"committed") == [b"committed"]
    # The aborted record did reach the log; only read_committed hides it.
    assert _read_values(settings.bootstrap, topic, "read_uncommitted", b"committed") == [
        b"aborted",
        b"committed",
    ]


def test_ensure_topics_idempotent_and_drift(settings: Settings, topics: TopicNames) -> None:
    assert settings.bootstrap is not None
    bootstrap, prefix = settings.bootstrap, settings.topic_prefix
    assert ensure_topics(bootstrap, prefix, partitions=4, brokers=1) == []
    assert topic_drift(bootstrap, prefix, partitions=4, brokers=1) == []

    admin = AdminClient({"bootstrap.servers": bootstrap})
    change = ConfigResource(
        ResourceType.TOPIC,
        topics.ledger,
        incremental_configs=[
            ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for fut in admin.incremental_alter_configs([change]).values():
        fut.result(timeout=30)

    expected = [Drift(topics.ledger, "retention.ms", "-1", "86400000")]
    # The broker applies config changes from the metadata log, a moment after the reply.
    deadline = time.monotonic() + 10
    drifts = topic_drift(bootstrap, prefix, partitions=4, brokers=1)
    while drifts != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        drifts = topic_drift(bootstrap, prefix, partitions=4, brokers=1)
    assert drifts == expected


def test_data_survives_stop_and_start(
    tmp_path: Path, free_port_base: Callable[[int], int], kafka_libs: Path
) -> None:
    cluster = KafkaCluster(
        tmp_path / "home", brokers=1, port_base=free_port_base(2), heap_mb=384, libs=kafka_libs
    )
    try:
        cluster.start()
        cluster_id = (cluster.home / "kafka" / "cluster.id").read_text()
        meta = cluster.data_dir(1) / "meta.properties"
        formatted_at = meta.stat().st_mtime_ns
        [node] = cluster.nodes_status()
        cluster.start()  # idempotent: the live node is left alone
        assert cluster.nodes_status() == [node]
        assert cluster.pid_file(1).read_text().strip() == str(node["pid"])

        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        for fut in admin.create_topics([NewTopic("keep", 1, 1)]).values():
            fut.result(timeout=30)
        producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        producer.produce("keep", value=b"survives")
        assert producer.flush(30) == 0
        # Gone before the broker stops, or they would log every failed reconnect to stderr.
        producer.close()
        del admin, producer

        cluster.stop()
        assert not cluster.running()
        assert not cluster.pid_file(1).exists()
        cluster.start()
        assert (cluster.home / "kafka" / "cluster.id").read_text() == cluster_id
        assert _read_values(cluster.bootstrap, "keep", "read_committed", b"survives") == [
            b"survives"
        ]
        assert meta.stat().st_mtime_ns == formatted_at  # storage is formatted only once
    finally:
        cluster.stop()
    assert not cluster.running()
