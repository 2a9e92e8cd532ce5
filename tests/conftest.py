"""Shared fixtures.

Kafka starts lazily: only tests that ask for ``kafka_cluster`` (directly, or through
``settings``/``topics``) pay for a JVM, so pure unit tests run without Java.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# Speed lives in benchmarks, not in tests: on a loaded 2-core machine an example may take
# longer than hypothesis's 200 ms deadline, or generate slowly; neither is a failure.
hypothesis_settings.register_profile(
    "paystream", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("paystream")

# The checkout is not installed into the venv: make `ops`, `paystream`... importable from it.
_REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from base.config import Settings, kafka_libs_dir, load_settings  # noqa: E402
from base.topics import TopicNames  # noqa: E402
from ops.kafka import KafkaCluster, ensure_jars  # noqa: E402
from ops.ports import free_port_base as _free_port_base  # noqa: E402
from ops.topics import ensure_topics  # noqa: E402


@pytest.fixture(scope="session")
def free_port_base() -> Callable[[int], int]:
    """Call with a count to get a base port with that many free consecutive ports."""
    return _free_port_base


# No read side listens here (the discard port): a test's CLI calls fall back to the
# changelog unless the test starts a read side of its own, on a port of its own.
NO_READSIDE_PORT = 9


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """The Kafka jars (fetched if missing): ``PAYSTREAM_KAFKA_LIBS`` or var/kafka/libs."""
    return ensure_jars(kafka_libs_dir(load_settings()))


@pytest.fixture(scope="session")
def kafka_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    free_port_base: Callable[[int], int],
    kafka_libs: Path,
) -> Iterator[KafkaCluster]:
    """One single-node Kafka for the whole session; stopped at the end."""
    home: Path = tmp_path_factory.mktemp("kafka")
    cluster = KafkaCluster(home, brokers=1, port_base=free_port_base(2), libs=kafka_libs)
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
        readside_port=NO_READSIDE_PORT,
        kafka_libs=kafka_cluster.libs,
    )
    ensure_topics(kafka_cluster.bootstrap, s.topic_prefix, partitions=4, brokers=1)
    return s


@pytest.fixture
def topics(settings: Settings) -> TopicNames:
    return TopicNames(settings.topic_prefix)
