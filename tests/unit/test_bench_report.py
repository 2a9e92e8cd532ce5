"""`make bench`'s report: the headline table puts the figures before beside this run's, and
the README's table between its markers is replaced, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.reporting import BEGIN, END, markdown, table, write_readme

REPORT = {
    "started_at": "2026-11-30T05:00:00Z",
    "quick": False,
    "results": [
        {"name": "ledger_throughput_exactly_once", "workers": 1, "transfers_per_s": 4321,
         "transfers_per_worker_cpu_s": 6250},
        {"name": "ledger_throughput_exactly_once", "workers": 2, "error": "boom"},
        {"name": "ledger_latency", "offered_per_s": 500, "p50_ms": 20.4, "p99_ms": 88.9},
        {"name": "scheduler_due_spread", "late_s": {"p50": 0.061, "p99": 1.5}},
        {"name": "payments_mix", "achieved_per_s": 512},  # no p99: no figure
    ],
    "paystream_vs_raw_copy": 0.512,
}  # fmt: skip
BASELINE = {"label": "before", "figures": {"eos_transfers_per_s_1w": "3,135", "recon_internal_s": "17.8"}}  # fmt: skip


def row(lines: list[str], label: str) -> list[str]:
    (line,) = [x for x in lines if x.startswith(f"| {label} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_puts_before_beside_now() -> None:
    lines = table(REPORT, BASELINE)
    assert lines[0] == "| figure | before (before) | this run, 2026-11-30 | target |"
    assert row(lines, "exactly-once transfers/s, 1 worker")[1:] == ["3,135", "4,321", "10,000"]
    assert row(lines, "worker CPU µs per exactly-once transfer, 1 worker")[1:3] == ["", "160"]
    assert row(lines, "latency p50 / p99 at 500 transfers/s offered, ms")[2] == "20 / 89"
    assert row(lines, "scheduler: 10,000 HOURLY due in one minute (jitter), late p50 / p99 s")[2] == "0.06 / 1.50"  # fmt: skip
    assert row(lines, "paystream / raw transactional copy")[2] == "0.51"
    # Measured before but not now: said so; a failed run is not a figure.
    assert row(lines, "reconciliation: `recon internal` over 1,000,000 orders, s")[1:3] == ["17.8", "not run"]  # fmt: skip
    assert not [x for x in lines if x.startswith("| exactly-once transfers/s, 2 workers |")]
    assert not [x for x in lines if x.startswith("| payments: the seed's mix")]  # half a figure
    assert "| ledger_throughput_exactly_once | failed | |" in markdown(REPORT, BASELINE)


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{BEGIN}\n| old |\n{END}\n\nafter\n")
    write_readme(REPORT, BASELINE, readme)
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n" + BEGIN + "\n| figure |")
    assert text.endswith(END + "\n\nafter\n") and "| old |" not in text
    readme.write_text("no markers")
    with pytest.raises(SystemExit):
        write_readme(REPORT, BASELINE, readme)
