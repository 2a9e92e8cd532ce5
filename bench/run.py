#!/usr/bin/env python
"""`make bench`: run every benchmark, print JSON lines, write bench/report.json and report.md.

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
    a = ap.parse_args()
    console = Console(stderr=True)
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
    (HERE / "report.md").write_text(markdown(report))
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


def headline(report: dict) -> list[tuple[str, object, object]]:
    """(figure, measured, target) for the figures the issues name, in the order they do."""
    rows: list[tuple[str, object, object]] = []
    res = report["results"]

    def first(name: str) -> dict:
        return next((r for r in res if r.get("name") == name and "error" not in r), {})

    rows.append(("producer, Avro commands/s", first("producer").get("commands_per_s"), 100_000))
    for r in res:
        if r.get("name", "").startswith("ledger_throughput_") and "transfers_per_s" in r:
            mode = r["name"].removeprefix("ledger_throughput_").replace("_", "-")
            rows.append(
                (
                    f"ledger {mode}, {r['workers']} worker(s): transfers/s"
                    f" (per worker CPU-s {r.get('transfers_per_worker_cpu_s')})",
                    r["transfers_per_s"],
                    10_000 if mode == "exactly-once" else None,
                )
            )
    for r in res:
        if r.get("name") == "ledger_latency" and "p99_ms" in r:
            rows.append(
                (
                    f"latency at {r['offered_per_s']}/s offered: p50 / p99 ms",
                    f"{r['p50_ms']} / {r['p99_ms']}",
                    "p99 250 at 2000/s" if r["offered_per_s"] == 2000 else None,
                )
            )
    rss = first("ledger_worker_rss")
    rows.append(("worker RSS, 1M accounts (MB)", rss.get("rss_mb_after_20k_transfers"), 500))
    rows.append(("replay events/s", first("replay").get("events_per_s"), 200_000))
    rows.append(("sink rows/s", first("sink").get("rows_per_s"), 200_000))
    hist = first("account_history")
    rows.append(("account_history p99 ms", hist.get("p99_ms"), 50))
    det = first("detector_incremental")
    rows.append(("detector edges/s", det.get("edges_per_s"), 20_000))
    rows.append(("detector edges per CPU-s", det.get("edges_per_cpu_s"), None))
    rows.append(("detector p99 µs", (det.get("latency_us") or {}).get("p99"), None))
    rows.append(("detector bytes per edge", det.get("rss_bytes_per_edge"), None))
    rs = first("readside")
    rows.append(
        (
            "read side events/s while the write side runs",
            rs.get("readside_events_per_s_while_write_side_runs"),
            None,
        )
    )
    sc, sr = first("scheduler_create"), first("scheduler_restart")
    rows.append(
        (f"scheduler RSS, {sc.get('schedules')} schedules (MB)", sc.get("scheduler_rss_mb"), None)
    )
    rows.append(("scheduler restart from the store topic, s", sr.get("restart_to_ready_s"), None))
    for label in ("spread", "burst"):
        due = first(f"scheduler_due_{label}")
        late = due.get("late_s") or {}
        if late:
            rows.append(
                (
                    f"scheduler, {due['due_in_one_minute']} due ({label}): late p50 / p99 s,"
                    f" fired/s {due.get('fired_per_s')}",
                    f"{late.get('p50')} / {late.get('p99')}",
                    "p99 5" if label == "spread" else None,  # the issue's: spread by jitter
                )
            )
    risk = first("risk_decision_latency")
    rows.append(("risk decision p99 µs", (risk.get("latency_us") or {}).get("p99"), 10_000))
    model = first("risk_model_held_out_week")
    rows.append(("risk model AUC, held-out week", model.get("auc"), None))
    rows.append(("risk rules alone AUC, same week", model.get("rules_auc"), None))
    rows.append(("paystream / raw transactional copy", report.get("paystream_vs_raw_copy"), 0.5))
    rows.append(("exactly-once / at-least-once", report.get("exactly_once_vs_at_least_once"), None))
    return [r for r in rows if r[1] is not None]


def markdown(report: dict) -> str:
    lines = ["| figure | measured | target |", "| --- | --- | --- |"]
    lines += [f"| {f} | {v} | {'' if t is None else t} |" for f, v, t in headline(report)]
    lines += ["", "All results:", ""]
    lines += ["| benchmark | figure | target |", "| --- | --- | --- |"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed | |")
            continue
        figures = {k: v for k, v in r.items() if k not in ("name",) and not k.startswith("target")}
        targets = {k: v for k, v in r.items() if k.startswith("target") and v is not None}
        fig = ", ".join(f"{k} {v}" for k, v in figures.items())
        tgt = ", ".join(f"{k} {v}" for k, v in targets.items())
        lines.append(f"| {r['name']} | {fig} | {tgt} |")
    if "paystream_vs_raw_copy" in report:
        lines.append(
            f"| paystream / raw copy (transfers/s over copied messages/s) "
            f"| {report['paystream_vs_raw_copy']} | 0.5 |"
        )
    if "exactly_once_vs_at_least_once" in report:
        lines.append(
            f"| exactly-once / at-least-once (transfers/s) "
            f"| {report['exactly_once_vs_at_least_once']} | |"
        )
    if report.get("peak_rss_mb"):
        lines += ["", "| process | peak RSS (MB) |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(report["peak_rss_mb"].items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
