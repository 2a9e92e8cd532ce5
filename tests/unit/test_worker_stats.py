"""The worker's stats line: batches, records and ms per batch in each step over the interval,
only when it did work (the latency bench parses it: bench/bench_ledger.py STATS)."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from streams.processor import Counters, Processor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_ledger import STATS, worker_batches


def test_one_line_per_interval_with_work_and_the_bench_reads_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = SimpleNamespace(
        agent=SimpleNamespace(name="ledger"),
        instance=2,
        counters=Counters(batches=10, records=400, build_s=0.5, send_offsets_s=0.1, commit_s=0.3),
    )
    last = dataclasses.replace(worker.counters)
    worker.counters.batches += 4
    worker.counters.records += 100
    worker.counters.build_s += 0.080
    worker.counters.send_offsets_s += 0.040
    worker.counters.commit_s += 0.120
    with caplog.at_level(logging.INFO, logger="streams.processor"):
        last = Processor._log_stats(worker, last)  # type: ignore[arg-type]
        Processor._log_stats(worker, last)  # type: ignore[arg-type]  # nothing since: no line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "ledger worker 2 stats: 4 batches, 100 records; ms per batch: build 20.0, "
        "send_offsets 10.0, commit 30.0"
    ]
    assert STATS.search(lines[0])
    assert worker_batches({"ledger-2": ["noise", *lines]}) == {
        "batches": 4,
        "records_per_batch": 25.0,
        "build_ms": 20.0,
        "send_offsets_ms": 10.0,
        "commit_ms": 30.0,
    }
