#!/usr/bin/env python
"""Read-side (faust) projection throughput and lag while the write side runs flat out.

* live: the ledger workers process N transfers produced as fast as possible (the write
  side's own benchmark); the read side folds their events meanwhile. Lag is measured
  exactly: an independent read_committed consumer records the offset of every visible
  record of the four source topics, and the read side's /health says, per partition, the
  offset it has folded up to; the lag is the number of visible records past that offset
  (transaction markers, which also take offsets, are not counted).
* catch-up (unless --no-catchup): the read side's state, group and changelogs are deleted
  and it folds the same log from scratch with nothing else running: faust's own ceiling.

Prints ONE JSON line: {"name": "readside", "events_per_s", "max_lag_events",
"lag_seconds_after_producer_stops", ...}. "producer" is the write side: the lag clock
starts when the ledger workers have processed every command (the last event is visible).
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import shutil
import signal
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from typing import Any

from bench_ledger import setup_accounts, transfers
from common import Workers, emit, free_port_base, namespace, now, private_broker
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from base.config import Settings
from base.logs import configure_logging
from base.topics import TopicNames
from ops.procs import Supervisor
from paystream import queries
from paystream.stack import readside_spec
from producers.producer import CommandProducer

log = logging.getLogger("bench_readside")

SOURCES = ("ledger", "accounts", "transfers", "outcomes")
READSIDE = "readside-bench"


class Visible:
    """Every committed record's offset in the source topics, as a read_committed reader sees them."""

    def __init__(self, settings: Settings) -> None:
        self.names = TopicNames(settings.topic_prefix)
        self.offsets: dict[tuple[str, int], list[int]] = defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.last_record_at = 0.0  # when the newest record became visible (perf_counter)
        self.c = Consumer(
            {
                "bootstrap.servers": settings.bootstrap,
                "group.id": f"bench-visible-{uuid.uuid4().hex[:8]}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        md = self.c.list_topics(timeout=30)
        self.c.assign(
            [
                TopicPartition(getattr(self.names, t), p, 0)
                for t in SOURCES
                for p in md.topics[getattr(self.names, t)].partitions
            ]
        )
        self.short = {getattr(self.names, t): t for t in SOURCES}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            msgs = self.c.consume(10_000, timeout=0.1)
            with self.lock:
                for m in msgs:
                    if m.error() is None:
                        self.offsets[(self.short[m.topic()], m.partition())].append(m.offset())
                        self.last_record_at = now()
        self.c.close()

    def total(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.offsets.values())

    def lag(self, folded: dict[tuple[str, int], int]) -> int:
        """Visible records past what the read side has folded."""
        return sum(self.lag_by_topic(folded).values())

    def lag_by_topic(self, folded: dict[tuple[str, int], int]) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        with self.lock:
            for tp, offs in self.offsets.items():
                out[tp[0]] += len(offs) - bisect.bisect_right(offs, folded.get(tp, -1))
        return dict(out)


class ReadSide:
    def __init__(self, settings: Settings, writer: str) -> None:
        self.settings = settings
        self.port = free_port_base(1)
        self.writer = writer
        self.sup = Supervisor(settings.home)
        self.last_folded: dict[tuple[str, int], int] = {}
        self.unassigned_samples = 0

    def start(self) -> None:
        settings = self.settings.with_(readside_writer=self.writer)
        Workers(settings, 0).start(readside_spec(settings, READSIDE, self.port))

    def stop(self) -> None:
        self.sup.stop(READSIDE)

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def folded(self, h: dict[str, Any]) -> dict[tuple[str, int], int]:
        """Folded offset per partition. A health taken mid-rebalance lists no partitions:
        the last offsets seen stand in (they only grow)."""
        if not h["partitions"]:
            self.unassigned_samples += 1
        for p in h["partitions"]:
            tp, off = (p["topic"], p["partition"]), p["processed_offset"]
            if off is not None and off > self.last_folded.get(tp, -1):
                self.last_folded[tp] = off
        return dict(self.last_folded)

    def rss_mb(self) -> float | None:
        import psutil

        pid = self.sup.pid(READSIDE)
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1) if pid else None

    def reset(self) -> None:
        """Forget everything: local tables, consumer group, changelogs (a first start)."""
        self.stop()
        time.sleep(11)  # static membership: let the stopped member's session expire
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap})
        app_id = f"{self.settings.topic_prefix}paystream-readside"
        for f in admin.delete_consumer_groups([app_id]).values():
            f.result()
        changelogs = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id)]
        for f in admin.delete_topics(changelogs).values():
            f.result()
        shutil.rmtree(self.settings.home / "readside", ignore_errors=True)
        self.last_folded.clear()
        time.sleep(2)


def wait_caught_up(rs: ReadSide, visible: Visible, timeout_s: float) -> float:
    """Poll until the read side has folded every visible record; returns when it had."""
    deadline = now() + timeout_s
    while now() < deadline:
        h = rs.health()
        if h is not None and visible.total() > 0 and visible.lag(rs.folded(h)) == 0:
            return now()
        time.sleep(0.25)
    raise SystemExit(f"read side not caught up after {timeout_s}s")


def run(a: argparse.Namespace) -> dict[str, Any]:
    with private_broker() as cluster:
        settings = namespace(cluster, partitions=a.partitions)
        w = Workers(settings, a.workers)
        rs = ReadSide(settings, a.writer)
        w.start()
        rs.start()
        visible = Visible(settings)
        try:
            setup_accounts(settings, a.accounts)
            wait_caught_up(rs, visible, 600)
            before = visible.total()
            h0 = rs.health() or {}
            events0, cpu0 = sum(h0["events"].values()), h0["cpu_s"]
            cmds = transfers(a.transfers, a.accounts, uuid.uuid4().hex[:6])

            samples: list[tuple[float, int, int, float]] = []
            stop_sampling = threading.Event()

            def sample() -> None:
                while not stop_sampling.is_set():
                    h = rs.health()
                    if h is not None:
                        by_topic = visible.lag_by_topic(rs.folded(h))
                        log.debug("lag %s events %s", by_topic, h["events"])
                        samples.append(
                            (now(), sum(by_topic.values()), sum(h["events"].values()), h["cpu_s"])
                        )
                    time.sleep(0.25)

            sampler = threading.Thread(target=sample, daemon=True)
            start = now()
            sampler.start()
            with CommandProducer(settings) as p:
                for c in cmds:
                    p.send(c)
                p.flush(120)
            produced = now()
            if not queries.wait(settings, 900):
                raise SystemExit("write side did not finish")
            # `wait` answers late on a loaded machine: the write side was done when its last
            # event became visible, which the counter saw (give it a second to read the tail).
            time.sleep(1.0)
            write_done = visible.last_record_at
            # Caught up: the first sample after the last event with nothing left to fold.
            deadline = now() + 1800
            while not any(t >= write_done and lag == 0 for t, lag, *_ in samples):
                if now() > deadline:
                    raise SystemExit("read side not caught up after 1800 s")
                time.sleep(0.25)
            stop_sampling.set()
            sampler.join()
            read_done = min(t for t, lag, *_ in samples if t >= write_done and lag == 0)
            events = visible.total() - before
            h1 = rs.health() or {}
            folded = sum(h1["events"].values()) - events0
            cpu = h1["cpu_s"] - cpu0
            rss = rs.rss_mb()
            live_window = [s for s in samples if s[0] <= write_done]
            live_rate = (
                (live_window[-1][2] - live_window[0][2]) / (live_window[-1][0] - live_window[0][0])
                if len(live_window) > 1
                else None
            )
            result: dict[str, Any] = {
                "name": "readside",
                "events_per_s": round(events / (read_done - start)),
                "max_lag_events": max((s[1] for s in samples), default=0),
                "lag_seconds_after_producer_stops": round(read_done - write_done, 2),
                "writer": a.writer,
                "transfers": a.transfers,
                "events": events,
                "write_side_transfers_per_s": round(a.transfers / (write_done - start)),
                "write_side_events_per_s": round(events / (write_done - start)),
                "readside_events_per_s_while_write_side_runs": round(live_rate)
                if live_rate
                else None,
                "command_produce_seconds": round(produced - start, 2),
                "write_side_seconds": round(write_done - start, 2),
                "readside_seconds": round(read_done - start, 2),
                "readside_cpu_ms_per_1k_events": round(cpu * 1e6 / max(folded, 1), 1),
                "readside_rss_mb": rss,
                "health_samples_without_assignment": rs.unassigned_samples,
                "ledger_worker_rss_mb": {k: v for k, v in w.rss_mb().items() if k != READSIDE},
            }
            w.stop()
            if a.catchup:
                rs.reset()
                rs.start()
                t0 = now()
                end = wait_caught_up(rs, visible, 1800)
                total = visible.total()
                result["catchup_events"] = total
                result["catchup_events_per_s"] = round(total / (end - t0))
                result["catchup_seconds_incl_start"] = round(end - t0, 2)
            return result
        finally:
            visible.stop.set()
            rs.stop()
            w.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--transfers", type=int, default=30_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2, help="ledger workers")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument(
        "--writer",
        choices=["bulk", "faust"],
        default="bulk",
        help="bulk changelog writes (default) or faust's table[key] = value",
    )
    ap.add_argument("--no-catchup", dest="catchup", action="store_false")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 3k transfers, 1k accounts")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every lag sample")
    a = ap.parse_args()
    if a.quick:
        a.transfers, a.accounts = 3000, 1000
    configure_logging(logging.WARNING)
    log.setLevel(logging.DEBUG if a.verbose else logging.INFO)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run finally: blocks
    emit(run(a))


if __name__ == "__main__":
    main()
