#!/usr/bin/env python
"""Incremental detector throughput on a large, heavy-tailed transfer graph (no Kafka).

Builds a window holding ``--edges`` posted transfers between ``--accounts`` accounts whose
degrees follow a power law (Chung-Lu: both endpoints drawn with probability proportional to
``rank ** -alpha``, so degrees have a tail exponent of ``1 + 1/alpha``; alpha 2/3 gives 2.5),
with ~10% of the accounts in small families of related accounts. The build loads the edges
without detection (timed apart). Then ``--timed`` further transfers go through
``add_transfer`` one by one, advancing time so that the oldest edges expire and the window
stays full: per-edge latency, edges/s, and memory per edge (RSS growth over the build, and
the detector's own estimate). Prints one JSON line.

The machine may be shared: ``edges_per_cpu_s`` and ``cpu_latency_us`` count the process's CPU
time (``time.process_time``), which other load on the cores disturbs much less than the
wall-clock ``edges_per_s`` and ``latency_us`` (though not entirely: caches are shared too).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from streams.detector.graph import RelatedTransferDetector, TransferEdge

DAY_US = 86_400 * 1_000_000
T0 = 1_750_000_000 * 1_000_000


def endpoints(
    n: int, accounts: int, alpha: float, rng: random.Random
) -> tuple[list[int], list[int]]:
    cum = list(itertools.accumulate((r + 1) ** -alpha for r in range(accounts)))
    # Shuffle ranks to ids so hubs are not simply the small ids.
    ids = list(range(accounts))
    rng.shuffle(ids)
    src = [ids[r] for r in rng.choices(range(accounts), cum_weights=cum, k=n)]
    dst = [ids[r] for r in rng.choices(range(accounts), cum_weights=cum, k=n)]
    for i in range(n):  # no self-transfers: the ledger refuses them
        while src[i] == dst[i]:
            dst[i] = ids[rng.choices(range(accounts), cum_weights=cum, k=1)[0]]
    return src, dst


def transfers(src: list[int], dst: list[int], start: int, step_us: float) -> Iterator[TransferEdge]:
    for i in range(len(src)):
        k = start + i
        yield TransferEdge(
            transfer_id=f"t{k:010d}",
            command_id=f"c{k:010d}",
            from_account=f"acct-{src[i]}",
            to_account=f"acct-{dst[i]}",
            amount=f"{(k * 7919) % 100_000 / 100:.2f}",
            currency="USD",
            ts=T0 + int(k * step_us),
        )


def percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--accounts", type=int, default=200_000)
    ap.add_argument("--edges", type=int, default=1_000_000, help="edges in the window")
    ap.add_argument("--timed", type=int, default=200_000, help="edges timed after the build")
    ap.add_argument("--alpha", type=float, default=2 / 3, help="Zipf exponent of endpoints")
    ap.add_argument("--max-hops", type=int, default=4)
    ap.add_argument("--window-days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    total = args.edges + args.timed
    src, dst = endpoints(total, args.accounts, args.alpha, rng)
    window_us = int(args.window_days * DAY_US)
    step_us = window_us / args.edges  # the build fills exactly one window
    out_deg = Counter(src[: args.edges])
    in_deg = Counter(dst[: args.edges])
    families: list[list[int]] = []
    pool = list(range(args.accounts))
    rng.shuffle(pool)
    k = 0
    while k < args.accounts // 10:
        size = rng.randint(2, 4)
        families.append(pool[k : k + size])
        k += size

    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    det = RelatedTransferDetector(args.max_hops, window_us)
    for fam in families:
        for a, b in itertools.pairwise(fam):
            det.relate(f"acct-{a}", f"acct-{b}", "family", T0)
    t = time.perf_counter()
    cpu = time.process_time()
    for edge in transfers(src[: args.edges], dst[: args.edges], 0, step_us):
        det.load_transfer(edge)
    build_s = time.perf_counter() - t
    build_cpu_s = time.process_time() - cpu
    gc.collect()
    rss1 = proc.memory_info().rss
    edges_built = det.edges
    estimate = det.memory_bytes()

    latencies: list[int] = []
    cpu_latencies: list[int] = []  # per-edge CPU time: what other load on the cores leaves out
    kinds: Counter[str] = Counter()
    clock = time.perf_counter_ns
    cpu_clock = time.process_time_ns
    timed = transfers(src[args.edges :], dst[args.edges :], args.edges, step_us)
    edges = list(timed)  # built before the clock starts: decoding is not the detector's cost
    compactions0 = det.compactions
    cpu = time.process_time()
    t = time.perf_counter()
    for edge in edges:
        c0 = cpu_clock()
        t0 = clock()
        alerts = det.add_transfer(edge)
        latencies.append(clock() - t0)
        cpu_latencies.append(cpu_clock() - c0)
        for a in alerts:
            kinds[a.kind] += 1
    timed_s = time.perf_counter() - t
    cpu_s = time.process_time() - cpu
    latencies.sort()
    cpu_latencies.sort()
    result = {
        "name": "detector_incremental",
        "accounts": args.accounts,
        "edges_in_window": edges_built,
        "edges_in_window_after": det.edges,
        "max_hops": args.max_hops,
        "window_days": args.window_days,
        "alpha": round(args.alpha, 3),
        "max_out_degree": max(out_deg.values()),
        "max_in_degree": max(in_deg.values()),
        "related_accounts": sum(len(f) for f in families),
        "build_seconds": round(build_s, 2),
        "build_cpu_seconds": round(build_cpu_s, 2),
        "timed_edges": args.timed,
        "timed_seconds": round(timed_s, 2),
        "edges_per_s": round(args.timed / timed_s),
        # Other processes may share the cores: per CPU-second is the detector's own speed.
        "edges_per_cpu_s": round(args.timed / cpu_s),
        "target_edges_per_s": 20_000,
        "latency_us": {
            "p50": round(percentile(latencies, 0.50) / 1000, 1),
            "p99": round(percentile(latencies, 0.99) / 1000, 1),
            "p999": round(percentile(latencies, 0.999) / 1000, 1),
            "max": round(latencies[-1] / 1000, 1),
        },
        "cpu_latency_us": {
            "p50": round(percentile(cpu_latencies, 0.50) / 1000, 1),
            "p99": round(percentile(cpu_latencies, 0.99) / 1000, 1),
            "p999": round(percentile(cpu_latencies, 0.999) / 1000, 1),
            "max": round(cpu_latencies[-1] / 1000, 1),
        },
        "compactions_during_timed": det.compactions - compactions0,
        "alerts": dict(kinds),
        "rss_bytes_per_edge": round((rss1 - rss0) / edges_built),
        "estimated_bytes_per_edge": round(estimate / edges_built),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
