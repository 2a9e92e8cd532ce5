"""The read side: a faust-streaming app folding the ledger's event topics into query tables.

Four agents consume ``ledger``, ``accounts``, ``transfers`` and ``outcomes`` (read_committed,
at least once) and fold them with the pure functions of :mod:`streams.readside.projections`
into four tables, served as JSON by faust's web server:

* ``accounts``: account -> view (balance, currency, user, status, seq, related...)
* ``account_history``: ``<account>#<seq % 50>`` -> posting; a ring of each account's last 50
  postings, kept out of the account view so that a posting rewrites ~300 bytes, not ~15 kB
* ``transfers``: transfer id -> lifecycle view
* ``outcomes``: command id -> the command's outcome (plus reuse rejections)

The source topics and the tables' changelogs have the same partition count and murmur2
keys, so faust's co-partitioning assignor gives one worker every table row of its source
partitions, and ``@app.table_route`` sends a request for a key to the worker that owns it.
Every row a worker writes for event ``e`` is written under ``e``'s partition (the history
ring keys are not hashed: they live in their account's partition).

Why at least once is safe: the projections ignore replays and duplicates, and every batch
rewrites each key it touched even when nothing changed, so a changelog write lost in a
``kill -9`` is repaired when the uncommitted tail of the source is consumed again.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn, cast

import faust
from confluent_kafka import KafkaException
from faust.serializers import codecs
from faust.stores.rocksdb import Store as RocksStore
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, StreamT
from faust.web import Request, Response, View

from base.config import KafkaSecurity, Limits, Settings, api_token, kafka_client_config
from base.topics import TopicNames, replication_for
from producers.commands import COMMAND_TYPES
from schemas.codec import Codec
from streams.readside import projections as pj

log = logging.getLogger(__name__)

APP_ID = "paystream-readside"
DEFAULT_WEB_PORT = 6066
LIMIT_DEFAULT = 20
LIMIT_MAX = 500

# A batch is folded in memory and each touched key is written once: fewer changelog writes
# when a key repeats (catch-up, hot accounts) and one agent wake-up per batch.
BATCH_MAX = 2000
BATCH_WITHIN_S = 0.05
PRODUCER_BUFFER_MAX = 50_000
# faust opens one RocksDB per table and partition (4 x 12 here), each by default with a 2 GiB
# block cache and up to 3 x 64 MiB memtables: bounded here to ~12 MiB per database.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 4 << 20,
}
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: without a restart handler, a failed batch ends the process
# Tests only (Settings.test_faults): this file under $PAYSTREAM_HOME fails the next batch once.
FAULT_BATCH = Path("faults") / "readside-batch"


# --- read_committed -----------------------------------------------------------------------
#
# faust 0.15.3 has no isolation-level setting: its aiokafka consumer reads read_committed only
# with processing_guarantee="exactly_once" (see AIOKafkaConsumerThread._create_worker_consumer).
# The write side is transactional, so an at-least-once reader must still skip aborted and
# open transactions: set the level on the consumer before it starts (its fetcher is created
# in start() from this attribute) and check the fetcher afterwards.


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = getattr(self._consumer, "_fetcher", None)
        level = getattr(fetcher, "_isolation_level", None)
        if level != 1:  # aiokafka.consumer.fetcher.READ_COMMITTED
            raise RuntimeError(f"consumer is not read_committed (fetcher level {level!r})")


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


class _App(faust.App):
    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


# --- table values: compact JSON (faust's "json" codec adds a custom encoder pass) ----------


class _CompactJson(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


VALUE_CODEC = "paystream_json"
_COMPACT = _CompactJson()
codecs.register(VALUE_CODEC, _COMPACT)


def _set_current_event(event: Event | None) -> None:
    # Tables choose the changelog partition and the RocksDB shard from faust's current event.
    # take_events() buffers in another task, so the agent sets it for the event whose key it
    # writes (the same partition as the key, the topics being co-partitioned).
    _current_event.set(weakref.ref(event) if event is not None else None)


Event = EventT[bytes]
AnyTable = faust.Table[Any, Any]

# A row to write: (table, key, value, the event it comes from: its partition is the row's).
Row = tuple[AnyTable, str, Any, Event]


def _rows(table: AnyTable, views: dict[str, tuple[Any, Event]]) -> list[Row]:
    return [(table, k, v, ev) for k, (v, ev) in views.items() if v is not None]


# Rows enqueued for the changelog, to confirm: (table, changelog partition, records, future).
Pending = list[tuple[AnyTable, TP, int, Any]]


class TableWriter:
    """faust's own write path: ``table[key] = value``, one changelog send per row."""

    async def enqueue(self, rows: Sequence[Row]) -> Pending:
        for table, key, value, ev in rows:
            _set_current_event(ev)
            table[key] = value
        _set_current_event(None)
        return []

    async def confirm(self, pending: Pending) -> None:
        return None  # faust flushes its producer before it commits offsets


class BulkWriter:
    """The same writes as faust's Table, in bulk: one RocksDB put per row, one changelog
    record batch per (table, partition), persisted offsets once the batch is acknowledged.

    faust's path costs ~250 µs of CPU per row (the value encoded twice, a FutureMessage, a
    pass through the ProducerBuffer task and aiokafka's per-message send, a RocksDB put of
    the persisted offset on every acknowledgement); this one a few µs plus the encoding.
    It writes what faust would (same RocksDB shard per partition, same changelog records and
    persisted offsets), so faust's recovery and table reads are unchanged. RocksDB only.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self.persisted: dict[TP, int] = {}

    async def enqueue(self, rows: Sequence[Row]) -> Pending:
        """Store every row, then hand the changelog batches to the producer, in row order."""
        if not rows:
            return []
        producer = cast(Any, self.app.producer)._ensure_producer()  # the aiokafka producer
        encode = _COMPACT.dumps
        open_: dict[tuple[AnyTable, int], Any] = {}
        full: list[tuple[AnyTable, int, Any]] = []
        for table, key, value, ev in rows:
            partition = ev.message.partition
            k, v = key.encode(), encode(value)
            store = cast(RocksStore, table.data)
            store._db_for_partition(partition).put(k, v)
            store._key_index[k] = partition
            builder = open_.get((table, partition))
            if builder is None:
                builder = open_[(table, partition)] = producer.create_batch()
            if builder.append(key=k, value=v, timestamp=None) is None:  # batch full
                full.append((table, partition, builder))
                builder = open_[(table, partition)] = producer.create_batch()
                builder.append(key=k, value=v, timestamp=None)
        full.extend((t, p, b) for (t, p), b in open_.items())
        pending: Pending = []
        for table, partition, builder in full:
            topic = table.changelog_topic_name
            fut = await producer.send_batch(builder, topic, partition=partition)
            pending.append((table, TP(topic, partition), builder.record_count(), fut))
        return pending

    async def confirm(self, pending: Pending) -> None:
        """Wait for the changelog batches; then record them as persisted (as faust does)."""
        for table, tp, count, fut in pending:
            md = await fut
            last = md.offset + count - 1
            if last > self.persisted.get(tp, -1):  # batches of two agents may ack out of order
                self.persisted[tp] = last
                cast(RocksStore, table.data).set_persisted_offset(tp, last)


def history_key(account: str, seq: int) -> str:
    return f"{account}#{seq % pj.HISTORY_MAX}"


class ReadSide:
    """The faust app, its tables, agents and web views, built from settings."""

    def __init__(
        self,
        settings: Settings,
        web_port: int = DEFAULT_WEB_PORT,
        writer: str = "bulk",
        on_batch_failed: Callable[[str], object] | None = None,
    ) -> None:
        """``on_batch_failed(reason)`` must not return (``paystream readside`` restarts the
        process in place); without it a failed batch ends the process (exit 70)."""
        self.settings = settings
        self.on_batch_failed = on_batch_failed
        self.web_port = web_port
        self.names = TopicNames(settings.topic_prefix)
        self.partitions = _partition_count(settings, self.names)
        self.codec = Codec.default()
        self.started_at = time.time()
        # Progress per source partition: the last offset folded, and counts for /health.
        self.processed: dict[TP, int] = {}
        self.events: dict[str, int] = {"ledger": 0, "accounts": 0, "transfers": 0, "outcomes": 0}
        self.skipped = 0
        self._lock = asyncio.Lock()
        # POST /commands: its bearer token, and one producer on one thread (confluent-kafka
        # blocks, and CommandProducer is not thread-safe).
        self.api_token = api_token(settings)
        self._command_producer: Any = None
        self._produce_thread = ThreadPoolExecutor(1, thread_name_prefix="readside-commands")
        self.app = self._new_app()
        self._declare()
        _ensure_changelogs(settings, [t.changelog_topic_name for t in self.tables], self.partitions)
        self.writer: TableWriter | BulkWriter = (
            TableWriter() if writer == "faust" else BulkWriter(self.app)
        )

    # -- app and settings ----------------------------------------------------------------

    def _new_app(self) -> faust.App:
        s = self.settings
        brokers = [f"kafka://{h.strip()}" for h in (s.bootstrap or "").split(",") if h.strip()]
        # One directory per worker: RocksDB locks its files, and workers on one host differ
        # by web port.
        datadir = s.home / "readside" / f"worker-{self.web_port}"
        datadir.mkdir(parents=True, exist_ok=True)
        return _App(
            f"{s.topic_prefix}{APP_ID}",
            broker=brokers,
            autodiscover=False,
            datadir=str(datadir),
            key_serializer="raw",
            value_serializer="raw",
            store="rocksdb://",
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            topic_partitions=self.partitions,
            topic_replication_factor=replication_for(s.brokers),
            # No leader-election topic: nothing here runs "on leader".
            topic_disable_leader=True,
            table_standby_replicas=0,
            # Joining fast: faust defaults (60 s session, 3 s heartbeat, 3 s recovery delay)
            # make the first join take ~30 s; short timeouts let a restarted worker's stale
            # member expire quickly and the group settle in a few seconds.
            # Static membership: a worker restarted after a crash takes its old member's place
            # at once instead of waiting for the dead member's session to expire.
            consumer_group_instance_id=f"{s.topic_prefix}{APP_ID}@{socket.gethostname()}:{self.web_port}",
            broker_session_timeout=10.0,
            broker_heartbeat_interval=1.0,
            broker_rebalance_timeout=20.0,
            broker_request_timeout=30.0,
            stream_recovery_delay=0.0,
            # Throughput: big polls and buffers; commit every second (replays are harmless).
            broker_max_poll_records=5000,
            stream_buffer_maxsize=20_000,
            broker_commit_interval=1.0,
            producer_linger=0.01,
            producer_max_batch_size=1 << 20,
            web_enabled=True,
            web_bind="127.0.0.1",
            web_host="127.0.0.1",
            web_port=self.web_port,
            canonical_url=f"http://127.0.0.1:{self.web_port}",
            web_tables_enabled=False,
            web_graph_enabled=False,
            **_faust_credentials(s.kafka_security),
        )

    def _topic(self, name: str) -> faust.TopicT:
        # internal=False: faust must never create or reconfigure paystream's topics.
        return self.app.topic(
            name,
            partitions=self.partitions,
            internal=False,
            key_serializer="raw",
            value_serializer="raw",
        )

    def _table(self, name: str, help: str) -> AnyTable:
        # Raw (UTF-8) keys everywhere: the router hashes the changelog key's bytes with murmur2
        # exactly as the write side partitions, and the store and the changelog must agree.
        # faust's Table() takes serializers only from key_type/value_type models and builds
        # its changelog topic (JSON keys!) as it registers the table, so both are given here.
        changelog = self.app.topic(
            f"{self.app.conf.id}-{name}-changelog",
            key_serializer="raw",
            value_serializer=VALUE_CODEC,
            partitions=self.partitions,
            compacting=True,
            acks=False,
            internal=True,
            maxsize=131_072,  # as faust's own: changelog reads are not committed
            allow_empty=True,
        )
        table = self.app.Table(  # always a faust.Table (typed as the TableT interface)
            name,
            partitions=self.partitions,
            help=help,
            changelog_topic=changelog,
            options=dict(ROCKSDB_OPTIONS),
        )
        table.key_serializer = "raw"  # type: ignore[attr-defined]
        table.value_serializer = VALUE_CODEC  # type: ignore[attr-defined]
        return cast(AnyTable, table)

    def _declare(self) -> None:
        app = self.app
        self.accounts = self._table("accounts", "account -> account view")
        self.history = self._table("account_history", "<account>#<seq % 50> -> posting")
        self.transfers = self._table("transfers", "transfer id -> transfer view")
        self.outcomes = self._table("outcomes", "command id -> command outcome")
        self.tables = [self.accounts, self.history, self.transfers, self.outcomes]

        for key, fold in (
            ("ledger", self._fold_ledger),
            ("accounts", self._fold_accounts),
            ("transfers", self._fold_transfers),
            ("outcomes", self._fold_outcomes),
        ):
            app.agent(self._topic(getattr(self.names, key)), name=f"readside-{key}")(
                self._agent(key, fold)
            )
        self._declare_views()
        # faust blocks every incoming message while more than 100 changelog records wait in
        # its producer buffer (ProducerBuffer.max_messages, no setting), draining them one by
        # one: with a batch writing thousands of rows that caps the fold at ~1k events/s.
        # The buffer is still bounded by the stream buffers (stream_buffer_maxsize).
        app.producer.buffer.max_messages = PRODUCER_BUFFER_MAX

    def _agent(self, key: str, fold: Any) -> Any:
        async def agent(stream: StreamT[bytes]) -> None:
            # take_events() is faust.Stream's, not in the StreamT interface.
            batches = cast(faust.Stream[bytes], stream).take_events(
                BATCH_MAX, within=BATCH_WITHIN_S
            )
            async for events in batches:
                try:
                    self._injected_fault()
                    # One batch at a time across the agents (ledger and accounts both write
                    # account views): fold, store and enqueue without interleaving, so no
                    # view is computed from a row another batch is about to overwrite, and
                    # changelog records are enqueued in the order the rows were stored.
                    async with self._lock:
                        try:
                            rows = fold(events)
                        finally:
                            _set_current_event(None)
                        pending = await self.writer.enqueue(rows)
                    # Before take_events acks the batch: offsets are committed only once the
                    # changelog holds the rows of their events.
                    await self.writer.confirm(pending)
                except Exception as exc:
                    # Fail-stop, like kill -9: take_events acks the batch when the loop
                    # unwinds and faust commits on shutdown, so a graceful crash would lose it.
                    # The batch is consumed again after the restart (at least once).
                    tps = sorted(
                        {f"{ev.message.tp.topic}/{ev.message.tp.partition}" for ev in events}
                    )
                    log.exception(
                        "read side batch of %d %s events failed (offsets %d..%d of %s)",
                        len(events),
                        key,
                        min(ev.message.offset for ev in events),
                        max(ev.message.offset for ev in events),
                        ", ".join(tps),
                    )
                    self._fail_stop(
                        f"read side batch of {len(events)} {key} events failed: {exc!r}"
                    )
                processed = self.processed
                for ev in events:
                    processed[ev.message.tp] = ev.message.offset
                self.events[key] += len(events)

        agent.__name__ = f"readside_{key}"
        return agent

    def _fail_stop(self, reason: str) -> NoReturn:
        if self.on_batch_failed is not None:
            self.on_batch_failed(reason)  # restarts the process in place; does not return
        log.critical("%s; exiting (no restart handler)", reason)
        logging.shutdown()
        os._exit(EXIT_BATCH_FAILED)

    def _injected_fault(self) -> None:
        """Tests only: fail this batch, once, if the fault file is there (it is removed)."""
        if not self.settings.test_faults:
            return
        try:
            (self.settings.home / FAULT_BATCH).unlink()
        except FileNotFoundError:
            return
        raise RuntimeError(f"injected fault: {FAULT_BATCH}")

    # -- folds: a batch of events in, the rows to write out (each touched key once) ---------
    #
    # Each touched key is written even when its view did not change: that is what repairs a
    # changelog row lost in a crash (the replayed event is a no-op, but the row is sent again).

    def _skip(self, ev: Event, why: object) -> None:
        # A record the projections cannot use is logged and counted (/health), not retried:
        # it would fail the same way on every replay.
        self.skipped += 1
        log.warning("skipping record %s@%d: %s", ev.message.tp, ev.message.offset, why)

    def _decode(
        self, events: Sequence[Event], schema: str
    ) -> Iterable[tuple[Event, dict[str, Any]]]:
        decode = self.codec.decode
        for ev in events:
            try:
                name, record = decode(ev.message.value or b"")  # a tombstone fails: skipped
            except Exception as exc:
                self._skip(ev, exc)
                continue
            if name != schema:
                self._skip(ev, f"a {name} record where {schema} records belong")
                continue
            yield ev, record

    @staticmethod
    def _current(table: AnyTable, views: dict[str, tuple[Any, Event]], key: str, ev: Event) -> Any:
        """The key's view: this batch's latest, else the table's (read from ev's shard)."""
        if key in views:
            return views[key][0]
        _set_current_event(ev)
        return table.get(key)

    def _fold_ledger(self, events: Sequence[Event]) -> list[Row]:
        views: dict[str, tuple[pj.View | None, Event]] = {}
        ring: dict[str, tuple[Any, Event]] = {}
        for ev, posting in self._decode(events, "LedgerPosting"):
            try:
                account = posting["account"]
                if pj.is_system_account(account):
                    continue
                new = pj.apply_posting(self._current(self.accounts, views, account, ev), posting)
                slot = pj.history_slot(new, posting)
                entry = pj.history_entry(posting) if slot is not None else None
            except Exception as exc:
                self._skip(ev, exc)
                continue
            views[account] = (new, ev)
            if entry is not None:
                ring[f"{account}#{slot}"] = (entry, ev)
        return _rows(self.accounts, views) + _rows(self.history, ring)

    def _fold_keyed(
        self,
        events: Sequence[Event],
        schema: str,
        table: AnyTable,
        key_field: str,
        apply: Any,
    ) -> list[Row]:
        views: dict[str, tuple[Any, Event]] = {}
        for ev, record in self._decode(events, schema):
            try:
                key = record[key_field]
                views[key] = (apply(self._current(table, views, key, ev), record, ev), ev)
            except Exception as exc:
                self._skip(ev, exc)
        return _rows(table, views)

    def _fold_accounts(self, events: Sequence[Event]) -> list[Row]:
        def apply(view: pj.View | None, e: dict[str, Any], ev: Event) -> pj.View | None:
            return pj.apply_account_event(view, e, ev.message.offset)

        return self._fold_keyed(events, "AccountEvent", self.accounts, "account", apply)

    def _fold_transfers(self, events: Sequence[Event]) -> list[Row]:
        def apply(view: pj.View | None, e: dict[str, Any], ev: Event) -> pj.View | None:
            return pj.apply_transfer_event(view, e)

        return self._fold_keyed(events, "TransferEvent", self.transfers, "transfer_id", apply)

    def _fold_outcomes(self, events: Sequence[Event]) -> list[Row]:
        def apply(view: pj.View | None, e: dict[str, Any], ev: Event) -> pj.View | None:
            return pj.apply_outcome(view, e)

        return self._fold_keyed(events, "CommandOutcome", self.outcomes, "command_id", apply)

    # -- web views --------------------------------------------------------------------------

    def _declare_views(self) -> None:
        app, rs = self.app, self

        # faust's views get the path's match_info as keyword arguments (``id``), which
        # table_route's annotation does not allow for: hence the type: ignore[arg-type].
        def not_found(view: View, what: str, key: str) -> Response:
            return view.json({"error": f"{what}_not_found", what: key}, status=404)

        @app.page("/accounts")
        class Accounts(View):
            async def get(self, request: Request) -> Response:
                rows = [
                    pj.account_summary(v)
                    for v in rs.accounts.values()
                    if isinstance(v, dict) and v.get("status") is not None
                ]
                rows.sort(key=lambda r: r["account"])
                return self.json(rows)

        @app.page("/accounts/{id}")
        class Account(View):
            @app.table_route(table=rs.accounts, match_info="id")  # type: ignore[arg-type]
            async def get(self, request: Request, id: str) -> Response:
                v = rs.accounts.get(id)
                if v is None or v["status"] is None:  # unknown, or its "opened" not folded yet
                    return not_found(self, "account", id)
                return self.json(pj.account_detail(v))

        @app.page("/accounts/{id}/transfers")
        class AccountTransfers(View):
            @app.table_route(table=rs.accounts, match_info="id")  # type: ignore[arg-type]
            async def get(self, request: Request, id: str) -> Response:
                try:
                    limit = int(request.query.get("limit", LIMIT_DEFAULT))
                except ValueError:
                    return self.json({"error": "limit_invalid"}, status=400)
                if not 1 <= limit <= LIMIT_MAX:
                    return self.json({"error": "limit_invalid", "max": LIMIT_MAX}, status=400)
                v = rs.accounts.get(id)
                if v is None or v["status"] is None:
                    return not_found(self, "account", id)
                slots = {
                    seq % pj.HISTORY_MAX: rs.history.get(history_key(id, seq))
                    for seq in pj.history_seqs(v, limit)
                }
                postings = pj.recent_postings(v, slots, limit)
                return self.json({"account": id, "seq": v["seq"], "postings": postings})

        @app.page("/transfers/{id}")
        class Transfer(View):
            @app.table_route(table=rs.transfers, match_info="id")  # type: ignore[arg-type]
            async def get(self, request: Request, id: str) -> Response:
                v = rs.transfers.get(id)
                return self.json(v) if v is not None else not_found(self, "transfer", id)

        @app.page("/commands/{id}")
        class Command(View):
            @app.table_route(table=rs.outcomes, match_info="id")  # type: ignore[arg-type]
            async def get(self, request: Request, id: str) -> Response:
                v = rs.outcomes.get(id)
                return self.json(v) if v is not None else not_found(self, "command", id)

        @app.page("/commands")
        class SendCommand(View):
            async def post(self, request: Request) -> Response:
                status, body = await rs.post_command(cast(Any, request))
                headers = (
                    {"WWW-Authenticate": 'Bearer realm="paystream"'} if status == 401 else None
                )
                return self.json(body, status=status, headers=headers)

        @app.page("/openapi.json")
        class OpenApi(View):
            async def get(self, request: Request) -> Response:
                return self.json(openapi_document())

        @app.page("/health")
        class Health(View):
            async def get(self, request: Request) -> Response:
                return self.json(rs.health())

    # -- POST /commands: the one state-changing endpoint ----------------------------------

    async def post_command(self, request: Any) -> tuple[int, dict[str, Any]]:
        """One JSON command (the ``paystream send`` line format) onto the commands topic.

        The token is checked before the body is read; the body is read up to the limit only.
        """
        if not bearer_token_ok(request.headers.get("Authorization"), self.api_token):
            return 401, {"error": "unauthorized", "message": "Authorization: Bearer <token>"}
        limit = self.settings.limits.http_body_bytes_max
        body = await _read_body(request, limit)
        if body is None:
            return 413, {"error": "too_large", "message": f"at most {limit} bytes"}
        from producers.commands import parse_line
        from producers.errors import InvalidCommand

        try:
            cmd = parse_line(body, self.settings.limits)
        except InvalidCommand as exc:
            return 400, {"error": exc.code, "message": exc.message, "field": exc.field}
        loop = asyncio.get_running_loop()
        err, partition, offset = await loop.run_in_executor(
            self._produce_thread, self._produce_command, cmd
        )
        if err is not None:
            # The command may still arrive: a retry with the same command_id is harmless.
            return 503, {"error": "not_delivered", "message": err, "command_id": cmd.command_id}
        return 202, {
            "command_id": cmd.command_id,
            "type": cmd.type,
            "partition": partition,
            "offset": offset,
            "outcome": f"/commands/{cmd.command_id}",
        }

    def _produce_command(self, cmd: Any) -> tuple[str | None, int, int]:
        from producers.producer import CommandProducer

        if self._command_producer is None:
            self._command_producer = CommandProducer(
                self.settings, client_id="paystream-readside-api"
            )
        answer: list[tuple[str | None, int, int]] = []

        def delivered(err: Any, msg: Any) -> None:
            answer.append((None if err is None else str(err), msg.partition(), msg.offset()))

        self._command_producer.send(cmd, on_delivery=delivered)
        self._command_producer.flush(self.settings.limits.http_produce_timeout_s)
        return answer[0] if answer else ("no answer from the broker in time", -1, -1)

    def health(self) -> dict[str, Any]:
        """Progress per assigned source partition; ``lag`` counts transaction markers too."""
        consumer = self.app.consumer
        try:
            assigned = sorted(consumer.assignment())
        except Exception:  # not started or rebalancing
            assigned = []
        sources = {getattr(self.names, k): k for k in self.events}
        committed: dict[TP, int] = getattr(consumer, "_committed_offset", {})
        parts = []
        total = 0
        for tp in assigned:
            if tp.topic not in sources:
                continue
            try:
                end = consumer.highwater(tp)
            except Exception:
                end = None
            done = self.processed.get(tp)
            # Nothing folded since start: progress is the committed offset faust resumed from.
            nxt = done + 1 if done is not None else committed.get(tp)
            lag = max(0, end - nxt) if end is not None and nxt is not None else None
            total += lag or 0
            parts.append(
                {
                    "topic": sources[tp.topic],
                    "partition": tp.partition,
                    "processed_offset": done,
                    "end_offset": end,
                    "lag": lag,
                }
            )
        return {
            "status": "ok",
            "app_id": self.app.conf.id,
            "uptime_s": round(time.time() - self.started_at, 1),
            "cpu_s": round(time.process_time(), 2),
            "events": dict(self.events),
            "skipped": self.skipped,
            "lag_total": total,
            "partitions": parts,
        }


def bearer_token_ok(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header or not token:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


async def _read_body(request: Any, limit: int) -> bytes | None:
    """The request body, or None past ``limit`` bytes (never more than limit+1 read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            return None


def _faust_credentials(security: KafkaSecurity) -> dict[str, Any]:
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


def _partition_count(settings: Settings, names: TopicNames) -> int:
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


def _ensure_changelogs(settings: Settings, names: list[str], partitions: int) -> None:
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


# --- OpenAPI ----------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.0 description of every endpoint (also written to openapi.json)."""
    s, n = {"type": "string"}, {"type": "string", "nullable": True}
    i = {"type": "integer"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": s}
    not_found = _json_response("unknown key", _ref("Error"))

    def get(summary: str, ok: dict[str, Any], params: list[Any] | None = None, **more: Any) -> Any:
        op = {"summary": summary, "responses": {"200": ok, **more}}
        if params:
            op["parameters"] = params
        return {"get": op}

    summary_props = {
        "account": s,
        "user": n,
        "currency": n,
        "balance": {**n, "description": "decimal string in the account currency"},
        "status": {"type": "string", "enum": ["open", "blocked"], "nullable": True},
        "seq": {**i, "description": "account_seq of the last posting folded"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "paystream read side",
            "version": "1",
            "description": "Query views folded from paystream's event topics by faust. "
            "Eventually consistent with the ledger; a request for a key is routed to the "
            "worker that owns the key's partition.",
        },
        "paths": {
            "/accounts": get(
                "Every open or blocked account held by this worker",
                _json_response(
                    "accounts, sorted by id", {"type": "array", "items": _ref("AccountSummary")}
                ),
            ),
            "/accounts/{id}": get(
                "One account",
                _json_response("the account", _ref("Account")),
                [id_param],
                **{"404": not_found},
            ),
            "/accounts/{id}/transfers": get(
                "The account's recent postings, newest first (at most 50 are kept)",
                _json_response("recent postings", _ref("AccountPostings")),
                [
                    id_param,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            **i,
                            "minimum": 1,
                            "maximum": LIMIT_MAX,
                            "default": LIMIT_DEFAULT,
                        },
                    },
                ],
                **{"404": not_found, "400": _json_response("bad limit", _ref("Error"))},
            ),
            "/transfers/{id}": get(
                "One transfer's lifecycle",
                _json_response("the transfer", _ref("Transfer")),
                [id_param],
                **{"404": not_found},
            ),
            "/commands": {
                "post": {
                    "summary": "Send one command to the ledger (needs the API token)",
                    "description": "The body is one command in the JSON format of "
                    "`paystream send` (command_id required: a retry with the same id takes "
                    "effect once). 202 means the commands topic has it; its outcome follows at "
                    "/commands/{id}. The token is PAYSTREAM_API_TOKEN, else the contents of "
                    "$PAYSTREAM_HOME/api-token (made by `paystream up`, mode 0600).",
                    "security": [{"bearerAuth": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Command")}},
                    },
                    "responses": {
                        "202": _json_response("on the commands topic", _ref("CommandSent")),
                        "400": _json_response(
                            "not a valid command (error: the producer's code)", _ref("Error")
                        ),
                        "401": _json_response("missing or wrong bearer token", _ref("Error")),
                        "413": _json_response(
                            f"body over {Limits().http_body_bytes_max} bytes", _ref("Error")
                        ),
                        "503": _json_response(
                            "the broker did not acknowledge it (retry: same command_id)",
                            _ref("Error"),
                        ),
                    },
                }
            },
            "/commands/{id}": get(
                "A command's outcome",
                _json_response("the outcome", _ref("Outcome")),
                [id_param],
                **{"404": not_found},
            ),
            "/openapi.json": get(
                "This document", _json_response("OpenAPI 3.0", {"type": "object"})
            ),
            "/health": get(
                "Liveness and per-partition progress", _json_response("health", _ref("Health"))
            ),
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": s, "message": s, "field": n},
                    "required": ["error"],
                },
                "Command": {
                    "type": "object",
                    "description": "One command of the JSON command format; every value a "
                    "string (amounts too: decimal strings).",
                    "properties": {
                        "type": {"type": "string", "enum": list(COMMAND_TYPES)},
                        **{
                            f: s
                            for f in dict.fromkeys(
                                f for spec in COMMAND_TYPES.values() for f in spec.fields
                            )
                        },
                    },
                    "required": ["type", "command_id"],
                    "example": {
                        "type": "deposit",
                        "command_id": "c2",
                        "account": "acct-1",
                        "amount": "100.00",
                    },
                },
                "CommandSent": {
                    "type": "object",
                    "properties": {
                        "command_id": s,
                        "type": s,
                        "partition": i,
                        "offset": i,
                        "outcome": {**s, "description": "where its outcome will be"},
                    },
                },
                "AccountSummary": {
                    "type": "object",
                    "properties": summary_props,
                    "required": list(summary_props),
                },
                "Account": {
                    "type": "object",
                    "properties": {
                        **summary_props,
                        "held": {
                            **n,
                            "description": "always null: the held (in-flight) amount depends "
                            "on transfer lifecycle events, keyed by transfer id, so held on "
                            "other partitions than the account (`paystream balance` without "
                            "the read side shows it)",
                        },
                        "related": {"type": "object", "additionalProperties": n},
                        "blocked_reason": n,
                    },
                },
                "Posting": {
                    "type": "object",
                    "properties": {
                        "event_id": s,
                        "seq": i,
                        "kind": {
                            "type": "string",
                            "enum": [
                                "deposit",
                                "withdrawal",
                                "transfer_hold",
                                "transfer_post",
                                "transfer_void",
                            ],
                        },
                        "amount": {**s, "description": "signed decimal string"},
                        "balance_after": s,
                        "counterparty": s,
                        "transfer_id": n,
                        "command_id": s,
                        "entry_id": s,
                        "ts": {**i, "description": "microseconds since the epoch"},
                    },
                },
                "AccountPostings": {
                    "type": "object",
                    "properties": {
                        "account": s,
                        "seq": i,
                        "postings": {"type": "array", "items": _ref("Posting")},
                    },
                },
                "Transfer": {
                    "type": "object",
                    "properties": {
                        "transfer_id": s,
                        "command_id": s,
                        "from": s,
                        "to": s,
                        "currency": s,
                        "amount": s,
                        "status": {"type": "string", "enum": ["pending", "posted", "voided"]},
                        "reason": n,
                        "ts": {
                            "type": "object",
                            "additionalProperties": i,
                            "description": "status -> µs",
                        },
                    },
                },
                "Outcome": {
                    "type": "object",
                    "properties": {
                        "command_id": s,
                        "command_type": n,
                        "account": n,
                        "status": {
                            "type": "string",
                            "enum": ["accepted", "rejected"],
                            "nullable": True,
                        },
                        "reason": n,
                        "digest": n,
                        "event_id": n,
                        "ts": {**i, "nullable": True},
                        "reused": {
                            "type": "array",
                            "description": "later commands that reused the id with another payload",
                            "items": {"type": "object"},
                        },
                    },
                },
                "Health": {"type": "object"},
            },
        },
    }


# --- entry points ---------------------------------------------------------------------------


def _configure_logging() -> None:
    level = getattr(logging, os.environ.get("PAYSTREAM_LOG_LEVEL", "INFO").upper(), logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level,
            format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
            stream=sys.stderr,
        )
    # aiokafka logs every fetch/coordinator hiccup at INFO; faust's own INFO is useful.
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))


EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; the process entry point restarts


def run_readside(
    settings: Settings,
    web_port: int = DEFAULT_WEB_PORT,
    on_batch_failed: Callable[[str], object] | None = None,
) -> int:
    """Run one read-side worker in the foreground until SIGTERM/SIGINT. Returns an exit code.

    ``on_batch_failed``: see :class:`ReadSide` (``paystream readside`` passes the restart in
    place of ``paystream.bootstrap``)."""
    _configure_logging()
    from paystream.bootstrap import resolved

    settings = resolved(settings)
    from aiokafka.codec import has_lz4

    if not has_lz4():
        # The write side compresses with lz4; aiokafka would crash on the first fetch.
        log.error("the read side needs lz4 support for aiokafka: pip install 'aiokafka[lz4]'")
        return 2
    try:
        rs = ReadSide(
            settings,
            web_port,
            os.environ.get("PAYSTREAM_READSIDE_WRITER", "bulk"),
            on_batch_failed,
        )
    except (RuntimeError, KafkaException) as exc:  # no topics, not co-partitioned, no broker
        log.error("read side cannot start: %s", exc)
        return EX_TEMPFAIL  # worth another try: the broker may be restarting
    worker = faust.Worker(
        rs.app,
        loglevel=logging.getLevelName(logging.getLogger().level),
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
    )
    log.info(
        "read side %s: %d partitions, web http://127.0.0.1:%d",
        rs.app.conf.id,
        rs.partitions,
        web_port,
    )
    try:
        worker.execute_from_commandline()  # returns only by SystemExit
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from base.config import load_settings

    ap = argparse.ArgumentParser(prog="python -m streams.readside.app")
    ap.add_argument("--web-port", type=int, default=DEFAULT_WEB_PORT)
    ap.add_argument("--write-openapi", type=Path, help="write the OpenAPI document and exit")
    a = ap.parse_args(argv)
    if a.write_openapi:
        a.write_openapi.write_text(json.dumps(openapi_document(), indent=2) + "\n")
        return 0
    return run_readside(load_settings(), a.web_port)


if __name__ == "__main__":
    sys.exit(main())
