"""The executor's Kafka clients: its consumer of requests (and of the delay topics) and its
producer of results, retries, dead letters, breaker transitions and statistics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer

from base.config import Settings, kafka_client_config
from connectors.psp.limits import ExecutorLimits

_RDKAFKA_LOG = "connectors.psp.rdkafka"


def bootstrap_of(settings: Settings) -> str:
    """The cluster's address. The caller resolves the embedded cluster's address
    (``paystream.bootstrap.resolved``, as for every process); without one, the embedded
    broker's first node."""
    return settings.bootstrap or f"127.0.0.1:{settings.broker_port_base}"


def clients(
    settings: Settings,
    limits: ExecutorLimits,
    *,
    group: str,
    name: str,
    instance: int,
    on_commit: Callable[..., Any],
    on_error: Callable[..., Any],
) -> tuple[Consumer, Producer]:
    """The executor's consumer (static member ``group``-``instance``) and producer."""
    bootstrap = bootstrap_of(settings)
    consumer = Consumer(
        {
            **kafka_client_config(settings, bootstrap),
            "group.id": group,
            "client.id": name,
            # Static membership: a restarted executor takes its partitions back at once.
            "group.instance.id": f"{group}-{instance}",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 10,
            "on_commit": on_commit,
            "error_cb": on_error,
            "logger": logging.getLogger(_RDKAFKA_LOG),
        }
    )
    producer = Producer(
        {
            **kafka_client_config(settings, bootstrap),
            "client.id": name,
            "enable.idempotence": True,
            "acks": "all",
            # Java's default partitioner, so every client agrees which partition owns a key.
            "partitioner": "murmur2_random",
            "linger.ms": limits.producer_linger_ms,
            "compression.type": "lz4",
            "delivery.timeout.ms": limits.delivery_timeout_ms,
            "error_cb": on_error,
            "logger": logging.getLogger(_RDKAFKA_LOG),
        }
    )
    return consumer, producer
