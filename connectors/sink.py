"""The warehouse sink: ledger, transfer, outcome, account, alert and payment events into
ClickHouse.

At-least-once, made exact by the tables (ReplacingMergeTree keyed by event id) and by insert
deduplication tokens. The sequence per batch:

  1. Poll until ``batch_rows_max`` rows or ``batch_interval_ms`` (read_committed).
  2. Decode each record into its table's row; a record that cannot be decoded or mapped
     goes to the dead-letter topic with its reason and does not stop its partition.
  3. Flush: insert each table's rows, with a token made of the batch's offset ranges.
  4. Only after ClickHouse acknowledged every insert, commit the consumed offsets.

A crash between 3 and 4 replays the batch: the rows come again with the same event ids.

For operators (and the crash tests), the sink says where it picks up: the batch being
inserted is noted in ``$PAYSTREAM_HOME/warehouse-inflight[-<prefix>].json`` until its offsets
are committed, so a restarted sink logs the batch the last run left in flight; and it logs the
first offset it consumes of each partition ("resumed ... at offset N").
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import position
from base.topics import TopicNames
from connectors.errors import PoisonRecord
from connectors.payment_rows import (
    PAYMENT_ATTEMPT_COLUMNS,
    PAYMENT_ATTEMPT_TABLE,
    PAYMENT_STATUS_COLUMNS,
    PAYMENT_STATUS_TABLE,
    payment_attempt_row,
    payment_status_row,
)
from connectors.risk_rows import (
    REVIEW_EVENT_COLUMNS,
    REVIEW_EVENTS_TABLE,
    RISK_DECISION_COLUMNS,
    RISK_DECISIONS_TABLE,
    RISK_LABEL_COLUMNS,
    RISK_LABELS_TABLE,
    RISK_VERSION_COLUMNS,
    RISK_VERSIONS_TABLE,
    review_event_row,
    risk_decision_row,
    risk_label_row,
    risk_version_row,
)
from connectors.schedule_rows import (
    OCCURRENCE_COLUMNS,
    OCCURRENCE_TABLE,
    SCHEDULE_COLUMNS,
    SCHEDULE_TABLE,
    occurrence_row,
    schedule_row,
)
from schemas.codec import HEADER_BYTES, MAGIC, Codec
from schemas.errors import DecodeError

log = logging.getLogger(__name__)

SINK_GROUP = "paystream-warehouse"

Mapper = Callable[[dict[str, Any], int, int], None]

LEDGER_COLUMNS = [
    "event_id", "entry_id", "command_id", "transfer_id", "account", "counterparty", "currency",
    "amount", "balance_after", "account_seq", "kind", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
TRANSFER_COLUMNS = [
    "event_id", "transfer_id", "command_id", "from_account", "to_account", "currency", "amount",
    "status", "reason", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
OUTCOME_COLUMNS = [
    "event_id", "command_id", "command_type", "account", "status", "reason", "digest", "ts",
    "kafka_partition", "kafka_offset",
]  # fmt: skip
ACCOUNT_COLUMNS = [
    "event_id", "command_id", "account", "kind", "user", "currency", "related", "relation_kind",
    "reason", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip
RELATION_COLUMNS = ["event_id", "account", "related", "relation_kind", "action", "ts"]
ALERT_COLUMNS = [
    "alert_id", "kind", "accounts", "transfer_ids", "command_ids", "amounts", "currency",
    "timestamps", "related_accounts", "relation_kinds", "ts", "kafka_partition", "kafka_offset",
]  # fmt: skip


def _dec(text: str | None) -> Decimal | None:
    if text is None:
        return None
    d = Decimal(text)
    if not d.is_finite():
        raise PoisonRecord(f"amount {text!r} is not a number")
    return d


def ledger_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["event_id"], r["entry_id"], r["command_id"], r["transfer_id"], r["account"],
        r["counterparty"], r["currency"], _dec(r["amount"]), _dec(r["balance_after"]),
        r["account_seq"], r["kind"], r["ts"], p, o,
    ]  # fmt: skip


def transfer_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["event_id"], r["transfer_id"], r["command_id"], r["from_account"], r["to_account"],
        r["currency"], _dec(r["amount"]), r["status"], r["reason"], r["ts"], p, o,
    ]  # fmt: skip


def outcome_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["event_id"], r["command_id"], r["command_type"], r["account"], r["status"],
        r["reason"], r["digest"], r["ts"], p, o,
    ]  # fmt: skip


def account_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["event_id"], r["command_id"], r["account"], r["kind"], r["user"], r["currency"],
        r["related"], r["relation_kind"], r["reason"], r["ts"], p, o,
    ]  # fmt: skip


def relation_row(r: dict[str, Any]) -> list[Any]:
    return [r["event_id"], r["account"], r["related"], r["relation_kind"], r["kind"], r["ts"]]


def alert_row(r: dict[str, Any], p: int, o: int) -> list[Any]:
    return [
        r["alert_id"], r["kind"], list(r["accounts"]), list(r["transfer_ids"]),
        list(r.get("command_ids") or []), [_dec(a) for a in r["amounts"]],
        r.get("currency") or "", list(r.get("timestamps") or []),
        list(r.get("related_accounts") or []), list(r.get("relation_kinds") or []), r["ts"], p, o,
    ]  # fmt: skip


# --- sinks: add rows, flush them ---


class BatchingSink(ABC):
    """Buffers rows per table; ``flush`` writes them all or raises (nothing is committed)."""

    def __init__(self) -> None:
        self.buffers: dict[str, list[list[Any]]] = {}

    def add(self, table: str, row: list[Any]) -> None:
        self.buffers.setdefault(table, []).append(row)

    @property
    def rows(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def flush(self, token: str) -> None:
        for table, rows in self.buffers.items():
            if rows:
                self.write(table, rows, f"{token}:{table}")
        self.buffers.clear()

    def discard(self) -> None:
        self.buffers.clear()

    @abstractmethod
    def write(self, table: str, rows: list[list[Any]], token: str) -> None: ...


COLUMNS = {
    "ledger_entries": LEDGER_COLUMNS,
    "transfers": TRANSFER_COLUMNS,
    "command_outcomes": OUTCOME_COLUMNS,
    "account_events": ACCOUNT_COLUMNS,
    "relations": RELATION_COLUMNS,
    "alerts": ALERT_COLUMNS,
    PAYMENT_STATUS_TABLE: PAYMENT_STATUS_COLUMNS,
    PAYMENT_ATTEMPT_TABLE: PAYMENT_ATTEMPT_COLUMNS,
    SCHEDULE_TABLE: SCHEDULE_COLUMNS,
    OCCURRENCE_TABLE: OCCURRENCE_COLUMNS,
    RISK_DECISIONS_TABLE: RISK_DECISION_COLUMNS,
    REVIEW_EVENTS_TABLE: REVIEW_EVENT_COLUMNS,
    RISK_LABELS_TABLE: RISK_LABEL_COLUMNS,
    RISK_VERSIONS_TABLE: RISK_VERSION_COLUMNS,
}


class ClickHouseSink(BatchingSink):
    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client

    def write(self, table: str, rows: list[list[Any]], token: str) -> None:
        self.client.insert(
            table,
            rows,
            column_names=COLUMNS[table],
            settings={"insert_deduplication_token": token},
        )

    def write_avro(self, table: str, container: bytes) -> None:
        self.client.raw_insert(table, insert_block=container, fmt="Avro")


# --- the fast path: Avro bodies straight into ClickHouse ---

# topic key -> (Avro schema, Null ingest table whose materialized views fill the real tables)
RAW_INGEST = {
    "ledger": ("LedgerPosting", "ledger_ingest"),
    "transfers": ("TransferEvent", "transfers_ingest"),
    "outcomes": ("CommandOutcome", "outcomes_ingest"),
    "accounts": ("AccountEvent", "account_events_ingest"),
}


def _zigzag(n: int) -> bytes:
    """Avro's int/long encoding."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_container(schema: dict[str, Any], bodies: list[bytes]) -> bytes:
    """An Avro object container file holding ``bodies`` (already-encoded records) uncompressed."""
    import json
    import os

    sync = os.urandom(16)
    meta = {b"avro.schema": json.dumps(schema).encode(), b"avro.codec": b"null"}
    out = bytearray(b"Obj\x01")
    out += _zigzag(len(meta))
    for k, v in meta.items():
        out += _zigzag(len(k)) + k + _zigzag(len(v)) + v
    out += b"\x00" + sync
    data = b"".join(bodies)
    out += _zigzag(len(bodies)) + _zigzag(len(data)) + data + sync
    return bytes(out)


def with_kafkaposition(schema: dict[str, Any]) -> dict[str, Any]:
    """The writer schema plus the two fields the sink appends to every body."""
    extra = [
        {"name": "kafka_partition", "type": "int", "doc": "source partition"},
        {"name": "kafka_offset", "type": "long", "doc": "source offset"},
    ]
    return {**schema, "fields": [*schema["fields"], *extra]}


# --- the consumer loop ---


@dataclass
class SinkCounters:
    batches: int = 0
    rows: int = 0
    dead_letters: int = 0
    started_at: float = field(default_factory=time.monotonic)


class WarehouseSink:
    def __init__(self, settings: Settings, sink: BatchingSink) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.sink = sink
        self.topics = TopicNames(settings.topic_prefix)
        self.codec = Codec.default()
        self.counters = SinkCounters()
        self._running = True
        bootstrap = settings.bootstrap or "127.0.0.1:9092"
        self.consumer = Consumer(
            {
                **kafka_client_config(settings, bootstrap),
                "group.id": settings.topic_prefix + SINK_GROUP,
                "client.id": "warehouse-sink",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
                "fetch.wait.max.ms": 50,
                # Backpressure: librdkafka prefetches at most this much while we insert.
                "queued.max.messages.kbytes": 65536,
            }
        )
        self.dead_letters = Producer(
            {**kafka_client_config(settings, bootstrap), "enable.idempotence": True, "acks": "all"}
        )
        # Records whose writer schema is the current one skip Python decoding entirely.
        self._raw: dict[str, tuple[bytes, str, dict[str, Any]]] = {}
        if isinstance(sink, ClickHouseSink):
            for key, (schema, table) in RAW_INGEST.items():
                topic = getattr(self.topics, key)
                fp = self.codec.fingerprint_of(schema)
                self._raw[topic] = (fp, table, with_kafkaposition(self.codec.schema(schema)))
        self._raw_buffers: dict[str, list[Message]] = {}
        prefix = settings.topic_prefix.rstrip(".")
        self.inflight_path = (
            settings.home / f"warehouse-inflight{'-' + prefix if prefix else ''}.json"
        )
        self._resumed: set[tuple[str, int]] = set()  # partitions consumed since the start
        self._mappers: dict[str, Mapper] = {
            self.topics.ledger: lambda r, p, o: sink.add("ledger_entries", ledger_row(r, p, o)),
            self.topics.transfers: lambda r, p, o: sink.add("transfers", transfer_row(r, p, o)),
            self.topics.outcomes: lambda r, p, o: sink.add(
                "command_outcomes", outcome_row(r, p, o)
            ),
            self.topics.accounts: self._account,
            self.topics.alerts: lambda r, p, o: sink.add("alerts", alert_row(r, p, o)),
        }
        # A topic with several record types maps by (topic, schema); another schema there is
        # poison. payment_orders and payment_requests follow by materialized view (0004).
        events = self.topics.payment_events
        self._schema_mappers: dict[tuple[str, str], Mapper] = {
            (events, "PaymentStatusChanged"): lambda r, p, o: sink.add(
                PAYMENT_STATUS_TABLE, payment_status_row(r, p, o)
            ),
            (events, "PaymentAttempt"): lambda r, p, o: sink.add(
                PAYMENT_ATTEMPT_TABLE, payment_attempt_row(r, p, o)
            ),
            # Scheduled payments (0006): snapshots and occurrences.
            (self.topics.schedule_events, "ScheduleChanged"): lambda r, p, o: sink.add(
                SCHEDULE_TABLE, schedule_row(r, p, o)
            ),
            (self.topics.schedule_events, "ScheduleOccurrence"): lambda r, p, o: sink.add(
                OCCURRENCE_TABLE, occurrence_row(r, p, o)
            ),
            **self._risk_mappers(),
        }

    def _risk_mappers(self) -> dict[tuple[str, str], Mapper]:
        """Risk decisions, review events, labels and published versions (docs/risk.md)."""
        t, sink = self.topics, self.sink
        return {
            (t.risk_decisions, "RiskDecision"): lambda r, p, o: sink.add(
                RISK_DECISIONS_TABLE, risk_decision_row(r, p, o)
            ),
            (t.review_events, "ReviewEvent"): lambda r, p, o: sink.add(
                REVIEW_EVENTS_TABLE, review_event_row(r, p, o)
            ),
            (t.risk_labels, "RiskLabel"): lambda r, p, o: sink.add(
                RISK_LABELS_TABLE, risk_label_row(r, p, o)
            ),
            (t.risk_versions, "RiskVersion"): lambda r, p, o: sink.add(
                RISK_VERSIONS_TABLE, risk_version_row(r, p, o)
            ),
        }

    def _account(self, r: dict[str, Any], p: int, o: int) -> None:
        self.sink.add("account_events", account_row(r, p, o))
        if r["kind"] in ("related", "unrelated"):
            self.sink.add("relations", relation_row(r))

    def subscribed_topics(self) -> list[str]:
        return list(dict.fromkeys([*self._mappers, *(t for t, _ in self._schema_mappers)]))

    def stop(self, *_: object) -> None:
        self._running = False

    def run(self, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        self._report_inflight()
        self.consumer.subscribe(self.subscribed_topics())
        try:
            while self._running:
                self.step()
        finally:
            self.consumer.close()
            self.dead_letters.flush(10)

    def step(self) -> int:
        """One batch: poll, map, insert, commit. Returns the rows written."""
        deadline = time.monotonic() + self.limits.sink_batch_interval_ms / 1000
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        # 1. Poll until the batch is full or its time is up.
        while self._rows() < self.limits.sink_batch_rows_max and time.monotonic() < deadline:
            msgs = self.consumer.consume(min(10_000, self.limits.sink_batch_rows_max), timeout=0.05)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error: %s", err)
                    continue
                topic, partition, offset = position(msg)
                k = (topic, partition)
                if k not in self._resumed:
                    self._resumed.add(k)
                    log.info("resumed %s/%d at offset %d", topic, partition, offset)
                first = offsets.get(k, (offset, 0))[0]
                offsets[k] = (first, offset)
                # 2. Decode and map; poison goes to the dead-letter topic.
                self._map(msg)
            if not msgs and not offsets:
                return 0
        if not offsets:
            return 0
        rows = self._rows()
        # 3. Insert every table's rows; the token names the exact offset ranges.
        token = ",".join(f"{t}/{p}@{a}-{b}" for (t, p), (a, b) in sorted(offsets.items()))
        self._note_inflight(rows, token)
        try:
            self._flush_raw()
            self.sink.flush(token)
        except Exception:
            # Nothing committed: rewind to the batch start and try again later.
            self.sink.discard()
            self._raw_buffers.clear()
            for (t, p), (a, _) in offsets.items():
                self.consumer.seek(TopicPartition(t, p, a))
            log.exception("warehouse insert failed; the batch will be retried")
            time.sleep(1.0)
            return 0
        # 4. Only now commit the offsets.
        self.consumer.commit(
            offsets=[TopicPartition(t, p, b + 1) for (t, p), (_, b) in offsets.items()],
            asynchronous=False,
        )
        with contextlib.suppress(FileNotFoundError):
            self.inflight_path.unlink()
        self.counters.batches += 1
        self.counters.rows += rows
        return rows

    def _note_inflight(self, rows: int, token: str) -> None:
        """The batch about to be inserted, until its offsets are committed (see the module doc)."""
        tmp = self.inflight_path.with_name(f".{self.inflight_path.name}.tmp")
        try:
            self.inflight_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"rows": rows, "offsets": token}))
            os.replace(tmp, self.inflight_path)
        except OSError as exc:  # a note for operators must never stop the sink
            log.warning("cannot note the batch in flight in %s: %s", self.inflight_path, exc)

    def _report_inflight(self) -> None:
        try:
            last = json.loads(self.inflight_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("unreadable %s: %s", self.inflight_path, exc)
            return
        log.info(
            "the last run stopped with a batch in flight (%s rows, offsets %s):"
            " it is consumed and inserted again",
            last.get("rows"),
            last.get("offsets"),
        )

    def _rows(self) -> int:
        return self.sink.rows + sum(len(b) for b in self._raw_buffers.values())

    def _flush_raw(self) -> None:
        """Insert the raw bodies; a block ClickHouse refuses is redone record by record."""
        sink = self.sink
        if not isinstance(sink, ClickHouseSink):  # only ClickHouse takes Avro containers
            return
        for topic, msgs in self._raw_buffers.items():
            _, table, schema = self._raw[topic]
            bodies = []
            for m in msgs:
                _, partition, offset = position(m)
                body = (m.value() or b"")[HEADER_BYTES:]
                bodies.append(body + _zigzag(partition) + _zigzag(offset))
            try:
                sink.write_avro(table, avro_container(schema, bodies))
            except Exception as exc:  # a poison record in the block: find it the slow way
                log.warning(
                    "fast insert into %s failed (%s); retrying record by record", table, exc
                )
                for m in msgs:
                    self._map_decoded(m)
        self._raw_buffers.clear()

    def _map(self, msg: Message) -> None:
        topic = position(msg)[0]
        raw = self._raw.get(topic)
        value = msg.value()
        if (
            raw is not None
            and value is not None
            and value[2:HEADER_BYTES] == raw[0]
            and value[:2] == MAGIC
        ):
            self._raw_buffers.setdefault(topic, []).append(msg)
            return
        self._map_decoded(msg)

    def _map_decoded(self, msg: Message) -> None:
        topic, partition, offset = position(msg)
        try:
            schema, record = self.codec.decode(msg.value() or b"")
            mapper = self._schema_mappers.get((topic, schema)) or self._mappers.get(topic)
            if mapper is None:
                raise PoisonRecord(f"no warehouse table for {schema} on {topic}")
            mapper(record, partition, offset)
        except (DecodeError, PoisonRecord, KeyError, TypeError, ValueError, ArithmeticError) as exc:
            self._dead_letter(msg, exc)

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        source = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
        log.warning("dead letter %s: %s", source, exc)
        value = self.codec.encode(
            "DeadLetter",
            {
                "source": source,
                "reason": f"warehouse sink cannot store it: {exc}"[: self.limits.reason_chars_max],
                "error_code": getattr(exc, "code", type(exc).__name__),
                "payload": (msg.value() or b"")[: self.limits.command_bytes_max],
                "ts": int(time.time() * 1_000_000),
            },
        )
        self.dead_letters.produce(self.topics.deadletter, value, source.encode())
        self.dead_letters.poll(0)
        self.counters.dead_letters += 1
