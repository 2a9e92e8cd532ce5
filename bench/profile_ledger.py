#!/usr/bin/env python
"""Where a ledger worker's CPU goes: py-spy on a real worker under the throughput load.

A private broker, ``--workers`` ledger workers (the stack's own processes), ``--accounts``
accounts opened and funded, then ``--transfers`` transfers produced as fast as possible
(as ``bench_ledger.py --only eos``). py-spy samples the first worker (``--nonblocking``, so
the worker is not paused) from the first produce until every transfer is posted and settled.

Prints one JSON line: CPU µs per transfer of the workers (user + system, librdkafka's
threads included), transfers per worker CPU-second, and the top frames by self time and by
total time (share of the worker's samples in which the worker's main thread was active).
``--raw PATH`` keeps py-spy's collapsed stacks (flamegraph.pl or speedscope read them).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench_ledger import setup_accounts, transfers
from common import Workers, emit, namespace, now, private_broker

from paystream import queries
from producers.producer import CommandProducer

PY_SPY = Path(sys.executable).with_name("py-spy")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process's threads by kind: Python's main thread (named
    after the process), librdkafka's (``rdk:...``), others."""
    out: dict[str, float] = {"main": 0.0, "librdkafka": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS_PER_S
        kind = (
            "main"
            if task.name == str(pid)
            else "librdkafka"
            if comm.startswith("rdk:")
            else "other"
        )
        out[kind] += cpu
    return out


def _frame(raw: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)`` (lines differ within a function)."""
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def top_frames(raw_file: Path, n: int) -> dict[str, object]:
    """Self and total shares of the hottest frames in py-spy's raw (collapsed) output."""
    self_c: Counter[str] = Counter()
    total_c: Counter[str] = Counter()
    samples = 0
    for line in raw_file.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        samples += k
        self_c[frames[-1]] += k
        for f in set(frames):
            total_c[f] += k

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * k / samples, 1)) for f, k in c.most_common(n)]

    return {"samples": samples, "self_pct": share(self_c), "total_pct": share(total_c)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--transfers", type=int, default=50_000)
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    a = ap.parse_args()
    with private_broker() as cluster:
        settings = namespace(cluster)
        w = Workers(settings, a.workers)
        w.start()
        try:
            setup_accounts(settings, a.accounts)
            cmds = transfers(a.transfers, a.accounts, uuid.uuid4().hex[:6])
            pid = next(p["pid"] for p in w.sup.list() if p["alive"])
            raw = Path(tempfile.mkdtemp(prefix="paystream-pyspy-")) / "worker.raw"
            spy = None
            if a.profile:
                spy = subprocess.Popen(
                    [
                        str(PY_SPY),
                        "record",
                        "--nonblocking",
                        "-r",
                        str(a.rate),
                        "-f",
                        "raw",
                        "-o",
                        str(raw),
                        "-p",
                        str(pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            cpu0 = w.cpu_s()
            threads0 = thread_cpu_s(pid)
            load0 = os.getloadavg()[0]
            start = now()
            with CommandProducer(settings) as p:
                for c in cmds:
                    p.send(c)
                p.flush(120)
            if not queries.wait(settings, 900):
                raise SystemExit("the run did not finish")
            elapsed = now() - start
            cpu = w.cpu_s() - cpu0
            threads = {k: v - threads0[k] for k, v in thread_cpu_s(pid).items()}
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            result: dict[str, object] = {
                "name": "ledger_profile",
                "transfers": a.transfers,
                "workers": a.workers,
                "seconds": round(elapsed, 2),
                "transfers_per_s": round(a.transfers / elapsed),
                "worker_cpu_s": round(cpu, 2),
                "worker_cpu_us_per_transfer": round(cpu * 1e6 / a.transfers, 1),
                "transfers_per_worker_cpu_s": round(a.transfers / cpu) if cpu else None,
                # The first worker's threads: Python's main thread, librdkafka's, the others.
                "first_worker_cpu_us_per_transfer_by_thread": {
                    k: round(v * 1e6 / a.transfers, 1) for k, v in threads.items()
                },
                "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
            }
            if spy is not None and raw.exists():
                result["profile"] = top_frames(raw, a.top)
                if a.raw:
                    a.raw.write_text(raw.read_text())
        finally:
            w.stop()
    emit(result)


if __name__ == "__main__":
    main()
