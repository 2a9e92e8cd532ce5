"""The audit warehouse end to end: real broker, real workers, the sink on real chDB over HTTP."""

from __future__ import annotations

import json
import re
import threading
import time
from decimal import Decimal

import pytest

from paystream import queries
from paystream.oracle import Oracle
from paystream.workload import Workload
from tests.stack import LedgerStack, cli

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(settings, free_port_base):  # type: ignore[no-untyped-def]
    s = LedgerStack(settings, workers=2)
    s.start()
    s.start_warehouse(free_port_base(1))
    yield s
    s.stop()


def test_sink_survives_kill_9_mid_batch_and_views_match_the_write_side(stack: LedgerStack) -> None:
    work = Workload(accounts=50, transfers=3000, seed=5, prefix="wh")
    oracle = Oracle()
    client = stack.warehouse()
    seen_counts: list[int] = []
    stop = threading.Event()

    def analyst() -> None:  # queries over HTTP while the sink writes
        while not stop.is_set():
            try:
                seen_counts.append(int(client.command("SELECT count() FROM ledger_entries")))
            except Exception:  # the warehouse may be down for a moment (killed below)
                time.sleep(0.2)
            time.sleep(0.05)

    reader = threading.Thread(target=analyst)
    reader.start()
    for name, commands in work.phases:
        for c in commands:
            oracle.apply(c)
        assert stack.send(commands) == 0
        if name == "transfers":
            evidence = kill_mid_batch(stack)
            client = stack.warehouse()
        stack.wait(timeout_s=240)
    stop.set()
    reader.join()
    assert len(seen_counts) > 5 and seen_counts == sorted(seen_counts)
    # What the kill hit: a batch being inserted, consumed again from its first offsets.
    inflight, resumed = evidence
    print("in flight at the kill:", inflight, "resumed:", resumed)
    assert inflight and set(inflight) <= set(resumed), (inflight, resumed)
    assert {k: resumed[k] for k in inflight} == {k: a for k, (a, _) in inflight.items()}

    replay = queries.replay(stack.settings)
    rows, distinct = client.query(
        "SELECT count(), uniqExact(event_id) FROM ledger_entries FINAL"
    ).result_rows[0]
    assert rows == distinct == replay.events  # nothing missing, nothing twice

    out = cli(
        stack.settings,
        "sql",
        "--format",
        "json",
        "SELECT account, toString(balance) AS balance FROM account_balances",
        port=stack.warehouse_port,
    )
    assert out.returncode == 0, out.stderr
    got = {r["account"]: r["balance"] for r in json.loads(out.stdout)}
    assert got == {a: b["balance"] for a, b in oracle.balances().items()}

    acct = "wh-2"
    hist = json.loads(
        cli(stack.settings, "history", acct, "--json", port=stack.warehouse_port).stdout
    )
    assert [h["account_seq"] for h in hist] == list(range(1, len(hist) + 1))
    assert Decimal(hist[-1]["balance_after"]) == Decimal(oracle.balances()[acct]["balance"])
    assert sum(Decimal(h["amount"]) for h in hist) == Decimal(oracle.balances()[acct]["balance"])

    outcomes = client.query(
        "SELECT count(), uniqExact(command_id) FROM command_outcomes FINAL"
        " WHERE reason IS NULL OR reason != 'exists_with_different_payload'"
    ).result_rows[0]
    assert outcomes[0] == outcomes[1] == len(oracle.outcomes)

    audit = cli(stack.settings, "audit", "--json", port=stack.warehouse_port)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert json.loads(audit.stdout)["differences"] == []

    trace = json.loads(
        cli(stack.settings, "trace", "wh-0", "--json", port=stack.warehouse_port).stdout
    )
    assert trace["out"], "wh-0 sent money in the transfer phase"


RANGE = re.compile(r"([^,\s]+)/(\d+)@(\d+)-(\d+)")
INFLIGHT = re.compile(r"stopped with a batch in flight \((\d+) rows, offsets (\S+)\)")
RESUMED = re.compile(r"resumed (\S+)/(\d+) at offset (\d+)")


def kill_mid_batch(
    stack: LedgerStack, attempts: int = 5
) -> tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, int], int]]:
    """kill -9 the warehouse while a batch is being inserted, and start it again.

    The sink notes the batch it is inserting until its offsets are committed; the kill comes
    as soon as that note appears. The proof is what the restarted sink says: the batch the
    last run left in flight (its offset ranges) and where it resumed each partition. Returns
    ({(topic, partition): (first, last)} of the batch in flight, {(topic, partition): resumed}).
    """
    log = stack.sup.log_path("warehouse")
    prefix = stack.settings.topic_prefix.rstrip(".")
    note = stack.settings.home / f"warehouse-inflight-{prefix}.json"
    for _ in range(attempts):
        deadline = time.monotonic() + 30
        while not note.exists() and time.monotonic() < deadline:
            time.sleep(0.002)
        size = log.stat().st_size
        stack.sup.kill("warehouse")
        stack.start_warehouse(stack.warehouse_port)
        deadline = time.monotonic() + 60
        written = ""
        while "resumed " not in written and time.monotonic() < deadline:
            time.sleep(0.2)
            written = log.read_text()[size:]
        found = INFLIGHT.search(written)
        if found is None:
            continue  # the commit won the race: try again
        inflight = {(t, int(p)): (int(a), int(b)) for t, p, a, b in RANGE.findall(found.group(2))}
        time.sleep(2.0)  # every partition of the batch resumed by now
        resumed = {(t, int(p)): int(o) for t, p, o in RESUMED.findall(log.read_text()[size:])}
        return inflight, resumed
    raise AssertionError(f"no kill hit a batch in flight in {attempts} attempts:\n{stack.logs()}")


def test_a_poison_record_goes_to_dead_letters_and_its_neighbours_land(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import clickhouse_connect
    from confluent_kafka import Producer

    from base.topics import TopicNames
    from connectors.sink import ClickHouseSink, WarehouseSink
    from connectors.warehouse import migrate
    from schemas.codec import Codec

    codec = Codec.default()
    topics = TopicNames(settings.topic_prefix)
    good = {
        "event_id": "e1",
        "entry_id": "x",
        "command_id": "c",
        "transfer_id": None,
        "account": "a",
        "counterparty": "@world/USD",
        "currency": "USD",
        "amount": "1.00",
        "balance_after": "1.00",
        "account_seq": 1,
        "kind": "deposit",
        "ts": 1,
    }
    p = Producer({"bootstrap.servers": settings.bootstrap})
    p.produce(topics.ledger, codec.encode("LedgerPosting", good), b"a", 0)
    p.produce(
        topics.ledger,
        codec.encode("LedgerPosting", {**good, "event_id": "e2", "amount": "abc"}),
        b"a",
        0,
    )
    p.produce(topics.ledger, b"\xc3\x01garbage", b"a", 0)
    p.produce(
        topics.ledger,
        codec.encode("LedgerPosting", {**good, "event_id": "e3", "account_seq": 2}),
        b"a",
        0,
    )
    p.flush(10)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tmp_path / 'wh'}")
    migrate(client)
    assert migrate(client) == []  # idempotent
    sink = WarehouseSink(settings, ClickHouseSink(client))
    sink.consumer.subscribe([topics.ledger])
    deadline = time.monotonic() + 60
    while sink.counters.rows + sink.counters.dead_letters < 4 and time.monotonic() < deadline:
        sink.step()
    sink.consumer.close()
    sink.dead_letters.flush(10)
    assert sorted(
        r[0] for r in client.query("SELECT event_id FROM ledger_entries FINAL").result_rows
    ) == ["e1", "e3"]
    assert sink.counters.dead_letters == 2
    dead = [codec.decode(m.value())[1] for m in queries.scan(settings, topics.deadletter)]
    assert len(dead) == 2 and all(d["source"].startswith(topics.ledger) for d in dead)
