"""Every topic paystream uses, declared once.

Topic names are a public contract (``paystream.<name>.v<version>``). A test namespace may put
a prefix in front (``PAYSTREAM_TOPIC_PREFIX``); production leaves it empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

INFINITE_MS = -1


@dataclass(frozen=True, slots=True)
class TopicSpec:
    key: str  # short name used in code
    name: str  # contract name without prefix
    doc: str
    compacted: bool = False
    # Every money topic is co-partitioned with the commands so one worker owns an account.
    co_partitioned: bool = True

    def configs(self, replication: int) -> dict[str, str]:
        cfg = {
            "min.insync.replicas": str(min_insync(replication)),
            "unclean.leader.election.enable": "false",
        }
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        else:
            # The command and ledger logs are the event store: keep everything forever.
            cfg["cleanup.policy"] = "delete"
            cfg["retention.ms"] = str(INFINITE_MS)
            cfg["retention.bytes"] = "-1"
        return cfg


def min_insync(replication: int) -> int:
    # One replica may be lost without stopping writes; a single broker needs 1.
    return max(1, replication - 1)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("commands", "paystream.commands.v1", "Commands from upstream, keyed by account."),
    TopicSpec(
        "saga",
        "paystream.ledger-saga.v1",
        "Internal steps between account agents (credit requests, voids, user reservations).",
    ),
    TopicSpec("ledger", "paystream.ledger.v1", "Double-entry postings, one per account side."),
    TopicSpec(
        "outcomes", "paystream.outcomes.v1", "One outcome per command: accepted or rejected."
    ),
    TopicSpec(
        "transfers", "paystream.transfers.v1", "Transfer lifecycle: pending, posted, voided."
    ),
    TopicSpec("accounts", "paystream.accounts.v1", "Account events: opened, blocked, related..."),
    TopicSpec(
        "ledger_state",
        "paystream.ledger-state.v1",
        "Changelog of the ledger agents' state (compacted).",
        compacted=True,
    ),
    TopicSpec("alerts", "paystream.alerts.v1", "Related-account alerts from the detector."),
    TopicSpec("deadletter", "paystream.deadletter.v1", "Input that could not be used, with why."),
)

_BY_KEY = {t.key: t for t in TOPICS}


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Resolved topic names for one namespace (prefix)."""

    prefix: str = ""

    def __getattr__(self, key: str) -> str:
        try:
            return self.prefix + _BY_KEY[key].name
        except KeyError:
            raise AttributeError(key) from None

    def all(self) -> dict[str, str]:
        return {t.key: self.prefix + t.name for t in TOPICS}


def replication_for(brokers: int) -> int:
    return min(3, brokers)


def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    partitions: int = 12,
    brokers: int = 1,
    only: Iterable[str] | None = None,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create missing topics (idempotent). Returns the names created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(_client_config(bootstrap))
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


def _client_config(bootstrap: str) -> dict[str, str]:
    # Only a bootstrap string comes in here: the security settings come from PAYSTREAM_KAFKA_*.
    from paystream.config import KafkaSecurity

    return {"bootstrap.servers": bootstrap, **KafkaSecurity.from_env().librdkafka()}


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
    bootstrap: str, prefix: str = "", partitions: int = 12, brokers: int = 1
) -> list[Drift]:
    """Compare declared topics with the broker's actual configuration."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient(_client_config(bootstrap))
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
