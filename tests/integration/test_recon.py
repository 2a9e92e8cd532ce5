"""Reconciliation through the real stack (docs/recon.md): the payments scenario through every
process, then the PSP simulator's own settlement files reconciled (all match, fees booked, no
review item), and files with planted faults (each reported once, in its category; imported
twice, applied once)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from base.config import Settings
from connectors.warehouse import query_client
from paystream import payments_scenario
from paystream.stack import Stack
from tests import recon_files
from tests.stack import cli, payments_stack, run_payments_scenario

pytestmark = pytest.mark.integration
PREFIX = "rc"


@pytest.fixture
def world(settings: Settings) -> Iterator[tuple[Stack, dict[str, str]]]:
    st = payments_stack(settings.with_(api_token="recon-token"))
    st.up()
    try:
        report = run_payments_scenario(st, PREFIX)
        assert report.ok, "\n".join(report.problems) + "\n" + st.logs()
        day = time.strftime("%Y-%m-%d", time.gmtime())
        files = {}
        for psp, url in payments_scenario.psp_urls(st.resolved).items():
            r = httpx.get(f"{url}/v1/settlement", params={"date": day}, timeout=30)
            r.raise_for_status()
            files[psp] = r.text
        yield st, files
    finally:
        st.stop()


def recon(st: Stack, psp: str, path: Path, *extra: str) -> dict[str, Any]:
    got = cli(st.resolved, "recon", "settlement", "--psp", psp, "--file", str(path), "--json",
              *extra)  # fmt: skip
    assert got.returncode == 0, got.stdout + got.stderr
    out: dict[str, Any] = json.loads(got.stdout)
    return out


def scalar(st: Stack, sql: str) -> Any:
    return query_client(st.resolved).query(sql).result_rows[0][0]


def recon_items(st: Stack) -> list[dict[str, Any]]:
    got = cli(st.resolved, "review", "list", "--kind", "recon", "--status", "all", "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    items: list[dict[str, Any]] = json.loads(got.stdout)
    return items


def test_reconciliation_through_the_stack(
    world: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    """One stack (the scenario takes a while): the hourly check, the own files, the faults."""
    st, _ = world
    got = cli(st.resolved, "recon", "internal", "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    internal = json.loads(got.stdout)
    assert internal["orders"] >= 15 and internal["accounts"] >= 1, internal
    assert internal["mismatches"] == [], internal
    own_files_match_and_fees_are_booked(world, tmp_path)
    planted_faults_are_each_reported_once_and_applied_once(world, tmp_path)


def own_files_match_and_fees_are_booked(
    world: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    """The simulator's own files, as the demo reconciles them (paystream.recon_demo)."""
    from paystream import recon_demo

    st, files = world
    paths = []
    for psp in ("bankco", "walletco"):
        path = tmp_path / f"{psp}-today.csv"
        path.write_text(files[psp])
        paths.append(str(path))
    for psp, got in zip(
        ("bankco", "walletco"), recon_demo.run(st.resolved, PREFIX, paths), strict=True
    ):
        text = Path(got["file"]).read_text()
        movements = sum(r["Type"] in ("Settled", "PaidOut") for r in recon_files.read(text))
        assert movements > 0 and got["psp"] == psp
        assert got["matched"] == movements and got["review"] == 0, got
        assert got["fees_booked"] >= 1, got
        again = recon(st, psp, Path(got["file"]), "--lag-days", "0")
        assert again["mismatches"] == [] and again["matched"] == movements, again
        dry = recon(st, psp, Path(got["file"]), "--dry-run")
        assert dry["mismatches"] == [] and dry["matched"] == movements, dry
    assert scalar(st, "SELECT count() FROM fee_postings FINAL WHERE psp != 'cardco'") >= 2
    assert recon_items(st) == []


def planted_faults_are_each_reported_once_and_applied_once(
    world: tuple[Stack, dict[str, str]], tmp_path: Path
) -> None:
    st, files = world
    rows = recon_files.read(files["cardco"])
    ok = recon_files.by_reference(rows, f"{PREFIX}-ok/1")
    rows.remove(ok)  # dropped
    recon_files.by_reference(rows, f"{PREFIX}-flaky/1")["Gross Credit (GC)"] = "13.50"
    hangs = recon_files.by_reference(rows, f"{PREFIX}-hangs/1")
    hangs["Gross Currency"] = hangs["Net Currency"] = "EUR"
    rows.append(dict(recon_files.by_reference(rows, f"{PREFIX}-apple-pay/1")))  # duplicate
    never = dict(recon_files.by_reference(rows, f"{PREFIX}-lost-answer/1"))
    never.update({"Merchant Reference": "never-sent/1", "Psp Reference": "never-ref"})
    rows.append(never)
    voided = dict(recon_files.by_reference(rows, f"{PREFIX}-payout-card/1"))
    voided.update({"Merchant Reference": f"{PREFIX}-payout-declined/1",
                   "Psp Reference": "paid-anyway", "Gross Debit (GC)": "7.00",
                   "Net Debit (NC)": "7.00", "Commission (NC)": "0.00"})  # fmt: skip
    rows.append(voided)
    path = tmp_path / "cardco-faults.csv"
    path.write_text(recon_files.write(recon_files.rebalanced(rows)))

    dry = recon(st, "cardco", path, "--lag-days", "0", "--dry-run")
    out = recon(st, "cardco", path, "--lag-days", "0")
    assert dry["mismatches"] == out["mismatches"]
    got = sorted((m["category"], m["payment_order_id"]) for m in out["mismatches"]
                 if m["category"] != "fee")  # fmt: skip
    assert got == sorted([
        ("missing_in_settlement", f"{PREFIX}-ok/1"),
        ("amount_mismatch", f"{PREFIX}-flaky/1"),
        ("currency_mismatch", f"{PREFIX}-hangs/1"),
        ("duplicate_in_settlement", f"{PREFIX}-apple-pay/1"),
        ("missing_in_ledger", "never-sent/1"),
        ("status_mismatch", f"{PREFIX}-payout-declined/1"),
    ]), out  # fmt: skip
    assert all(m["resolution"] == "review" for m in out["mismatches"] if m["category"] != "fee")
    fees = scalar(st, "SELECT count() FROM fee_postings FINAL WHERE psp = 'cardco'")
    assert fees >= 1
    # Imported twice: nothing new is applied; the same review items, opened once.
    twice = recon(st, "cardco", path, "--lag-days", "0")
    assert [m for m in twice["mismatches"] if m["category"] == "fee"] == []
    assert scalar(st, "SELECT count() FROM fee_postings FINAL WHERE psp = 'cardco'") == fees
    deadline = time.monotonic() + 60
    while len(recon_items(st)) < 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    items = recon_items(st)
    assert sorted((i["category"], i["payment_id"]) for i in items) == sorted(
        (c, o.removesuffix("/1") if o != "never-sent/1" else "never-sent") for c, o in got
    )
    assert all(i["actions"] == ["resolve"] and i["evidence"]["settlement"] for i in items
               if i["category"] != "missing_in_settlement")  # fmt: skip
    resolved = cli(st.resolved, "review", "resolve", items[0]["id"], "--note", "checked",
                   "--json")  # fmt: skip
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert json.loads(resolved.stdout)["status"] == "resolved"
    # Resolutions are events the warehouse keeps; each item was opened once (imported twice).
    kept = (
        "SELECT countIf(event = 'opened'), countIf(event = 'resolved') FROM review_events FINAL"
        " WHERE kind = 'recon'"
    )
    deadline = time.monotonic() + 60
    while query_client(st.resolved).query(kept).result_rows[0][1] < 1:
        assert time.monotonic() < deadline, "the resolution never reached the warehouse"
        time.sleep(0.5)
    assert tuple(query_client(st.resolved).query(kept).result_rows[0]) == (6, 1)

    bad = tmp_path / "bad.csv"
    bad.write_text(files["cardco"].replace("Settled,", "Settled,x", 1).replace(
        "Gross Credit (GC)", "Gross Credit", 1))  # fmt: skip
    refused = cli(st.resolved, "recon", "settlement", "--psp", "cardco", "--file", str(bad),
                  "--json")  # fmt: skip
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["column"] == "Gross Credit (GC)"
