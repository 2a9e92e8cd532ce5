"""The soak's private stack: what ``paystream up`` runs, on ports of its own, built by the one
stack builder (``paystream.stack``); plus the broker's restart and watching for stalls."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from base.config import Settings
from base.kafka import reader
from ops.ports import free_port_base
from ops.procs import Supervisor
from paystream.stack import Layout, Stack
from tests.soak.plan import SoakConfig

# A command partition with pending commands the ledger has not moved for this long (the
# broker's restart not counted) has a worker alive but not working. A kill -9 and restart
# takes a few seconds; a group rebalance without the dead member ~10 s (session timeout).
STALL_S = 40.0


class SoakStack:
    """A private stack under ``home``: what ``paystream up`` runs, on ports of its own, with
    the embedded broker and chDB of this home whatever the caller's settings use."""

    def __init__(self, home: Path, cfg: SoakConfig, settings: Settings) -> None:
        pick = random.Random()  # ports need not be seeded: only free
        taken: set[int] = set()
        broker = free_port_base(2, pick, taken)
        taken |= {broker, broker + 1}
        warehouse = free_port_base(1, pick, taken)
        taken.add(warehouse)
        readside = free_port_base(1, pick, taken)
        self.home = home
        self.cfg = cfg
        self.settings = settings.with_(
            home=home,
            bootstrap=None,
            brokers=1,
            broker_port_base=broker,
            clickhouse_dsn=None,
            warehouse_port=warehouse,
            readside_port=readside,
            partitions=cfg.partitions,
            topic_prefix="",
            # Children exit when the soak does, whatever happens to it.
            exit_with_parent=True,
        )
        self.stack = Stack(self.settings, Layout(workers=cfg.workers, brokers=1))
        self.resolved = self.stack.resolved
        self.readside_port = readside
        self.warehouse_port = warehouse
        self.broker_up = threading.Event()
        self.broker_up.set()
        self.broker_down: list[tuple[float, float]] = []  # (from, to), monotonic
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        self.stalls: dict[tuple[int, int], dict[str, Any]] = {}

    def env(self) -> dict[str, str]:
        """The environment of the stack's processes (and of a CLI call against it)."""
        return self.stack.env()

    def up(self) -> None:
        self.stack.up()

    def down(self) -> None:
        self.stack.stop()

    def supervisor(self) -> Supervisor:
        return self.stack.sup

    def specs(self) -> list[str]:
        return list(self.stack.specs)

    def start(self, name: str) -> None:
        self.stack.start(name, wait=False)

    def kill(self, name: str) -> bool:
        return self.stack.kill(name)

    def alive(self, name: str) -> bool:
        return self.stack.alive(name)

    def restart_broker(self, mode: str, down_s: float) -> float:
        """Stop (kill -9, or cleanly) and start the broker; returns seconds until it is back."""
        c = self.stack.cluster()
        if c is None:
            raise RuntimeError("the soak's stack has no embedded broker to restart")
        t0 = time.monotonic()
        self.broker_up.clear()
        try:
            if mode == "kill":
                c.kill_node(1)
            else:
                c.stop()
            time.sleep(down_s)
            c.start(timeout_s=180)
        finally:
            self.broker_up.set()
            self.broker_down.append((t0, time.monotonic()))
        return time.monotonic() - t0

    def broker_down_between(self, a: float, b: float) -> float:
        return sum(max(0.0, min(y, b) - max(x, a)) for x, y in self.broker_down)

    def watch_stalls(self, group: str, topic: str, phase: str) -> None:
        """Note command partitions whose pending commands the ledger has not touched for
        STALL_S (the broker's restart not counted): a worker alive but not working."""
        from confluent_kafka import TopicPartition

        from paystream import queries

        ends = _ends(self, [topic])
        c = _consumer(self, **{"group.id": group})
        try:
            done = queries._committed(c, [TopicPartition(t, q) for (t, q) in ends])
        finally:
            c.close()
        now = time.monotonic()
        for tp, end in ends.items():
            at = max(done.get(tp, 0), 0)
            if at >= end:
                self._progress.pop(tp, None)
                continue
            seen = self._progress.get(tp)
            if seen is None or seen[0] != at:
                self._progress[tp] = (at, now)
                continue
            idle = now - seen[1] - self.broker_down_between(seen[1], now)
            if idle >= STALL_S:
                self.stalls[(tp[1], at)] = {
                    "phase": phase,
                    "partition": tp[1],
                    "offset": at,
                    "pending": end - at,
                    "idle_s": round(idle, 1),
                    "since": time.strftime(
                        "%H:%M:%S", time.localtime(time.time() - (now - seen[1]))
                    ),
                }

    def log_tail(self, name: str, lines: int = 6) -> list[str]:
        path: Path = self.supervisor().log_path(name)
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return text[-lines:]


def process_kind(name: str) -> str:
    return "worker" if name.startswith("ledger-") else name


# librdkafka reports every refused connection while the broker restarts; the soak's own
# probes log through this logger, which stays silent.
_QUIET = logging.getLogger("paystream.soak.rdkafka")
_QUIET.setLevel(logging.CRITICAL + 1)
_QUIET.propagate = False


def _consumer(stack: SoakStack, **extra: Any) -> Consumer:
    return reader(stack.resolved, logger=_QUIET, **extra)


def _ends(stack: SoakStack, topics: list[str]) -> dict[tuple[str, int], int]:
    from paystream import queries

    c = _consumer(stack)
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            ends.update(queries._ends(c, t))
        return ends
    finally:
        c.close()
