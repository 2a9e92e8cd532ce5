"""Shared fixtures.

Kafka starts lazily: only tests that ask for ``kafka_cluster`` (directly, or through
``settings``/``topics``) pay for a JVM, so pure unit tests run without Java.
"""

from __future__ import annotations

import random
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

# The checkout is not installed into the venv: make `ops`, `paystream`... importable from it.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from ops.kafka import KafkaCluster, ensure_jars  # noqa: E402
from ops.topics import TopicNames, ensure_topics  # noqa: E402
from paystream.config import Settings  # noqa: E402

# Below Linux's ephemeral range (32768+), so client sockets never grab a port we picked.
_PORT_LOW, _PORT_HIGH = 20000, 32000


def _ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port_base(count: int = 2) -> int:
    """A port p with p..p+count-1 all free on 127.0.0.1 (random, so parallel runs differ)."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(_PORT_LOW, _PORT_HIGH - count)
        if _ports_free(base, count):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {_PORT_LOW}..{_PORT_HIGH}")


@pytest.fixture(scope="session")
def free_port_base() -> Callable[[int], int]:
    """Call with a count to get a base port with that many free consecutive ports."""
    return _free_port_base


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory, free_port_base: Callable[[int], int]
) -> Iterator[KafkaCluster]:
    """One single-node Kafka for the whole session; stopped at the end."""
    ensure_jars()
    home: Path = tmp_path_factory.mktemp("kafka")
    cluster = KafkaCluster(home, brokers=1, port_base=free_port_base(2))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def settings(tmp_path: Path, kafka_cluster: KafkaCluster) -> Settings:
    """Settings pointing at the session broker, with a fresh topic namespace per test."""
    s = Settings(
        home=tmp_path,
        bootstrap=kafka_cluster.bootstrap,
        topic_prefix=f"t{uuid4().hex[:10]}.",
        partitions=4,
    )
    ensure_topics(kafka_cluster.bootstrap, s.topic_prefix, partitions=4, brokers=1)
    return s


@pytest.fixture
def topics(settings: Settings) -> TopicNames:
    return TopicNames(settings.topic_prefix)
