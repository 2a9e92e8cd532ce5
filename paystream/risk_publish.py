"""Publishing a rule file or a model, and reading what is live (docs/risk.md, "Versions").

One Kafka transaction writes the content to ``paystream.risk-versions.v1`` (compacted, keyed
``<kind>/<sha256>``) and one activation to every partition of ``paystream.risk-requests.v1``,
keyed by that partition's context key. Every risk process therefore switches at the same log
position: the activation's offset in each partition. All of a user's payments live in one
partition, so each payment before it is decided by the old version and each one after by the
new, on whichever worker, and again on any replay of the log. The transaction makes it all
or nothing: no partition switches unless every one does.
"""

from __future__ import annotations

import getpass
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from base.config import Settings, kafka_client_config
from base.kafka import scan
from base.topics import TopicNames
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.risk import model as rm
from streams.risk_agent import CONTEXT_PREFIX, context_key, decode_state
from streams.risk_library import content_key

PUBLISHER_ID = "paystream-risk-publisher"
CONTENT_BYTES_MAX = 900 * 1024  # under Kafka's default 1 MB message


@dataclass
class Published:
    kind: str
    version: str
    sha256: str
    activation_id: str
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> activation offset

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "sha256": self.sha256,
            "activation_id": self.activation_id,
            "partitions": [{"partition": p, "offset": o} for p, o in sorted(self.offsets.items())],
        }


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def publish(
    settings: Settings,
    kind: rm.ActivationKind,
    version: str,
    sha256: str,
    content: bytes | None,
    metrics: str = "{}",
    by: str | None = None,
) -> Published:
    """Write ``content`` (unless None: an *_off activation) and activate it everywhere."""
    if content is not None and len(content) > CONTENT_BYTES_MAX:
        raise ValueError(f"{len(content)} bytes: more than {CONTENT_BYTES_MAX} may be published")
    names = TopicNames(settings.topic_prefix)
    codec = Codec.default()
    by = by or who()
    now = time.time_ns() // 1000
    producer = Producer(
        {
            **kafka_client_config(settings),
            "transactional.id": settings.topic_prefix + PUBLISHER_ID,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    producer.init_transactions(30)
    md = producer.list_topics(names.risk_requests, timeout=30)
    topic = md.topics.get(names.risk_requests)
    if topic is None or topic.error is not None or not topic.partitions:
        raise RuntimeError(f"topic {names.risk_requests} is missing; run `paystream up`")
    n = len(topic.partitions)
    got = Published(kind.value, version, sha256, f"{kind.value}-{uuid.uuid4().hex[:12]}")
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
        elif msg.topic() == names.risk_requests:
            got.offsets[msg.partition() or 0] = msg.offset() or 0

    producer.begin_transaction()
    if content is not None:
        store = "model" if kind is rm.ActivationKind.model else "rules"
        key = content_key(store, sha256)
        producer.produce(
            names.risk_versions,
            codec.encode(
                "RiskVersion",
                {
                    "sha256": sha256,
                    "kind": store,
                    "version": version,
                    "content": content,
                    "metrics": metrics,
                    "published_by": by,
                    "ts": now,
                },
            ),
            key.encode(),
            partition_for(key, _partitions(producer, names.risk_versions)),
            on_delivery=delivered,
        )
    for p in range(n):
        ck = context_key(p, n)
        producer.produce(
            names.risk_requests,
            codec.encode(
                "RiskActivation",
                {
                    "activation_id": got.activation_id,
                    "key": ck,
                    "kind": kind.value,
                    "version": version,
                    "sha256": sha256,
                    "published_by": by,
                    "ts": now,
                },
            ),
            ck.encode(),
            p,
            on_delivery=delivered,
        )
    producer.commit_transaction(60)
    producer.flush(10)
    if errors:
        raise RuntimeError(f"publication failed: {errors[0]}")
    return got


def _partitions(producer: Producer, topic: str) -> int:
    t = producer.list_topics(topic, timeout=30).topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} is missing; run `paystream up`")
    return len(t.partitions)


def contexts(settings: Settings) -> dict[int, rm.RiskContext]:
    """What is active in each partition, as the risk workers' changelog has it."""
    topic = TopicNames(settings.topic_prefix).risk_state
    out: dict[int, rm.RiskContext] = {}
    for msg in scan(settings, topic, timeout_s=120):
        key = msg.key()
        value = msg.value()
        if not key or value is None or not key.startswith(CONTEXT_PREFIX.encode()):
            continue
        state = decode_state(value)
        if state.context is not None:
            out[msg.partition() or 0] = state.context
    return out


def versions(settings: Settings) -> list[dict[str, Any]]:
    """Every published rule file and model (without their content)."""
    topic = TopicNames(settings.topic_prefix).risk_versions
    codec = Codec.default()
    seen: dict[str, dict[str, Any]] = {}
    for msg in scan(settings, topic, timeout_s=120):
        schema, r = codec.decode(msg.value() or b"")
        if schema != "RiskVersion":
            continue
        seen[content_key(r["kind"], r["sha256"])] = {
            "kind": r["kind"], "version": r["version"], "sha256": r["sha256"],
            "bytes": len(r["content"]), "published_by": r["published_by"], "ts": r["ts"],
            "metrics": r["metrics"],
        }  # fmt: skip
    return sorted(seen.values(), key=lambda v: v["ts"])


def content(settings: Settings, kind: str, sha256: str) -> bytes:
    from streams.risk_library import KafkaLibrary

    lib = KafkaLibrary(settings, wait_s=5)
    try:
        return lib.get(kind, sha256)
    finally:
        lib.close()


def live_model(settings: Settings) -> rm.Ref | None:
    """The model active in the most recently switched partition (all agree after a publish)."""
    ctxs = sorted(contexts(settings).values(), key=lambda c: c.since)
    return ctxs[-1].model if ctxs else None


def label_record(payment_id: str, label: str, source: str, note: str) -> dict[str, Any]:
    return {
        "label_id": f"{source}/{payment_id}",
        "payment_id": payment_id,
        "label": label,
        "source": source,
        "note": note,
        "ts": time.time_ns() // 1000,
    }
