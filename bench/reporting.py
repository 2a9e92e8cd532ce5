"""`make bench`'s report: the headline figures the issues name, beside the figures before.

``bench/report.json`` holds one run (written by ``bench/run.py``); ``bench/baseline.json`` holds
the figures before it, each headline figure under its key (committed, so any run prints the
old beside the new). ``report.md`` and the README's benchmark table (between the markers
``<!-- bench:begin -->`` and ``<!-- bench:end -->``) are both rendered from them:
``python bench/run.py --readme`` rewrites the README's table from the last report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "baseline.json"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

Report = dict[str, Any]
Value = str | None


@dataclass(frozen=True)
class Figure:
    key: str  # the figure's name in baseline.json: never reuse one for another figure
    label: str
    value: Callable[[Report], Value]
    target: str = ""


def _num(v: object, digits: int = 0) -> Value:
    if not isinstance(v, int | float):
        return None
    return f"{v:,.{digits}f}" if digits else f"{round(v):,}"


def _result(report: Report, name: str, **match: object) -> dict[str, Any]:
    """The first result of that name (and those fields) that did not fail, else {}."""
    for r in report.get("results", []):
        if (
            r.get("name") == name
            and "error" not in r
            and all(r.get(k) == v for k, v in match.items())
        ):
            return dict(r)
    return {}


def _field(name: str, field: str, digits: int = 0, **match: object) -> Callable[[Report], Value]:
    """One number of one result."""
    return lambda rep: _num(_result(rep, name, **match).get(field), digits)


def _text(name: str, template: str, **match: object) -> Callable[[Report], Value]:
    """Several fields of one result through a format string (``{p50_ms:,.0f}``)."""

    def value(rep: Report) -> Value:
        r = _result(rep, name, **match)
        try:
            return template.format_map(r) if r else None
        except (KeyError, TypeError, ValueError, IndexError):
            return None

    return value


def _cpu_us(rep: Report) -> Value:
    per_s = _result(rep, "ledger_throughput_exactly_once", workers=1).get("transfers_per_worker_cpu_s")  # fmt: skip
    return _num(1e6 / per_s) if isinstance(per_s, int | float) and per_s else None


def _scheduler(rep: Report) -> Value:
    created, restarted = _result(rep, "scheduler_create"), _result(rep, "scheduler_restart")
    if not created or not restarted:
        return None
    return f"{created.get('scheduler_rss_mb')}; {restarted.get('restart_to_ready_s')}"


def _breaker(rep: Report) -> Value:
    r = _result(rep, "psp_resilience")
    opens = [x for x in r.get("breaker_open_after_s") or [] if x is not None]
    closes = [x for x in r.get("breaker_closed_after_s") or [] if x is not None]
    if not opens or not closes:
        return None
    return f"{max(opens):.2f} / {max(closes):.2f}"


_LAT = "{p50_ms:,.0f} / {p99_ms:,.0f}"
_LATE = "{late_s[p50]:.2f} / {late_s[p99]:.2f}"
_EOS, _ALO = "ledger_throughput_exactly_once", "ledger_throughput_at_least_once"
_SETTLE, _INTERNAL = "recon: settlement file import + reconcile", "recon: internal check"

# fmt: off
FIGURES: list[Figure] = [
    Figure("producer_commands_per_s", "producer, Avro commands/s", _field("producer", "commands_per_s"), "100,000"),
    Figure("eos_transfers_per_s_1w", "exactly-once transfers/s, 1 worker", _field(_EOS, "transfers_per_s", workers=1), "10,000"),
    Figure("eos_transfers_per_s_2w", "exactly-once transfers/s, 2 workers", _field(_EOS, "transfers_per_s", workers=2), "10,000"),
    Figure("alo_transfers_per_s_1w", "at-least-once transfers/s, 1 worker", _field(_ALO, "transfers_per_s", workers=1)),
    Figure("alo_transfers_per_s_2w", "at-least-once transfers/s, 2 workers", _field(_ALO, "transfers_per_s", workers=2)),
    Figure("eos_cpu_us_per_transfer_1w", "worker CPU µs per exactly-once transfer, 1 worker", _cpu_us),
    Figure("raw_copy_messages_per_s", "raw transactional copy (same count, size, batch), messages/s", _field("raw_transactional_copy", "messages_per_s")),
    Figure("paystream_vs_raw_copy", "paystream / raw transactional copy", lambda r: _num(r.get("paystream_vs_raw_copy"), 2), "0.5"),
    Figure("latency_500", "latency p50 / p99 at 500 transfers/s offered, ms", _text("ledger_latency", _LAT, offered_per_s=500), "p99 100"),
    Figure("latency_1000", "latency p50 / p99 at 1,000 transfers/s offered, ms", _text("ledger_latency", _LAT, offered_per_s=1000)),
    Figure("latency_2000", "latency p50 / p99 at 2,000 transfers/s offered, ms", _text("ledger_latency", _LAT, offered_per_s=2000), "p99 250"),
    Figure("worker_rss_mb_1m_accounts", "worker RSS with 1M accounts, after 20k transfers, MB", _field("ledger_worker_rss", "rss_mb_after_20k_transfers"), "500"),
    Figure("replay_events_per_s", "replay, events/s", _field("replay", "events_per_s"), "200,000"),
    Figure("sink_rows_per_s", "warehouse sink, rows/s", _field("sink", "rows_per_s"), "200,000"),
    Figure("account_history_p99_ms", "`account_history`, 10M rows, p99 ms (fresh parts; merged)", _text("account_history", "{p99_ms}; {merged_p99_ms}"), "50"),
    Figure("detector_edges_per_s", "detector, edges/s (max hops 4, 1M edges in the window)", _field("detector_incremental", "edges_per_s"), "20,000"),
    Figure("detector_p99_us_bytes_per_edge", "detector p99 per edge (µs), bytes per edge", _text("detector_incremental", "{latency_us[p99]}, {rss_bytes_per_edge}")),
    Figure("readside_events_per_s_under_load", "read side, events/s while the write side runs", _field("readside", "readside_events_per_s_while_write_side_runs"), "keep up"),
    Figure("readside_lag_s_after_writes", "read side, lag after the write side stops, s", _field("readside", "lag_seconds_after_producer_stops", 1), "2"),
    Figure("scheduler_rss_restart", "scheduler: 100,000 schedules, RSS (MB); restart to ready (s)", _scheduler),
    Figure("scheduler_due_spread", "scheduler: 10,000 HOURLY due in one minute (jitter), late p50 / p99 s", _text("scheduler_due_spread", _LATE), "p99 5"),
    Figure("scheduler_due_burst", "scheduler: 10,000 due in the same second, late p50 / p99 s", _text("scheduler_due_burst", _LATE)),
    Figure("risk_p99_us", "risk decision p99, µs", _text("risk_decision_latency", "{latency_us[p99]:,}"), "10,000"),
    Figure("risk_auc", "risk model AUC, held-out week (rules alone)", _text("risk_model_held_out_week", "{auc} ({rules_auc})")),
    Figure("payments_admissions", "payments: API admissions/s, 64 clients; p50 / p99 ms", _text("payments_admission", "{admissions_per_s:,}; " + _LAT), "2,000; p99 50"),
    Figure("payments_e2e", "payments: pay-ins end to end at 500/s offered, succeeded/s; p99 ms", _text("payments_e2e", "{succeeded_per_s:,}; {p99_ms:,.0f}"), "500; p99 1,000"),
    Figure("payments_mix", "payments: the seed's mix under locust, requests/s; p99 ms", _text("payments_mix", "{achieved_per_s:,}; {p99_ms:,.0f}"), "500; p99 100"),
    Figure("psp_breaker_open_closed_s", "PSP resilience: breaker open / closed after the outage starts / ends, s (slowest cycle)", _breaker, "5 / 30"),
    Figure("psp_fallback_per_s", "PSP resilience: fallback succeeded/s while cardco is out", _field("psp_resilience", "fallback_succeeded_per_s"), "200"),
    Figure("recon_settlement_s", "reconciliation: 1,000,000-row settlement file, s", _field(_SETTLE, "seconds", 1), "60"),
    Figure("recon_internal_s", "reconciliation: `recon internal` over 1,000,000 orders, s", _field(_INTERNAL, "seconds", 1), "60"),
]
# fmt: on


def load_baseline() -> dict[str, Any]:
    return json.loads(BASELINE.read_text()) if BASELINE.exists() else {"label": "", "figures": {}}


def table(report: Report, baseline: dict[str, Any]) -> list[str]:
    """The headline table: every figure measured now or before, old beside new."""
    run = report.get("started_at", "")[:10]
    quick = " (--quick)" if report.get("quick") else ""
    lines = [
        f"| figure | before ({baseline.get('label', '')}) | this run, {run}{quick} | target |",
        "| --- | --- | --- | --- |",
    ]
    before = baseline.get("figures", {})
    for f in FIGURES:
        now = f.value(report)
        old = before.get(f.key)
        if now is None and old is None:
            continue
        lines.append(f"| {f.label} | {old or ''} | {now or 'not run'} | {f.target} |")
    return lines


def markdown(report: Report, baseline: dict[str, Any]) -> str:
    """report.md: the headline table, then every result as it came."""
    lines = table(report, baseline)
    lines += ["", "All results:", "", "| benchmark | figures | target |", "| --- | --- | --- |"]
    for r in report["results"]:
        name = r.get("name", "?")
        if "error" in r:
            lines.append(f"| {name} | failed | |")
            continue
        figures = {k: v for k, v in r.items() if k != "name" and not k.startswith("target")}
        targets = {k: v for k, v in r.items() if k.startswith("target") and v is not None}
        fig = ", ".join(f"{k} {v}" for k, v in figures.items())
        tgt = ", ".join(f"{k} {v}" for k, v in targets.items())
        lines.append(f"| {name} | {fig} | {tgt} |")
    if report.get("peak_rss_mb"):
        lines += ["", "| process | peak RSS (MB) |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(report["peak_rss_mb"].items())]
    return "\n".join(lines) + "\n"


def write_readme(report: Report, baseline: dict[str, Any], readme: Path = README) -> None:
    """Replace the README's table between the markers with the one of this report."""
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{readme}: no {BEGIN} ... {END} markers around the benchmark table")
    body = "\n".join([BEGIN, *table(report, baseline), END])
    readme.write_text(pattern.sub(lambda _: body, text))
