"""Training labels (``paystream.risk-labels.v1``): the demo's planted fraud, an analyst's
word, and, with reconciliation, chargebacks. The warehouse keeps them (``risk_labels``);
``paystream risk train`` reads them with the reviewers' declines."""

from __future__ import annotations

from base.config import Settings, kafka_client_config
from base.topics import TopicNames
from schemas.codec import Codec
from streams.partitioner import partition_for

from .risk_publish import label_record


def send_labels(settings: Settings, labels: list[tuple[str, str, str, str]]) -> None:
    """(payment_id, fraud|legit, source, note) each, acknowledged by the broker."""
    from confluent_kafka import Producer

    topic = TopicNames(settings.topic_prefix).risk_labels
    codec = Codec.default()
    p = Producer({**kafka_client_config(settings), "enable.idempotence": True, "acks": "all"})
    md = p.list_topics(topic, timeout=30).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        raise RuntimeError(f"topic {topic} is missing; run `paystream up`")
    n = len(md.partitions)
    failed: list[str] = []
    for payment_id, label, source, note in labels:
        if label not in ("fraud", "legit"):
            raise ValueError(f"label {label!r} is neither fraud nor legit")
        value = codec.encode("RiskLabel", label_record(payment_id, label, source, note))
        p.produce(
            topic,
            value,
            payment_id.encode(),
            partition_for(payment_id, n),
            on_delivery=lambda err, _m: failed.append(str(err)) if err else None,
        )
        p.poll(0)
    if p.flush(30) or failed:
        raise RuntimeError(f"labels not delivered: {failed[:1] or 'timeout'}")
