"""Risk and review records as warehouse rows (ops/sql/0007_risk.sql).

Like ``connectors/payment_rows.py``: a decoded record and its Kafka position in, a row in the
table's column order out; anything ClickHouse would refuse for the whole batch raises
``PoisonRecord`` so the sink dead-letters that record alone.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.errors import PoisonRecord
from connectors.payment_rows import money

RISK_DECISIONS_TABLE = "risk_decisions"
REVIEW_EVENTS_TABLE = "review_events"
RISK_LABELS_TABLE = "risk_labels"
RISK_VERSIONS_TABLE = "risk_versions"

RISK_DECISION_COLUMNS = [
    "decision_id", "payment_id", "user_id", "type", "amount", "currency", "mode", "action",
    "score", "escalated", "rules_version", "rules_sha256", "matched", "features",
    "model_version", "model_score", "contributions", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
REVIEW_EVENT_COLUMNS = [
    "event_id", "item_id", "kind", "payment_id", "event", "status", "rules", "category",
    "evidence", "actions", "decision", "note", "reviewer", "request_id", "created_at", "ts",
    "kafka_partition", "kafka_offset",
]  # fmt: skip
RISK_LABEL_COLUMNS = [
    "label_id", "payment_id", "label", "source", "note", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
RISK_VERSION_COLUMNS = [
    "sha256", "kind", "version", "content", "content_bytes", "metrics", "published_by", "ts",
    "kafka_partition", "kafka_offset",
]  # fmt: skip

_SCORE_MAX = Decimal(1)


def _score(text: Any) -> Decimal:
    d = money(text)
    if not 0 <= d <= _SCORE_MAX:
        raise PoisonRecord(f"model_score {text!r} is not in 0..1")
    return d


def risk_decision_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["decision_id"], r["payment_id"], r["user_id"], r["type"], money(r["amount"]),
        r["currency"], r["mode"], r["action"], money(r["score"]), bool(r["escalated"]),
        r["rules_version"], r["rules_sha256"], list(r["matched"]), r["features"],
        r["model_version"], _score(r["model_score"]), r["contributions"], r["ts"], p, o,
    ]  # fmt: skip


def review_event_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["event_id"], r["item_id"], r["kind"], r["payment_id"], r["event"], r["status"],
        list(r["rules"]), r["category"], r["evidence"], list(r["actions"]), r["decision"],
        r["note"], r["reviewer"], r["request_id"], r["created_at"], r["ts"], p, o,
    ]  # fmt: skip


def risk_label_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    if r["label"] not in ("fraud", "legit"):
        raise PoisonRecord(f"label {str(r['label'])[:32]!r} is neither fraud nor legit")
    return [r["label_id"], r["payment_id"], r["label"], r["source"], r["note"], r["ts"], p, o]


def risk_version_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    content: bytes = r["content"]
    text = ""
    if r["kind"] == "rules":
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            raise PoisonRecord("a rule file that is not UTF-8") from None
    return [
        r["sha256"], r["kind"], r["version"], text, len(content), r["metrics"],
        r["published_by"], r["ts"], p, o,
    ]  # fmt: skip
