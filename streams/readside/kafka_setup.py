"""The read side's Kafka set-up: its source topics, its changelogs, its credentials."""

from __future__ import annotations

import logging
import time
from typing import Any

from base.config import KafkaSecurity, Settings, kafka_client_config
from base.topics import TopicNames, replication_for

log = logging.getLogger(__name__)


def faust_credentials(security: KafkaSecurity) -> dict[str, Any]:
    """The faust (aiokafka) form of PAYSTREAM_KAFKA_*: ``broker_credentials``, or nothing."""
    if security.protocol.upper() == "PLAINTEXT":
        return {}
    import ssl

    from faust.auth import SASLCredentials, SSLCredentials

    context = ssl.create_default_context(cafile=security.ssl_ca_location) if security.tls else None
    if security.sasl:
        return {
            "broker_credentials": SASLCredentials(
                username=security.sasl_username,
                password=security.sasl_password,
                mechanism=security.sasl_mechanism or "SCRAM-SHA-512",
                ssl_context=context,
            )
        }
    return {"broker_credentials": SSLCredentials(context)}


def partition_count(settings: Settings, names: TopicNames) -> int:
    """The source topics' actual partition count (they must agree: co-partitioning)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_client_config(settings))
    wanted = [names.ledger, names.accounts, names.transfers, names.outcomes]
    md = admin.list_topics(timeout=30)
    counts = {}
    for t in wanted:
        if t not in md.topics or not md.topics[t].partitions:
            raise RuntimeError(f"topic {t} does not exist; run `paystream up` first")
        counts[t] = len(md.topics[t].partitions)
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"source topics are not co-partitioned: {counts}")
    return next(iter(counts.values()))


def ensure_changelogs(settings: Settings, names: list[str], partitions: int) -> None:
    """Create the tables' changelog topics (faust's own, compacted) before faust starts.

    faust 0.15.3 declares them concurrently with the consumer's first subscription: on a
    first start the assignment can miss a changelog, whose table then never recovers and
    whose first write fails with PartitionsMismatch ("changelog has 0 partitions").
    """
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient(kafka_client_config(settings))
    existing = admin.list_topics(timeout=30).topics
    replication = replication_for(settings.brokers)
    for name in names:
        if name in existing and len(existing[name].partitions) != partitions:
            raise RuntimeError(
                f"changelog {name} has {len(existing[name].partitions)} partitions, "
                f"the source topics {partitions}: delete it to rebuild the read side"
            )
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication,
            config={
                "cleanup.policy": "compact",
                "min.insync.replicas": str(max(1, replication - 1)),
            },
        )
        for name in names
        if name not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, request_timeout=30).items():
        try:
            fut.result()
            log.info("created changelog topic %s", name)
        except Exception as exc:  # a concurrent worker created it first
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    # Created is not yet visible: faust's first assignment ignores a changelog missing from
    # the metadata ("Ignoring missing topic"), so wait until every partition has a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=10).topics
        if all(
            n in md
            and len(md[n].partitions) == partitions
            and all(p.leader >= 0 for p in md[n].partitions.values())
            for n in names
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"changelog topics not visible after 30 s: {names}")
