"""The streaming detector through the real broker: planted patterns, and a kill -9 mid-stream.

Events are produced straight to the transfers and accounts topics (Avro, in transactions,
Kafka timestamps = event ts, as the ledger writes them); the expected alerts come from the
pure detector, or the brute-force oracle, run over the same events in ts order.

The end-to-end test ("done when" of the detector issue) goes through the whole stack instead:
ledger workers and the detector as processes, the demo's workload (random traffic with
planted chains, cycles and relation changes) sent by ``paystream demo``, and
``paystream alerts --json`` compared with the brute force run over the workload itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from base.config import Settings
from base.kafka import reader, scan
from base.topics import TopicNames
from paystream.demo import _print as print_summary
from paystream.demo import expected_alerts as workload_alerts
from paystream.stack import detector_spec
from paystream.workload import Workload
from schemas import now_micros
from schemas.codec import Codec
from streams.detector import bruteforce
from streams.detector.app import DETECTOR_GROUP, DetectorLimits, _Lock, read_alerts, run_detector
from streams.detector.bruteforce import Event, Relate, Unrelate
from streams.detector.graph import CYCLE, DIRECT, INDIRECT, RelatedTransferDetector, TransferEdge
from tests.stack import LedgerStack, cli, env_for

pytestmark = pytest.mark.integration

S = 1_000_000
REPO = Path(__file__).resolve().parents[2]
FAST = DetectorLimits(hold_ms=100, max_hold_ms=1000, commit_interval_ms=300)


def _xfer(tid: str, a: str, b: str, ts: int) -> TransferEdge:
    return TransferEdge(tid, f"cmd-{tid}", a, b, f"{len(tid)}.00", "USD", ts)


def _records(ev: Event | tuple[str, TransferEdge]) -> tuple[str, str, dict[str, Any]]:
    """(topic key, schema, record) of one event; ("pending"|"voided", t) are lifecycle noise."""
    if isinstance(ev, tuple):
        status, t = ev
        return t.transfer_id, "TransferEvent", _transfer_record(t, status)
    if isinstance(ev, TransferEdge):
        return ev.transfer_id, "TransferEvent", _transfer_record(ev, "posted")
    kind = "related" if isinstance(ev, Relate) else "unrelated"
    return (
        ev.a,
        "AccountEvent",
        {
            "event_id": f"{ev.a}/{kind}/{ev.ts}",
            "command_id": f"rel-{ev.a}-{ev.b}-{ev.ts}",
            "account": ev.a,
            "kind": kind,
            "related": ev.b,
            "relation_kind": ev.kind if isinstance(ev, Relate) else None,
            "ts": ev.ts,
        },
    )


def _transfer_record(t: TransferEdge, status: str) -> dict[str, Any]:
    return {
        "event_id": f"{t.transfer_id}/{status}",
        "transfer_id": t.transfer_id,
        "command_id": t.command_id,
        "from_account": t.from_account,
        "to_account": t.to_account,
        "currency": t.currency,
        "amount": t.amount,
        "status": status,
        "reason": "insufficient_funds" if status == "voided" else None,
        "ts": t.ts,
    }


def produce(
    settings: Settings,
    events: Sequence[Event | tuple[str, TransferEdge]],
    *,
    abort: bool = False,
    extra_account_events: int = 0,
) -> None:
    """One Kafka transaction (committed, or aborted) with the events, in the given order."""
    topics = TopicNames(settings.topic_prefix)
    codec = Codec.default()
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": f"{settings.topic_prefix}detector-test-{os.urandom(4).hex()}",
        }
    )
    p.init_transactions(30)
    p.begin_transaction()
    for ev in events:
        key, schema, rec = _records(ev)
        topic = topics.transfers if schema == "TransferEvent" else topics.accounts
        p.produce(topic, codec.encode(schema, rec), key.encode(), timestamp=rec["ts"] // 1000)
    for i in range(extra_account_events):  # opened accounts: the detector ignores them
        rec = {
            "event_id": f"open-{i}",
            "command_id": f"open-{i}",
            "account": f"n{i}",
            "kind": "opened",
            "user": f"user-{i}",
            "currency": "USD",
            "ts": now_micros() - 7200 * S,
        }
        p.produce(topics.accounts, codec.encode("AccountEvent", rec), f"n{i}".encode())
    if abort:
        p.flush(30)
        p.abort_transaction(30)
    else:
        p.commit_transaction(30)


def in_order(events: Sequence[Event]) -> list[Event]:
    """The order the detector defines: ts, relation events before transfers of equal ts."""
    return sorted(events, key=lambda e: (e.ts, 1 if isinstance(e, TransferEdge) else 0))


def expected_alerts(events: Sequence[Event], max_hops: int, window_s: int) -> list[dict[str, Any]]:
    det = RelatedTransferDetector(max_hops, window_s * S)
    out = []
    for ev in in_order(events):
        if isinstance(ev, Relate):
            det.relate(ev.a, ev.b, ev.kind, ev.ts)
        elif isinstance(ev, Unrelate):
            det.unrelate(ev.a, ev.b, ev.ts)
        else:
            out.extend(a.to_record() for a in det.add_transfer(ev))
    return out


def _key(rec: dict[str, Any]) -> str:
    return rec["alert_id"]


def wait_for_alerts(settings: Settings, count: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    got: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = read_alerts(settings)
        if len(got) >= count:
            time.sleep(1.0)  # anything unexpected would show up now
            return read_alerts(settings)
        time.sleep(0.3)
    return got


@contextmanager
def detector_thread(settings: Settings, max_hops: int, window_s: float) -> Iterator[None]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_detector(settings, max_hops, window_s, stop=stop, limits=FAST)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    th = threading.Thread(target=target, name="detector", daemon=True)
    th.start()
    try:
        yield
    finally:
        stop.set()
        th.join(30)
        assert not th.is_alive(), "detector did not stop"
        assert not errors, errors


def test_planted_patterns_give_exactly_the_expected_alerts(settings: Settings) -> None:
    base = now_micros() - 3600 * S
    rng = random.Random(11)
    planted: list[Event] = [
        Relate("r1", "r2", "family", base),
        _xfer("direct-1", "r1", "r2", base + 1 * S),  # related_direct
        Relate("u", "w", "business", base + 2 * S),
        _xfer("ind-1", "u", "m1", base + 3 * S),
        _xfer("ind-2", "m1", "m2", base + 4 * S),
        _xfer("ind-3", "m2", "w", base + 5 * S),  # related_indirect u->m1->m2->w
        _xfer("cyc-1", "c1", "c2", base + 6 * S),
        _xfer("cyc-2", "c2", "c3", base + 7 * S),
        _xfer("cyc-3", "c3", "c1", base + 8 * S),  # cycle c1->c2->c3->c1
    ]
    noise: list[Event] = [
        _xfer(
            f"noise-{i:02d}", f"n{rng.randrange(30)}", f"n{rng.randrange(30)}", base + (10 + i) * S
        )
        for i in range(40)
    ]
    noise = [t for t in noise if isinstance(t, TransferEdge) and t.from_account != t.to_account]
    events = in_order(planted + noise)
    lifecycle: list[Event | tuple[str, TransferEdge]] = [
        ("pending", _xfer("pend-1", "c3", "c2", base + 9 * S)),  # would close c2->c3->c2
        ("voided", _xfer("void-1", "w", "u", base + 9 * S)),  # would be related_direct
    ]
    produce(settings, [*lifecycle, *events], extra_account_events=5)
    # An aborted transaction: a direct transfer between related accounts that never happened.
    ghost: list[Event] = [_xfer("ghost-1", "r2", "r1", base + 60 * S)]
    produce(settings, ghost, abort=True)

    want = [a.to_record() for a in bruteforce.detect(events, 4, 3600 * S)]
    assert sorted(want, key=_key) == sorted(expected_alerts(events, 4, 3600), key=_key)
    kinds = {(a["kind"], a["transfer_ids"][-1]) for a in want}
    assert {(DIRECT, "direct-1"), (INDIRECT, "ind-3"), (CYCLE, "cyc-3")} <= kinds

    with detector_thread(settings, 4, 3600):
        got = wait_for_alerts(settings, len(want), 60)
    assert sorted(got, key=_key) == sorted(want, key=_key)
    [indirect] = [a for a in got if a["transfer_ids"][-1] == "ind-3"]
    assert indirect["accounts"] == ["u", "m1", "m2", "w"]
    assert indirect["related_accounts"] == ["u", "w"]
    assert indirect["relation_kinds"] == ["business"]
    assert indirect["amounts"] == ["5.00", "5.00", "5.00"]
    assert indirect["timestamps"] == [base + 3 * S, base + 4 * S, base + 5 * S]


def _random_history(rng: random.Random, start: int, n_transfers: int) -> list[Event]:
    """Transfers over 30 minutes among 25 accounts, relations coming and going (unique ts)."""
    accounts = [f"a{i:02d}" for i in range(25)]
    events: list[Event] = []
    span = 1800 * S
    for i in range(n_transfers):
        a, b = rng.sample(accounts, 2)
        ts = start + rng.randrange(span) // S * S  # whole seconds: ties are common
        events.append(_xfer(f"t{i:04d}-{rng.randrange(10**6):06d}", a, b, ts))
    used: set[int] = set()
    for _ in range(n_transfers // 10):
        a, b = rng.sample(accounts, 2)
        ts = start + rng.randrange(span) // S * S + 1 + rng.randrange(S - 1)  # never a tie
        if ts in used:
            continue
        used.add(ts)
        rel: Event = Relate(a, b, rng.choice(["family", "business"]), ts)
        if rng.random() < 0.3:
            rel = Unrelate(a, b, ts)
        events.append(rel)
    return in_order(events)


def _spawn(settings: Settings, log_path: Path, window_s: int) -> subprocess.Popen[bytes]:
    # The detector process of the stack (`paystream detector`), as a child of the test: its
    # exit status after SIGTERM is part of what is checked.
    settings = settings.with_(detector_max_hops=4, detector_window_s=window_s, log_level="INFO")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            detector_spec(settings).argv(),
            cwd=REPO,
            env={**os.environ, **env_for(settings)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _posted_offsets(settings: Settings) -> dict[str, tuple[int, int]]:
    """transfer id -> (partition, offset) of its ``posted`` event on the transfers topic."""
    codec = Codec.default()
    out = {}
    for msg in scan(settings, TopicNames(settings.topic_prefix).transfers, timeout_s=60):
        record = codec.decode(msg.value())[1]
        if record["status"] == "posted":
            out[record["transfer_id"]] = (msg.partition(), msg.offset())
    return out


def _committed(settings: Settings) -> dict[int, int]:
    """The detector group's committed offsets on the transfers topic, by partition."""
    from confluent_kafka import TopicPartition

    topic = TopicNames(settings.topic_prefix).transfers
    c = reader(settings, **{"group.id": settings.topic_prefix + DETECTOR_GROUP})
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        return {tp.partition: tp.offset for tp in c.committed(tps, timeout=30)}
    finally:
        c.close()


def _kill_after_an_alert_of(
    settings: Settings, proc: subprocess.Popen[bytes], chunk: Sequence[Event]
) -> set[str]:
    """kill -9 the detector as soon as an alert closed by a transfer of ``chunk`` is on the
    topic; returns the ids of such alerts whose input was not committed at the kill (they
    must be processed, and produced, again): the kill hit the detector mid-stream."""
    closing = {e.transfer_id for e in chunk if isinstance(e, TransferEdge)}
    deadline = time.monotonic() + 30
    seen: list[dict[str, Any]] = []
    while not seen and time.monotonic() < deadline:
        seen = [a for a in read_alerts(settings) if a["transfer_ids"][-1] in closing]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    committed, offsets = _committed(settings), _posted_offsets(settings)
    seen = [a for a in read_alerts(settings) if a["transfer_ids"][-1] in closing]
    return {
        a["alert_id"]
        for a in seen
        if offsets[a["transfer_ids"][-1]][1] >= committed[offsets[a["transfer_ids"][-1]][0]]
    }


def test_kill_mid_stream_and_restart_loses_and_changes_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(5)
    window_s = 300  # much shorter than the history: the rebuild must start at the right offset
    events = _random_history(rng, now_micros() - 7200 * S, 600)
    want = expected_alerts(events, 4, window_s)
    assert len(want) > 50 and {a["kind"] for a in want} == {DIRECT, INDIRECT, CYCLE}
    third = len(events) // 3
    first, rest = events[:third], events[2 * third :]
    # The middle third in chunks: one kill per chunk until a kill hits mid-stream.
    step = max(1, third // 5)
    chunks = [events[i : min(i + step, 2 * third)] for i in range(third, 2 * third, step)]
    log_path = tmp_path / "detector.log"

    produce(settings, first)
    proc = _spawn(settings, log_path, window_s)
    in_flight: set[str] = set()
    try:
        before = [a for a in want if a["ts"] <= first[-1].ts]
        assert len(wait_for_alerts(settings, len(before) // 2, 60)) >= len(before) // 2
        for chunk in chunks:
            produce(settings, chunk)
            if not in_flight:
                in_flight = _kill_after_an_alert_of(settings, proc, chunk)
                proc = _spawn(settings, log_path, window_s)
        assert in_flight, "no kill came between an alert and the commit of its input"
        produce(settings, rest)
        got = wait_for_alerts(settings, len(want), 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the detector did not stop on SIGTERM")
    log = log_path.read_text()
    assert "rebuilt from" in log, log[-3000:]
    assert proc.returncode == 0, log[-3000:]

    # Every record on the topic, duplicates included: one content per id, one id per
    # (kind, closing transfer), and the distinct set is exactly the expected one.
    codec = Codec.default()
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for msg in scan(settings, TopicNames(settings.topic_prefix).alerts, timeout_s=60):
        value = msg.value()
        assert value is not None
        by_id[msg.key().decode() if msg.key() else ""].append(codec.decode(value)[1])
    for alert_id, recs in by_id.items():
        assert all(r == recs[0] for r in recs), alert_id
        assert recs[0]["alert_id"] == alert_id
    per_closing = defaultdict(set)
    for recs in by_id.values():
        per_closing[(recs[0]["kind"], recs[0]["transfer_ids"][-1])].add(recs[0]["alert_id"])
    assert all(len(ids) == 1 for ids in per_closing.values())
    assert sorted(got, key=_key) == sorted(want, key=_key)
    records = sum(len(recs) for recs in by_id.values())
    # The alerts whose input the kill left uncommitted were produced again, as the same record.
    assert all(len(by_id[i]) >= 2 for i in in_flight), {i: len(by_id[i]) for i in in_flight}
    print(f"{len(want)} alerts expected and found; {records} records on the topic (replays)")


def test_a_second_detector_on_the_same_home_is_refused(tmp_path: Path) -> None:
    first = _Lock(tmp_path / "detector.lock")
    try:
        with pytest.raises(RuntimeError, match="another detector"):
            _Lock(tmp_path / "detector.lock")
    finally:
        first.release()
    _Lock(tmp_path / "detector.lock").release()  # free again


def test_demo_workload_alerts_through_the_cli_equal_the_brute_force(
    settings: Settings, free_port_base: Callable[[int], int], capsys: pytest.CaptureFixture[str]
) -> None:
    """Random traffic with planted related-party chains (2..4 hops), cycles and relation
    changes through the ledger: ``paystream alerts --json`` is exactly the brute force's set.
    No polling for alerts: the demo itself waits until the detector has processed
    everything, so the alerts must all be there when it returns."""
    accounts, transfers, seed = 60, 600, 5
    stack = LedgerStack(settings, workers=2)
    stack.start()
    stack.stack.start(detector_spec(stack.stack.settings), wait=False)
    no_warehouse = free_port_base(1)  # the demo must not find a warehouse (there is none)
    try:
        demo = cli(
            settings,
            "demo",
            "--json",
            f"--accounts={accounts}",
            f"--transfers={transfers}",
            f"--seed={seed}",
            port=no_warehouse,
        )
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:] + stack.logs()
        out = cli(settings, "alerts", "--json")
        assert out.returncode == 0, out.stderr[-3000:]
        only_cycles = cli(settings, "alerts", "--json", "--kind", "cycle")
    finally:
        stack.stop()
    got = json.loads(out.stdout)
    summary = json.loads(demo.stdout)

    work = Workload(accounts, transfers, seed, prefix=f"demo{seed}", plant=True)
    want = workload_alerts(work)  # brute force over the workload, without the broker's times
    fields = ("alert_id", "kind", "accounts", "transfer_ids", "amounts")
    assert {json.dumps([a[k] for k in fields]) for a in got} == {
        json.dumps([a[k] for k in fields]) for a in want
    }
    assert len(got) == len(want)  # one alert per id
    assert all(set(a) == {*fields, "ts"} for a in got)  # the documented --json form
    assert {a["kind"] for a in got} == {DIRECT, INDIRECT, CYCLE}
    assert all(isinstance(a["ts"], int) and a["ts"] > 0 for a in got)  # µs since the epoch
    assert json.loads(only_cycles.stdout) == [a for a in got if a["kind"] == CYCLE]

    # Every planted pattern gave exactly the alerts it was planted for (or none).
    kinds_on: dict[str, list[str]] = defaultdict(list)
    for a in sorted(got, key=lambda a: [DIRECT, INDIRECT, CYCLE].index(a["kind"])):
        kinds_on[a["transfer_ids"][-1]].append(a["kind"])
    assert work.planted and {p.closing: tuple(kinds_on[p.closing]) for p in work.planted} == {
        p.closing: p.kinds for p in work.planted
    }
    # The demo's summary says the same (and kept its existing contract).
    alerts = summary["alerts"]
    assert alerts["detector"] == "caught up" and alerts["matches"], alerts
    assert alerts["count"] == len(want) and alerts["planted_as_expected"] == len(work.planted)
    assert summary["verified"] and summary["matches_sequential_model"]
    assert summary["warehouse"] == {"available": False, "error": summary["warehouse"]["error"]}
    # The same summary as `paystream demo` prints it without --json (its other output path).
    print_summary(summary)
    text = capsys.readouterr().out
    for row, value in (
        ("balances = sequential model", "yes"),
        ("alerts = brute-force oracle", "yes"),
        ("warehouse", "not running"),
        ("planted patterns as expected", f"{len(work.planted)}/{len(work.planted)}"),
    ):
        line = next((x for x in text.splitlines() if row in x), "")
        assert value in line, text
