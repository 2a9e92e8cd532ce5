"""Creating the declared topics (``base.topics``) on a broker, and finding drift from them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from base.config import KafkaSecurity, load_settings
from base.topics import TOPICS, replication_for

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int = 12,
    brokers: int = 1,
    only: Iterable[str] | None = None,
    timeout_s: float = 30.0,
    security: KafkaSecurity | None = None,
) -> list[str]:
    """Create missing topics (idempotent). Returns the names created."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # NewTopic: not in __all__
        AdminClient,
        NewTopic,
    )

    admin = AdminClient(_client_config(bootstrap, security))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    replication = replication_for(brokers)
    wanted = [t for t in TOPICS if only is None or t.key in set(only)]
    new = [
        NewTopic(
            prefix + t.name,
            num_partitions=partitions,
            replication_factor=replication,
            config=t.configs(replication),
        )
        for t in wanted
        if prefix + t.name not in existing
    ]
    created: list[str] = []
    if not new:
        return created
    for name, fut in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            fut.result()
            created.append(name)
        except Exception as exc:  # TOPIC_ALREADY_EXISTS from a concurrent creator is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    _wait_for_leaders(admin, [t.topic for t in new], timeout_s)
    return created


def _client_config(
    bootstrap: str, security: KafkaSecurity | None
) -> dict[str, str | int | float | bool]:
    if security is None:
        # Only for a caller that passes no security (paystream/cli.py's `topics` verb, until
        # it passes its settings' kafka_security): the process's PAYSTREAM_KAFKA_* settings.
        security = load_settings().kafka_security
    return {"bootstrap.servers": bootstrap, **security.librdkafka()}


def _wait_for_leaders(admin: object, names: list[str], timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout_s)  # type: ignore[attr-defined]
        ok = all(
            n in md.topics
            and md.topics[n].error is None
            and md.topics[n].partitions
            and all(p.leader >= 0 for p in md.topics[n].partitions.values())
            for n in names
        )
        if ok:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics without leaders after {timeout_s}s: {names}")


@dataclass(frozen=True, slots=True)
class Drift:
    topic: str
    what: str
    declared: str
    actual: str


def topic_drift(
    bootstrap: str,
    prefix: str = "",
    partitions: int = 12,
    brokers: int = 1,
    security: KafkaSecurity | None = None,
) -> list[Drift]:
    """Compare declared topics with the broker's actual configuration."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not in its __all__
        AdminClient,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient(_client_config(bootstrap, security))
    md = admin.list_topics(timeout=30)
    replication = replication_for(brokers)
    drifts: list[Drift] = []
    resources = []
    for t in TOPICS:
        name = prefix + t.name
        if name not in md.topics:
            drifts.append(Drift(name, "exists", "yes", "missing"))
            continue
        parts = md.topics[name].partitions
        if len(parts) != partitions:
            drifts.append(Drift(name, "partitions", str(partitions), str(len(parts))))
        rf = len(next(iter(parts.values())).replicas) if parts else 0
        if rf != replication:
            drifts.append(Drift(name, "replication.factor", str(replication), str(rf)))
        resources.append((t, ConfigResource(ResourceType.TOPIC, name)))
    if resources:
        futs = admin.describe_configs([r for _, r in resources])
        for t, res in resources:
            actual = futs[res].result()
            for k, v in t.configs(replication).items():
                got = actual[k].value if k in actual else None
                if got != v:
                    drifts.append(Drift(res.name, k, v, str(got)))
    return drifts
