"""SASL/SCRAM-SHA-512 on the embedded broker: paystream's clients get in, a wrong password does not.

One KRaft node with a SASL_PLAINTEXT listener, its SCRAM credentials written at format time
(``kafka-storage format --add-scram``), and the PAYSTREAM_KAFKA_* settings mapped into
confluent-kafka (producer, consumer, admin, paystream's own CommandProducer and topic setup)
and into faust's aiokafka credentials. TLS is documented in docs/security.md, not tested here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from base.config import KafkaSecurity, Settings, kafka_client_config, load_settings
from base.topics import TopicNames
from ops.kafka import KafkaCluster
from ops.topics import ensure_topics
from producers.commands import parse_line
from producers.producer import CommandProducer
from schemas.codec import Codec

pytestmark = pytest.mark.integration

PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def sasl_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    free_port_base: Callable[[int], int],
    kafka_libs: Path,
) -> Iterator[KafkaCluster]:
    home: Path = tmp_path_factory.mktemp("kafka-sasl")
    cluster = KafkaCluster(
        home,
        libs=kafka_libs,
        port_base=free_port_base(2),
        heap_mb=384,
        sasl_users={"paystream": PASSWORD, "analyst": "other-" + PASSWORD},
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def env_for(cluster: KafkaCluster, password: str = PASSWORD) -> dict[str, str]:
    return {
        "PAYSTREAM_BOOTSTRAP": cluster.bootstrap,
        "PAYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PAYSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PAYSTREAM_KAFKA_SASL_USERNAME": "paystream",
        "PAYSTREAM_KAFKA_SASL_PASSWORD": password,
    }


def test_the_broker_is_configured_for_scram(sasl_cluster: KafkaCluster) -> None:
    props = (sasl_cluster.node_dir(1) / "server.properties").read_text()
    assert f"listeners=SASL_PLAINTEXT://127.0.0.1:{sasl_cluster.broker_port(1)}," in props
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in props
    assert "inter.broker.listener.name=SASL_PLAINTEXT" in props


def test_paystream_clients_produce_and_consume_over_scram(
    sasl_cluster: KafkaCluster, tmp_path: Path
) -> None:
    env = env_for(sasl_cluster)
    settings = load_settings({**env, "PAYSTREAM_HOME": str(tmp_path)}).with_(
        topic_prefix=f"s{uuid4().hex[:8]}.", partitions=2
    )
    assert settings.kafka_security.librdkafka() == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "paystream",
        "sasl.password": PASSWORD,
    }
    assert PASSWORD not in repr(settings)
    created = ensure_topics(
        settings.bootstrap or "", settings.topic_prefix, 2, 1, security=settings.kafka_security
    )
    assert created
    topics = TopicNames(settings.topic_prefix)

    with CommandProducer(settings) as producer:
        cmd = parse_line('{"type":"deposit","command_id":"s1","account":"acct-1","amount":"1.00"}')
        producer.send(cmd)
        assert producer.flush(30) == 0
        assert (producer.delivered, producer.failed) == (1, 0)

    consumer = Consumer(
        {
            **kafka_client_config(settings),
            "group.id": f"sasl-{uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topics.commands])
        deadline = time.monotonic() + 30
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is not None:
                msg = None
        assert msg is not None, "nothing consumed over SASL"
        assert Codec.default().decode(msg.value()) == ("Deposit", dict(cmd.record))
    finally:
        consumer.close()


def _auth_errors(conf: dict[str, object]) -> list[KafkaError]:
    errors: list[KafkaError] = []
    producer = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": 5000})
    producer.produce("anything", b"x")
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    producer.purge()
    producer.flush(1)
    return errors


@pytest.mark.parametrize(
    "password", ["wrong-password", PASSWORD + "x"], ids=["another", "one-more-char"]
)
def test_a_wrong_password_is_refused(sasl_cluster: KafkaCluster, password: str) -> None:
    settings = load_settings({**env_for(sasl_cluster, password), "PAYSTREAM_HOME": "/tmp"})
    errors = _auth_errors(kafka_client_config(settings))
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
    assert "Authentication failed" in errors[0].str()
    with pytest.raises(KafkaException):
        AdminClient(kafka_client_config(settings)).list_topics(timeout=5)


def test_a_plaintext_client_gets_nothing(sasl_cluster: KafkaCluster) -> None:
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": sasl_cluster.bootstrap}).list_topics(timeout=5)


def test_faust_credentials_reach_the_broker(sasl_cluster: KafkaCluster) -> None:
    """The read side's faust app gets the same settings as aiokafka credentials."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError as AIOKafkaError
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from streams.readside.app import _faust_credentials

    def auth(password: str) -> dict[str, object]:
        security = KafkaSecurity.from_env(env_for(sasl_cluster, password))
        return credentials_to_aiokafka_auth(_faust_credentials(security)["broker_credentials"])

    async def send(password: str) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=sasl_cluster.bootstrap, request_timeout_ms=10_000, **auth(password)
        )
        await producer.start()
        try:
            admin_topics = await producer.client.fetch_all_metadata()
            assert admin_topics is not None
        finally:
            await producer.stop()

    asyncio.run(send(PASSWORD))
    with pytest.raises(AIOKafkaError):
        asyncio.run(send("wrong-password"))


def test_settings_without_security_are_plaintext(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, bootstrap="127.0.0.1:9092")
    assert kafka_client_config(s) == {"bootstrap.servers": "127.0.0.1:9092"}


def test_the_ledger_worker_runs_exactly_once_over_scram(
    sasl_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Transactions, the consumer group and the changelog restore, all authenticated: the
    workers get the security settings from the test's Settings, nothing else."""
    from tests.stack import LedgerStack

    env = env_for(sasl_cluster)
    settings = load_settings({**env, "PAYSTREAM_HOME": str(tmp_path)}).with_(
        topic_prefix=f"w{uuid4().hex[:8]}.", partitions=2
    )
    ensure_topics(
        settings.bootstrap or "", settings.topic_prefix, 2, 1, security=settings.kafka_security
    )
    stack = LedgerStack(settings, workers=1)
    stack.start()
    try:
        opens = [
            {
                "type": "open_account",
                "command_id": f"o{a}",
                "account": a,
                "user": a,
                "currency": "USD",
            }
            for a in ("a1", "a2")
        ]
        assert stack.send(opens) == 0
        stack.wait(timeout_s=120)
        moves = [
            {"type": "deposit", "command_id": "d1", "account": "a1", "amount": "10.00"},
            {"type": "transfer", "command_id": "t1", "from": "a1", "to": "a2", "amount": "2.50"},
        ]
        assert stack.send(moves) == 0
        stack.wait(timeout_s=120)
        balances = {a: b["balance"] for a, b in stack.balances().items()}
        assert balances == {"a1": "7.50", "a2": "2.50"}
    finally:
        stack.stop()
