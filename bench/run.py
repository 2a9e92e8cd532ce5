#!/usr/bin/env python
"""`make bench`: run every benchmark, print JSON lines, write bench/report.json and report.md
(the headline figures beside bench/baseline.json's, see bench/reporting.py).

Each benchmark runs in its own process against its own private broker, so one cannot
disturb the next. Sizes are for a 2-core machine; pass --quick for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from reporting import load_baseline, markdown, write_readme
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

HERE = Path(__file__).resolve().parent

BENCHES: list[tuple[str, list[str], list[str]]] = [
    # (label, full args, quick args)
    (
        "producer",
        ["bench_producer_private.py"],
        ["bench_producer_private.py", "--commands", "50000"],
    ),
    ("raw transactional copy", ["bench_baseline.py"], ["bench_baseline.py", "--messages", "30000"]),
    (
        "ledger: exactly-once",
        ["bench_ledger.py", "--only", "eos"],
        ["bench_ledger.py", "--only", "eos", "--transfers", "5000", "--accounts", "1000"],
    ),
    (
        "ledger: at-least-once",
        ["bench_ledger.py", "--only", "alo"],
        ["bench_ledger.py", "--only", "alo", "--transfers", "5000", "--accounts", "1000"],
    ),
    (
        "ledger: latency",
        ["bench_ledger.py", "--only", "latency"],
        ["bench_ledger.py", "--only", "latency", "--seconds", "5", "--accounts", "1000"],
    ),
    (
        "ledger: worker RSS, 1M accounts",
        ["bench_ledger.py", "--only", "rss"],
        ["bench_ledger.py", "--only", "rss", "--rss-accounts", "50000"],
    ),
    (
        "replay",
        ["bench_readpath.py", "--only", "replay"],
        ["bench_readpath.py", "--only", "replay", "--entries", "50000"],
    ),
    (
        "sink",
        ["bench_readpath.py", "--only", "sink"],
        ["bench_readpath.py", "--only", "sink", "--entries", "50000"],
    ),
    (
        "account_history",
        ["bench_readpath.py", "--only", "history"],
        ["bench_readpath.py", "--only", "history", "--history-rows", "1000000"],
    ),
    ("detector", ["bench_detector.py"], ["bench_detector.py", "--quick"]),
    (
        "payments: admission",
        ["bench_payments.py", "--only", "admission"],
        ["bench_payments.py", "--only", "admission", "--seconds", "5"],
    ),
    (
        "payments: end to end",
        ["bench_payments.py", "--only", "e2e"],
        ["bench_payments.py", "--only", "e2e", "--seconds", "5", "--rate", "100"],
    ),
    (
        "payments: seed mix (locust)",
        ["bench_payments.py", "--only", "mix"],
        ["bench_payments.py", "--only", "mix", "--seconds", "10", "--rate", "100"],
    ),
    (
        "PSP resilience",
        ["bench_psp_resilience.py"],
        ["bench_psp_resilience.py", "--cycles", "1", "--rate", "50"],
    ),
    ("read side", ["bench_readside.py"], ["bench_readside.py", "--quick"]),
    ("scheduler", ["bench_scheduler.py"], ["bench_scheduler.py", "--quick"]),
    ("risk", ["bench_risk.py"], ["bench_risk.py", "--quick"]),
    (
        "recon: settlement",
        ["bench_recon.py", "--only", "settlement"],
        ["bench_recon.py", "--only", "settlement", "--rows", "50000"],
    ),
    (
        "recon: internal",
        ["bench_recon.py", "--only", "internal"],
        ["bench_recon.py", "--only", "internal", "--orders", "50000"],
    ),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument(
        "--only",
        help="run the benchmarks whose label contains this; their results replace those of "
        "the same name in the existing report.json, the rest stay",
    )
    ap.add_argument(
        "--readme",
        action="store_true",
        help="run nothing: rewrite report.md and the README's benchmark table from report.json",
    )
    a = ap.parse_args()
    console = Console(stderr=True)
    if a.readme:
        report = json.loads((HERE / "report.json").read_text())
        (HERE / "report.md").write_text(markdown(report, load_baseline()))
        write_readme(report, load_baseline())
        console.print("rewrote bench/report.md and the README's benchmark table")
        return 0
    results: list[dict] = []
    todo = [b for b in BENCHES if not a.only or a.only in b[0]]
    todo = [b for b in todo if (HERE / b[1][0]).exists()]
    started = time.time()
    with Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("benchmarks", total=len(todo))
        for label, full, quick in todo:
            progress.update(task, description=label)
            args = quick if a.quick else full
            proc = subprocess.run(
                [sys.executable, str(HERE / args[0]), *args[1:]],
                cwd=HERE,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                results.append({"name": label, "error": (proc.stderr or proc.stdout)[-2000:]})
                console.print(f"[red]{label} failed[/red]")
            for ln in lines:
                r = json.loads(ln)
                results.append(r)
                print(json.dumps(r), flush=True)
            progress.advance(task)
    report = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "quick": a.quick,
        "results": results,
    }
    previous = HERE / "report.json"
    if a.only and previous.exists():
        # A rerun of some benchmarks: the others' results stay, each marked with its run.
        old = json.loads(previous.read_text())
        rerun = {r["name"] for r in results}
        kept = [
            {"run_started_at": old.get("started_at"), **r}
            for r in old.get("results", [])
            if r.get("name") not in rerun
        ]
        report["results"] = results = kept + results
    by = {r["name"]: r for r in results}
    raw = by.get("raw_transactional_copy")
    eos = best(results, "ledger_throughput_exactly_once")
    if eos and raw and "transfers_per_s" in eos:
        # One command in per transfer, one record out per message: transfers/s over messages/s.
        report["paystream_vs_raw_copy"] = round(eos["transfers_per_s"] / raw["messages_per_s"], 3)
    alo = best(results, "ledger_throughput_at_least_once", workers=eos and eos.get("workers"))
    if eos and alo and "transfers_per_s" in eos and "transfers_per_s" in alo:
        report["exactly_once_vs_at_least_once"] = round(
            eos["transfers_per_s"] / alo["transfers_per_s"], 3
        )
    report["peak_rss_mb"] = peak_memory(results)
    (HERE / "report.json").write_text(json.dumps(report, indent=2))
    (HERE / "report.md").write_text(markdown(report, load_baseline()))
    console.print(f"wrote {HERE / 'report.json'} and {HERE / 'report.md'}")
    return 1 if any("error" in r for r in results) else 0


def best(results: list[dict], name: str, workers: object = None) -> dict | None:
    """The fastest run of a throughput benchmark (optionally with that many workers)."""
    runs = [
        r
        for r in results
        if r.get("name") == name
        and "transfers_per_s" in r
        and (workers is None or r.get("workers") == workers)
    ]
    return max(runs, key=lambda r: r["transfers_per_s"], default=None)


def peak_memory(results: list[dict]) -> dict[str, float]:
    """Peak resident memory per process kind, over every benchmark that reported it."""
    peaks: dict[str, float] = {}

    def note(kind: str, mb: object) -> None:
        if isinstance(mb, int | float):
            peaks[kind] = max(peaks.get(kind, 0.0), float(mb))

    for r in results:
        for mb in (r.get("worker_peak_rss_mb") or {}).values():
            note("ledger worker", mb)
        note("ledger worker, 1M accounts", r.get("rss_mb_after_20k_transfers"))
        note("read side", r.get("readside_rss_mb"))
        kind = {
            "replay": "replay (paystream replay)",
            "sink": "warehouse sink + chDB",
            "detector": "detector",
        }
        if r.get("name", "").startswith("scheduler_"):
            note("scheduler", r.get("scheduler_rss_mb"))
            note("scheduler", r.get("scheduler_rss_mb_after_restart"))
        for key, label in kind.items():
            if r.get("name", "").startswith(key):
                note(label, r.get("bench_process_peak_rss_mb"))
    return peaks


if __name__ == "__main__":
    sys.exit(main())
