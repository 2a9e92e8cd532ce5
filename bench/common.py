"""Shared set-up for benchmarks: a private broker on free ports, workers, and JSON output.

The workers (and the read side of bench_readside) are the stack's own processes, started by
the one stack builder (``paystream.stack``) as ``paystream up`` starts them.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from base.config import Settings, kafka_libs_dir, load_settings
from ops.kafka import KafkaCluster, ensure_jars
from ops.ports import free_port_base
from ops.topics import ensure_topics
from paystream.stack import Layout, ProcessSpec, Stack, worker_spec


@contextmanager
def private_broker() -> Iterator[KafkaCluster]:
    """A single-node Kafka of the benchmark's own, in a temp dir; stopped afterwards."""
    libs = ensure_jars(kafka_libs_dir(load_settings()))
    home = Path(tempfile.mkdtemp(prefix="paystream-bench-"))
    cluster = KafkaCluster(home, brokers=1, port_base=free_port_base(2), heap_mb=1024, libs=libs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Workers:
    settings: Settings
    count: int

    log_level: str = "WARNING"

    def __post_init__(self) -> None:
        layout = Layout(workers=self.count, warehouse=False, readside=False, detector=False)
        self.stack = Stack(self.settings.with_(log_level=self.log_level), layout)
        self.sup = self.stack.sup

    def start(self, *specs: ProcessSpec) -> None:
        """The workers (or other processes of the stack: ``specs``), not waited for."""
        todo = specs or tuple(worker_spec(i) for i in range(1, self.count + 1))
        self.stack.start(*todo, wait=False)

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for p in self.sup.list():
            if p["alive"]:
                out[p["name"]] = round(psutil.Process(p["pid"]).memory_info().rss / 2**20, 1)
        return out

    def peak_rss_mb(self) -> dict[str, float]:
        """Each live worker's peak resident memory so far (Linux VmHWM)."""
        return {p["name"]: peak_rss_mb(p["pid"]) for p in self.sup.list() if p["alive"]}

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the live workers have used: a figure that other load
        on the machine disturbs less than wall-clock rates."""
        total = 0.0
        for p in self.sup.list():
            if p["alive"]:
                t = psutil.Process(p["pid"]).cpu_times()
                total += t.user + t.system
        return round(total, 2)

    def stop(self) -> None:
        self.sup.stop_all()


def namespace(
    cluster: KafkaCluster, partitions: int = 12, guarantee: str = "exactly_once"
) -> Settings:
    prefix = f"b{os.urandom(4).hex()}."
    ensure_topics(cluster.bootstrap, prefix, partitions=partitions, brokers=1)
    home = Path(tempfile.mkdtemp(prefix="paystream-bench-ns-"))
    return Settings(
        home=home,
        bootstrap=cluster.bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        processing_guarantee=guarantee,
    )


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident memory of a process (default: this one), from /proc (VmHWM)."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def emit(result: dict[str, Any]) -> None:
    """One JSON object per line on stdout; bench/run.py collects them. Each carries the peak
    memory of the benchmark's own process (which hosts the code under test for the in-process
    benchmarks: replay, sink, detector)."""
    result.setdefault("bench_process_peak_rss_mb", peak_rss_mb())
    print(json.dumps(result), flush=True)


def now() -> float:
    return time.perf_counter()
