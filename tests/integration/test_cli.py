"""Every CLI verb, every output path (table and ``--json``; read side up and down), on one stack.

The stack is the one ``paystream up`` brings up (one ledger worker, the warehouse, the read
side, the detector) against the session's broker, started by the verb itself in a private
home, topic namespace and ports; ``paystream down`` ends it. The tests share it and run in
file order: each leaves the stack as it found it (all processes up). Output is read as a user
sees it, at 80 columns (rich reads ``COLUMNS`` when stdout is not a terminal).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from base.config import Settings
from ops.kafka import KafkaCluster
from ops.procs import Supervisor

pytestmark = pytest.mark.integration

COLUMNS = 80


@dataclass
class CliStack:
    settings: Settings
    env: dict[str, str]
    readside_port: int
    warehouse_port: int
    up_json: dict[str, Any]

    @property
    def sup(self) -> Supervisor:
        return Supervisor(self.settings.home)

    def run(self, *args: str, stdin: str | None = None, timeout_s: float = 300) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "paystream.cli", *args],
            env={**os.environ, **self.env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def json(self, *args: str) -> Any:
        r = self.run(*args)
        assert r.code == 0, r
        return json.loads(r.out)

    def logs(self) -> str:
        return self.run("logs", "-n", "30").out

    def readside_up(self) -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.readside_port}/health", timeout=2)
            return True
        except OSError:
            return False


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_cluster: KafkaCluster,
    free_port_base: Callable[[int], int],
) -> Iterator[CliStack]:
    from uuid import uuid4

    home: Path = tmp_path_factory.mktemp("cli-stack")
    base = free_port_base(7)
    prefix = f"t{uuid4().hex[:10]}."
    env = {
        "PAYSTREAM_HOME": str(home),
        "PAYSTREAM_BOOTSTRAP": kafka_cluster.bootstrap,
        "PAYSTREAM_TOPIC_PREFIX": prefix,
        "PAYSTREAM_PARTITIONS": "4",
        "PAYSTREAM_READSIDE_PORT": str(base),
        "PAYSTREAM_WAREHOUSE_PORT": str(base + 1),
        "PAYSTREAM_API_PORT": str(base + 2),
        "PAYSTREAM_PSP_SIM_PORT": str(base + 3),  # its four PSPs: base+3..base+6
        "PAYSTREAM_TEST_FAULTS": "1",  # the read-side restart test arms a fault
        "COLUMNS": str(COLUMNS),
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(home=home, bootstrap=kafka_cluster.bootstrap, topic_prefix=prefix)
    stack = CliStack(settings, env, base, base + 1, {})
    try:
        up = stack.run("up", "--workers", "1", "--json")
        assert up.code == 0, f"{up}\n{stack.logs()}"
        stack.up_json = json.loads(up.out)
        yield stack
        down = stack.run("down")
        assert down.code == 0, down
        assert down.out.startswith("stopped: "), down
        assert {"ledger-1", "warehouse", "readside", "detector", "api", "psp-sim"} <= set(
            down.out.removeprefix("stopped: ").strip().split(", ")
        ), down
        assert stack.json("status", "--json")["processes"] == []
    finally:
        Supervisor(home).stop_all()  # whatever a failed test left running


# --- the stack: up, status, logs, topics ---------------------------------------------------------


def test_up_and_status(stack: CliStack) -> None:
    up = stack.up_json
    assert up["broker"]["bootstrap"] == stack.settings.bootstrap
    assert up["broker"]["embedded"] is False
    names = {p["name"]: p for p in up["processes"]}
    assert set(names) == {
        "ledger-1", "warehouse", "readside", "detector", "payments-1", "users-1",
        "risk-1", "reviews-1", "psp-sim", "executor-1", "api", "scheduler-1",
    }  # fmt: skip
    assert all(p["alive"] for p in names.values()), up

    again = stack.run("up")  # idempotent: nothing new is started
    assert again.code == 0, again
    assert again.out.startswith("paystream is up: Kafka ")
    for p in names.values():
        assert f"pid {p['pid']}" in again.out and p["name"] in again.out

    status = stack.json("status", "--json")
    assert {p["name"]: p["pid"] for p in status["processes"]} == {
        n: p["pid"] for n, p in names.items()
    }
    for p in status["processes"]:
        assert set(p) == {"name", "role", "pid", "alive", "restarts", "last_restart"}, p
        assert (p["restarts"], p["last_restart"]) == (0, None), p
    table = stack.run("status")
    assert table.code == 0, table
    assert table.out.startswith(f"broker: Kafka {status['broker']['version']} at ")
    assert "(external)" in table.out
    for name in names:
        assert name in table.out


def test_logs(stack: CliStack) -> None:
    one = stack.run("logs", "warehouse", "-n", "5")
    assert one.code == 0 and one.out.startswith("==> warehouse ("), one
    assert len(one.out.splitlines()) <= 6
    every = stack.run("logs", "-n", "2")
    assert all(f"==> {n} (" in every.out for n in ("ledger-1", "readside", "detector")), every
    missing = stack.run("logs", "nobody")
    assert missing.code == 0 and "no log for nobody" in missing.err, missing


def test_topics(stack: CliStack) -> None:
    doc = stack.json("topics", "--json")
    names = {t["name"] for t in doc["topics"]}
    prefix = stack.settings.topic_prefix
    assert f"{prefix}paystream.commands.v1" in names
    assert f"{prefix}paystream.ledger-state.v1" in names
    assert doc["drift"] == []
    table = stack.run("topics")
    assert table.code == 0, table
    assert "paystream.ledger.v1" in table.out and "drift" not in table.out


def test_topics_show_drift(stack: CliStack) -> None:
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    from base.topics import INFINITE_MS

    name = f"{stack.settings.topic_prefix}paystream.deadletter.v1"
    admin = AdminClient({"bootstrap.servers": stack.settings.bootstrap})

    def retention(ms: str) -> None:
        entry = ConfigEntry("retention.ms", ms, incremental_operation=AlterConfigOpType.SET)
        res = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[entry])
        admin.incremental_alter_configs([res])[res].result()

    retention("86400000")  # someone shortened the dead letters' retention by hand
    try:
        doc = stack.run("topics", "--json")
        assert doc.code == 1, doc
        assert json.loads(doc.out)["drift"] == [
            {"topic": name, "what": "retention.ms", "declared": str(INFINITE_MS),
             "actual": "86400000"}
        ]  # fmt: skip
        table = stack.run("topics")
        assert table.code == 1
        assert (
            f"drift: {name} retention.ms: declared {INFINITE_MS}, actual 86400000" in table.out
        ), table
    finally:
        retention(str(INFINITE_MS))
    assert stack.json("topics", "--json")["drift"] == []


# --- commands: send, wait, outcome --------------------------------------------------------------


def test_send_wait_and_outcome(stack: CliStack) -> None:
    opened = stack.run(
        "send", "open_account", "--account", "cli-1", "--user", "cli-u1", "--currency", "USD"
    )
    assert opened.code == 0, opened
    open_id = opened.out.strip()
    assert len(open_id) == 36  # a fresh UUID
    bad = stack.run("send", "open_account", "--account", "cli-2")  # no user, no currency
    assert bad.code == 2 and "paystream send:" in bad.err, bad
    assert stack.run("send").code == 2
    first = [
        {"type": "open_account", "command_id": "cli-o2", "account": "cli-2", "user": "cli-u2",
         "currency": "USD"},
        {"type": "open_account", "command_id": "cli-o3", "account": "cli-jpy", "user": "cli-u3",
         "currency": "JPY"},
        {"type": "deposit", "command_id": "cli-d1", "account": "cli-1", "amount": "100.00"},
        {"type": "deposit", "command_id": "cli-d2", "account": "cli-jpy", "amount": "500"},
    ]  # fmt: skip
    # The last line is refused by the producer: amounts are JSON strings.
    lines = "\n".join([*map(json.dumps, first), '{"type":"deposit","amount":5}'])
    sent = stack.run("send", "--file", "-", "--no-progress", stdin=lines + "\n")
    assert sent.code == 2, sent  # some invalid
    assert "sent 4, invalid 1, failed 0" in sent.err, sent
    assert stack.run("wait", "--timeout", "120").code == 0
    more = [
        {"type": "transfer", "command_id": "cli-t1", "from": "cli-1", "to": "cli-2",
         "amount": "0.04"},
        {"type": "withdraw", "command_id": "cli-w1", "account": "cli-jpy", "amount": "5"},
        {"type": "withdraw", "command_id": "cli-w2", "account": "cli-1", "amount": "1000.00"},
    ]  # fmt: skip
    sent = stack.run("send", "--file", "-", "--no-progress", stdin="\n".join(map(json.dumps, more)))
    assert sent.code == 0, sent
    assert stack.run("wait", "--timeout", "120").code == 0
    # After the transfer: commands for different accounts have no order between them.
    blocked = stack.run(
        "send", "block_account", "--command-id", "cli-b1", "--account", "cli-2",
        "--reason", "court order",
    )  # fmt: skip
    assert blocked.code == 0 and blocked.out.strip() == "cli-b1", blocked
    assert stack.run("wait", "--timeout", "120").code == 0

    # The read side answers once it has folded the outcomes (it is eventually consistent).
    wait_until(
        lambda: stack.run("outcome", "cli-w2", "--json").code == 0, 60, "outcome on the read side"
    )
    assert stack.json("outcome", open_id, "--json")["status"] == "accepted"
    rejected = stack.json("outcome", "cli-w2", "--json")
    assert (rejected["status"], rejected["reason"]) == ("rejected", "insufficient_funds")
    assert "reused" not in rejected
    table = stack.run("outcome", "cli-w2")
    assert table.out.strip() == "cli-w2: rejected (insufficient_funds) [withdraw on cli-1]", table
    table = stack.run("outcome", "cli-d1")
    assert table.out.strip() == "cli-d1: accepted [deposit on cli-1]", table
    unknown = stack.run("outcome", "no-such-command")
    assert unknown.code == 1 and "no outcome yet" in unknown.err, unknown


# --- balances and balance, with the read side up ------------------------------------------------


def test_balances(stack: CliStack) -> None:
    rows = stack.json("balances", "--json")
    by = {r["account"]: r for r in rows}
    assert by["cli-1"] == {
        "account": "cli-1",
        "user": "cli-u1",
        "currency": "USD",
        "balance": "99.96",
        "status": "open",
    }
    assert by["cli-jpy"]["balance"] == "495"
    assert by["cli-2"]["status"] == "blocked"
    table = stack.run("balances")
    assert table.code == 0, table
    line = next(x for x in table.out.splitlines() if " cli-1 " in x)
    assert "cli-u1" in line and "99.96" in line and "open" in line, table


def _balance_on_the_read_side(stack: CliStack, account: str) -> dict[str, Any]:
    """The view once the read side has folded the account's latest state."""

    def served() -> dict[str, Any] | None:
        r = stack.run("balance", account, "--json")
        view = json.loads(r.out) if r.code == 0 else None
        return view if view and view["source"] == "readside" else None

    return wait_until(served, 60, f"{account} on the read side")  # type: ignore[no-any-return]


def test_balance_from_the_read_side(stack: CliStack) -> None:
    view = _balance_on_the_read_side(stack, "cli-1")
    assert view == {
        "account": "cli-1",
        "user": "cli-u1",
        "currency": "USD",
        "balance": "99.96",
        "held": None,  # the read side does not track holds: it says so
        "payouts_held": None,
        "status": "open",
        "seq": 2,
        "related": {},
        "blocked_reason": None,
        "source": "readside",
    }
    table = stack.run("balance", "cli-1")
    assert table.code == 0, table
    assert table.out.strip() == (
        "cli-1: 99.96 USD (open; held unknown: the read side does not track holds)"
    )
    wait_until(
        lambda: _balance_on_the_read_side(stack, "cli-2")["status"] == "blocked", 60, "blocked"
    )
    blocked = stack.run("balance", "cli-2")
    assert blocked.out.startswith("cli-2: 0.04 USD (blocked: court order; held unknown"), blocked
    unknown = stack.run("balance", "nobody")
    assert unknown.code == 1 and "no account 'nobody'" in unknown.err, unknown


# --- the ledger log ----------------------------------------------------------------------------


def test_replay(stack: CliStack) -> None:
    doc = stack.json("replay", "--verify", "--json")
    assert doc["problems"] == [] and doc["events"] >= 8 and doc["accounts"] == 3, doc
    assert set(doc) == {"events", "seconds", "events_per_s", "accounts", "problems"}
    text = stack.run("replay", "--verify")
    assert text.code == 0, text
    assert text.out.startswith(f"replayed {doc['events']} ledger events in ")
    assert "zero-sum, no gaps, no duplicates, equal to live state" in text.out
    assert "equal to live state" not in stack.run("replay").out


# --- the warehouse: sql, history, trace, audit --------------------------------------------------


def test_sql(stack: CliStack) -> None:
    query = (
        "SELECT account, balance FROM account_balances"
        " WHERE account IN ('cli-1', 'cli-jpy') ORDER BY account"
    )
    assert stack.json("sql", "--format", "json", query) == [
        {"account": "cli-1", "balance": "99.96"},
        {"account": "cli-jpy", "balance": "495"},
    ]
    as_csv = stack.run("sql", "--format", "csv", query)
    assert list(csv.reader(io.StringIO(as_csv.out))) == [
        ["account", "balance"],
        ["cli-1", "99.96"],
        ["cli-jpy", "495"],
    ]
    table = stack.run("sql", query)
    assert table.code == 0 and "99.96" in table.out and "495" in table.out, table
    refused = stack.run("sql", "DROP TABLE ledger_entries")
    assert refused.code == 1 and "Code: 164" in refused.err, refused
    broken = stack.run("sql", "SELECT 1 +")
    assert broken.code == 1 and "Code: 62" in broken.err, broken


def test_history(stack: CliStack) -> None:
    rows = stack.json("history", "cli-1", "--json")
    assert [r["account_seq"] for r in rows] == [1, 2]
    assert [r["kind"] for r in rows] == ["deposit", "transfer_hold"]
    # Money in the currency's minor units; a missing transfer id is null.
    assert [(r["amount"], r["balance_after"]) for r in rows] == [
        ("100.00", "100.00"),
        ("-0.04", "99.96"),
    ]
    assert rows[0]["transfer_id"] is None and rows[1]["transfer_id"] == "cli-t1"
    assert {r["currency"] for r in rows} == {"USD"}
    jpy = stack.json("history", "cli-jpy", "--json")
    assert [(r["amount"], r["balance_after"]) for r in jpy] == [("500", "500"), ("-5", "495")]

    table = stack.run("history", "cli-1")  # at 80 columns
    assert table.code == 0, table
    lines = table.out.splitlines()
    assert "history of cli-1 (USD)" in table.out
    assert max(map(len, lines)) <= COLUMNS
    assert "…" not in table.out and "None" not in table.out and "0.040000" not in table.out
    assert any("deposit" in x and "100.00" in x and "@world/USD" in x for x in lines), table.out
    assert any("transfer_hold" in x and "-0.04" in x and "99.96" in x for x in lines), table.out
    jpy_table = stack.run("history", "cli-jpy").out
    assert any("withdrawal" in x and "-5" in x and "495" in x for x in jpy_table.splitlines())
    missing = stack.run("history", "nobody")
    assert missing.code == 1, missing


def test_trace(stack: CliStack) -> None:
    tree = stack.json("trace", "cli-1", "--json")
    assert tree["account"] == "cli-1" and tree["depth"] == 2
    assert tree["out"] == [
        {"account": "cli-2", "currency": "USD", "amount": "0.04", "transfers": 1, "next": []}
    ]
    assert tree["in"] == []
    text = stack.run("trace", "cli-1")
    assert text.code == 0, text
    assert "money went to" in text.out and "money came from" in text.out
    assert "cli-2  0.04 USD (1 transfer)" in text.out, text


def test_audit(stack: CliStack) -> None:
    doc = stack.json("audit", "--json")
    assert doc["differences"] == [], doc
    assert doc["live_accounts"] == doc["warehouse_accounts"] >= 3
    text = stack.run("audit")
    assert text.code == 0, text
    assert "write side, ledger replay and warehouse agree on every balance" in text.out


# --- the detector's alerts -----------------------------------------------------------------------


def test_alerts(stack: CliStack) -> None:
    """A related pair, and a cycle through it; the transfers are sent one by one, so their ts
    (when each entered the log) increase along the chain."""
    setup = [
        *[
            {"type": "open_account", "command_id": f"al-o{i}", "account": f"al-{i}",
             "user": f"al-u{i}", "currency": "USD"}
            for i in range(3)
        ],
        *[
            {"type": "deposit", "command_id": f"al-d{i}", "account": f"al-{i}", "amount": "9.00"}
            for i in range(3)
        ],
    ]  # fmt: skip
    relate = {"type": "relate_accounts", "command_id": "al-r", "account": "al-0",
              "related": "al-1", "kind": "family"}  # fmt: skip
    for commands in (setup, [relate]):  # opened (and funded) before they are related
        sent = stack.run(
            "send", "--file", "-", "--no-progress", stdin="\n".join(map(json.dumps, commands))
        )
        assert sent.code == 0, sent
        assert stack.run("wait", "--timeout", "120").code == 0
    for i in range(3):
        sent = stack.run(
            "send", "transfer", "--command-id", f"al-t{i}", "--from", f"al-{i}",
            "--to", f"al-{(i + 1) % 3}", "--amount", "1.00",
        )  # fmt: skip
        assert sent.code == 0, sent
    assert stack.run("wait", "--timeout", "120").code == 0

    def raised() -> list[dict[str, Any]] | None:
        got = stack.json("alerts", "--json")
        return got if len(got) == 3 else None

    alerts = wait_until(raised, 60, "the detector's alerts")
    assert all(
        set(a) == {"alert_id", "kind", "accounts", "transfer_ids", "amounts", "ts"} for a in alerts
    )
    # al-0 and al-1 are related: the first hop is direct, the last two hops lead from al-1
    # back to al-0 (indirect), and the three close a cycle.
    assert sorted((a["kind"], a["accounts"], a["amounts"]) for a in alerts) == [
        ("cycle", ["al-0", "al-1", "al-2", "al-0"], ["1.00", "1.00", "1.00"]),
        ("related_direct", ["al-0", "al-1"], ["1.00"]),
        ("related_indirect", ["al-1", "al-2", "al-0"], ["1.00", "1.00"]),
    ]
    cycles = stack.json("alerts", "--json", "--kind", "cycle")
    assert cycles == [a for a in alerts if a["kind"] == "cycle"]
    assert stack.json("alerts", "--json", "--account", "al-2") == [
        a for a in alerts if a["kind"] != "related_direct"
    ]
    assert stack.json("alerts", "--json", "--account", "nobody") == []
    table = stack.run("alerts")
    assert table.code == 0, table
    assert "3 alerts" in table.out
    assert all(k in table.out for k in ("related_direct", "related_indirect", "cycle")), table
    assert "al-0 -> al-1" in table.out, table


# --- the read side down: the changelog answers; `wait` times out without a worker -----------------


def test_with_the_read_side_and_the_worker_down(stack: CliStack) -> None:
    sup = stack.sup
    assert sup.kill("readside") and sup.kill("ledger-1")  # kill -9: their records stay
    assert not stack.readside_up()
    status = stack.run("status")
    assert status.code == 1, status  # a process is not alive
    assert "│ NO " in status.out, status
    dead = {p["name"] for p in stack.json("status", "--json")["processes"] if not p["alive"]}
    assert dead == {"readside", "ledger-1"}
    view = stack.json("balance", "cli-1", "--json")
    assert view == {
        "account": "cli-1",
        "user": "cli-u1",
        "currency": "USD",
        "balance": "99.96",
        "held": "0.00",
        "payouts_held": "0.00",
        "status": "open",
        "seq": 2,
        "related": None,  # the changelog does not keep relations
        "blocked_reason": None,
        "source": "changelog",
    }
    assert stack.run("balance", "cli-1").out.strip() == "cli-1: 99.96 USD (open; held 0.00)"
    assert stack.run("balance", "cli-2").out.strip() == "cli-2: 0.04 USD (blocked; held 0.00)"
    assert stack.run("balance", "nobody").code == 1
    outcome = stack.json("outcome", "cli-w2", "--json")
    assert (outcome["status"], outcome["reason"]) == ("rejected", "insufficient_funds")
    assert stack.run("outcome", "cli-d1").out.strip() == "cli-d1: accepted [deposit on cli-1]"

    # No worker: a command sent now is not processed, and `wait` says so.
    deposit = stack.run("send", "deposit", "--account", "cli-1", "--amount", "1.00")
    assert deposit.code == 0, deposit
    late = stack.run("wait", "--timeout", "2")
    assert late.code == 1 and "not caught up after 2.0s" in late.err, late

    # No warehouse: its verbs say so in one line, no traceback.
    assert sup.kill("warehouse")
    for verb in (("sql", "SELECT 1"), ("history", "cli-1"), ("trace", "cli-1"), ("audit",)):
        down = stack.run(*verb)
        assert down.code == 1, down
        assert f"paystream {verb[0]}: the warehouse does not answer" in down.err, down
        assert "Traceback" not in down.err, down

    up = stack.run("up")  # starts what is missing
    assert up.code == 0, f"{up}\n{stack.logs()}"
    assert stack.readside_up()
    assert stack.run("wait", "--timeout", "120").code == 0
    wait_until(
        lambda: stack.json("balance", "cli-1", "--json")["balance"] == "100.96",
        60,
        "the deposit sent while the worker was down",
    )
    assert all(p["alive"] for p in stack.json("status", "--json")["processes"])


# --- a failed read-side batch: the process restarts itself in place and status shows it --------


def test_the_read_side_restarts_itself_after_a_failed_batch(stack: CliStack) -> None:
    before = {p["name"]: p for p in stack.json("status", "--json")["processes"]}["readside"]
    log = stack.sup.log_path("readside")
    log_size = log.stat().st_size
    fault = stack.settings.home / "faults" / "readside-batch"
    fault.parent.mkdir(exist_ok=True)
    fault.touch()  # the next batch fails (the read side removes the file as it fires)
    deposit = stack.run(
        "send", "deposit", "--command-id", "cli-d9", "--account", "cli-1", "--amount", "2.00"
    )
    assert deposit.code == 0, deposit

    def restarted() -> dict[str, Any] | None:
        procs = {p["name"]: p for p in stack.json("status", "--json")["processes"]}
        p = procs["readside"]
        return p if p["restarts"] >= 1 and p["alive"] and stack.readside_up() else None

    after = wait_until(restarted, 90, "the read side back after a failed batch")
    assert not fault.exists()  # a batch hit the fault
    assert after["pid"] == before["pid"]  # in place: same pid, so `down` still finds it
    assert "injected fault" in after["last_restart"]["reason"], after
    assert after["last_restart"]["gave_up"] is False
    written = log.read_text()[log_size:]
    assert "read side batch of" in written and "restarting in place" in written, written
    # The failed batch is consumed again after the restart (at least once): nothing lost.
    wait_until(
        lambda: _balance_on_the_read_side(stack, "cli-1")["balance"] == "102.96",
        60,
        "the deposit folded after the restart",
    )
    table = stack.run("status")
    assert table.code == 0, table
    line = next(x for x in table.out.splitlines() if "readside" in x)
    assert "│ 1 " in line or "│ 2 " in line, table.out  # the restarts column
    assert after["last_restart"]["at"] in table.out, table.out
    r = after["last_restart"]
    assert f"readside last restarted at {r['at']}: {r['reason']}" in table.out, table.out


# --- payments: pay-in, pay-out, payment, psp settlement ------------------------------------------


def test_payment_verbs(stack: CliStack) -> None:
    opened = stack.run(
        "send", "open_account", "--command-id", "cli-op", "--account", "cli-pay",
        "--user", "cli-payer", "--currency", "USD",
    )  # fmt: skip
    assert opened.code == 0, opened
    assert stack.run("wait", "--timeout", "120").code == 0
    pay = ["--user", "cli-payer", "--wait", "60"]
    got = stack.json(
        "pay-in", "--from", "card_4242424242424242", "--to", "cli-pay", "--amount", "25.00",
        "--payment-id", "cli-p1", "--json", *pay,
    )  # fmt: skip
    assert (got["payment_id"], got["status"], got["orders"][0]["psp"]) == (
        "cli-p1", "succeeded", "cardco"
    )  # fmt: skip
    declined = stack.run(
        "pay-in", "--from", "card_4000000000000002", "--to", "cli-pay", "--amount", "3.00",
        "--payment-id", "cli-p2", *pay,
    )  # fmt: skip
    assert declined.code == 2, declined  # a failed payment is exit 2
    assert "cli-p2 pay_in 3.00 USD" in declined.out and "failed" in declined.out, declined
    assert "card_declined" in declined.out, declined
    out = stack.json(
        "pay-out", "--from", "cli-pay", "--to", "card_4242424242424242", "--amount", "5.00",
        "--payment-id", "cli-p3", "--json", *pay,
    )  # fmt: skip
    assert out["status"] == "succeeded", out
    # `payment`: the table and the JSON of the same payment; an unknown one is refused.
    shown = stack.json("payment", "cli-p1", "--json")
    assert shown["history"][-1]["status"] == "succeeded" and shown["is_complete"] is True
    table = stack.run("payment", "cli-p1")
    assert table.code == 0 and "cli-p1 pay_in 25.00 USD" in table.out, table
    assert "cardco" in table.out and "history:" in table.out, table
    missing = stack.run("payment", "no-such-payment")
    assert missing.code == 1 and "payment_not_found" in missing.err, missing
    refused = stack.run(
        "pay-in", "--from", "card_4242424242424242", "--to", "cli-pay", "--amount", "abc",
        "--user", "cli-payer",
    )  # fmt: skip
    assert refused.code == 1 and "invalid_field (amount)" in refused.err, refused
    # The balance the ledger shows: 25.00 in, 5.00 out.
    assert stack.json("balance", "cli-pay", "--json")["balance"] == "20.00"
    # The PSP's settlement file for today holds the charge.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    csv_out = stack.settings.home / "cardco.csv"
    settled = stack.run("psp", "settlement", "cardco", "--date", day, "--out", str(csv_out))
    assert settled.code == 0, settled
    text = csv_out.read_text()
    assert text.startswith("Company Account,Merchant Account,Psp Reference,Merchant Reference")
    assert "cli-p1/1" in text and "cli-p2/1" not in text
    unknown = stack.run("psp", "settlement", "nobody", "--date", day)
    assert unknown.code == 1 and "no PSP 'nobody'" in unknown.err, unknown
