"""``paystream send`` against the real broker: commands and dead letters land where they should."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from base.config import Settings
from base.topics import TopicNames
from producers.commands import parse_line
from producers.errors import ProducerQueueFull
from producers.producer import CommandProducer
from producers.send import SendReport, send_file, send_one
from schemas.codec import Codec

pytestmark = pytest.mark.integration

EXAMPLE_DEPOSIT = '{"type":"deposit","command_id":"c2","account":"acct-1","amount":"100.00"}'


def _consume(settings: Settings, topic: str, count: int, timeout_s: float = 60.0) -> list[Any]:
    """The first ``count`` records of ``topic`` (all partitions), with a fresh group."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-producer-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        consumer.subscribe([topic])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
        assert len(records) == count, f"{len(records)} of {count} records on {topic}"
        # Nothing more than expected (a duplicate would show up here).
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            extra = consumer.poll(0.2)
            assert extra is None or extra.error() is not None, extra.value()
        return records
    finally:
        consumer.close()


def _lines(run: str) -> tuple[list[str], dict[int, str]]:
    """A file of mixed lines; returns the lines and ``{line number: code}`` of the bad ones."""
    lines = [
        json.dumps({"type": "open_account", "command_id": f"{run}-1", "account": "acct-1",
                    "user": "user-1", "currency": "USD"}),
        json.dumps({"type": "open_account", "command_id": f"{run}-2", "account": "acct-2",
                    "user": "user-2", "currency": "USD"}),
        "",
        json.dumps({"type": "deposit", "command_id": f"{run}-3", "account": "acct-1",
                    "amount": "100.00"}),
        '{"type":"deposit","command_id":"oops","account":"acct-1","amount":100}',
        json.dumps({"type": "transfer", "command_id": f"{run}-4", "from": "acct-1", "to": "acct-2",
                    "amount": "5.25"}),
        "this is not json",
        json.dumps({"type": "block_account", "command_id": f"{run}-5", "account": "acct-2",
                    "reason": "court order"}),
        json.dumps({"type": "deposit", "account": "acct-1", "amount": "1.00"}),  # no command_id
        json.dumps({"type": "withdraw", "command_id": f"{run}-6", "account": "acct-1",
                    "amount": "abc"}),  # the ledger's business, not ours: sent
        json.dumps({"type": "relate_accounts", "command_id": f"{run}-7", "account": "acct-1",
                    "related": "acct-2", "kind": "family"}),
    ]  # fmt: skip
    bad = {5: "wrong_type", 7: "invalid_json", 9: "missing_field"}
    return lines, bad


def _check_delivery(
    settings: Settings, topics: TopicNames, lines: list[str], bad: dict[int, str], source: str
) -> None:
    codec = Codec.default()
    valid = [parse_line(line) for n, line in enumerate(lines, 1) if line.strip() and n not in bad]
    records = _consume(settings, topics.commands, len(valid))
    by_key: dict[str, list[tuple[int, str, dict[str, Any]]]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for msg in sorted(records, key=lambda m: (m.partition(), m.offset())):
        name, record = codec.decode(msg.value())
        by_key[msg.key().decode()].append((msg.offset(), name, record))
        partition_of[msg.key()].add(msg.partition())
    expected: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for cmd in valid:
        expected[cmd.key].append((cmd.schema, dict(cmd.record)))
    # Right key, right content, and file order kept per account.
    assert {k: [(n, r) for _, n, r in v] for k, v in by_key.items()} == expected
    assert all(len(parts) == 1 for parts in partition_of.values())

    dead = _consume(settings, topics.deadletter, len(bad))
    got = {}
    for msg in dead:
        name, record = codec.decode(msg.value())
        assert name == "DeadLetter"
        assert msg.key().decode() == record["source"]
        assert record["payload"] == lines[int(record["source"].rsplit(":", 1)[1]) - 1].encode()
        assert record["reason"] and record["ts"] > 0
        got[record["source"]] = record["error_code"]
    assert got == {f"cli:{source}:{n}": code for n, code in bad.items()}


def test_send_file_delivers_commands_and_dead_letters(
    settings: Settings, topics: TopicNames, tmp_path: Path
) -> None:
    lines, bad = _lines(uuid.uuid4().hex[:8])
    path = tmp_path / "commands.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = io.StringIO()

    report = send_file(settings, str(path), progress=False, err=err)

    assert (report.sent, report.invalid, report.failed) == (7, 3, 0)
    assert report.exit_code == 2
    assert [line.split(": ")[0:2] for line in err.getvalue().splitlines()] == [
        [f"{path}:{n}", code] for n, code in bad.items()
    ]
    _check_delivery(settings, topics, lines, bad, str(path))


def test_send_file_from_stdin(
    settings: Settings, topics: TopicNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines, bad = _lines(uuid.uuid4().hex[:8])
    data = ("\n".join(lines) + "\n").encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    err = io.StringIO()

    report = send_file(settings, "-", progress=False, err=err)

    assert (report.sent, report.invalid, report.failed, report.exit_code) == (7, 3, 0, 2)
    assert err.getvalue().splitlines()[0].startswith("-:5: wrong_type: ")
    _check_delivery(settings, topics, lines, bad, "-")


def test_all_valid_file_exits_zero(settings: Settings, topics: TopicNames, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    n = 500
    path.write_text(
        "".join(
            json.dumps(
                {
                    "type": "deposit",
                    "command_id": f"ok-{i}",
                    "account": f"acct-{i % 7}",
                    "amount": "1.00",
                }
            )
            + "\n"
            for i in range(n)
        )
    )
    report = send_file(settings, str(path), progress=True, err=io.StringIO())
    assert (report.sent, report.invalid, report.failed, report.exit_code) == (n, 0, 0, 0)
    assert len(_consume(settings, topics.commands, n)) == n


def test_send_one_generates_a_command_id(settings: Settings, topics: TopicNames) -> None:
    command_id, report = send_one(settings, "deposit", {"account": "acct-9", "amount": "7.00"})
    assert uuid.UUID(command_id).version == 4
    assert report == SendReport(sent=1, invalid=0, failed=0, command_ids_generated=1)
    assert report.exit_code == 0
    (msg,) = _consume(settings, topics.commands, 1)
    assert msg.key() == b"acct-9"
    assert Codec.default().decode(msg.value()) == (
        "Deposit",
        {"command_id": command_id, "account": "acct-9", "amount": "7.00"},
    )


def test_producer_counts_deliveries_and_calls_back(settings: Settings, topics: TopicNames) -> None:
    seen: list[object] = []
    with CommandProducer(settings) as producer:
        for i in range(3):
            producer.send(
                parse_line(
                    json.dumps(
                        {"type": "unblock_account", "command_id": f"u{i}", "account": "acct-3"}
                    )
                ),
                on_delivery=lambda err, msg: seen.append(err),
            )
        producer.send_record(
            "Transfer", "acct-3", {"command_id": "t", "from": "acct-3", "to": "b", "amount": "1"}
        )
        assert producer.flush(30) == 0
        assert (producer.sent, producer.delivered, producer.failed) == (4, 4, 0)
    assert seen == [None, None, None]
    assert [m.key() for m in _consume(settings, topics.commands, 4)] == [b"acct-3"] * 4


def test_undeliverable_commands_exit_one(settings: Settings, tmp_path: Path) -> None:
    # A namespace whose topics were never created: the broker refuses, nothing is delivered.
    nowhere = settings.with_(topic_prefix=f"missing-{uuid.uuid4().hex[:8]}.")
    path = tmp_path / "cmds.jsonl"
    path.write_text(EXAMPLE_DEPOSIT + "\nnot json\n")
    producer = CommandProducer(nowhere, config={"message.timeout.ms": 2000})
    report = send_file(nowhere, str(path), progress=False, err=io.StringIO(), producer=producer)
    assert (report.sent, report.invalid) == (1, 1)
    assert report.failed == 2  # the command and its dead letter
    assert report.exit_code == 1


def test_a_full_queue_raises_after_a_bounded_wait(tmp_path: Path) -> None:
    # No broker at all: the local queue fills up and send() must not block forever.
    unreachable = Settings(home=tmp_path, bootstrap="127.0.0.1:1")
    producer = CommandProducer(
        unreachable,
        config={"queue.buffering.max.messages": 5, "log_level": 0},
        queue_full_timeout_s=0.3,
    )
    cmd = parse_line(EXAMPLE_DEPOSIT)
    for _ in range(5):
        producer.send(cmd)
    with pytest.raises(ProducerQueueFull):
        producer.send(cmd)
    # The refused record is not counted; the 5 stay queued. (len() of librdkafka's queue also
    # counts events not served yet, such as the broker-down error: once it read 6 under load.)
    assert producer.sent == 5 and producer.in_flight >= 5


def test_keys_land_on_the_partition_the_ledger_expects(
    settings: Settings, topics: TopicNames
) -> None:
    # The ledger workers own partition_for(account); librdkafka's default partitioner (CRC32)
    # would disagree and make every command take a detour.
    from streams.partitioner import partition_for

    accounts = [f"acct-{i}" for i in range(40)] + ["@world/USD", "é-ü", "x" * 100]
    with CommandProducer(settings) as producer:
        for i, account in enumerate(accounts):
            producer.send_record(
                "Deposit", account, {"command_id": f"p{i}", "account": account, "amount": "1"}
            )
        assert producer.flush(30) == 0
    for msg in _consume(settings, topics.commands, len(accounts)):
        assert msg.partition() == partition_for(msg.key().decode(), settings.partitions)
