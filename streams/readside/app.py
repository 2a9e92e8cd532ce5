"""The read side: a faust-streaming app folding the ledger's event topics into query tables.

This module holds the app, its tables and agents (``ReadSide``) and the entry point; beside it:
``faust_compat`` (what is patched in faust, pinned to its version), ``writer`` (table rows,
in bulk), ``views`` (the web API), ``openapi`` (its document), ``kafka_setup`` (topics,
changelogs, credentials) and ``projections`` (the pure folds).

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

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import faust
from confluent_kafka import KafkaException
from faust.types import TP, StreamT

from base.config import Settings
from base.topics import TopicNames, replication_for
from schemas.codec import Codec
from streams.readside import projections as pj
from streams.readside.faust_compat import VALUE_CODEC, App, Event, set_current_event
from streams.readside.kafka_setup import (
    ensure_changelogs,
    faust_credentials,
    partition_count,
)
from streams.readside.openapi import openapi_document
from streams.readside.views import CommandEndpoint, bearer_token_ok, declare_views
from streams.readside.writer import AnyTable, BulkWriter, Row, TableWriter, history_key, rows_of

# Re-exported: what callers import from here (the CLI, tests).
__all__ = [
    "ReadSide",
    "bearer_token_ok",
    "faust_credentials",
    "history_key",
    "openapi_document",
    "run_readside",
]
_faust_credentials = faust_credentials  # the name tests/integration/test_sasl.py imports

log = logging.getLogger(__name__)

APP_ID = "paystream-readside"
DEFAULT_WEB_PORT = 6066

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
        self.partitions = partition_count(settings, self.names)
        self.codec = Codec.default()
        self.started_at = time.time()
        # Progress per source partition: the last offset folded, and counts for /health.
        self.processed: dict[TP, int] = {}
        self.events: dict[str, int] = {"ledger": 0, "accounts": 0, "transfers": 0, "outcomes": 0}
        self.skipped = 0
        self._lock = asyncio.Lock()
        self.commands = CommandEndpoint(settings)  # POST /commands
        self.app = self._new_app()
        self._declare()
        ensure_changelogs(settings, [t.changelog_topic_name for t in self.tables], self.partitions)
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
        return App(
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
            **faust_credentials(s.kafka_security),
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
        declare_views(self)
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
                            set_current_event(None)
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
        set_current_event(ev)
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
        return rows_of(self.accounts, views) + rows_of(self.history, ring)

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
        return rows_of(table, views)

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


# --- entry points ---------------------------------------------------------------------------


EX_TEMPFAIL = 75  # sysexits.h: a temporary failure; the process entry point restarts


def run_readside(
    settings: Settings,
    web_port: int = DEFAULT_WEB_PORT,
    on_batch_failed: Callable[[str], object] | None = None,
) -> int:
    """Run one read-side worker in the foreground until SIGTERM/SIGINT. Returns an exit code.

    ``settings`` are resolved (their bootstrap filled in) and logging is set up by the
    process entry point, ``paystream readside`` (paystream.bootstrap), which also passes
    ``on_batch_failed`` (see :class:`ReadSide`): its restart in place."""
    from aiokafka.codec import has_lz4  # type: ignore[import-untyped]

    if not has_lz4():
        # The write side compresses with lz4; aiokafka would crash on the first fetch.
        log.error("the read side needs lz4 support for aiokafka: pip install 'aiokafka[lz4]'")
        return 2
    try:
        rs = ReadSide(
            settings,
            web_port,
            settings.readside_writer,
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
