"""Hostile input straight onto the commands topic: no worker crashes, nothing blocks.

Every bad record ends as a rejection outcome or a dead-letter record with its reason, and a
good command behind it on the same partition is still applied.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from paystream import queries
from paystream.stack import worker_name
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.partitioner import partition_for
from streams.records import BadRecord, to_command, to_saga_step
from tests.stack import LedgerStack, cli

pytestmark = pytest.mark.integration


def test_poison_never_blocks_a_partition(settings, topics) -> None:  # type: ignore[no-untyped-def]
    stack = LedgerStack(settings, workers=1)
    stack.start()
    try:
        assert (
            stack.send(
                [
                    {
                        "type": "open_account",
                        "command_id": "o",
                        "account": "victim",
                        "user": "u",
                        "currency": "USD",
                    }
                ]
            )
            == 0
        )
        stack.wait()
        codec = Codec.default()
        p = Producer({"bootstrap.servers": settings.bootstrap})
        part = partition_for("victim", settings.partitions)
        bad_values = [
            b"",  # empty
            b"not avro at all",
            b"\xc3\x01" + b"\x00" * 8 + b"\x02x",  # unknown fingerprint
            codec.encode("Deposit", {"command_id": "t1", "account": "victim", "amount": "5.00"})[
                :-3
            ],  # truncated
            codec.encode(
                "LedgerPosting",
                {  # a valid record of the wrong kind
                    "event_id": "e",
                    "entry_id": "e",
                    "command_id": "c",
                    "transfer_id": None,
                    "account": "victim",
                    "counterparty": "x",
                    "currency": "USD",
                    "amount": "1",
                    "balance_after": None,
                    "account_seq": 0,
                    "kind": "deposit",
                    "ts": 0,
                },
            ),
            codec.encode(
                "Deposit", {"command_id": "big", "account": "v" * 1_000_00, "amount": "1"}
            ),
        ]
        for v in bad_values:
            p.produce(topics.commands, v, b"victim", part)
        odd_amounts = [
            "NaN",
            "-1",
            "1e9",
            "9" * 60,
            "0x10",
            "\uff11\uff12",  # fullwidth digits
            "1,00",
            "'; DROP TABLE x; --",
            "$(rm -rf /)",
        ]
        for i, a in enumerate(odd_amounts):
            p.produce(
                topics.commands,
                codec.encode(
                    "Deposit", {"command_id": f"odd-{i}", "account": "victim", "amount": a}
                ),
                b"victim",
                part,
            )
        p.produce(
            topics.commands,
            codec.encode("Deposit", {"command_id": "good", "account": "victim", "amount": "7.00"}),
            b"victim",
            part,
        )
        p.flush(10)
        stack.wait()
        assert stack.balances()["victim"]["balance"] == "7.00"
        dead = [codec.decode(m.value())[1] for m in queries.scan(settings, topics.deadletter)]
        assert len(dead) == len(bad_values)
        assert all(d["reason"] and d["error_code"] for d in dead)
        outcomes = {o["command_id"]: o for o in stack.outcomes()}
        for i in range(len(odd_amounts)):
            assert outcomes[f"odd-{i}"]["status"] == "rejected"
            assert outcomes[f"odd-{i}"]["reason"].startswith("amount_")
        assert outcomes["good"]["status"] == "accepted"
        # The worker that saw all this is still the one running.
        status = json.loads(cli(settings, "status", "--json").stdout)
        assert all(p["alive"] for p in status["processes"] if p["name"].startswith("ledger"))
    finally:
        stack.stop()


# --- a fuzzed batch, raw and through `paystream send`, at one worker -------------------------------

SQL_SHELL = ["'; DROP TABLE ledger_entries; --", "$(rm -rf /)", "`id`", "a|nc x 1", "../../etc"]


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        bit = rng.randrange(len(out) * 8)
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _raw_commands(codec: Codec, rng: random.Random) -> list[bytes | None]:
    """Commands-topic values: noise, cut and flipped records, and records that decode but are
    not commands. None of them can touch the money of an open account."""
    values: list[bytes | None] = [None]  # a tombstone
    values += [rng.randbytes(rng.randint(0, 200)) for _ in range(25)]
    values += [b"\xc3\x01" + rng.randbytes(rng.randint(8, 60)) for _ in range(10)]
    for i in range(30):  # every base used once: no two flips can repeat a command id
        account = f"ghost-{i}"
        base = [
            codec.encode("Deposit", {"command_id": f"f{i}", "account": account, "amount": "5"}),
            codec.encode("Withdraw", {"command_id": f"f{i}", "account": account, "amount": "5"}),
            codec.encode(
                "Transfer", {"command_id": f"f{i}", "from": account, "to": "victim", "amount": "5"}
            ),
            codec.encode(
                "BlockAccount", {"command_id": f"f{i}", "account": account, "reason": None}
            ),
        ][i % 4]
        values.append(_flip(base, rng) if i % 3 else base[: rng.randrange(len(base))])
    values.append(
        codec.encode(
            "DeadLetter",
            {"source": "x", "reason": "r", "error_code": "c", "payload": b"\xff", "ts": 0},
        )
    )
    # Regression: commands keyed by a user reservation stopped the worker at every restart.
    for i, schema in enumerate(("Deposit", "Withdraw", "BlockAccount")):
        record: dict[str, Any] = {"command_id": f"u{i}", "account": "@user/victim-user"}
        record |= {"amount": "1"} if schema != "BlockAccount" else {"reason": None}
        values.append(codec.encode(schema, record))
    values.append(
        codec.encode(
            "Transfer", {"command_id": "u9", "from": "@user/victim-user", "to": "x", "amount": "1"}
        )
    )
    return values


def _raw_saga_steps(codec: Codec, rng: random.Random) -> list[bytes | None]:
    """Saga-topic values (an internal topic, but a worker must not stop on them either)."""
    step = {
        "step": "credit",
        "command_id": "s1",
        "command_type": "transfer",
        "digest": "d",
        "target": "victim",
        "account": "ghost-a",
        "other": "victim",
        "user": None,
        "currency": "USD",
        "amount": None,  # regression: AttributeError, which stopped the worker
        "kind": None,
        "reason": None,
        "ts": 0,
    }
    values: list[bytes | None] = [codec.encode("SagaStep", step)]
    # Regression: a credit for a "@user/" key met a user state (InvariantViolation).
    values.append(codec.encode("SagaStep", step | {"amount": "1.00", "other": "@user/victim-user"}))
    values.append(codec.encode("SagaStep", step | {"amount": "\uff11", "command_id": "s2"}))
    values.append(codec.encode("SagaStep", step | {"step": "explode", "amount": "1.00"}))
    values.append(codec.encode("SagaStep", step | {"step": "void", "amount": "1.00"}))
    values += [rng.randbytes(rng.randint(0, 80)) for _ in range(5)]
    return values


def _is_bad(codec: Codec, value: bytes | None, saga: bool) -> bool:
    """What the worker must do with a value: dead-letter it (True) or decide it (False)."""
    try:
        schema, record = codec.decode(value or b"")
        if saga:
            to_saga_step(record)
        else:
            to_command(schema, record, 0)
    except (DecodeError, BadRecord):
        return True
    return False


HOSTILE_LINES: list[Any] = [
    "not json",
    '{"type":"deposit","command_id":"j1","account":"victim","amount":12.5}',
    '{"type":"deposit","command_id":"j2","account":"victim","amount":NaN}',
    '{"type":"deposit","command_id":"j3","account":"victim","amount":"1e3","x":1}',
    {"type": "deposit", "command_id": "j4", "account": "x" * (1 << 20), "amount": "1"},
    {"type": "deposit", "command_id": "j5", "account": "vic\x00tim", "amount": "1"},
    {"type": "transfer", "command_id": "j6", "from": "victim", "to": "victim"},
    '{"type":"deposit","command_id":"\\ud800","account":"victim","amount":"1"}',
    "[]",
    '{"type":"deposit","command_id":"j7","account":"victim","amount":"1","amount":"1000"}',
]
# Valid JSON commands with hostile contents: sent, and rejected by the ledger with a reason.
HOSTILE_SENT: list[dict[str, Any]] = [
    *({"type": "deposit", "command_id": f"a{i}", "account": "victim", "amount": a}
      for i, a in enumerate(["1e309", "1E3", "NaN", "Infinity", "-1", "0", "1.001", "9" * 30,
                             "\uff11", " 1", "1_0", *SQL_SHELL])),
    *({"type": "deposit", "command_id": f"s{i}", "account": f, "amount": "1"}
      for i, f in enumerate([*SQL_SHELL, "\u202evictim", "victim\u200b", "@world/USD"])),
    *({"type": "transfer", "command_id": f"t{i}", "from": "victim", "to": f, "amount": "1"}
      for i, f in enumerate([*SQL_SHELL, "@user/victim-user", "@clearing/USD"])),
    {"type": "open_account", "command_id": "o9", "account": "$(id)", "user": "u9",
     "currency": "'; DROP"},
    {"type": "relate_accounts", "command_id": "r1", "account": "victim", "related": "victim",
     "kind": "family"},
    {"type": "relate_accounts", "command_id": "r2", "account": "victim",
     "related": "@user/victim-user", "kind": "x"},
    {"type": "block_account", "command_id": "b1", "account": "ghost-b",
     "reason": "\x00\n; DROP TABLE x" * 20},
]  # fmt: skip


def test_a_fuzzed_batch_never_stops_the_worker(settings, topics, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    codec = Codec.default()
    rng = random.Random(6)
    stack = LedgerStack(settings, workers=1)
    stack.start()
    try:
        opening = {
            "type": "open_account",
            "command_id": "o",
            "account": "victim",
            "user": "victim-user",
            "currency": "USD",
        }
        assert stack.send([opening]) == 0
        stack.wait()
        pid = stack.sup.pid(worker_name(1))

        # Raw records, every one on the victim's partition, with its offset noted.
        offsets: dict[tuple[str, int, int], bool] = {}
        decided: list[str] = []  # command ids of raw records that decode to commands

        def noted(err: Any, msg: Any) -> None:
            assert err is None, err
            saga = msg.topic() == topics.saga
            bad = _is_bad(codec, msg.value(), saga)
            offsets[(msg.topic(), msg.partition(), msg.offset())] = bad
            if not bad and not saga:
                decided.append(codec.decode(msg.value())[1]["command_id"])

        p = Producer({"bootstrap.servers": settings.bootstrap, "on_delivery": noted})
        part = partition_for("victim", settings.partitions)
        for value in _raw_commands(codec, rng):
            p.produce(topics.commands, value, b"victim", part)
        for value in _raw_saga_steps(codec, rng):
            p.produce(topics.saga, value, b"victim", part)
        assert p.flush(30) == 0

        # JSON lines through the real `paystream send`, valid ones among them.
        path = tmp_path / "hostile.jsonl"
        lines = [x if isinstance(x, str) else json.dumps(x) for x in HOSTILE_LINES]
        lines += [json.dumps(x) for x in HOSTILE_SENT]
        good = {"type": "deposit", "command_id": "good", "account": "victim", "amount": "7.00"}
        lines.append(json.dumps(good))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        result = cli(settings, "send", "--file", str(path), "--no-progress")
        assert result.returncode == 2, result.stderr
        refused = {
            int(m.group(1)): m.group(2)
            for m in re.finditer(
                rf"^{re.escape(str(path))}:(\d+): ([a-z_]+): ", result.stderr, re.M
            )
        }
        assert sorted(refused) == list(range(1, len(HOSTILE_LINES) + 1)), result.stderr
        # And a good command behind all of it, on the same partition.
        p.produce(
            topics.commands,
            codec.encode("Deposit", {"command_id": "good-raw", "account": "victim", "amount": "3"}),
            b"victim",
            part,
        )
        assert p.flush(30) == 0
        stack.wait()

        # The worker never stopped: same process, alive.
        assert stack.sup.alive(worker_name(1)) and stack.sup.pid(worker_name(1)) == pid, (
            stack.logs()
        )
        assert stack.balances()["victim"]["balance"] == "10.00"

        dead = {}
        for m in queries.scan(settings, topics.deadletter):
            d = codec.decode(m.value())[1]
            assert d["reason"] and d["error_code"], d
            dead[d["source"]] = d
        bad_raw = [k for k, bad in offsets.items() if bad]
        assert len(bad_raw) > 50
        for topic, partition, offset in bad_raw:
            assert f"{topic}/{partition}@{offset}" in dead, (topic, offset)
        for n, code in refused.items():
            assert dead[f"cli:{path}:{n}"]["error_code"] == code
        assert len(dead) == len(bad_raw) + len(refused)
        codes = {d["error_code"] for d in dead.values()}
        assert {"reserved_key", "bad_field", "bad_target", "not_a_command"} <= codes, codes

        outcomes: dict[str, list[dict[str, Any]]] = {}
        for o in stack.outcomes():
            outcomes.setdefault(o["command_id"], []).append(o)
        for cmd in HOSTILE_SENT:
            (o,) = outcomes[cmd["command_id"]]
            assert o["status"] == "rejected" and o["reason"], o
        # Records that decoded to commands (the flips that stayed valid) got outcomes too.
        decided.remove("good-raw")
        for command_id in decided:
            assert all(o["status"] == "rejected" for o in outcomes[command_id]), (
                command_id,
                outcomes[command_id],
            )
        assert [o["status"] for o in outcomes["good"] + outcomes["good-raw"]] == ["accepted"] * 2
    finally:
        p = None  # librdkafka lets go of the broker before the session's broker stops
        stack.stop()


def test_a_log_time_past_year_292277_is_dead_lettered(settings, topics) -> None:  # type: ignore[no-untyped-def]
    codec = Codec.default()
    stack = LedgerStack(settings, workers=1)
    stack.start()
    try:
        opening = {
            "type": "open_account",
            "command_id": "o",
            "account": "victim",
            "user": "u",
            "currency": "USD",
        }
        assert stack.send([opening]) == 0
        stack.wait()
        pid = stack.sup.pid(worker_name(1))
        p = Producer({"bootstrap.servers": settings.bootstrap})
        part = partition_for("victim", settings.partitions)
        late = codec.encode("Deposit", {"command_id": "late", "account": "victim", "amount": "1"})
        p.produce(topics.commands, late, b"victim", part, timestamp=(1 << 62))
        good = codec.encode("Deposit", {"command_id": "g", "account": "victim", "amount": "2"})
        p.produce(topics.commands, good, b"victim", part)
        assert p.flush(30) == 0
        stack.wait(timeout_s=60)
        assert stack.sup.pid(worker_name(1)) == pid
        assert stack.balances()["victim"]["balance"] == "2.00"
        dead = [codec.decode(m.value())[1] for m in queries.scan(settings, topics.deadletter)]
        assert [d["error_code"] for d in dead] == ["bad_timestamp"]
    finally:
        stack.stop()
